"""Stage-1 top-K files in Candidate-Reranking-CIR's pickled layout (``src/validate.py`` writes them, the stage-2
dataset classes of ``src/data_utils.py`` read them), with the original loader checks, each naming the file.

| key | CIRR val/train | CIRR test1 | FashionIQ val/train |
|---|---|---|---|
| ``sorted_index_names`` | numpy str [N, k], reference removed | same | numpy str [N, k], reference kept |
| ``target_names`` | list[str] N | - | list[str] N |
| ``index_names`` | list[str] M | list[str] M | list[str] M |
| ``labels`` | torch.bool [N, k] | - | torch.bool [N, k] |
| ``group_labels`` | torch.bool [N, 5] (non-reference members, stage-1 order) | - | - |
| ``split`` | "val"/"train" | "test1" | "val"/"train" |
| ``dress_types`` | - | - | e.g. "dress" |
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from common.errors import InputError
from common.io import PathLike, atomic_torch_save, load_torch_file
from reranking_cir.rerank import LARGEST_RECALL


class TopKError(InputError, ValueError):
    """A top-K file that does not fit the split, category, gallery or K it is used with."""


@dataclass
class TopK:
    """One top-K file; ``sorted_index_names`` row i is query i's stage-1 ranking (caption-file order)."""

    sorted_index_names: np.ndarray
    index_names: list[str]
    split: str
    target_names: list[str] | None = None
    labels: torch.Tensor | None = None
    group_labels: torch.Tensor | None = None
    dress_type: str | None = None

    @property
    def width(self) -> int:
        return self.sorted_index_names.shape[1]

    def index_rows(self, k: int) -> torch.Tensor:
        """The first ``k`` columns as rows of ``index_names`` ``[N, k]``."""
        rows = {name: row for row, name in enumerate(self.index_names)}
        return torch.tensor([[rows[name] for name in line] for line in self.sorted_index_names[:, :k].tolist()],
                            dtype=torch.long)


def save_topk(topk: TopK, path: PathLike) -> Path:
    """Write ``topk`` in the original dict layout (atomically)."""
    payload: dict = {"sorted_index_names": np.asarray(topk.sorted_index_names, dtype=str),
                     "index_names": list(topk.index_names), "split": topk.split}
    if topk.target_names is not None:
        payload.update(target_names=list(topk.target_names), labels=topk.labels.bool())
    if topk.group_labels is not None:
        payload["group_labels"] = topk.group_labels.bool()
    if topk.dress_type is not None:
        payload["dress_types"] = topk.dress_type
    return atomic_torch_save(payload, path)


def read_topk(path: PathLike) -> TopK:
    """Read a top-K file (ours or the released ones, pickled under NumPy 1.x or 2) without unpickling anything but
    tensors and NumPy arrays (``common.io.load_torch_file``); an empty or truncated file is reported as such."""
    path = Path(path)
    payload = load_torch_file(path, what="top-K file")
    required = ("sorted_index_names", "index_names", "split")
    missing = [key for key in required if not isinstance(payload, dict) or key not in payload]
    if missing:
        raise TopKError(f"{path}: lacks {missing}; expected a top-K dict with keys {list(required)} "
                        "(validate.py --save-topk)")
    names = np.asarray(payload["sorted_index_names"])
    if names.ndim != 2:
        raise TopKError(f"{path}: sorted_index_names has shape {names.shape}, expected [queries, k]")
    labels = payload.get("labels")
    if labels is not None and tuple(labels.shape) != names.shape:
        raise TopKError(f"{path}: labels {tuple(labels.shape)} do not match sorted_index_names {names.shape}")
    return TopK(names, list(payload["index_names"]), payload["split"], payload.get("target_names"),
                labels.bool() if labels is not None else None, payload.get("group_labels"),
                payload.get("dress_types"))


def load_topk(path: PathLike, *, k: int, split: str, index_names: Sequence[str], n_queries: int,
              target_names: Sequence[str] | None = None, dress_type: str | None = None) -> TopK:
    """Read ``path`` and check it against the evaluation it feeds, as the original dataset classes do:
    ``k`` <= its width, the split, the FashionIQ category, the gallery names (same order), one row per query and,
    where known, the targets of every query. With targets (recalls will be measured), also that it holds the stage-1
    ranks up to ``LARGEST_RECALL`` (or the whole ranking), which the recalls of the re-ranked lists read."""
    topk = read_topk(path)
    if k > topk.width:
        raise TopKError(f"{path}: holds the top {topk.width} per query, fewer than the requested K = {k}")
    if topk.split != split:
        raise TopKError(f"{path}: is a top-K of split {topk.split!r}, expected {split!r}")
    if dress_type is not None and topk.dress_type != dress_type:
        raise TopKError(f"{path}: is a top-K of FashionIQ category {topk.dress_type!r}, expected {dress_type!r}")
    if list(topk.index_names) != list(index_names):
        raise TopKError(f"{path}: its index_names ({len(topk.index_names)}) differ from the {len(index_names)} "
                        f"gallery images of split {split!r}")
    if len(topk.sorted_index_names) != n_queries:
        raise TopKError(f"{path}: holds {len(topk.sorted_index_names)} rows for the {n_queries} queries of split "
                        f"{split!r}")
    if target_names is not None and (topk.target_names is None or list(topk.target_names) != list(target_names)):
        raise TopKError(f"{path}: its target_names differ from the targets of the {len(target_names)} queries of "
                        f"split {split!r} (caption file order)")
    needed = min(LARGEST_RECALL, len(index_names) - (topk.dress_type is None))  # CIRR: the reference is left out
    if target_names is not None and topk.width < needed:
        raise TopKError(f"{path}: holds the stage-1 top {topk.width} per query, but R@{LARGEST_RECALL} of the "
                        f"re-ranked lists (re-ranked top K, then stage-1 ranks K+1..) needs the top {needed}; write "
                        f"the file with validate.py --save-topk --k {needed} or more")
    return topk


def build_topk(order: torch.Tensor, index_names: Sequence[str], split: str, k: int,
               target_idx: torch.Tensor | None = None, group_idx: torch.Tensor | None = None,
               dress_type: str | None = None) -> TopK:
    """A ``TopK`` from stage-1 rankings ``order`` ``[N, W]`` (gallery rows, best first; the CIRR reference already
    removed); ``group_idx`` ``[N, 5]`` are the non-reference members in stage-1 order."""
    if k > order.shape[1]:
        raise ValueError(f"--k {k} exceeds the {order.shape[1]} ranked gallery images")
    names = np.asarray(index_names, dtype=str)
    top = order[:, :k]
    topk = TopK(names[top.numpy()], list(index_names), split, dress_type=dress_type)
    if target_idx is not None:
        topk.target_names = [index_names[i] for i in target_idx.tolist()]
        topk.labels = top == target_idx.unsqueeze(1)
        if group_idx is not None:
            topk.group_labels = group_idx == target_idx.unsqueeze(1)
    return topk
