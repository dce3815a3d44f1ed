"""TCR's test sets (the original's ``data/*_dataset.py``): one registry from a config to
``(image dataset, text dataset)``.

Every dataset pair shares one annotation with ``images`` (paths relative to the image folder), ``texts`` (cleaned
captions; for PEDES a ``[N, 77]`` LongTensor of CLIP BPE ids), ``img2txt`` (image id → list of text ids) and
``txt2img`` (text id → list of image ids). Image items are ``(tensor, image id)``, text items ``(caption, text id)``.

- ``coco``, ``flickr``: BLIP's Karpathy JSON under ``ann_root`` (``common.data.retrieval``); COCO keeps the first
  5 captions per image.
- ``nocaps_{in,near,out}_domain``, ``nocaps_entire_domain``: ``ann_root/annotations.json``, a list of ``{image,
  caption: [...], domain}`` from the authors' download, filtered on ``domain`` (``entire`` keeps all).
- ``fashion_gen``, ``fashion_gen_detail``: one pickle per image in ``image_root/full_valid_info_PAI/`` (sorted by
  file name) with ``img_name``, ``captions`` and ``super_cls_id``; images in ``image_root/extracted_valid_images/``.
  Records are grouped by product id (``img_name`` up to the first ``_``), products in first-seen order; each record
  adds its image and its caption (a list of captions adds one text per caption, as the original extends the
  product's caption list), duplicates kept; every image of a product is relevant to every caption of it.
  ``fashion_gen_detail`` keeps records with ``super_cls_id == '21'``.
- ``cuhk_pedes``, ``icfg_pedes``: IRRA's JSON (``image_root/reid_raw.json`` or ``image_root/ICFG-PEDES.json``), the
  ``split == 'test'`` records grouped by person ``id`` (persons in first-seen order, records in file order within
  a person, for images and texts alike, as the original builds them), images in ``image_root/imgs/``; captions are
  tokenised with CLIP's BPE at length 77 (SOT, tokens, EOT; an over-long caption is cut and ends in EOT), matched
  by person ``id`` many-to-many. IRRA swaps the last merge token of the vocabulary (id 49405) for ``<|mask|>``; no
  caption can produce ``<|mask|>``, so the ids equal OpenAI's tokenizer's except for a caption that contains that
  one merge, where IRRA fails.

Transforms: BLIP squashes to 384×384 (bicubic), CLIP to 224×224 (no centre crop), PEDES resizes to 384×128
(bilinear) whatever the backbone; all normalise with CLIP's statistics. The config's ``image_size`` is ignored, as
upstream.
"""
from __future__ import annotations

import pickle
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.clip import tokenize
from common.data.retrieval import (RETRIEVAL_FILES, KarpathyRetrieval, RetrievalImageDataset, RetrievalTextDataset,
                                   pre_caption)
from common.io import MalformedFileError, PathLike, read_json
from common.transforms import blip_eval_transform, reid_transform

NOCAPS_DOMAINS = {"nocaps_in_domain": "in-domain", "nocaps_near_domain": "near-domain",
                  "nocaps_out_domain": "out-domain", "nocaps_entire_domain": None}
PEDES_FILES = {"cuhk_pedes": "reid_raw.json", "icfg_pedes": "ICFG-PEDES.json"}
FASHION_DATASETS = ("fashion_gen", "fashion_gen_detail")
TCR_DATASETS = ("coco", "flickr", *NOCAPS_DOMAINS, *FASHION_DATASETS, *PEDES_FILES)
MAX_WORDS = 30
FASHION_MAX_WORDS = 77
FASHION_DETAIL_CLASS = "21"
TEXT_LENGTH = 77


@dataclass
class RetrievalAnnotation:
    """Parsed test set, the same fields as ``common.data.retrieval.KarpathyRetrieval``."""

    ann_file: Path
    images: list[str] = field(default_factory=list)
    texts: Any = field(default_factory=list)
    img2txt: list[list[int]] = field(default_factory=list)
    txt2img: list[list[int]] = field(default_factory=list)


