"""The 17 RA-TTA test sets in their original layouts, one registry (RA-TTA:src/dataloader/*.py).

Each reader returns the test items ``[(image path, 0-based label)]`` and the class names found in the dataset's own
files (the CoOp split JSON, FGVC's ``variants.txt``, CUB's ``classes.txt``, the Caltech-256 folders, ImageNet's
``classnames.txt``; DTD and RESISC45 take the original's list). The prompts and the description lookup use the original's
hard-coded lists instead (``original_classnames``, stored in ``original_classnames.json``), indexed by label; the
file names are only checked against them. A missing split file raises (upstream silently builds a random split).
"""
from __future__ import annotations

import functools
import json
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image
from torch.utils.data import Dataset

from common.io import read_json
from ratta.templates import PRE_TEMPLATES, TEMPLATES

Items = list[tuple[str, int]]

ORIGINAL_CLASSNAMES_FILE = Path(__file__).with_name("original_classnames.json")


@functools.cache
def _original_lists() -> dict[str, dict]:
    return read_json(ORIGINAL_CLASSNAMES_FILE, "the original's class-name lists")["lists"]


def _original_raw(key: str) -> list[str]:
    """The list of ``key`` as written in the original code (``_`` not yet replaced)."""
    entry = _original_lists()[key]
    if "names" in entry:
        return list(entry["names"])
    base = _original_lists()["imagenet_1k"]["names"]
    return [base[i] for i in entry["imagenet_1k_indices"]]


def original_classnames(key: str) -> list[str]:
    """The class names RA-TTA's scripts use for dataset ``key``, in label order, ``_`` replaced by a space as the
    scripts do (RA-TTA:src/dataloader/*.py); the authors' CuPL JSON keys equal them."""
    return _names(_original_raw(key))


def _spelling(name: str) -> str:
    """``name`` without case, ``'s``, spaces, ``_``, ``-`` and other punctuation, for comparing spellings."""
    return re.sub(r"[^0-9a-z]", "", name.lower().replace("'s", ""))


def classname_differences(key: str, found: list[str]) -> list[tuple[int, str, str]]:
    """``(label, name in the dataset's files, original name)`` for each label whose two names differ beyond spelling
    and beyond the renames the original made by hand (``dataset_files`` in the JSON, e.g. FGVC's 'Tornado')."""
    renamed = {_spelling(name): _spelling(spelling)
               for name, spelling in _original_lists()[key].get("dataset_files", {}).items()}
    differences = []
    for label, (file_name, name) in enumerate(zip(found, original_classnames(key))):
        if _spelling(file_name) not in (_spelling(name), renamed.get(_spelling(name))):
            differences.append((label, file_name, name))
    return differences


def check_classnames(key: str, found: list[str], source: str) -> None:
    """Warn, naming both spellings, where the class names of ``source`` differ from the original's list of ``key``
    (see ``classname_differences``): labels are mapped to the original names by position."""
    differences = classname_differences(key, found)
    if differences:
        shown = "; ".join(f"label {label}: {file_name!r} vs {name!r}" for label, file_name, name in differences[:10])
        more = f" (and {len(differences) - 10} more)" if len(differences) > 10 else ""
        warnings.warn(f"{source}: {len(differences)} of {len(found)} {key} class names differ from the original's "
                      f"list (dataset files vs original): {shown}{more}. Labels map to the original names by position "
                      f"and those are used; check that the dataset's class order is the original's",
                      stacklevel=2)


DTD_CLASSES = tuple(_original_raw("dtd"))
RESISC45_CLASSES = tuple(_original_raw("resisc45"))


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (expected {what}); RA-TTA reads the official/CoOp split files "
                                f"and never builds a random split")
    return path


def _names(names) -> list[str]:
    return [name.replace("_", " ") for name in names]


def read_coop_split(split_file: Path, image_dir: Path, fixed_names=None) -> tuple[Items, list[str]]:
    """CoOp split JSON ``{"train"|"val"|"test": [[relpath, label, classname], ...]}``: test items and the class
    names (``fixed_names``, else by label over all three splits)."""
    _require(split_file, "a CoOp split JSON with train/val/test lists")
    with open(split_file, encoding="utf-8") as handle:
        split = json.load(handle)
    missing = [key for key in ("train", "val", "test") if key not in split]
    if missing:
        raise ValueError(f"{split_file}: split JSON lacks the keys {missing}; expected train, val and test lists")
    names: dict[int, str] = {}
    for entry in split["train"] + split["val"] + split["test"]:
        names.setdefault(int(entry[1]), entry[2])
    items = [(str(image_dir / relpath), int(label)) for relpath, label, _ in split["test"]]
    if fixed_names is not None:
        if max(names, default=0) >= len(fixed_names):
            raise ValueError(f"{split_file}: label {max(names)} is out of range for {len(fixed_names)} classes")
        return items, _names(fixed_names)
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{split_file}: labels are not 0..C-1 (found {sorted(names)[:5]}...)")
    return items, _names(names[label] for label in range(len(names)))


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
            raise ValueError(f"{split}:{number}: variant {variant!r} is not in variants.txt")
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
            raise ValueError(f"{split}:{number}: {name!r} is not '<class>_<number>.jpg' with a RESISC45 class")
        items.append((str(base / "images" / match["cls"] / name), index[match["cls"]]))
    return items, _names(RESISC45_CLASSES)


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
    return items, _names(names)


