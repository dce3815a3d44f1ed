"""FashionIQ and CIRR datasets with the upstream item tuples, and FashionIQ caption composition.

Item tuples (as the CLIP4Cir data_utils.py and its forks); ``[...]`` parts appear only when asked for:

| dataset / split / mode | item |
|---|---|
| FashionIQ train, relative | ref image, target image, [c1, c2], [[c1←, c2←]], [ref_aug image] |
| FashionIQ val, relative | ref name, target name, [c1, c2] |
| FashionIQ test, relative | ref name, ref image, [c1, c2] |
| CIRR train, relative | ref image, target_hard image, caption, [caption←], [ref_aug image] |
| CIRR val, relative | ref name, target_hard name, caption, members (6 names) |
| CIRR test1, relative | pairid, ref name, caption, members (6 names) |
| any split, classic | image name, image |

``caption_hook(text, forward)`` rewrites every relative caption (Bi-BLIP4CIR inserts its direction markers);
``return_reverse`` adds the backward captions (``forward=False``) to train items; ``ref_aug`` is applied to the same
raw reference image as ``preprocess`` (MLCL's augmented view). Files are validated on construction. With
``on_error='raise'`` (default) an unreadable image raises; ``on_error='skip'`` reproduces upstream's drop: the
item becomes None, a warning names the file, and ``dataset.collate_fn`` (``collate_drop_none``) drops it.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Sequence

from PIL import Image
from torch.utils.data import Dataset, default_collate

from common.data.images import open_image
from common.data.paths import dataset_dir
from common.errors import InvalidValue
from common.io import MalformedFileError, PathLike, read_json
from common.runtime import get_logger

logger = get_logger(__name__)

FIQ_SPLITS = ("train", "val", "test")
FIQ_DRESS_TYPES = ("dress", "shirt", "toptee")
CIRR_SPLITS = ("train", "val", "test1")
MODES = ("relative", "classic")
ON_ERROR = ("raise", "skip")

CaptionHook = Callable[[str, bool], str]
ImageTransform = Callable[[Image.Image], Any]


def check_choice(value: Any, valid: Sequence[str], what: str) -> None:
    """Raise ``InvalidValue`` naming ``what`` and listing the valid values when ``value`` is not one of them."""
    if value not in valid:
        raise InvalidValue(f"unknown {what} {value!r}; valid values: {', '.join(valid)}")


def _keep_caption(text: str, forward: bool) -> str:
    return text


def fiq_compositions(captions: Sequence[str]) -> tuple[str, str, str, str]:
    """The four FashionIQ queries of a caption pair: "C1 and c2", "C2 and c1", "C1", "C2".

    Captions lose ``.?, `` at both ends; the first word of each query is ``str.capitalize()``-d.
    """
    first, second = (caption.strip(".?, ") for caption in captions)
    return (f"{first.capitalize()} and {second}", f"{second.capitalize()} and {first}", first.capitalize(),
            second.capitalize())


def fiq_train_caption(captions: Sequence[str], rng: random.Random) -> str:
    """Compose one FashionIQ training query from its two captions with a single ``rng.random()`` draw.

    u < .25: "C1 and c2"; .25 < u < .5: "C2 and c1"; .5 < u < .75: "C1"; otherwise "C2" (so exactly .25, .5 and
    .75 give "C2", as upstream); see ``fiq_compositions``.
    """
    both, swapped, first, second = fiq_compositions(captions)
    draw = rng.random()
    if draw < 0.25:
        return both
    if 0.25 < draw < 0.5:
        return swapped
    if 0.5 < draw < 0.75:
        return first
    return second


def fiq_val_caption(captions: Sequence[str]) -> str:
    """The deterministic FashionIQ validation/test query "C1 and c2"."""
    return fiq_compositions(captions)[0]


def collate_drop_none(batch: list[Any]) -> Any:
    """``default_collate`` over the items that loaded (for ``on_error='skip'``); None when none did.

    The dataset has already logged the file behind each dropped item; this logs how many a batch lost.
    """
    kept = [item for item in batch if item is not None]
    if len(kept) < len(batch):
        logger.warning("dropped %d of %d items from a batch (unreadable files logged above)",
                       len(batch) - len(kept), len(batch))
    return default_collate(kept) if kept else None


def read_name_list(path: Path, what: str) -> list[str]:
    """Read a JSON list of strings, raising an error naming ``path`` and ``what`` otherwise."""
    names = read_json(path, what)
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise MalformedFileError(f"{path}: expected {what}")
    return names


def read_json_entries(path: Path, keys: Sequence[str], what: str) -> list[dict]:
    """Read a JSON list of objects that all carry ``keys``; errors name the file and the first bad entry."""
    entries = read_json(path, what)
    if not isinstance(entries, list):
        raise MalformedFileError(f"{path}: expected {what}, found a JSON {type(entries).__name__}")
    for index, entry in enumerate(entries):
        missing = [key for key in keys if not isinstance(entry, dict) or key not in entry]
        if missing:
            raise MalformedFileError(f"{path}: entry {index} lacks {', '.join(missing)}; expected {what}")
    return entries


def check_known_image(path: Path, index: int, field: str, name: Any, known: set[str] | dict, split_path: Path) -> None:
    """Raise when entry ``index`` of annotation ``path`` names an image absent from the split file."""
    if not isinstance(name, str) or name not in known:
        raise MalformedFileError(f"{path}: entry {index} names {field} {name!r}, which is not an image of "
                                 f"{split_path}")


class CIRDatasetBase(Dataset):
    """Shared plumbing: mode/error-policy checks, the skip policy and train-item assembly."""

    def __init__(self, mode: str, preprocess: ImageTransform, caption_hook: CaptionHook | None,
                 return_reverse: bool, ref_aug: ImageTransform | None, on_error: str):
        check_choice(mode, MODES, "mode")
        check_choice(on_error, ON_ERROR, "on_error policy")
        self.mode = mode
        self.preprocess = preprocess
        self.caption_hook = caption_hook or _keep_caption
        self.return_reverse = return_reverse
        self.ref_aug = ref_aug
        self.on_error = on_error
        self.image_names: list[str] = []
        self.triplets: list[dict] = []

    @property
    def collate_fn(self) -> Callable[[list[Any]], Any]:
        """``collate_drop_none`` under ``on_error='skip'``, else torch's ``default_collate``."""
        return collate_drop_none if self.on_error == "skip" else default_collate

    def image_path(self, name: str) -> Path:
        """Path of the image file called ``name`` in ``image_names`` and the annotations."""
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.triplets) if self.mode == "relative" else len(self.image_names)

    def __getitem__(self, index: int) -> Any:
        try:
            return self._item(index)
        except OSError as error:
            if self.on_error == "raise":
                raise
            logger.warning("skipping item %d of %s: %s", index, type(self).__name__, error)
            return None

    def _item(self, index: int) -> tuple:
        raise NotImplementedError

    def _load(self, name: str) -> Any:
        return self.preprocess(open_image(self.image_path(name)))

    def _train_item(self, reference: str, target: str, forward: Any, backward: Any) -> tuple:
        raw_reference = open_image(self.image_path(reference))
        item = [self.preprocess(raw_reference), self._load(target), forward]
        if self.return_reverse:
            item.append(backward)
        if self.ref_aug is not None:
            item.append(self.ref_aug(raw_reference))
        return tuple(item)


