"""The CLIP4Cir validation loop for FashionIQ, CIRR and Shoes: query sets (a gallery of image features and the
queries as gallery rows), composed-query scoring, and the metrics with the original keys.

Scores come from any model: ``query_scores`` for the CLIP4Cir composition (a combining function of the reference
feature and the caption feature), or any ``[Q, N]`` score matrix passed to ``set_metrics`` / ``evaluate``.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from common.cir.data import FIQ_DRESS_TYPES
from common.cir.frozen import encode_texts
from common.data.cir import fiq_val_caption
from common.io import PathLike, atomic_write_json, is_url
from common.metrics.cir import cirr_recalls, fiq_recalls, fiq_summary, index_of, shoes_recalls
from common.paper_numbers import note_metrics
from common.run_record import note_dataset

Combine = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GalleryEncoder = Callable[[Sequence[str]], tuple[torch.Tensor, list[str]]]
QueryDataset = Callable[[Sequence[str]], Dataset]
ReportHook = Callable[[Sequence["QuerySet"], list[torch.Tensor]], object]

__all__ = ["QuerySet", "build_query_sets", "composed_metrics_path", "dataset_items", "evaluate", "evaluate_composed",
           "metrics_json_path", "print_metrics", "query_scores", "query_set_from_items", "set_metrics",
           "validate_composed", "write_metrics"]


@dataclass
class QuerySet:
    """One evaluation split: its gallery features and its queries as gallery rows.

    ``name`` is the FashionIQ dress type, ``'cirr'`` or ``'shoes'``; targets are absent on CIRR test1, members
    on FashionIQ and Shoes, pairids everywhere but CIRR.
    """

    name: str
    gallery: torch.Tensor
    gallery_names: list[str]
    reference_idx: torch.Tensor
    captions: list[str]
    target_idx: torch.Tensor | None = None
    members_idx: torch.Tensor | None = None
    pairids: list[int] | None = None


def query_set_from_items(name: str, items: Sequence[tuple], gallery: torch.Tensor, gallery_names: list[str],
                         test: bool = False) -> QuerySet:
    """A query set from the val (or CIRR ``test``) items of a relative dataset: FashionIQ ``(reference, target,
    captions)`` with the fixed "C1 and c2" query, Shoes ``(reference, target, caption)``, CIRR val ``(reference,
    target, caption, members)`` and test1 ``(pairid, reference, caption, members)``."""
    if name in FIQ_DRESS_TYPES:
        references, targets, captions = zip(*items)
        return QuerySet(name, gallery, gallery_names, index_of(references, gallery_names),
                        [fiq_val_caption(pair) for pair in captions], target_idx=index_of(targets, gallery_names))
    if name == "shoes":
        references, targets, captions = zip(*items)
        return QuerySet(name, gallery, gallery_names, index_of(references, gallery_names), list(captions),
                        target_idx=index_of(targets, gallery_names))
    if test:
        pairids, references, captions, members = zip(*items)
        return QuerySet(name, gallery, gallery_names, index_of(references, gallery_names), list(captions),
                        members_idx=index_of(members, gallery_names), pairids=list(pairids))
    references, targets, captions, members = zip(*items)
    return QuerySet(name, gallery, gallery_names, index_of(references, gallery_names), list(captions),
                    target_idx=index_of(targets, gallery_names), members_idx=index_of(members, gallery_names))


def dataset_items(dataset: Dataset) -> list[tuple]:
    """Every item of a val or test relative dataset (they name images, they carry none)."""
    return [dataset[index] for index in range(len(dataset))]


def build_query_sets(name: str, split: str, encode_gallery: GalleryEncoder, queries: QueryDataset,
                     items_of: Callable[[Dataset], list[tuple]] = dataset_items) -> list[QuerySet]:
    """One query set per FashionIQ dress type in CLIP4Cir's order (dress, toptee, shirt), or one CIRR / Shoes set.

    ``encode_gallery(dress_types)`` returns the gallery features and names of the split (collective under
    torchrun); ``queries(dress_types)`` the relative dataset whose items (``items_of``) name the references and
    targets. ``dress_types`` is empty for CIRR and Shoes.
    """
    groups = [[dress_type] for dress_type in FIQ_DRESS_TYPES] if name == "fashioniq" else [[]]
    query_sets = []
    for dress_types in groups:
        gallery, names = encode_gallery(dress_types)
        items = items_of(queries(dress_types))
        set_name = dress_types[0] if dress_types else name
        note_dataset(set_name, split, queries=len(items), gallery=len(names))
        query_sets.append(query_set_from_items(set_name, items, gallery, names, test=split.startswith("test")))
    return query_sets


@torch.no_grad()
def query_scores(query_set: QuerySet, text_features: torch.Tensor, combine: Combine) -> torch.Tensor:
    """[Q, N] cosine scores of the normalised compositions against the normalised gallery."""
    references = query_set.gallery[query_set.reference_idx.to(query_set.gallery.device)]
    predicted = F.normalize(combine(references, text_features.to(references.device)).float(), dim=-1)
    return predicted @ F.normalize(query_set.gallery.float(), dim=-1).T


def set_metrics(query_set: QuerySet, scores: torch.Tensor) -> dict[str, float]:
    """The metrics of one query set from its [Q, N] scores: FashionIQ ``recall_at10/50``, Shoes ``recall_at1/10/50``
    and ``recall_mean`` (reference excluded), CIRR recalls, group recalls and means (reference excluded)."""
    scores = scores.cpu()
    if query_set.name == "cirr":
        return cirr_recalls(scores, query_set.reference_idx, query_set.target_idx, query_set.members_idx)
    if query_set.name == "shoes":
        return shoes_recalls(scores, query_set.reference_idx, query_set.target_idx)
    return fiq_recalls(scores, query_set.target_idx)


def evaluate(query_sets: Sequence[QuerySet], scores: Sequence[torch.Tensor]) -> dict[str, float]:
    """Validation metrics with the original keys: per-category FashionIQ recalls and their averages
    (``fiq_summary``), or the CIRR / Shoes metrics. ``scores[i]`` scores ``query_sets[i]``."""
    if query_sets[0].name in ("cirr", "shoes"):
        return set_metrics(query_sets[0], scores[0])
    return fiq_summary({query_set.name: set_metrics(query_set, set_scores)
                        for query_set, set_scores in zip(query_sets, scores)})


def evaluate_composed(query_sets: Sequence[QuerySet], text_features: Sequence[torch.Tensor],
                      combine: Combine) -> dict[str, float]:
    """``evaluate`` of the CLIP4Cir composition: ``text_features[i]`` encodes ``query_sets[i].captions`` and
    ``combine(reference features, text features)`` gives the predicted target features."""
    return evaluate(query_sets, [query_scores(query_set, features, combine)
                                 for query_set, features in zip(query_sets, text_features)])


def print_metrics(dataset: str, metrics: dict[str, float]) -> None:
    """CLIP4Cir's printout, rounded: FashionIQ categories in the order shirt, dress, toptee, then the two averages;
    every ``key = value`` for CIRR and Shoes."""
    if dataset != "fashioniq":
        for key, value in metrics.items():
            print(f"{key} = {value:.2f}")
        return
    for dress_type in ("shirt", "dress", "toptee"):
        print(f"{dress_type}_recallat10 = {metrics[f'{dress_type}_recall_at10']:.2f}")
        print(f"{dress_type}_recallat50 = {metrics[f'{dress_type}_recall_at50']:.2f}")
    print(f"average recall10 = {metrics['average_recall_at10']:.2f}")
    print(f"average recall50 = {metrics['average_recall_at50']:.2f}")


def metrics_json_path(explicit: PathLike | None, checkpoints: Sequence[PathLike | None], suffix: str) -> Path:
    """``explicit`` (``--metrics-json``), else ``<stem>_<suffix>.json`` next to the first of ``checkpoints`` that is
    given (the most specific checkpoint evaluated); in the current folder for a URL or a model name."""
    if explicit:
        return Path(explicit)
    checkpoint = next(str(path) for path in checkpoints if path)
    folder = Path(".") if is_url(checkpoint) else Path(checkpoint).parent
    stem = Path(checkpoint.rsplit("/", 1)[-1]).stem
    return folder / f"{stem}_{suffix}.json"


def composed_metrics_path(args: argparse.Namespace, checkpoints: Sequence[PathLike | None], short_name: str) -> Path:
    """``--metrics-json``, else ``<stem>_val_<short_name>_<combining-function>.json`` next to the most specific
    checkpoint evaluated: the Combiner (with ``--combining-function combiner``), then the first of ``checkpoints``."""
    combiner = args.combiner_path if args.combining_function == "combiner" else None
    return metrics_json_path(args.metrics_json, (combiner, *checkpoints),
                             f"val_{short_name}_{args.combining_function}")


def write_metrics(dataset: str, metrics: dict[str, float], path: Path) -> None:
    """Print ``metrics`` as CLIP4Cir does (``print_metrics``), then write them to the JSON file ``path``."""
    print_metrics(dataset, metrics)
    atomic_write_json(metrics, path, indent=2)
    print(f"metrics written to {path}")
    note_metrics(dataset, "val", metrics, path)


def validate_composed(dataset: str, query_sets: Sequence[QuerySet], text_encoder: Callable[[list[str]], torch.Tensor],
                      combine: Combine, path: Path, is_main: bool,
                      report: ReportHook | None = None) -> dict[str, float] | None:
    """The ending of the validate scripts: on the main process, the metrics of ``query_sets`` with their captions
    encoded by ``text_encoder``, printed and written to ``path``, then ``report(query_sets, scores)`` when given
    (``--report``, from the same scores); ``None`` on the other processes."""
    if not is_main:
        return None
    scores = [query_scores(s, encode_texts(text_encoder, s.captions), combine) for s in query_sets]
    metrics = evaluate(query_sets, scores)
    write_metrics(dataset, metrics, path)
    if report is not None:
        report(query_sets, scores)
    return metrics
