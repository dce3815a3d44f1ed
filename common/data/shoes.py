"""Shoes (ARTEMIS layout): the ``prepare_shoes_data.py`` conversion and the dataset MLCL reads.

Prepared layout: ``<root>/shoes/annotations/{split,triplet}.<train|val>.json`` and images at
``<root>/shoes/images/<relpath>``, where relpath is relative to the image folder (``womens/<category>/<0|1>/*.jpg``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from common.data.cir import (CIRDatasetBase, ImageTransform, check_choice, check_known_image, read_json_entries,
                             read_name_list)
from common.data.paths import dataset_dir
from common.io import PathLike, atomic_write_json
from common.runtime import get_logger

logger = get_logger(__name__)

SHOES_SPLITS = ("train", "val")
TRIPLET_KEYS = ("ImageName", "ReferenceImageName", "RelativeCaption")
SPLIT_SOURCES = {"train": "train_im_names.txt", "val": "eval_im_names.txt"}


def _read_basenames(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (expected one image basename per line)")
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def prepare_shoes(image_dir: PathLike, annotation_dir: PathLike,
                  image_glob: str = "womens/*/*/*.jpg") -> dict[str, int]:
    """Write ``split.{train,val}.json`` and ``triplet.{train,val}.json`` into ``annotation_dir``.

    Reads ``train_im_names.txt``, ``eval_im_names.txt`` and ``relative_captions_shoes.json`` from
    ``annotation_dir`` and finds the images with ``image_glob`` under ``image_dir``. Split files list image paths
    relative to ``image_dir`` in txt order; triplets keep their keys and caption with both basenames replaced by
    relative paths, and only when both images lie in the same split. The JSON content equals upstream's; unlike
    upstream, the count of dropped cross-split triplets is logged and returned, lookups use a dict (the first
    path in sorted glob order wins for a repeated basename), and a basename with no image raises a clear error.
    Returns counts: ``<split>_images``, ``<split>_triplets``, ``dropped_triplets``, ``duplicate_basenames``.
    """
    image_dir, annotation_dir = Path(image_dir), Path(annotation_dir)
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir}: Shoes image folder not found")
    relpath: dict[str, str] = {}
    duplicates = 0
    for path in sorted(image_dir.glob(image_glob)):
        if path.name in relpath:
            duplicates += 1
            continue
        relpath[path.name] = path.relative_to(image_dir).as_posix()
    if not relpath:
        raise FileNotFoundError(
            f"{image_dir}: no image matches {image_glob!r} (the Shoes download unpacks to womens/<category>/<0|1>/; "
            "a flat womens_<category>/<0|1>/ copy needs image_glob='womens_*/*/*.jpg')"
        )
    if duplicates:
        logger.warning("%d images under %s repeat a basename; the first in sorted order is used", duplicates, image_dir)

    triplets = read_json_entries(annotation_dir / "relative_captions_shoes.json", TRIPLET_KEYS,
                             "a JSON list of {ImageName, ReferenceImageName, RelativeCaption} objects")
    counts = {"duplicate_basenames": duplicates}
    kept = 0
    for split, source in SPLIT_SOURCES.items():
        names = _read_basenames(annotation_dir / source)
        unknown = [name for name in names if name not in relpath]
        if unknown:
            raise FileNotFoundError(
                f"{annotation_dir / source}: {len(unknown)} image(s) not found under {image_dir} with glob "
                f"{image_glob!r}, e.g. {', '.join(unknown[:3])}"
            )
        members = set(names)
        split_triplets = [
            {**triplet, "ImageName": relpath[triplet["ImageName"]],
             "ReferenceImageName": relpath[triplet["ReferenceImageName"]]}
            for triplet in triplets
            if triplet["ImageName"] in members and triplet["ReferenceImageName"] in members
        ]
        atomic_write_json([relpath[name] for name in names], annotation_dir / f"split.{split}.json")
        atomic_write_json(split_triplets, annotation_dir / f"triplet.{split}.json")
        counts[f"{split}_images"] = len(names)
        counts[f"{split}_triplets"] = len(split_triplets)
        kept += len(split_triplets)
    counts["dropped_triplets"] = len(triplets) - kept
    if counts["dropped_triplets"]:
        logger.warning("dropped %d of %d Shoes triplets whose two images are not in the same split",
                       counts["dropped_triplets"], len(triplets))
    logger.info("Shoes prepared in %s: %s", annotation_dir, counts)
    return counts


class ShoesDataset(CIRDatasetBase):
    """Prepared Shoes over ``train`` or ``val``. ``root`` holds ``shoes/`` or is that folder.

    Items: classic ``(relpath, image)``; train ``(ref image, target image, caption[, ref_aug image])``;
    val ``(ref relpath, target relpath, caption)``. Errors always raise (upstream has no skip here).
    """

    def __init__(self, root: PathLike, split: str, mode: str, preprocess: ImageTransform,
                 ref_aug: ImageTransform | None = None):
        super().__init__(mode, preprocess, None, False, ref_aug, "raise")
        check_choice(split, SHOES_SPLITS, "Shoes split")
        self.root = dataset_dir("shoes", root)
        self.split = split
        split_path = self.root / "annotations" / f"split.{split}.json"
        self.image_names = read_name_list(split_path, "a JSON list of image paths relative to shoes/images/")
        if mode == "relative":
            path = self.root / "annotations" / f"triplet.{split}.json"
            self.triplets = read_json_entries(path, TRIPLET_KEYS,
                                          "a JSON list of {ImageName, ReferenceImageName, RelativeCaption} objects")
            known = set(self.image_names)
            for index, triplet in enumerate(self.triplets):
                for field in ("ReferenceImageName", "ImageName"):
                    check_known_image(path, index, field, triplet[field], known, split_path)

    def image_path(self, name: str) -> Path:
        return self.root / "images" / name

    def _item(self, index: int) -> tuple[Any, ...]:
        if self.mode == "classic":
            name = self.image_names[index]
            return name, self._load(name)
        triplet = self.triplets[index]
        reference, target, caption = triplet["ReferenceImageName"], triplet["ImageName"], triplet["RelativeCaption"]
        if self.split == "train":
            return self._train_item(reference, target, caption, None)
        return reference, target, caption
