"""The 17 RA-TTA test sets, one registry (RA-TTA:src/dataloader/*.py): each key's class count, reader
(``ratta.readers``) and prompt templates, and the test images as a dataset.

The prompts and the description lookup use the original's hard-coded class lists (``ratta.classnames``), indexed by
label; the names in the dataset's files are only checked against them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image
from torch.utils.data import Dataset

from common.errors import InvalidValue
from common.io import MalformedFileError
from ratta.classnames import DTD_CLASSES, check_classnames, original_classnames
from ratta.readers import Items, coop_reader, imagenet_reader, read_caltech256, read_cub200, read_fgvc, read_resisc45
from ratta.templates import PRE_TEMPLATES, TEMPLATES


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
        raise InvalidValue(f"unknown --dataset {key!r}; valid keys: {', '.join(valid)}")
    return valid[key]


def read_test_set(key: str, root: str | Path) -> tuple[Items, list[str]]:
    """Test items of dataset ``key`` under ``root`` and the original's class names (``original_classnames``); the
    class count and the names in the dataset's files are checked against them (``check_classnames``)."""
    spec = get_spec(key)
    items, names = spec.reader(Path(root))
    if len(names) != spec.num_classes:
        raise MalformedFileError(f"{key} under {root}: found {len(names)} classes, expected {spec.num_classes}")
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
