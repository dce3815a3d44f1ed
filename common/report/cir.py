"""The composed-image-retrieval report: per query the reference image and caption, the top-k with the target
outlined and its rank, and for CIRR the subset row; ranks are those of the metrics (FashionIQ over the whole
gallery, Shoes and CIRR with the reference excluded)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch

from common.metrics.cir import rank_gallery, target_ranks
from common.report.args import ReportOptions
from common.report.page import Entry, Report, Row, Tile, write_report
from common.report.select import select_queries

ImagePath = Callable[[str, str], Path]
"""(query-set name, gallery image name) -> image file."""

__all__ = ["cir_entry", "cir_image_paths", "cir_ranks", "cir_report", "write_cir_report"]


def excludes_reference(set_name: str) -> bool:
    """Whether the metric of this query set drops the reference from the ranking (Shoes, CIRR; not FashionIQ)."""
    return set_name in ("cirr", "shoes")


def cir_ranks(query_set, scores: torch.Tensor) -> torch.Tensor:
    """1-based target rank of every query of ``query_set`` as its metric counts it."""
    exclude = query_set.reference_idx if excludes_reference(query_set.name) else None
    return target_ranks(scores.cpu(), query_set.target_idx, exclude_idx=exclude) + 1


def _ranking(query_set, row: torch.Tensor, query: int) -> list[int]:
    """Gallery rows by descending score; the reference moved to the end where the metric excludes it."""
    order = rank_gallery(row.unsqueeze(0))[0].tolist()
    if excludes_reference(query_set.name):
        reference = int(query_set.reference_idx[query])
        order = [index for index in order if index != reference] + [reference]
    return order


def _result_tiles(query_set, order: Sequence[int], target: int, top_k: int, image_path: ImagePath) -> list[Tile]:
    """The first ``top_k`` of ``order``, then the target with its rank when it is further down."""
    names = query_set.gallery_names
    tiles = [Tile(f"#{rank} {'target' if index == target else ''}".strip(), image_path(query_set.name, names[index]),
                  hit=index == target) for rank, index in enumerate(order[:top_k], 1)]
    if target not in order[:top_k]:
        tiles.append(Tile(f"target #{order.index(target) + 1}", image_path(query_set.name, names[target]), hit=True))
    return tiles


def cir_entry(query_set, scores: torch.Tensor, query: int, why: str, top_k: int, image_path: ImagePath) -> Entry:
    """The entry of one query: reference and caption, top-k row and, for CIRR, the subset row."""
    names, row = query_set.gallery_names, scores[query].cpu()
    reference, target = int(query_set.reference_idx[query]), int(query_set.target_idx[query])
    order = _ranking(query_set, row, query)
    rank = order.index(target) + 1
    rows = [Row(f"top {top_k}" + (" (reference excluded)" if excludes_reference(query_set.name) else ""),
                _result_tiles(query_set, order, target, top_k, image_path))]
    title = f"{query_set.name} query {query} · {why} · target rank {rank}"
    if query_set.members_idx is not None:
        members = [index for index in query_set.members_idx[query].tolist() if index != reference]
        subset = [index for index in order if index in members]
        rows.append(Row("subset (group members, reference excluded)",
                        _result_tiles(query_set, subset, target, len(subset), image_path)))
        title += f" · subset rank {subset.index(target) + 1}"
    query_tile = Tile("reference", image_path(query_set.name, names[reference]), text=query_set.captions[query])
    return Entry(title, query_tile, rows)


def cir_report(title: str, query_sets: Sequence, scores: Sequence[torch.Tensor], options: ReportOptions,
               image_path: ImagePath, notes: Sequence[str] = ()) -> Report:
    """The report of validation query sets (with targets) and their [Q, N] scores; the queries are picked over all
    sets together (FashionIQ: the three categories) by target rank."""
    pairs = [(set_number, query) for set_number, query_set in enumerate(query_sets)
             for query in range(len(query_set.captions))]
    ranks = torch.cat([cir_ranks(query_set, set_scores) for query_set, set_scores in zip(query_sets, scores)])
    chosen = select_queries(ranks.tolist(), options.queries, options.select, options.seed)
    entries = [cir_entry(query_sets[pairs[index][0]], scores[pairs[index][0]], pairs[index][1], why, options.top_k,
                         image_path) for index, why in chosen]
    picked = ", ".join(options.select)
    lines = [*notes, f"{len(entries)} of {len(pairs)} queries ({picked}; random seed {options.seed}); "
                     "the target is outlined in green, ranks count as the metrics do."]
    return Report(title, entries, lines)


def cir_image_paths(dataset: str, root: Path, split: str) -> ImagePath:
    """Image files of a CIR split by (query-set name, image name), through the dataset readers (one per set)."""
    from common.cir.data import FIQ_DRESS_TYPES, classic_dataset

    readers: dict[str, Callable[[str], Path]] = {}

    def image_path(set_name: str, name: str) -> Path:
        if set_name not in readers:
            dress_types = [set_name] if set_name in FIQ_DRESS_TYPES else FIQ_DRESS_TYPES
            readers[set_name] = classic_dataset(dataset, root, split, None, dress_types).image_path
        return readers[set_name](name)

    return image_path


def write_cir_report(options: ReportOptions, title: str, dataset: str, root: Path, split: str, query_sets: Sequence,
                     scores: Sequence[torch.Tensor], notes: Sequence[str] = ()) -> Path:
    """``cir_report`` with the images of ``dataset`` under ``root``, written to ``options.folder``."""
    report = cir_report(title, query_sets, scores, options, cir_image_paths(dataset, root, split), notes)
    return write_report(report, options.folder)