def read_caltech256(root: Path) -> tuple[Items, list[str]]:
    """Caltech-256 with the SuS-X split: ``faces-easy`` entries are skipped and labels above 252 shift down."""
    base = root / "caltech-256"
    split_file = _require(base / "split_Caltech256.json", "the SuS-X Caltech-256 split JSON")
    with open(split_file, encoding="utf-8") as handle:
        split = json.load(handle)
    if "test" not in split:
        raise ValueError(f"{split_file}: no 'test' list")
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
    return items, _names(names[i] for i in sorted(names))


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
                raise ValueError(f"{root / subdir}: folders {unknown[:5]} are not wnids of imagenet/classnames.txt")
            names = [table[folder] for folder in folders]
        return items, names
    return read


@dataclass(frozen=True)
class DatasetSpec:
    key: str
    num_classes: int
    reader: Callable[[Path], tuple[Items, list[str]]]
    imagenet: bool = False

    @property
    def templates(self) -> tuple[str, ...]:
        return TEMPLATES[self.key]

    @property
    def pre_template(self) -> str:
        return PRE_TEMPLATES[self.key]


DATASETS: dict[str, DatasetSpec] = {spec.key: spec for spec in (
    DatasetSpec("stanford_cars", 196, coop_reader("stanford_cars", "", "split_zhou_StanfordCars.json")),
    DatasetSpec("flowers102", 102, coop_reader("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json")),
    DatasetSpec("food101", 101, coop_reader("food-101", "images", "split_zhou_Food101.json")),
    DatasetSpec("oxford_pets", 37, coop_reader("oxford_pets", "images", "split_zhou_OxfordPets.json")),
    DatasetSpec("dtd", 47, coop_reader("dtd", "images", "split_zhou_DescribableTextures.json", DTD_CLASSES)),
    DatasetSpec("cub200", 200, read_cub200),
    DatasetSpec("fgvc_aircraft", 100, read_fgvc),
    DatasetSpec("resisc45", 45, read_resisc45),
    DatasetSpec("sun397", 397, coop_reader("sun397", "SUN397", "split_zhou_SUN397.json")),
    DatasetSpec("ucf101", 101, coop_reader("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json")),
    DatasetSpec("caltech101", 100, coop_reader("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json")),
    DatasetSpec("caltech256", 256, read_caltech256),
    DatasetSpec("imagenet_1k", 1000, imagenet_reader("imagenet/images/val"), imagenet=True),
    DatasetSpec("imagenet_rendition", 200, imagenet_reader("imagenet-rendition/imagenet-r"), imagenet=True),
    DatasetSpec("imagenet_adversarial", 200, imagenet_reader("imagenet-adversarial"), imagenet=True),
    DatasetSpec("imagenet_v2", 1000, imagenet_reader("imagenetv2", by_index=True), imagenet=True),
    DatasetSpec("imagenet_sketch", 1000, imagenet_reader("imagenet-sketch"), imagenet=True),
)}
STANDARD_KEYS = tuple(key for key, spec in DATASETS.items() if not spec.imagenet)
IMAGENET_KEYS = tuple(key for key, spec in DATASETS.items() if spec.imagenet)


def get_spec(key: str, imagenet: bool | None = None) -> DatasetSpec:
    """The registry entry of ``key``; an unknown key (or one of the other script's) lists the valid ones."""
    valid = DATASETS if imagenet is None else {k: v for k, v in DATASETS.items() if v.imagenet == imagenet}
    if key not in valid:
        raise ValueError(f"unknown --dataset {key!r}; valid keys: {', '.join(valid)}")
    return valid[key]


def read_test_set(key: str, root: str | Path) -> tuple[Items, list[str]]:
    """Test items of dataset ``key`` under ``root`` and the original's class names (``original_classnames``); the
    class count and the names in the dataset's files are checked against them (``check_classnames``)."""
    spec = get_spec(key)
    items, names = spec.reader(Path(root))
    if len(names) != spec.num_classes:
        raise ValueError(f"{key} under {root}: found {len(names)} classes, expected {spec.num_classes}")
    check_classnames(key, names, f"{key} under {root}")
    return items, original_classnames(key)


class TestImages(Dataset):
    """PIL images and labels of a test split, each passed through ``transform`` (which may return views)."""

    def __init__(self, items: Items, transform: Callable):
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        path, label = self.items[i]
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
        except OSError as error:
            raise OSError(f"{path}: cannot read the image ({error})") from error
        return self.transform(image), label, i
