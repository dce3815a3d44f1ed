"""Figure 8 of the paper (Appendix A.4, ``analysis_plot/plot_ranking_delta_vs_init_index.ipynb``): how far
re-ranking moves each target, as a function of its stage-1 position."""
from __future__ import annotations

import torch

from common.errors import InputError
from common.io import CheckpointError, PathLike, load_torch_file


class LabelMismatch(InputError, ValueError):
    """Stage-1 and stage-2 label files that do not describe the same queries, K or targets."""


def check_label_pair(stage1: torch.Tensor, stage2: torch.Tensor, k: int, where: str) -> None:
    """Both tensors bool, width >= ``k``, at most one True per row, and the same rows with a True."""
    for name, labels in (("stage-1", stage1), ("stage-2", stage2)):
        if labels.dtype != torch.bool or labels.dim() != 2:
            raise LabelMismatch(f"{where}: {name} labels must be a 2-D bool tensor, got {labels.dtype} "
                                f"{tuple(labels.shape)}")
        if labels.shape[1] < k:
            raise LabelMismatch(f"{where}: {name} labels have {labels.shape[1]} columns, fewer than --k {k}")
        if (labels[:, :k].sum(1) > 1).any():
            raise LabelMismatch(f"{where}: {name} labels have a row with more than one True")
    if stage1.shape[0] != stage2.shape[0]:
        raise LabelMismatch(f"{where}: {stage1.shape[0]} stage-1 rows but {stage2.shape[0]} stage-2 rows")
    if not torch.equal(stage1[:, :k].any(1), stage2[:, :k].any(1)):
        raise LabelMismatch(f"{where}: the rows with a target in the top {k} differ between stage 1 and stage 2 "
                            "(re-ranking only permutes the top K; are both files of the same split and K?)")


def delta_stats(stage1: torch.Tensor, stage2: torch.Tensor, k: int, where: str = "labels") -> dict:
    """Per query with a target in the top ``k``: r1, r2 = its 0-based column before and after re-ranking.

    Returns mean r1, mean r2, their difference (``shift``, positive = moved forward), and per initial index i:
    ``counts[i]`` = #queries with r1 = i and ``deltas[i]`` = i - mean(r2 | r1 = i) (0 where no query).
    """
    check_label_pair(stage1, stage2, k, where)
    hit = stage1[:, :k].any(1)
    r1 = stage1[hit, :k].float().argmax(1)
    r2 = stage2[hit, :k].float().argmax(1)
    counts = torch.bincount(r1, minlength=k)
    sums = torch.zeros(k, dtype=torch.float64).index_add_(0, r1, r2.double())
    positions = torch.arange(k, dtype=torch.float64)
    deltas = torch.where(counts > 0, positions - sums / counts.clamp(min=1), torch.zeros(k, dtype=torch.float64))
    mean_r1 = r1.double().mean().item() if len(r1) else 0.0
    mean_r2 = r2.double().mean().item() if len(r2) else 0.0
    return {"queries": int(stage1.shape[0]), "queries_in_top_k": int(hit.sum()), "mean_r1": mean_r1,
            "mean_r2": mean_r2, "shift": mean_r1 - mean_r2, "deltas": deltas.tolist(), "counts": counts.tolist(),
            "r1": r1.tolist(), "r2": r2.tolist()}


def load_labels(path: PathLike, what: str, flag: str | None = None) -> torch.Tensor:
    """Labels ``[N, K]`` from a bare bool tensor (the authors' label files, ``--save-labels``) or from the
    ``labels`` entry of a top-K file (NumPy 1.x or 2 pickles). Errors name the file, ``what`` it is and ``flag``:
    missing, empty, truncated, or holding no labels."""
    source = f"{flag}: " if flag else ""
    try:
        payload = load_torch_file(path, what=what)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{source}{error}") from None
    except CheckpointError as error:
        raise CheckpointError(f"{source}{error}") from error
    labels = payload.get("labels") if isinstance(payload, dict) else payload
    if not isinstance(labels, torch.Tensor):
        raise CheckpointError(f"{source}{path}: expected {what}: a bool tensor [queries, K] or a top-K file with "
                              "'labels'")
    return labels
