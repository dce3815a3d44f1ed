"""The 17 RA-TTA test sets in their original layouts, one registry (RA-TTA:src/dataloader/*.py).

Each reader returns the test items ``[(image path, 0-based label)]`` and the class names (with ``_`` as spaces,
the keys of the description JSON). Class names come from the dataset's own files (the CoOp split JSON, FGVC's
``variants.txt``, CUB's ``classes.txt``, the Caltech-256 folders, ImageNet's ``classnames.txt``), except for DTD
and RESISC45, whose lists are fixed here. A missing split file raises (upstream silently builds a random split).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image
from torch.utils.data import Dataset

from ratta.templates import PRE_TEMPLATES, TEMPLATES

Items = list[tuple[str, int]]

DTD_CLASSES = (
    "banded", "blotchy", "braided", "bubbly", "bumpy", "chequered", "cobwebbed", "cracked", "crosshatched",
    "crystalline", "dotted", "fibrous", "flecked", "freckled", "frilly", "gauzy", "grid", "grooved", "honeycombed",
    "interlaced", "knitted", "lacelike", "lined", "marbled", "matted", "meshed", "paisley", "perforated", "pitted",
    "pleated", "polka-dotted", "porous", "potholed", "scaly", "smeared", "spiralled", "sprinkled", "stained",
    "stratified", "striped", "studded", "swirly", "veined", "waffled", "woven", "wrinkled", "zigzagged",
)
RESISC45_CLASSES = (
    "airplane", "airport", "baseball_diamond", "basketball_court", "beach", "bridge", "chaparral", "church",
    "circular_farmland", "cloud", "commercial_area", "dense_residential", "desert", "forest", "freeway",
    "golf_course", "ground_track_field", "harbor", "industrial_area", "intersection", "island", "lake", "meadow",
    "medium_residential", "mobile_home_park", "mountain", "overpass", "palace", "parking_lot", "railway",
    "railway_station", "rectangular_farmland", "river", "roundabout", "runway", "sea_ice", "ship", "snowberg",
    "sparse_residential", "stadium", "storage_tank", "tennis_court", "terrace", "thermal_power_station", "wetland",
)


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
    """Test items and class names of dataset ``key`` under ``root``; the class count is checked."""
    spec = get_spec(key)
    items, names = spec.reader(Path(root))
    if len(names) != spec.num_classes:
        raise ValueError(f"{key} under {root}: found {len(names)} classes, expected {spec.num_classes}")
    return items, names


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
