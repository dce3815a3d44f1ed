"""The image-text retrieval report of test-time adaptation: the same queries before (source model) and after
adaptation, i2t (an image, the captions it retrieves) or t2i (a caption, the images it retrieves), with the rank
of the first correct item as the recall metrics count it."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from common.report.args import ReportOptions
from common.report.page import Entry, Report, Row, Tile, write_report
from common.report.select import select_queries

__all__ = ["first_positive_ranks", "retrieval_report", "write_retrieval_report"]


def first_positive_ranks(scores: torch.Tensor, positives: Sequence[Sequence[int]]) -> list[int]:
    """1-based rank of each query's best-ranked positive in the stable descending order (ties by gallery index),
    counted row by row without sorting: the items scored above it, plus the tied ones before it."""
    ranks = []
    for row, wanted in zip(scores.float().cpu(), positives):
        wanted = torch.as_tensor(sorted(wanted), dtype=torch.long)
        best = row[wanted].max()
        first = wanted[row[wanted] == best].min()
        ranks.append(1 + int((row > best).sum()) + int((row[:first] == best).sum()))
    return ranks


def _text(value: Any) -> str:
    return value if isinstance(value, str) else f"(token row of {len(value)})"


class _Items:
    """Tiles of the two sides: images by path, captions by text."""

    def __init__(self, image_paths: Sequence[Path], texts: Sequence[Any]):
        self.image_paths, self.texts = image_paths, texts

    def tile(self, kind: str, index: int, label: str, hit: bool = False) -> Tile:
        if kind == "image":
            return Tile(label, self.image_paths[index], hit=hit)
        return Tile(label, text=_text(self.texts[index]), hit=hit)


def _row(title: str, scores: torch.Tensor, positives: set[int], kind: str, items: _Items, top_k: int) -> Row:
    order = torch.sort(scores.float().cpu(), descending=True, stable=True).indices.tolist()
    tiles = [items.tile(kind, index, f"#{rank}" + (" ✓" if index in positives else ""), index in positives)
             for rank, index in enumerate(order[:top_k], 1)]
    first = next(rank for rank, index in enumerate(order, 1) if index in positives)
    if first > top_k:
        tiles.append(items.tile(kind, order[first - 1], f"first correct #{first}", True))
    return Row(title, tiles)


def retrieval_report(title: str, direction: str, before: torch.Tensor, after: torch.Tensor,
                     image_paths: Sequence[Path], texts: Sequence[Any], img2txt: Sequence[Sequence[int]],
                     txt2img: Sequence[Sequence[int]], options: ReportOptions, notes: Sequence[str] = ()) -> Report:
    """``before`` / ``after``: [N_query, N_gallery] scores of the source and the adapted model, queries being images
    (``direction='i2t'``) or captions (``'t2i'``); queries are picked by their rank after adaptation."""
    positives = img2txt if direction == "i2t" else txt2img
    query_kind, gallery_kind = ("image", "text") if direction == "i2t" else ("text", "image")
    items = _Items(image_paths, texts)
    ranks_before, ranks_after = first_positive_ranks(before, positives), first_positive_ranks(after, positives)
    chosen = select_queries(ranks_after, options.queries, options.select, options.seed)
    entries = []
    for query, why in chosen:
        wanted = set(positives[query])
        rows = [_row(f"before adaptation (source model) top {options.top_k}", before[query], wanted, gallery_kind,
                     items, options.top_k),
                _row(f"after adaptation top {options.top_k}", after[query], wanted, gallery_kind, items,
                     options.top_k)]
        heading = f"{direction} query {query} · {why} · rank #{ranks_before[query]} → #{ranks_after[query]}"
        entries.append(Entry(heading, items.tile(query_kind, query, "query"), rows))
    lines = [*notes, f"{len(entries)} of {len(positives)} queries ({', '.join(options.select)} by the rank after "
                     f"adaptation; random seed {options.seed}); correct items are outlined in green and marked ✓, "
                     "ranks are those of the first correct item."]
    return Report(title, entries, lines)


def write_retrieval_report(options: ReportOptions, title: str, direction: str, before: torch.Tensor,
                           after: torch.Tensor, image_paths: Sequence[Path], texts: Sequence[Any],
                           img2txt: Sequence[Sequence[int]], txt2img: Sequence[Sequence[int]],
                           notes: Sequence[str] = ()) -> Path:
    """``retrieval_report`` written to ``options.folder``."""
    report = retrieval_report(title, direction, before, after, image_paths, texts, img2txt, txt2img, options, notes)
    return write_report(report, options.folder)
