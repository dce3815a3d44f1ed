"""The test-time classification report (RA-TTA): per test image its zero-shot top-5 classes and the adapted
top-5, the true class outlined, and the DB images retrieved for each description set when the DB rows carry paths."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from common.report.args import ReportOptions
from common.report.page import Entry, Report, Row, Tile, write_report
from common.report.select import select_queries

__all__ = ["Retrieved", "classification_report", "label_ranks", "write_classification_report"]

CLASS_TOP = 5
SETS_SHOWN = 3


@dataclass
class Retrieved:
    """The DB rows one test image retrieved: ``ids[j]`` for the description set of class ``classes[j]``, whose
    relevance weight is ``weights[j]``."""

    classes: list[int]
    ids: list[list[int]]
    weights: list[float]


def label_ranks(probs: torch.Tensor, labels: torch.Tensor) -> list[int]:
    """1-based rank of each true label among the classes by descending probability (ties by class index)."""
    probs = probs.float()
    own = probs.gather(1, labels[:, None])
    before = torch.arange(probs.shape[1])[None, :] < labels[:, None]
    return (1 + (probs > own).sum(1) + ((probs == own) & before).sum(1)).tolist()


def _class_row(title: str, probs: torch.Tensor, label: int, classnames: Sequence[str]) -> Row:
    order = torch.sort(probs.float(), descending=True, stable=True).indices.tolist()
    tiles = [Tile(f"#{rank} ({probs[c]:.2f})", text=classnames[c], hit=c == label)
             for rank, c in enumerate(order[:CLASS_TOP], 1)]
    if label not in order[:CLASS_TOP]:
        tiles.append(Tile(f"true #{order.index(label) + 1} ({probs[label]:.2f})", text=classnames[label], hit=True))
    return Row(title, tiles)


def _retrieved_rows(found: Retrieved, label: int, classnames: Sequence[str], db_paths: Sequence[Path],
                    top_k: int) -> list[Row]:
    """The sets with the largest weights first, ``top_k`` images each."""
    order = sorted(range(len(found.classes)), key=lambda j: -found.weights[j])[:SETS_SHOWN]
    rows = []
    for j in order:
        name = classnames[found.classes[j]]
        tiles = [Tile(f"#{rank}", db_paths[i], hit=found.classes[j] == label)
                 for rank, i in enumerate(found.ids[j][:top_k], 1)]
        rows.append(Row(f"DB images retrieved for the '{name}' descriptions (weight {found.weights[j]:.2f})", tiles))
    return rows


def classification_report(title: str, labels: torch.Tensor, zero_shot: torch.Tensor, adapted: torch.Tensor,
                          classnames: Sequence[str], options: ReportOptions,
                          image_paths: Sequence[Path] | None = None, retrieved: Sequence[Retrieved] | None = None,
                          db_paths: Sequence[Path] | None = None, notes: Sequence[str] = ()) -> Report:
    """``zero_shot`` / ``adapted``: [N, C] class probabilities; samples picked by the rank of their true class
    after adaptation. Without ``image_paths`` the test image is named, not shown; retrieved DB images appear when
    both ``retrieved`` and ``db_paths`` are given."""
    ranks = label_ranks(adapted, labels)
    zero_shot_ranks = label_ranks(zero_shot, labels)
    chosen = select_queries(ranks, options.queries, options.select, options.seed)
    entries = []
    for sample, why in chosen:
        label = int(labels[sample])
        rows = [_class_row(f"zero-shot top {CLASS_TOP}", zero_shot[sample], label, classnames),
                _class_row(f"adapted top {CLASS_TOP}", adapted[sample], label, classnames)]
        if retrieved is not None and db_paths is not None:
            rows += _retrieved_rows(retrieved[sample], label, classnames, db_paths, options.top_k)
        path = image_paths[sample] if image_paths is not None else None
        query = Tile(f"test image {sample}", path, text=f"true class: {classnames[label]}")
        heading = (f"sample {sample} · {why} · true class rank #{zero_shot_ranks[sample]} → #{ranks[sample]}")
        entries.append(Entry(heading, query, rows))
    lines = [*notes, f"{len(entries)} of {len(labels)} test images ({', '.join(options.select)} by the rank of the "
                     f"true class after adaptation; random seed {options.seed}); the true class is outlined in "
                     "green, DB images outlined when retrieved for the true class."]
    return Report(title, entries, lines)


def write_classification_report(options: ReportOptions, title: str, labels: torch.Tensor, zero_shot: torch.Tensor,
                                adapted: torch.Tensor, classnames: Sequence[str],
                                image_paths: Sequence[Path] | None = None,
                                retrieved: Sequence[Retrieved] | None = None, db_paths: Sequence[Path] | None = None,
                                notes: Sequence[str] = ()) -> Path:
    """``classification_report`` written to ``options.folder``."""
    report = classification_report(title, labels, zero_shot, adapted, classnames, options, image_paths, retrieved,
                                    db_paths, notes)
    return write_report(report, options.folder)
