"""The gallery index of the search demo and its ranking: a query is a reference (a gallery image or an uploaded
one) plus a modification text; a ``SearchModel`` (one per paper) scores it against the gallery."""
from __future__ import annotations

import io
import itertools
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import torch
from PIL import Image, UnidentifiedImageError

IMAGE_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}
"""The upload formats accepted (PIL format name -> content type)."""
MAX_KEPT_UPLOADS = 32


class UploadError(ValueError):
    """An upload that is not a JPEG or PNG image, or is too large (``status`` is the HTTP status to answer)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class GalleryImage:
    """One searchable image: its dataset name, its group (the FashionIQ category, else the dataset) and its file."""

    name: str
    group: str
    path: Path


@dataclass(frozen=True)
class Result:
    """One retrieved image: its rank (1-based), gallery id and score of the stage that ordered it."""

    rank: int
    id: int
    score: float


class SearchModel(Protocol):
    """What a paper plugs into the demo.

    ``gallery`` holds one row per image of ``images`` (features, or ViT tokens) in the representation that
    ``scores`` takes as a reference; ``encode_image`` turns an uploaded image into such a row.
    """

    images: list[GalleryImage]
    gallery: torch.Tensor
    stages: tuple[str, ...]

    def encode_image(self, image: Image.Image) -> torch.Tensor:
        """The gallery-row representation ``[1, ...]`` of an uploaded image."""

    def scores(self, reference: torch.Tensor, caption: str) -> torch.Tensor:
        """Stage-1 scores ``[N]`` of (reference row ``[1, ...]``, caption) against every gallery image."""

    def rescore(self, reference: torch.Tensor, caption: str, candidates: torch.Tensor) -> torch.Tensor:
        """Second-stage scores ``[K]`` of the gallery rows ``candidates`` (only when ``stages`` has two)."""


def decode_upload(data: bytes, content_type: str | None, max_bytes: int) -> Image.Image:
    """The RGB image of an upload; ``UploadError`` (413 when too large, else 400) unless it is a JPEG or PNG of at
    most ``max_bytes`` whose declared content type matches what PIL decodes."""
    if len(data) > max_bytes:
        raise UploadError(f"the upload is {len(data)} bytes; at most {max_bytes} bytes are accepted", 413)
    declared = (content_type or "").split(";")[0].strip().lower()
    if declared not in IMAGE_FORMATS.values():
        raise UploadError(f"content type {declared or 'none'!r} is not accepted; send image/jpeg or image/png")
    try:
        image = Image.open(io.BytesIO(data), formats=list(IMAGE_FORMATS))  # no other decoder sees the bytes
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, ValueError) as error:
        raise UploadError(f"the upload is not a readable JPEG or PNG image ({error})") from error
    if IMAGE_FORMATS.get(image.format or "") != declared:
        raise UploadError(f"the upload is a {image.format or 'unknown'} file, declared as {declared}; "
                          "send a JPEG or PNG image with its own content type")
    return image.convert("RGB")


class SearchEngine:
    """Ranks the gallery of ``model`` for a query and keeps uploaded references in memory (never on disk).

    A gallery reference is left out of its own results and ranks only its group (FashionIQ category), as the
    validation does; an uploaded reference ranks the whole gallery. ``rerank_depth`` candidates of stage 1 are
    re-scored by the second stage.
    """

    def __init__(self, model: SearchModel, rerank_depth: int = 50, max_uploads: int = MAX_KEPT_UPLOADS):
        self.model, self.rerank_depth, self.max_uploads = model, rerank_depth, max_uploads
        self.groups = [image.group for image in model.images]
        self.uploads: OrderedDict[str, tuple[torch.Tensor, bytes, str]] = OrderedDict()
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.model.images)

    def find(self, text: str = "", offset: int = 0, limit: int = 24) -> tuple[int, list[int]]:
        """(number of matches, ids ``offset..offset+limit``) of the gallery images whose name contains ``text``."""
        needle = text.strip().lower()
        ids = [i for i, image in enumerate(self.model.images) if needle in image.name.lower()]
        return len(ids), ids[offset:offset + limit]

    def add_upload(self, data: bytes, content_type: str | None, max_bytes: int) -> str:
        """Encode an uploaded image and keep it (the last ``max_uploads``) under a new token, returned."""
        image = decode_upload(data, content_type, max_bytes)
        with self._lock:
            row = self.model.encode_image(image)
            token = f"u{next(self._ids)}"
            self.uploads[token] = (row, data, content_type.split(";")[0].strip().lower())
            while len(self.uploads) > self.max_uploads:
                self.uploads.popitem(last=False)
        return token

    def upload(self, token: str) -> tuple[bytes, str] | None:
        """The bytes and content type of a kept upload, or None."""
        kept = self.uploads.get(token)
        return None if kept is None else kept[1:]

    def reference_row(self, reference: int | str) -> torch.Tensor:
        """The gallery row of an id or an upload token; ``KeyError`` for an unknown one."""
        if isinstance(reference, str):
            if reference not in self.uploads:
                raise KeyError(f"unknown upload {reference!r} (uploads are kept in memory; upload it again)")
            return self.uploads[reference][0]
        if not 0 <= reference < len(self):
            raise KeyError(f"unknown gallery id {reference}; ids run from 0 to {len(self) - 1}")
        return self.model.gallery[reference:reference + 1]

    def candidates(self, reference: int | str) -> torch.Tensor:
        """Bool ``[N]``: the gallery images a query with this reference may retrieve."""
        allowed = torch.ones(len(self), dtype=torch.bool)
        if isinstance(reference, int):
            group = self.groups[reference]
            allowed = torch.tensor([g == group for g in self.groups])
            allowed[reference] = False
        return allowed

    @torch.no_grad()
    def search(self, reference: int | str, caption: str, top_k: int, stage: str | None = None) -> list[Result]:
        """The top ``top_k`` of the query (``stage``: one of ``model.stages``, default the first)."""
        stage = stage or self.model.stages[0]
        if stage not in self.model.stages:
            raise KeyError(f"unknown stage {stage!r}; this model has {', '.join(self.model.stages)}")
        with self._lock:
            row = self.reference_row(reference)
            scores = self.model.scores(row, caption).float().cpu()
            allowed = self.candidates(reference)
            ranked = rank_allowed(scores, allowed)
            if stage != self.model.stages[0]:
                return self._rerank(row, caption, ranked, top_k)
        return [Result(rank, int(i), float(scores[i])) for rank, i in enumerate(ranked[:top_k].tolist(), 1)]

    def _rerank(self, row: torch.Tensor, caption: str, ranked: torch.Tensor, top_k: int) -> list[Result]:
        """Stage 1's first ``max(rerank_depth, top_k)`` ids re-ordered by the second stage (ties keep stage-1
        order), cut to ``top_k``."""
        head = ranked[:max(self.rerank_depth, top_k)]
        scores = self.model.rescore(row, caption, head).float().cpu()
        order = torch.sort(scores, descending=True, stable=True).indices[:top_k]
        return [Result(rank, int(head[j]), float(scores[j])) for rank, j in enumerate(order.tolist(), 1)]


def rank_allowed(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Gallery ids by descending score among the ``allowed`` ones (ties keep the gallery order)."""
    ids = allowed.nonzero().flatten()
    return ids[torch.sort(scores[ids], descending=True, stable=True).indices]


def group_images(names: Sequence[str], group: str, paths: Sequence[Path]) -> list[GalleryImage]:
    """``GalleryImage`` rows of one group."""
    return [GalleryImage(name, group, Path(path)) for name, path in zip(names, paths)]