class AnnotationMaps:
    """``img2txt``/``txt2img`` of a dataset over ``self.ann``: the annotation's maps."""

    ann: RetrievalAnnotation

    @property
    def img2txt(self) -> list[list[int]]:
        return self.ann.img2txt

    @property
    def txt2img(self) -> list[list[int]]:
        return self.ann.txt2img


class TcrImageDataset(AnnotationMaps, RetrievalImageDataset):
    """Images of a TCR test set; ``img2txt``/``txt2img`` are the annotation's maps."""


class TcrTextDataset(AnnotationMaps, RetrievalTextDataset):
    """Captions (or PEDES token rows) of a TCR test set; ``img2txt``/``txt2img`` are the annotation's maps."""


def read_nocaps(ann_root: PathLike, domain: str | None, max_words: int = MAX_WORDS) -> RetrievalAnnotation:
    """nocaps ``annotations.json``, keeping the entries whose ``domain`` equals ``domain`` (``None``: all)."""
    ann_file = Path(ann_root) / "annotations.json"
    what = 'a JSON list of {"image", "caption": [str, ...], "domain"} objects (nocaps annotations of the TCR download)'
    entries = read_json(ann_file, what)
    if not isinstance(entries, list):
        raise ValueError(f"{ann_file}: expected {what}")
    ann = RetrievalAnnotation(ann_file)
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"image", "caption", "domain"} <= entry.keys():
            raise ValueError(f"{ann_file}: entry {index} is not of the form {what}")
        if domain is not None and entry["domain"] != domain:
            continue
        img_id = len(ann.images)
        ann.images.append(entry["image"])
        ann.img2txt.append([])
        for caption in entry["caption"]:
            ann.img2txt[img_id].append(len(ann.texts))
            ann.txt2img.append([img_id])
            ann.texts.append(pre_caption(caption, max_words))
    return ann


def _group_maps(ann: RetrievalAnnotation, image_groups: Sequence[Hashable], text_groups: Sequence[Hashable]) -> None:
    """Fill ``img2txt``/``txt2img`` many-to-many: an image and a text match when their group ids are equal."""
    texts_of: dict[Hashable, list[int]] = {}
    images_of: dict[Hashable, list[int]] = {}
    for text_id, group in enumerate(text_groups):
        texts_of.setdefault(group, []).append(text_id)
    for img_id, group in enumerate(image_groups):
        images_of.setdefault(group, []).append(img_id)
    ann.img2txt = [list(texts_of.get(group, [])) for group in image_groups]
    ann.txt2img = [list(images_of[group]) for group in text_groups]


def read_fashion_gen(root: PathLike, detail: bool = False, max_words: int = FASHION_MAX_WORDS) -> RetrievalAnnotation:
    """Fashion-Gen validation pickles under ``root/full_valid_info_PAI``, grouped by product (module docstring)."""
    info_dir = Path(root) / "full_valid_info_PAI"
    if not info_dir.is_dir():
        raise FileNotFoundError(f"{info_dir}: Fashion-Gen info folder not found (one pickle per validation image)")
    products: dict[str, dict[str, list[Any]]] = {}
    for path in sorted(info_dir.iterdir()):
        if path.suffix != ".pkl":
            continue
        with open(path, "rb") as handle:
            record = pickle.load(handle)  # noqa: S301 - the dataset's own format
        if not isinstance(record, dict) or not {"img_name", "captions", "super_cls_id"} <= record.keys():
            raise MalformedFileError(f"{path}: expected a dict with img_name, captions and super_cls_id")
        if detail and record["super_cls_id"] != FASHION_DETAIL_CLASS:
            continue
        product = products.setdefault(record["img_name"].split("_")[0], {"images": [], "captions": []})
        product["images"].append(record["img_name"])
        captions = record["captions"]
        product["captions"].extend(captions if isinstance(captions, list) else [captions])
    if not products:
        raise FileNotFoundError(f"{info_dir}: no usable .pkl records"
                                + (f" with super_cls_id == {FASHION_DETAIL_CLASS!r}" if detail else ""))
    ann = RetrievalAnnotation(info_dir)
    image_groups, text_groups = [], []
    for product_id, product in products.items():
        ann.images.extend(product["images"])
        image_groups.extend([product_id] * len(product["images"]))
        ann.texts.extend(pre_caption(caption, max_words) for caption in product["captions"])
        text_groups.extend([product_id] * len(product["captions"]))
    _group_maps(ann, image_groups, text_groups)
    return ann