class FashionIQDataset(CIRDatasetBase):
    """FashionIQ over one split and any subset of the dress types, concatenated in the given order.

    ``root`` is the folder holding ``fashionIQ_dataset/`` or that folder itself. ``image_names`` lists the split
    images of all requested dress types (the classic order); ``triplets`` holds the caption entries (relative mode).
    """

    def __init__(self, root: PathLike, split: str, dress_types: Sequence[str], mode: str,
                 preprocess: ImageTransform, caption_hook: CaptionHook | None = None, return_reverse: bool = False,
                 ref_aug: ImageTransform | None = None, on_error: str = "raise"):
        super().__init__(mode, preprocess, caption_hook, return_reverse, ref_aug, on_error)
        check_choice(split, FIQ_SPLITS, "FashionIQ split")
        if isinstance(dress_types, str) or not dress_types:
            raise ValueError(f"dress_types must be a non-empty list of {', '.join(FIQ_DRESS_TYPES)}; "
                             f"got {dress_types!r}")
        for dress_type in dress_types:
            check_choice(dress_type, FIQ_DRESS_TYPES, "FashionIQ dress type")
        self.root = dataset_dir("fashioniq", root)
        self.split = split
        self.dress_types = list(dress_types)
        for dress_type in self.dress_types:
            split_path = self.root / "image_splits" / f"split.{dress_type}.{split}.json"
            names = read_name_list(split_path, "a JSON list of image ids (ASIN strings)")
            self.image_names.extend(names)
            if mode == "relative":
                self.triplets.extend(self._read_captions(dress_type, set(names), split_path))

    def _read_captions(self, dress_type: str, known: set[str], split_path: Path) -> list[dict]:
        path = self.root / "captions" / f"cap.{dress_type}.{self.split}.json"
        fields = ("candidate", "captions") if self.split == "test" else ("candidate", "target", "captions")
        what = f"a JSON list of {{{', '.join(fields)}}} objects with two captions"
        triplets = read_json_entries(path, fields, what)
        for index, triplet in enumerate(triplets):
            captions = triplet["captions"]
            if not isinstance(captions, list) or len(captions) != 2 or not all(isinstance(c, str) for c in captions):
                raise MalformedFileError(f"{path}: entry {index} has captions {captions!r}; expected a list of two "
                                         "strings")
            for field in fields[:-1]:
                check_known_image(path, index, field, triplet[field], known, split_path)
        return triplets

    def image_path(self, name: str) -> Path:
        return self.root / "images" / f"{name}.jpg"

    def _item(self, index: int) -> tuple:
        if self.mode == "classic":
            name = self.image_names[index]
            return name, self._load(name)
        triplet = self.triplets[index]
        forward = [self.caption_hook(caption, True) for caption in triplet["captions"]]
        if self.split == "train":
            backward = [self.caption_hook(caption, False) for caption in triplet["captions"]]
            return self._train_item(triplet["candidate"], triplet["target"], forward, backward)
        if self.split == "val":
            return triplet["candidate"], triplet["target"], forward
        return triplet["candidate"], self._load(triplet["candidate"]), forward


