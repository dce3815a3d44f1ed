"""Composed-image-retrieval metrics on score matrices and integer gallery indices.

Definitions follow the CLIP4Cir validation code (and its Bi-BLIP4CIR, MLCL and Re-ranking forks).
``scores`` is a [Q, N] matrix (higher is better; a torch tensor on any device or a numpy array; metrics are
computed on the CPU). Rankings sort scores descending with a *stable* sort, so ties keep gallery order; upstream
sorts distances with numpy's unstable argsort, which orders ties arbitrarily. Recalls are percentages.
Returned dicts use the upstream metric names, so CSV columns match.
"""
from __future__ import annotations

import statistics
from typing import Mapping, Sequence

import numpy as np
import torch

ScoreMatrix = torch.Tensor | np.ndarray
Indices = torch.Tensor | np.ndarray | Sequence[int]

CIRR_KS = (1, 5, 10, 50)
CIRR_SUBSET_KS = (1, 2, 3)
SHOES_KS = (1, 10, 50)


def _scores(scores: ScoreMatrix) -> torch.Tensor:
    """Scores as a CPU tensor; half precision is widened exactly to float32."""
    scores = torch.as_tensor(scores).detach().cpu()
    if scores.dim() != 2:
        raise ValueError(f"scores must be a [queries, gallery] matrix, got shape {tuple(scores.shape)}")
    return scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores


def _indices(indices: Indices, scores: torch.Tensor, what: str, matrix: bool = False) -> torch.Tensor:
    """Gallery indices, one per query ([Q]) or a row per query ([Q, M] with ``matrix``), checked against scores."""
    indices = torch.as_tensor(indices, dtype=torch.long)
    n_queries = scores.shape[0]
    if (indices.dim() != (2 if matrix else 1)) or indices.shape[0] != n_queries:
        expected = f"[{n_queries}, M]" if matrix else f"[{n_queries}]"
        raise ValueError(f"{what} must have shape {expected} for {n_queries} queries, got {list(indices.shape)}")
    if indices.numel() and (indices.min() < 0 or indices.max() >= scores.shape[1]):
        raise ValueError(f"{what} holds gallery indices outside [0, {scores.shape[1]})")
    return indices


def index_of(names: Sequence, gallery_names: Sequence[str]) -> torch.Tensor:
    """Gallery positions of ``names`` (a list of names, or a list of lists such as CIRR members).

    Raises when a name is not in the gallery or appears there more than once (upstream asserts a unique target).
    """
    positions: dict[str, int] = {}
    repeated: set[str] = set()
    for position, name in enumerate(gallery_names):
        if name in positions:
            repeated.add(name)
        positions.setdefault(name, position)

    def lookup(name: str) -> int:
        if name in repeated:
            raise ValueError(f"{name!r} appears more than once in the gallery")
        if name not in positions:
            raise ValueError(f"{name!r} is not in the gallery of {len(gallery_names)} images")
        return positions[name]

    if len(names) and isinstance(names[0], (list, tuple)):
        return torch.tensor([[lookup(name) for name in row] for row in names], dtype=torch.long)
    return torch.tensor([lookup(name) for name in names], dtype=torch.long)


def rank_gallery(scores: ScoreMatrix) -> torch.Tensor:
    """[Q, N] gallery indices of each row by descending score; ties keep gallery order (stable sort)."""
    return torch.sort(_scores(scores), dim=1, descending=True, stable=True).indices


