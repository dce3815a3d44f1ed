"""The surveys of the datasets whose readers live in ``common.data`` (FashionIQ, CIRR, Shoes, COCO and Flickr30k
Karpathy test), registered here, and the helpers the papers' surveys (``<paper>/doctor.py``) share.

A survey (``common.doctor.registry.Survey``) fills a ``DatasetReport`` with layout checks, ``counts`` (the names
``common.doctor.counts`` publishes) and facts, and returns the image files the annotations list. It never raises for
a bad copy: a reader's error becomes a failed check naming the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from common.data.cir import FIQ_DRESS_TYPES, CIRRDataset, FashionIQDataset
from common.data.paths import LAYOUTS
from common.data.retrieval import RETRIEVAL_FILES, KarpathyRetrieval
from common.data.shoes import SPLIT_SOURCES, ShoesDataset
from common.doctor.counts import PUBLISHED
from common.doctor.registry import Explain, Survey, register_dataset
from common.doctor.report import DatasetReport
from common.errors import INPUT_ERRORS

READ_ERRORS = (ValueError, TypeError, KeyError, IndexError, *INPUT_ERRORS)
"""What a reader raises for a damaged or missing annotation file (some paper readers index entries unchecked)."""

FIXES = {
    "fashioniq": {
        "captions": "download captions/ from github.com/XiaoxiaoGuo/fashion-iq into {folder}",
        "image_splits": "download image_splits/ from github.com/XiaoxiaoGuo/fashion-iq into {folder}",
        "images": "put the FashionIQ images in {folder}/images/ as <asin>.jpg, one flat folder",
    },
    "cirr": {
        "cirr/captions": "download cirr/captions/ from github.com/Cuberick-Orion/CIRR (branch cirr_dataset) into "
                         "{folder}",
        "cirr/image_splits": "download cirr/image_splits/ from github.com/Cuberick-Orion/CIRR (branch cirr_dataset) "
                             "into {folder}",
        "train": "unpack the NLVR2 train images as {folder}/train/<NN>/<name>.png (CIRR README)",
        "dev": "unpack the NLVR2 dev images as {folder}/dev/<name>.png (CIRR README)",
        "test1": "unpack the NLVR2 test1 images as {folder}/test1/<name>.png (CIRR README)",
    },
    "shoes": {
        "annotations": "download train_im_names.txt, eval_im_names.txt and relative_captions_shoes.json from "
                       "github.com/XiaoxiaoGuo/fashion-retrieval (dataset/) into {folder}/annotations/, then run "
                       "python mlcl/prepare_shoes_data.py --data-root {folder}",
        "images": "unpack the Shoes images into {folder}/images/ (womens/<category>/<0|1>/*.jpg)",
    },
    "coco": {
        "coco_annotations": "download BLIP's coco_karpathy_test.json (storage.googleapis.com/"
                            "sfr-vision-language-research/datasets/) into {folder}/coco_annotations/",
        "coco_image": "unpack the COCO val2014 images into {folder}/coco_image/ (coco_image/val2014/*.jpg)",
    },
    "flickr": {
        "flickr_annotations": "download BLIP's flickr30k_test.json (storage.googleapis.com/"
                              "sfr-vision-language-research/datasets/) into {folder}/flickr_annotations/",
        "flickr_image": "unpack the Flickr30k images into {folder}/flickr_image/ "
                        "(flickr_image/flickr30k-images/*.jpg)",
    },
}
PREPARE_SHOES = "run python mlcl/prepare_shoes_data.py --data-root {root} first"


def require(report: DatasetReport, folder: Path, subs: Sequence[str], fixes: dict[str, str]) -> bool:
    """A check per sub-folder of ``folder``; True when all are there."""
    found = True
    for sub in subs:
        present = (folder / sub).is_dir()
        report.add(f"folder {sub}/", present, "present", "present" if present else f"no {folder / sub}",
                   fixes.get(sub, "").format(folder=folder))
        found = found and present
    return found


def read_failed(report: DatasetReport, what: str, error: Exception, fix: str = "") -> None:
    """A failed check for an annotation file that a reader refused."""
    report.add(what, False, "a readable annotation file", str(error), fix)


def _identity(image):
    return image


def _paths(dataset, names: Sequence[str]) -> list[Path]:
    return [dataset.image_path(name) for name in names]


def survey_fashioniq(report: DatasetReport, folder: Path) -> list[Path]:
    """FashionIQ: per split and category the queries (caption entries) and images (split entries)."""
    if not require(report, folder, LAYOUTS["fashioniq"].expected, FIXES["fashioniq"]):
        return []
    images: dict[Path, None] = {}
    val_names: dict[str, list[str]] = {}
    for split in ("train", "val", "test"):
        kind, total = ("triplets" if split == "train" else "queries"), 0
        for dress_type in FIQ_DRESS_TYPES:
            try:
                dataset = FashionIQDataset(folder, split, [dress_type], "relative", _identity)
            except READ_ERRORS as error:
                read_failed(report, f"{split} {dress_type} annotations", error, FIXES["fashioniq"]["captions"]
                            .format(folder=folder))
                continue
            report.counts[f"{split} {kind} {dress_type}"] = len(dataset.triplets)
            report.counts[f"{split} images {dress_type}"] = len(dataset.image_names)
            total += len(dataset.triplets)
            images.update(dict.fromkeys(_paths(dataset, dataset.image_names)))
            if split == "val":
                for name in dataset.image_names:
                    val_names.setdefault(name, []).append(dress_type)
        report.counts[f"{split} {kind}"] = total
    shared = [name for name, types in val_names.items() if len(types) > 1]
    if shared:
        report.facts.append(f"{len(shared):,} val images are listed in two categories (e.g. {shared[0]}: "
                            f"{' and '.join(val_names[shared[0]])}); each category's gallery keeps its copy, as "
                            "upstream")
    report.facts.append(f"the split files list {len(images):,} distinct images")
    return list(images)


def survey_cirr(report: DatasetReport, folder: Path) -> list[Path]:
    """CIRR rc2: queries of val and test1, train triplets, and the images of each split file."""
    fixes = FIXES["cirr"]
    if not require(report, folder, LAYOUTS["cirr"].expected, fixes):
        return []
    require(report, folder, ("train", "dev", "test1"), fixes)
    images: dict[Path, None] = {}
    for split in ("train", "val", "test1"):
        kind = "triplets" if split == "train" else "queries"
        try:
            dataset = CIRRDataset(folder, split, "relative", _identity)
            report.counts[f"{split} {kind}"] = len(dataset.triplets)
        except READ_ERRORS as error:
            read_failed(report, f"{split} annotations", error, fixes["cirr/captions"].format(folder=folder))
            try:
                dataset = CIRRDataset(folder, split, "classic", _identity)
            except READ_ERRORS:
                continue
        report.counts[f"{split} images"] = len(dataset.image_names)
        images.update(dict.fromkeys(_paths(dataset, dataset.image_names)))
    return list(images)


def explain_cirr(report: DatasetReport, folder: Path, missing: list[str]) -> None:
    """A failed layout check when missing ``train/<NN>/<name>`` images lie flat in ``train/`` (an NLVR2 copy)."""
    flat = [Path(path) for path in missing
            if Path(path).parent.parent.name == "train" and (Path(path).parent.parent / Path(path).name).is_file()]
    if flat:
        report.add("train layout", False, "train/<NN>/<name>.png, as split.rc2.train.json lists",
                   f"{len(flat):,} images flat in {folder / 'train'}/ (e.g. {flat[0].name})",
                   "move each train image into the numbered sub-folder split.rc2.train.json names "
                   "(train/<NN>/<name>.png); CIRR keeps NLVR2's numbered train folders")


def survey_shoes(report: DatasetReport, folder: Path) -> list[Path]:
    """Shoes after MLCL's preparation: ``annotations/{split,triplet}.<split>.json``."""
    if not require(report, folder, LAYOUTS["shoes"].expected, FIXES["shoes"]):
        return []
    images: dict[Path, None] = {}
    for split in ("train", "val"):
        prepared = [folder / "annotations" / f"{kind}.{split}.json" for kind in ("split", "triplet")]
        absent = [path.name for path in prepared if not path.is_file()]
        raw = folder / "annotations" / SPLIT_SOURCES[split]
        fix = (PREPARE_SHOES.format(root=folder) if raw.is_file()
               else FIXES["shoes"]["annotations"].format(folder=folder))
        report.add(f"prepared {split} files", not absent, ", ".join(path.name for path in prepared),
                   f"no {', '.join(absent)}" if absent else "present", fix)
        if absent:
            continue
        try:
            dataset = ShoesDataset(folder, split, "relative", _identity)
        except READ_ERRORS as error:
            read_failed(report, f"{split} annotations", error, fix)
            continue
        report.counts[f"{split} triplets"] = len(dataset.triplets)
        report.counts[f"{split} images"] = len(dataset.image_names)
        images.update(dict.fromkeys(_paths(dataset, dataset.image_names)))
    return list(images)