def read_pedes(root: PathLike, name: str, text_length: int = TEXT_LENGTH) -> RetrievalAnnotation:
    """The test split of CUHK-PEDES or ICFG-PEDES (IRRA format), captions as CLIP BPE ids ``[N, text_length]``."""
    ann_file = Path(root) / PEDES_FILES[name]
    what = 'a JSON list of {"id", "file_path", "captions": [str, ...], "split"} objects (IRRA format)'
    entries = read_json(ann_file, what)
    if not isinstance(entries, list):
        raise ValueError(f"{ann_file}: expected {what}")
    ann = RetrievalAnnotation(ann_file)
    persons: dict[Hashable, list[dict[str, Any]]] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"id", "file_path", "captions", "split"} <= entry.keys():
            raise ValueError(f"{ann_file}: entry {index} is not of the form {what}")
        if entry["split"] == "test":
            persons.setdefault(entry["id"], []).append(entry)
    if not persons:
        raise ValueError(f"{ann_file}: no records with split == 'test'")
    captions: list[str] = []
    image_groups, text_groups = [], []
    for person, records in persons.items():
        for entry in records:
            ann.images.append(entry["file_path"])
            image_groups.append(person)
            captions.extend(entry["captions"])
            text_groups.extend([person] * len(entry["captions"]))
    ann.texts = tokenize(captions, context_length=text_length, truncate=True).long()
    _group_maps(ann, image_groups, text_groups)
    return ann


def default_transform(config: dict[str, Any]) -> Callable:
    """The eval transform upstream's ``create_dataset`` picks for this config (module docstring)."""
    if config["dataset"] in PEDES_FILES:
        return reid_transform(384, 128)
    return blip_eval_transform(224 if config["backbone"] == "clip" else 384)


def build_annotation(config: dict[str, Any]) -> tuple[RetrievalAnnotation | KarpathyRetrieval, Path]:
    """The parsed test set of ``config['dataset']`` and the folder its image paths are relative to."""
    name = config["dataset"]
    image_root = Path(config["image_root"])
    if name in RETRIEVAL_FILES:
        file_name, max_captions = RETRIEVAL_FILES[name]
        ann = KarpathyRetrieval(Path(config["ann_root"]) / file_name, max_words=MAX_WORDS, max_captions=max_captions)
        return ann, image_root
    if name in NOCAPS_DOMAINS:
        return read_nocaps(config["ann_root"], NOCAPS_DOMAINS[name]), image_root
    if name in FASHION_DATASETS:
        return read_fashion_gen(image_root, detail=name == "fashion_gen_detail"), image_root / "extracted_valid_images"
    if name in PEDES_FILES:
        return read_pedes(image_root, name), image_root / "imgs"
    raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(TCR_DATASETS)}")


def build_tcr_datasets(config: dict[str, Any],
                       transform: Callable | None = None) -> tuple[TcrImageDataset, TcrTextDataset]:
    """``(image dataset, text dataset)`` of a loaded config; ``transform`` defaults to :func:`default_transform`.

    Raises ValueError listing the valid names for an unknown dataset, FileNotFoundError naming the missing
    annotation file or image folder.
    """
    if config.get("dataset") not in TCR_DATASETS:
        raise ValueError(f"unknown dataset {config.get('dataset')!r}; valid datasets: {', '.join(TCR_DATASETS)}")
    ann, image_root = build_annotation(config)
    transform = transform if transform is not None else default_transform(config)
    return TcrImageDataset(ann, image_root, transform), TcrTextDataset(ann)