def _ahead_of_target(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[Q, N] mask of the gallery items that the stable descending sort puts before each query's target."""
    rows = torch.arange(scores.shape[0])
    target_scores = scores[rows, targets].unsqueeze(1)
    columns = torch.arange(scores.shape[1]).unsqueeze(0)
    return (scores > target_scores) | ((scores == target_scores) & (columns < targets.unsqueeze(1)))


def target_ranks(scores: ScoreMatrix, target_idx: Indices, exclude_idx: Indices | None = None) -> torch.Tensor:
    """0-based position of each query's target in its stable descending ranking.

    ``exclude_idx`` (one gallery index per query, e.g. the reference) is moved to the end of the ranking, as
    upstream does by setting its distance to +inf (Shoes) or deleting it (CIRR).
    """
    scores = _scores(scores)
    targets = _indices(target_idx, scores, "target_idx")
    ahead = _ahead_of_target(scores, targets)
    if exclude_idx is not None:
        rows = torch.arange(scores.shape[0])
        excluded = _indices(exclude_idx, scores, "exclude_idx")
        ahead[rows, excluded] = False
        hits_excluded = excluded == targets
        return torch.where(hits_excluded, torch.full_like(targets, scores.shape[1] - 1), ahead.sum(1))
    return ahead.sum(1)


def subset_ranks(scores: ScoreMatrix, target_idx: Indices, members_idx: Indices, exclude_idx: Indices) -> torch.Tensor:
    """0-based position of each target among its query's ``members_idx`` minus ``exclude_idx`` (CIRR subset).

    Raises when a target is not among the remaining members.
    """
    scores = _scores(scores)
    targets = _indices(target_idx, scores, "target_idx")
    excluded = _indices(exclude_idx, scores, "exclude_idx")
    rows = torch.arange(scores.shape[0])
    member_mask = torch.zeros(scores.shape, dtype=torch.bool)
    member_mask.scatter_(1, _indices(members_idx, scores, "members_idx", matrix=True), True)
    member_mask[rows, excluded] = False
    outside = (~member_mask[rows, targets]).nonzero().flatten()
    if outside.numel():
        raise ValueError(f"the target of query {outside[0].item()} is not among its non-reference members "
                         f"({outside.numel()} such queries)")
    return (_ahead_of_target(scores, targets) & member_mask).sum(1)


def recall_at_k(ranks: torch.Tensor, k: int) -> float:
    """100 · fraction of queries whose 0-based target rank is below ``k``."""
    if len(ranks) == 0:
        raise ValueError("recall over zero queries")
    return 100.0 * int((torch.as_tensor(ranks) < k).sum()) / len(ranks)


def safe_means(values: Sequence[float]) -> tuple[float, float, float]:
    """Arithmetic, harmonic and geometric means; a zero value gives harmonic and geometric 0 (no StatisticsError)."""
    values = [float(value) for value in values]
    if any(value == 0 for value in values):
        return statistics.mean(values), 0.0, 0.0
    return statistics.mean(values), statistics.harmonic_mean(values), statistics.geometric_mean(values)


def fiq_recalls(scores: ScoreMatrix, target_idx: Indices, ks: Sequence[int] = (10, 50)) -> dict[str, float]:
    """FashionIQ ``recall_at<k>`` over the full gallery (the reference is *not* excluded)."""
    ranks = target_ranks(scores, target_idx)
    return {f"recall_at{k}": recall_at_k(ranks, k) for k in ks}


def fiq_summary(per_category: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Upstream FashionIQ keys from ``{dress_type: fiq_recalls(...)}``, in the given category order:
    ``<dtype>_recall_at10``, ``<dtype>_recall_at50``, ..., ``average_recall_at10``, ``average_recall_at50``
    (unweighted means over categories) and ``average_recall`` (their mean)."""
    if not per_category:
        raise ValueError("fiq_summary needs at least one dress type")
    summary: dict[str, float] = {}
    for dress_type, recalls in per_category.items():
        summary.update({f"{dress_type}_{key}": value for key, value in recalls.items()})
    keys = list(next(iter(per_category.values())))
    averages = {f"average_{key}": statistics.mean(r[key] for r in per_category.values()) for key in keys}
    summary.update(averages)
    summary["average_recall"] = statistics.mean(averages.values())
    return summary


def shoes_recalls(scores: ScoreMatrix, reference_idx: Indices, target_idx: Indices) -> dict[str, float]:
    """Shoes ``recall_at1/10/50`` with the reference pushed to the end of the ranking, and their ``recall_mean``."""
    ranks = target_ranks(scores, target_idx, exclude_idx=reference_idx)
    recalls = {f"recall_at{k}": recall_at_k(ranks, k) for k in SHOES_KS}
    recalls["recall_mean"] = statistics.mean(recalls.values())
    return recalls


def cirr_summary(recall_at: Mapping[int, float], group_recall_at: Mapping[int, float]) -> dict[str, float]:
    """Upstream CIRR dict from R@{1,5,10,50} and Rsubset@{1,2,3}: the seven recalls, ``mean(R@5+R_s@1)`` and the
    arithmetic, harmonic and geometric means of the seven (zero-safe)."""
    summary = {f"group_recall_at{k}": group_recall_at[k] for k in CIRR_SUBSET_KS}
    summary.update({f"recall_at{k}": recall_at[k] for k in CIRR_KS})
    summary["mean(R@5+R_s@1)"] = (recall_at[5] + group_recall_at[1]) / 2
    arithmetic, harmonic, geometric = safe_means([summary[key] for key in list(summary)[:7]])
    summary.update(arithmetic_mean=arithmetic, harmonic_mean=harmonic, geometric_mean=geometric)
    return summary


def cirr_recalls(scores: ScoreMatrix, reference_idx: Indices, target_idx: Indices,
                 members_idx: Indices) -> dict[str, float]:
    """CIRR validation metrics: recalls after deleting the reference, subset recalls over the non-reference
    ``img_set`` members ([Q, 6] gallery indices), and the summary means (see ``cirr_summary``)."""
    scores = _scores(scores)
    references = _indices(reference_idx, scores, "reference_idx")
    targets = _indices(target_idx, scores, "target_idx")
    same = (references == targets).nonzero().flatten()
    if same.numel():
        raise ValueError(f"query {same[0].item()} has its reference as target ({same.numel()} such queries)")
    ranks = target_ranks(scores, targets, exclude_idx=references)
    group_ranks = subset_ranks(scores, targets, members_idx, references)
    return cirr_summary({k: recall_at_k(ranks, k) for k in CIRR_KS},
                        {k: recall_at_k(group_ranks, k) for k in CIRR_SUBSET_KS})


def cirr_rankings(scores: ScoreMatrix, reference_idx: Indices, members_idx: Indices, index_names: Sequence[str],
                  top_k: int = 50, subset_k: int = 3) -> tuple[list[list[str]], list[list[str]]]:
    """Per query, the top ``top_k`` gallery names with the reference deleted, and the top ``subset_k`` names among
    the non-reference members in the same order: the two lists of a CIRR test submission."""
    scores = _scores(scores)
    if len(index_names) != scores.shape[1]:
        raise ValueError(f"{len(index_names)} index names for a gallery of {scores.shape[1]}")
    references = _indices(reference_idx, scores, "reference_idx")
    order = rank_gallery(scores)
    order = order[order != references.unsqueeze(1)].view(scores.shape[0], scores.shape[1] - 1)
    member_mask = torch.zeros(scores.shape, dtype=torch.bool)
    member_mask.scatter_(1, _indices(members_idx, scores, "members_idx", matrix=True), True)
    in_subset = member_mask.gather(1, order)
    recall, recall_subset = [], []
    for row, keep in zip(order, in_subset):
        recall.append([index_names[j] for j in row[:top_k].tolist()])
        recall_subset.append([index_names[j] for j in row[keep][:subset_k].tolist()])
    return recall, recall_subset