def read_karpathy(report: DatasetReport, ann_file: Path, what: str, fix: str) -> KarpathyRetrieval | None:
    """A Karpathy test annotation with every caption, or None (and a failed check) when it does not read."""
    try:
        return KarpathyRetrieval(ann_file, max_captions=None)
    except READ_ERRORS as error:
        read_failed(report, what, error, fix)
        return None


def survey_karpathy(name: str) -> Survey:
    """COCO or Flickr30k Karpathy test: images and the fewest captions any image has."""
    layout = LAYOUTS[name]
    annotations, image_dir = layout.expected

    def survey(report: DatasetReport, folder: Path) -> list[Path]:
        fixes = FIXES[name]
        if not require(report, folder, layout.expected, fixes):
            return []
        ann = read_karpathy(report, folder / annotations / RETRIEVAL_FILES[name][0], "test annotations",
                            fixes[annotations].format(folder=folder))
        if ann is None:
            return []
        report.counts["test images"] = len(ann.images)
        report.counts["fewest captions per image"] = min((len(texts) for texts in ann.img2txt), default=0)
        return [folder / image_dir / image for image in ann.images]

    return survey


def register_common(name: str, survey: Survey, explain: Explain | None = None) -> None:
    """Register ``name`` at ``<root>/<its folder>`` or ``<root>`` itself (``common.data.paths.LAYOUTS``)."""
    layout = LAYOUTS[name]
    register_dataset(name, survey, (layout.folder, ""), layout.expected, PUBLISHED[name], explain)


register_common("fashioniq", survey_fashioniq)
register_common("cirr", survey_cirr, explain_cirr)
register_common("shoes", survey_shoes)
register_common("coco", survey_karpathy("coco"))
register_common("flickr", survey_karpathy("flickr"))
