"""Stage-2 re-ranking of Candidate Re-ranking: the checked top-K file of a query set, stage-2 scores of each query's
first K candidates (and CIRR's group members), and the original metric dict of the final lists."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Sequence

import torch

from common.cir.evaluation import QuerySet
from common.dist import concat_all_gather, get_world_size
from common.io import PathLike
from reranking_cir.data import shard
from reranking_cir.models import Models
from reranking_cir.paths import get_top_k_path
from reranking_cir.rerank import permute_labels, rerank_topk, stage2_cirr_metrics, stage2_fiq_metrics
from reranking_cir.scoring import stage2_scores
from reranking_cir.stage1_ranking import non_reference_members, stage1_queries
from reranking_cir.topk import TopK, load_topk


@dataclass
class Reranked:
    """Stage-2 results of one query set over its top-K file."""

    query_set: QuerySet
    topk: TopK
    k: int
    scores: torch.Tensor
    group_scores: torch.Tensor | None

    @property
    def labels(self) -> torch.Tensor | None:
        """The first K stage-1 labels in stage-2 order (the Figure-8 label tensor)."""
        return None if self.topk.labels is None else permute_labels(self.topk.labels[:, :self.k], self.scores)

    @property
    def final_labels(self) -> torch.Tensor:
        """Labels of the final lists ``[N, W]``: the re-ranked top K, then the file's stage-1 ranks K+1..W."""
        return rerank_topk(self.topk.labels, self.scores)


def load_set_topk(args: argparse.Namespace, query_set: QuerySet, top_k_path: PathLike, dataset: str, split: str,
                  k: int) -> TopK:
    """The checked top-K file of one query set (aliases and ``DTYPE`` resolved)."""
    dress_type = None if dataset == "cirr" else query_set.name
    path = get_top_k_path(top_k_path, dataset, split == "test1", args.models_root, dress_type)
    targets = None
    if query_set.target_idx is not None:
        targets = [query_set.gallery_names[i] for i in query_set.target_idx.tolist()]
    return load_topk(path, k=k, split=split, index_names=query_set.gallery_names, n_queries=len(query_set.captions),
                     target_names=targets, dress_type=dress_type)


@torch.no_grad()
def rerank(models: Models, query_set: QuerySet, topk: TopK, k: int, args: argparse.Namespace,
           candidate_gallery: torch.Tensor | None = None) -> Reranked:
    """Stage-2 scores of each query's first ``k`` candidates (and, for CIRR, its 5 non-reference members), queries
    sharded over processes and gathered. ``candidate_gallery``: stage-2 ViT tokens when its ViT differs; they then
    serve the references of ``z_t`` too."""
    gallery = query_set.gallery if candidate_gallery is None else candidate_gallery
    candidates = topk.index_rows(k)
    if query_set.name == "cirr":
        candidates = torch.cat([candidates, non_reference_members(query_set)], dim=1)
    rows = shard(query_set)
    queries = stage1_queries(models, query_set, rows, args, with_z_t=True, gallery=gallery)
    local = stage2_scores(models.stage2, queries, candidates[rows.start:rows.stop],
                          lambda r: gallery[r.to(gallery.device)], kv_reuse=args.kv_reuse,
                          pair_batch=args.pair_batch, image_chunk=args.image_chunk, dtype=args.dtype,
                          desc=f"{query_set.name} stage-2 re-ranking")
    device = gallery.device if get_world_size() > 1 else torch.device("cpu")
    scores = concat_all_gather(local.to(device)).cpu()
    group = scores[:, k:] if query_set.name == "cirr" else None
    return Reranked(query_set, topk, k, scores[:, :k], group)


def stage2_metrics(results: Sequence[Reranked]) -> dict[str, float]:
    """The original stage-2 metric dict, measured on the final lists (re-ranked top K, then stage-1 ranks K+1..)."""
    if results[0].query_set.name == "cirr":
        result = results[0]
        group_labels = non_reference_members(result.query_set) == result.query_set.target_idx.unsqueeze(1)
        return stage2_cirr_metrics(result.final_labels, group_labels, result.group_scores)
    return stage2_fiq_metrics({result.query_set.name: result.final_labels for result in results})
