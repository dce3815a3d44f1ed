"""Stage-1 retrieval of Candidate Re-ranking: query features, cosine scores against the gallery, the original
metric dict, the rankings and the top-K file content."""
from __future__ import annotations

import argparse
from typing import Sequence

import torch

from common.cir.evaluation import QuerySet, set_metrics
from common.dist import concat_all_gather
from common.metrics.cir import fiq_summary, rank_gallery, target_ranks
from reranking_cir.data import shard
from reranking_cir.models import Models
from reranking_cir.scoring import Queries, encode_queries
from reranking_cir.topk import TopK, build_topk

WIDE_KS = (50, 100, 150, 200, 300, 400, 500)


def stage1_queries(models: Models, query_set: QuerySet, rows: range, args: argparse.Namespace,
                   with_z_t: bool = False, gallery: torch.Tensor | None = None) -> Queries:
    """Stage-1 outputs of the queries ``rows`` of ``query_set``; reference tokens from ``gallery`` (default the
    query set's)."""
    gallery = query_set.gallery if gallery is None else gallery
    return encode_queries(models.stage1, models.tokenizer, lambda r: gallery[r.to(gallery.device)],
                          query_set.reference_idx[rows.start:rows.stop],
                          query_set.captions[rows.start:rows.stop], batch_size=args.eval_batch_size,
                          with_z_t=with_z_t, desc=f"{query_set.name} stage-1 queries")


@torch.no_grad()
def stage1_scores(models: Models, query_set: QuerySet, args: argparse.Namespace) -> torch.Tensor:
    """``[Q, M]`` cosine scores of every query against the gallery (queries sharded, then gathered), on CPU."""
    targets = models.stage1.target_features(query_set.gallery)
    local = stage1_queries(models, query_set, shard(query_set), args).features @ targets.T
    return concat_all_gather(local.contiguous()).cpu()


def stage1_metrics(query_sets: Sequence[QuerySet], scores: Sequence[torch.Tensor]) -> dict[str, float]:
    """The original stage-1 metric dict (FashionIQ per category + averages, or CIRR)."""
    if query_sets[0].name == "cirr":
        return set_metrics(query_sets[0], scores[0])
    return fiq_summary({qs.name: set_metrics(qs, s) for qs, s in zip(query_sets, scores)})


def stage1_ranking(query_set: QuerySet, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The stage-1 rankings ``[Q, W]`` (CIRR: reference removed, FashionIQ: kept) and, for CIRR, the 5
    non-reference members in stage-1 order ``[Q, 5]``."""
    order = rank_gallery(scores)
    if query_set.name != "cirr":
        return order, None
    references = query_set.reference_idx.unsqueeze(1)
    order = order[order != references].view(len(order), -1)
    members = non_reference_members(query_set)
    position = torch.full(scores.shape, -1, dtype=torch.long)
    position.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order).contiguous())
    return order, members.gather(1, position.gather(1, members).argsort(1))


def non_reference_members(query_set: QuerySet) -> torch.Tensor:
    """``[Q, 5]`` gallery rows of each CIRR query's group members other than its reference."""
    members, references = query_set.members_idx, query_set.reference_idx.unsqueeze(1)
    keep = members != references
    if not torch.all(keep.sum(1) == members.shape[1] - 1):
        raise ValueError("every CIRR query needs its reference exactly once among its img_set members")
    return members[keep].view(len(members), -1)


def print_wide_recalls(query_set: QuerySet, scores: torch.Tensor) -> None:
    """R@50..R@500 of the stage-1 ranking, as the original prints them before saving a top-K file."""
    if query_set.target_idx is None:
        return
    exclude = query_set.reference_idx if query_set.name == "cirr" else None
    ranks = target_ranks(scores, query_set.target_idx, exclude_idx=exclude)
    width = scores.shape[1] - (exclude is not None)
    for k in WIDE_KS:
        if k <= width:
            print(f"{query_set.name} R@{k} = {100.0 * (ranks < k).float().mean().item():.2f}")


def stage1_topk(query_set: QuerySet, scores: torch.Tensor, split: str, k: int) -> TopK:
    """The top-K file content of one query set."""
    order, group = stage1_ranking(query_set, scores)
    dress_type = None if query_set.name == "cirr" else query_set.name
    return build_topk(order, query_set.gallery_names, split, k, query_set.target_idx, group, dress_type)
