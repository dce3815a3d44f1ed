"""Karpathy-format image–text retrieval test sets (COCO, Flickr30k) in BLIP's JSON format.

An annotation file is a JSON list of ``{"image": relative path, "caption": [str, ...], ...}``. Text ids run over
the images in file order, captions in order, so with 5 captions per image text id = 5·image + k.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, NamedTuple

from torch.utils.data import Dataset

from common.data.images import open_image
from common.errors import InvalidValue
from common.io import MalformedFileError, PathLike, read_json

RETRIEVAL_FILES = {"coco": ("coco_karpathy_test.json", 5), "flickr": ("flickr30k_test.json", None)}
"""name → (annotation file under ann_root, captions kept per image; None keeps all)."""


def pre_caption(caption: Any, max_words: int = 50) -> Any:
    """BLIP/TCR caption cleaning: join a list with spaces, lowercase, turn ``.!"()*#:;~`` into spaces, collapse
    whitespace runs, strip, keep the first ``max_words`` words. Other input types come back unchanged."""
    if isinstance(caption, list):
        caption = " ".join(caption)
    if not isinstance(caption, str):
        return caption
    caption = re.sub(r"([.!\"()*#:;~])", " ", caption.lower())
    caption = re.sub(r"\s{2,}", " ", caption)
    caption = caption.rstrip("\n").strip(" ")
    words = caption.split(" ")
    if len(words) > max_words:
        caption = " ".join(words[:max_words])
    return caption


class KarpathyRetrieval:
    """Parsed annotation: ``images`` (relative paths), ``texts`` (cleaned captions), ``img2txt`` (image id → list of
    text ids) and ``txt2img`` (text id → list of image ids, one each here).

    ``max_captions`` keeps the first k captions per image (TCR keeps 5 on COCO: 25,000 texts instead of 25,010).
    """

    def __init__(self, ann_file: PathLike, max_words: int = 30, max_captions: int | None = None):
        self.ann_file = Path(ann_file)
        what = 'a JSON list of {"image": path, "caption": [str, ...]} objects (BLIP Karpathy format)'
        annotation = read_json(self.ann_file, what)
        if not isinstance(annotation, list):
            raise MalformedFileError(f"{self.ann_file}: expected {what}")
        self.images: list[str] = []
        self.texts: list[str] = []
        self.img2txt: list[list[int]] = []
        self.txt2img: list[list[int]] = []
        for img_id, entry in enumerate(annotation):
            captions = entry.get("caption") if isinstance(entry, dict) else None
            if not isinstance(entry, dict) or not isinstance(entry.get("image"), str) or not isinstance(captions, list):
                raise MalformedFileError(f"{self.ann_file}: entry {img_id} is not of the form {what}")
            self.images.append(entry["image"])
            self.img2txt.append([])
            for caption in captions[:max_captions]:
                self.img2txt[img_id].append(len(self.texts))
                self.txt2img.append([img_id])
                self.texts.append(pre_caption(caption, max_words))


class RetrievalImageDataset(Dataset):
    """Images of a retrieval set: item ``(transform(RGB image), image id)``."""

    def __init__(self, ann: KarpathyRetrieval, image_root: PathLike, transform: Callable):
        self.ann = ann
        self.image_root = Path(image_root)
        if not self.image_root.is_dir():
            raise FileNotFoundError(f"{self.image_root}: image folder not found (images of {ann.ann_file})")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ann.images)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = open_image(self.image_root / self.ann.images[index]).convert("RGB")
        return self.transform(image), index


class RetrievalTextDataset(Dataset):
    """Captions of a retrieval set: item ``(cleaned caption, text id)``."""

    def __init__(self, ann: KarpathyRetrieval):
        self.ann = ann

    def __len__(self) -> int:
        return len(self.ann.texts)

    def __getitem__(self, index: int) -> tuple[str, int]:
        return self.ann.texts[index], index


class RetrievalEval(NamedTuple):
    ann: KarpathyRetrieval
    images: RetrievalImageDataset
    texts: RetrievalTextDataset


def build_retrieval_eval(name: str, ann_root: PathLike, image_root: PathLike, transform: Callable,
                         max_words: int = 30) -> RetrievalEval:
    """The ``coco`` or ``flickr`` test set: annotation from ``ann_root``, images under ``image_root``."""
    if name not in RETRIEVAL_FILES:
        raise InvalidValue(f"unknown retrieval dataset {name!r}; valid names: {', '.join(RETRIEVAL_FILES)}")
    file_name, max_captions = RETRIEVAL_FILES[name]
    ann = KarpathyRetrieval(Path(ann_root) / file_name, max_words=max_words, max_captions=max_captions)
    return RetrievalEval(ann, RetrievalImageDataset(ann, image_root, transform), RetrievalTextDataset(ann))
