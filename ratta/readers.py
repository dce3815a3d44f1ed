"""Readers of the 17 RA-TTA test sets in their original layouts (RA-TTA:src/dataloader/*.py).

Each reader returns the test items ``[(image path, 0-based label)]`` and the class names found in the dataset's own
files (the CoOp split JSON, FGVC's ``variants.txt``, CUB's ``classes.txt``, the Caltech-256 folders, ImageNet's
``classnames.txt``; DTD and RESISC45 take the original's list). A missing split file raises (upstream silently builds
a random split).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

from common.io import MalformedFileError
from ratta.classnames import RESISC45_CLASSES, spaced_names

Items = list[tuple[str, int]]


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (expected {what}); RA-TTA reads the official/CoOp split files "
                                f"and never builds a random split")
    return path


def read_coop_split(split_file: Path, image_dir: Path, fixed_names=None) -> tuple[Items, list[str]]:
    """CoOp split JSON ``{"train"|"val"|"test": [[relpath, label, classname], ...]}``: test items and the class
    names (``fixed_names``, else by label over all three splits)."""
    _require(split_file, "a CoOp split JSON with train/val/test lists")
    with open(split_file, encoding="utf-8") as handle:
        split = json.load(handle)
    missing = [key for key in ("train", "val", "test") if key not in split]
    if missing:
        raise MalformedFileError(f"{split_file}: split JSON lacks the keys {missing}; expected train, val and test "
                                 "lists")
    names: dict[int, str] = {}
    for entry in split["train"] + split["val"] + split["test"]:
        names.setdefault(int(entry[1]), entry[2])
    items = [(str(image_dir / relpath), int(label)) for relpath, label, _ in split["test"]]
    if fixed_names is not None:
        if max(names, default=0) >= len(fixed_names):
            raise MalformedFileError(f"{split_file}: label {max(names)} is out of range for {len(fixed_names)} classes")
        return items, spaced_names(fixed_names)
    if sorted(names) != list(range(len(names))):
        raise MalformedFileError(f"{split_file}: labels are not 0..C-1 (found {sorted(names)[:5]}...)")
    return items, spaced_names(names[label] for label in range(len(names)))


def coop_reader(folder: str, image_subdir: str, split_name: str, fixed_names=None) -> Callable[[Path], tuple]:
    def read(root: Path) -> tuple[Items, list[str]]:
        base = root / folder
        return read_coop_split(base / split_name, base / image_subdir if image_subdir else base, fixed_names)
    return read


def read_fgvc(root: Path) -> tuple[Items, list[str]]:
    """FGVC-Aircraft: labels are line indices in ``variants.txt``; ``images_variant_test.txt`` holds
    ``<image id> <variant>``."""
    base = root / "fgvc_aircraft"
    variants = _require(base / "variants.txt", "one aircraft variant per line").read_text().splitlines()
    variants = [line.strip() for line in variants if line.strip()]
    index = {name: i for i, name in enumerate(variants)}
    items = []
    split = _require(base / "images_variant_test.txt", "lines '<image id> <variant>'")
    for number, line in enumerate(split.read_text().splitlines(), 1):
        if not line.strip():
            continue
        image_id, _, variant = line.strip().partition(" ")
        if variant not in index:
            raise MalformedFileError(f"{split}:{number}: variant {variant!r} is not in variants.txt")
        items.append((str(base / "images" / f"{image_id}.jpg"), index[variant]))
    return items, variants


RESISC45_FILE = re.compile(r"^(?P<cls>.+)_\d+\.\w+$")


def read_resisc45(root: Path) -> tuple[Items, list[str]]:
    """RESISC45: ``test_splits.txt`` lists file names; the class is the name minus ``_NNN.jpg``."""
    base = root / "resisc45"
    split = _require(base / "test_splits.txt", "one image file name per line")
    index = {name: i for i, name in enumerate(RESISC45_CLASSES)}
    items = []
    for number, line in enumerate(split.read_text().splitlines(), 1):
        name = line.strip()
        if not name:
            continue
        match = RESISC45_FILE.match(name)
        if match is None or match["cls"] not in index:
            raise MalformedFileError(f"{split}:{number}: {name!r} is not '<class>_<number>.jpg' with a RESISC45 class")
        items.append((str(base / "images" / match["cls"] / name), index[match["cls"]]))
    return items, spaced_names(RESISC45_CLASSES)


def read_cub200(root: Path) -> tuple[Items, list[str]]:
    """CUB-200-2011: the ``is_training_img == 0`` images; label = class id - 1."""
    base = root / "CUB_200_2011"

    def table(name: str) -> dict[str, str]:
        path = _require(base / name, "lines '<id> <value>'")
        return dict(line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip())

    images, labels, is_train = table("images.txt"), table("image_class_labels.txt"), table("train_test_split.txt")
    classes = table("classes.txt")
    names = [classes[key].split(".", 1)[-1] for key in sorted(classes, key=int)]
    items = [(str(base / "images" / images[i]), int(labels[i]) - 1) for i in sorted(images, key=int)
             if is_train[i].strip() == "0"]
    return items, spaced_names(names)


def read_caltech256(root: Path) -> tuple[Items, list[str]]:
    """Caltech-256 with the SuS-X split: ``faces-easy`` entries are skipped and labels above 252 shift down."""
    base = root / "caltech-256"
    split_file = _require(base / "split_Caltech256.json", "the SuS-X Caltech-256 split JSON")
    with open(split_file, encoding="utf-8") as handle:
        split = json.load(handle)
    if "test" not in split:
        raise MalformedFileError(f"{split_file}: no 'test' list")
    names: dict[int, str] = {}
    items = []
    for key in ("train", "val", "test"):
        for entry in split.get(key, []):
            folder = Path(entry[0]).parts[0]
            if "faces-easy" in folder:
                continue
            label = int(entry[1])
            label = label - 1 if label > 252 else label
            names.setdefault(label, folder.split(".", 1)[-1].replace("-101", ""))
            if key == "test":
                items.append((str(base / "256_ObjectCategories" / entry[0]), label))
    return items, spaced_names(names[i] for i in sorted(names))


def imagenet_classnames(root: Path) -> dict[str, str]:
    """wnid → class name from ``<root>/imagenet/classnames.txt`` (lines ``<wnid> <name>``, CoOp layout, 1000)."""
    path = _require(root / "imagenet" / "classnames.txt", "1000 lines '<wnid> <class name>' (CoOp ImageNet layout)")
    table = {}
    for line in path.read_text().splitlines():
        if line.strip():
            wnid, _, name = line.strip().partition(" ")
            table[wnid] = name
    return table


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def image_folder_items(folder: Path) -> tuple[Items, list[str]]:
    """torchvision ``ImageFolder`` order (sorted class folders, label = folder index, files sorted per folder);
    unlike ``ImageFolder``, empty class folders are allowed."""
    _require(folder, "one sub-folder per class")
    classes = sorted(entry.name for entry in folder.iterdir() if entry.is_dir())
    items = []
    for label, name in enumerate(classes):
        files = sorted(path for path in (folder / name).rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
        items += [(str(path), label) for path in files]
    return items, classes


def imagenet_reader(subdir: str, by_index: bool = False) -> Callable[[Path], tuple]:
    def read(root: Path) -> tuple[Items, list[str]]:
        table = imagenet_classnames(root)
        items, folders = image_folder_items(root / subdir)
        if by_index:
            ordered = list(table.values())
            names = [ordered[int(folder)] for folder in folders]
        else:
            unknown = [folder for folder in folders if folder not in table]
            if unknown:
                raise MalformedFileError(f"{root / subdir}: folders {unknown[:5]} are not wnids of "
                                         "imagenet/classnames.txt")
            names = [table[folder] for folder in folders]
        return items, names
    return read
