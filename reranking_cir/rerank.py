"""Re-ordering a stage-1 top-K by stage-2 scores, and the recalls measured on the re-ordered lists.

Our rule for the full list: the re-ranked first K, then stage-1 ranks K+1.. unchanged; recalls are measured on that
list (the original measured them on the K re-ranked columns only, so with K = 20 its "R@50" was R@20). The sort is
stable, so tied scores keep their stage-1 order (the original's ``argsort`` orders ties arbitrarily).
"""
from __future__ import annotations

from typing import Sequence

import torch

from common.metrics.cir import CIRR_KS, CIRR_SUBSET_KS, cirr_summary, fiq_summary

FIQ_KS = (10, 50)
LARGEST_RECALL = max(*CIRR_KS, *FIQ_KS)
"""The deepest rank any reported recall looks at: a top-K file must hold this many stage-1 ranks per query (or the
whole ranking) for the recalls of the re-ranked list to be exact."""


def rerank_order(scores: torch.Tensor) -> torch.Tensor:
    """``[N, K]`` column order of each row by descending stage-2 score; ties keep stage-1 order."""
    return torch.sort(scores, dim=1, descending=True, stable=True).indices


def rerank_topk(ranking: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The full ranking ``[N, W]`` after re-ordering its first K = ``scores.shape[1]`` columns (gallery rows, or the
    stage-1 labels of a top-K file: then the labels of the final list)."""
    k = scores.shape[1]
    if k > ranking.shape[1]:
        raise ValueError(f"{k} stage-2 scores per query for rankings of width {ranking.shape[1]}")
    return torch.cat([ranking[:, :k].gather(1, rerank_order(scores)), ranking[:, k:]], dim=1)


def permute_labels(labels: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The first K label columns ``[N, K]`` in stage-2 order (the Figure-8 label tensor)."""
    return labels[:, :scores.shape[1]].gather(1, rerank_order(scores))


def recall_from_labels(labels: torch.Tensor, k: int) -> float:
    """100 x fraction of rows with a True among their first ``k`` columns (rows without one are misses)."""
    return 100.0 * labels[:, :k].any(dim=1).double().mean().item()


def stage2_fiq_metrics(per_category: dict[str, torch.Tensor], ks: Sequence[int] = FIQ_KS) -> dict[str, float]:
    """FashionIQ keys of ``fiq_summary`` from the labels of each category's final lists (``rerank_topk``)."""
    return fiq_summary({name: {f"recall_at{k}": recall_from_labels(labels, k) for k in ks}
                        for name, labels in per_category.items()})


def stage2_cirr_metrics(labels: torch.Tensor, group_labels: torch.Tensor, group_scores: torch.Tensor) -> dict:
    """CIRR keys of ``cirr_summary``: R@k on the labels of the final lists (``rerank_topk``), R_s@k on the members
    sorted by stage-2 score."""
    group = permute_labels(group_labels, group_scores)
    return cirr_summary({k: recall_from_labels(labels, k) for k in CIRR_KS},
                        {k: recall_from_labels(group, k) for k in CIRR_SUBSET_KS})