class CIRRDataset(CIRDatasetBase):
    """CIRR (rc2) over one split. ``root`` is the folder holding ``cirr_dataset/`` or that folder itself.

    ``image_names`` follows the key order of ``split.rc2.<split>.json`` (the classic order); ``triplets`` holds the
    caption entries (relative mode). ``val`` reads the ``dev`` images.
    """

    def __init__(self, root: PathLike, split: str, mode: str, preprocess: ImageTransform,
                 caption_hook: CaptionHook | None = None, return_reverse: bool = False,
                 ref_aug: ImageTransform | None = None, on_error: str = "raise"):
        super().__init__(mode, preprocess, caption_hook, return_reverse, ref_aug, on_error)
        check_choice(split, CIRR_SPLITS, "CIRR split")
        self.root = dataset_dir("cirr", root)
        self.split = split
        split_path = self.root / "cirr" / "image_splits" / f"split.rc2.{split}.json"
        what = "a JSON object mapping image names to paths relative to cirr_dataset/"
        self.name_to_relpath = read_json(split_path, what)
        if not isinstance(self.name_to_relpath, dict) or not all(
                isinstance(path, str) for path in self.name_to_relpath.values()):
            raise MalformedFileError(f"{split_path}: expected {what}")
        self.image_names = list(self.name_to_relpath)
        if mode == "relative":
            self.triplets = self._read_captions(split_path)

    def _read_captions(self, split_path: Path) -> list[dict]:
        path = self.root / "cirr" / "captions" / f"cap.rc2.{self.split}.json"
        fields = ("pairid", "reference", "caption", "img_set")
        if self.split != "test1":
            fields += ("target_hard",)
        what = f"a JSON list of {{{', '.join(fields)}}} objects"
        triplets = read_json_entries(path, fields, what)
        for index, triplet in enumerate(triplets):
            if not isinstance(triplet["pairid"], int) or isinstance(triplet["pairid"], bool):
                raise MalformedFileError(f"{path}: entry {index} has pairid {triplet['pairid']!r}; expected an integer")
            if not isinstance(triplet["caption"], str):
                raise MalformedFileError(f"{path}: entry {index} has a caption that is not a string")
            members = triplet["img_set"].get("members") if isinstance(triplet["img_set"], dict) else None
            if not isinstance(members, list):
                raise MalformedFileError(f"{path}: entry {index} lacks img_set.members (a list of image names)")
            check_known_image(path, index, "reference", triplet["reference"], self.name_to_relpath, split_path)
            if "target_hard" in fields:
                check_known_image(path, index, "target_hard", triplet["target_hard"], self.name_to_relpath, split_path)
            if self.split != "train":
                for member in members:
                    check_known_image(path, index, "img_set member", member, self.name_to_relpath, split_path)
        return triplets

    def image_path(self, name: str) -> Path:
        return self.root / self.name_to_relpath[name]

    def _item(self, index: int) -> tuple:
        if self.mode == "classic":
            name = self.image_names[index]
            return name, self._load(name)
        triplet = self.triplets[index]
        forward = self.caption_hook(triplet["caption"], True)
        if self.split == "train":
            backward = self.caption_hook(triplet["caption"], False)
            return self._train_item(triplet["reference"], triplet["target_hard"], forward, backward)
        members = triplet["img_set"]["members"]
        if self.split == "val":
            return triplet["reference"], triplet["target_hard"], forward, members
        return triplet["pairid"], triplet["reference"], forward, members
