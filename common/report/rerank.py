"""The two-stage re-ranking report: per query the stage-1 top-k and the re-ranked top-k side by side, the queries
whose target moved most first."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from common.report.args import ReportOptions
from common.report.cir import ImagePath, cir_image_paths
from common.report.page import Entry, Report, Row, Tile, write_report

__all__ = ["reranked_names", "rerank_report", "write_rerank_report"]


def reranked_names(stage1_names: Sequence[str], stage2_scores: torch.Tensor) -> list[str]:
    """A stage-1 ranking (gallery names) with its first K = ``len(stage2_scores)`` re-ordered by descending stage-2
    score, ties keeping stage-1 order; ranks after K unchanged."""
    k = len(stage2_scores)
    order = torch.sort(stage2_scores.float(), descending=True, stable=True).indices.tolist()
    return [stage1_names[column] for column in order] + list(stage1_names[k:])


def _rank(names: Sequence[str], target: str) -> int | None:
    return names.index(target) + 1 if target in names else None


def _rank_text(rank: int | None, width: int) -> str:
    return f"#{rank}" if rank is not None else f"below #{width}"


def _row(title: str, names: Sequence[str], target: str, top_k: int, set_name: str, image_path: ImagePath) -> Row:
    tiles = [Tile(f"#{rank}" + (" target" if name == target else ""), image_path(set_name, name), hit=name == target)
             for rank, name in enumerate(names[:top_k], 1)]
    rank = _rank(list(names), target)
    if rank is None or rank > top_k:
        tiles.append(Tile(f"target {_rank_text(rank, len(names))}", image_path(set_name, target), hit=True))
    return Row(title, tiles)


def rerank_report(title: str, query_sets: Sequence, stage1_names: Sequence[Sequence[Sequence[str]]],
                  stage2_scores: Sequence[torch.Tensor], options: ReportOptions, image_path: ImagePath,
                  notes: Sequence[str] = ()) -> Report:
    """``stage1_names[i]``: the stage-1 rankings [Q, W] of ``query_sets[i]`` (gallery names), ``stage2_scores[i]``
    its stage-2 scores [Q, K] of the first K; the ``options.queries`` queries whose target moved most come first."""
    moves = []
    for set_number, (query_set, names, scores) in enumerate(zip(query_sets, stage1_names, stage2_scores)):
        for query in range(len(query_set.captions)):
            target = query_set.gallery_names[int(query_set.target_idx[query])]
            before = [str(name) for name in names[query]]
            after = reranked_names(before, scores[query])
            width = len(before) + 1
            shift = (_rank(before, target) or width) - (_rank(after, target) or width)
            moves.append((-abs(shift), set_number, query, before, after, target))
    entries = []
    for _, set_number, query, before, after, target in sorted(moves, key=lambda move: move[:3])[:options.queries]:
        query_set = query_sets[set_number]
        reference = query_set.gallery_names[int(query_set.reference_idx[query])]
        rank1, rank2 = _rank(before, target), _rank(after, target)
        heading = (f"{query_set.name} query {query} · target {_rank_text(rank1, len(before))} → "
                   f"{_rank_text(rank2, len(after))}")
        rows = [_row(f"stage 1 top {options.top_k}", before, target, options.top_k, query_set.name, image_path),
                _row(f"stage 2 (re-ranked) top {options.top_k}", after, target, options.top_k, query_set.name,
                     image_path)]
        entries.append(Entry(heading, Tile("reference", image_path(query_set.name, reference),
                                           text=query_set.captions[query]), rows))
    lines = [*notes, f"{len(entries)} of {len(moves)} queries, those whose target moved most first; "
                     f"stage 2 re-orders the first {len(stage2_scores[0][0]) if len(moves) else 0} stage-1 "
                     "candidates; the target is outlined in green."]
    return Report(title, entries, lines)


def write_rerank_report(options: ReportOptions, title: str, dataset: str, root: Path, split: str,
                        query_sets: Sequence, stage1_names: Sequence, stage2_scores: Sequence[torch.Tensor]) -> Path:
    """``rerank_report`` with the images of ``dataset`` under ``root``, written to ``options.folder``."""
    report = rerank_report(title, query_sets, stage1_names, stage2_scores, options,
                           cir_image_paths(dataset, root, split))
    return write_report(report, options.folder)
