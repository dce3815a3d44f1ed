"""FashionIQ, CIRR and Shoes as the CLIP4Cir scripts use them: dataset roots, the classic (gallery) and relative
(triplet) datasets, the train captions a query can draw, named images to encode, and train triplets as rows of an
image-feature table."""
from __future__ import annotations

import argparse
import os
import random
from pathlib import Path
from typing import Any, Callable, Sequence

from torch.utils.data import Dataset

from common.data.cir import CaptionHook, CIRRDataset, FashionIQDataset, fiq_compositions, fiq_train_caption
from common.data.images import open_image
from common.data.paths import LAYOUTS, resolve_dataset_root
from common.data.shoes import ShoesDataset
from common.io import PathLike

ImageTransform = Callable[[Any], Any]

FIQ_DRESS_TYPES = ["dress", "toptee", "shirt"]
"""The FashionIQ categories in CLIP4Cir's order: training sets and the per-category validation follow it."""

__all__ = ["DISPLAY_NAMES", "FIQ_DRESS_TYPES", "NamedImages", "TripletRows", "caption_rng", "classic_dataset",
           "compose_captions", "dataset_choice", "dataset_root", "possible_train_captions", "relative_dataset",
           "triplet_fields"]

DISPLAY_NAMES = {"fashioniq": "FashionIQ", "cirr": "CIRR", "shoes": "Shoes"}


def dataset_choice(*names: str) -> Callable[[str], str]:
    """An argparse ``type`` for ``--dataset``: one of ``names`` ('fashioniq', 'cirr', 'shoes'), case-insensitive,
    returned lower-cased."""

    def parse(value: str) -> str:
        if value.lower() not in names:
            shown = [repr(DISPLAY_NAMES[name]) for name in names]
            choices = f"{', '.join(shown[:-1])} or {shown[-1]}" if len(shown) > 1 else shown[0]
            raise argparse.ArgumentTypeError(f"dataset should be {choices} (case-insensitive), got {value!r}")
        return value.lower()

    parse.__name__ = "dataset"
    return parse


def dataset_root(name: str, data_root: PathLike | None) -> Path:
    """``--data-root``, else the dataset's environment variables, else the current folder (the original layout)."""
    if data_root is None and not any(os.environ.get(variable) for variable in LAYOUTS[name].env):
        data_root = "."
    return resolve_dataset_root(name, data_root)


def relative_dataset(name: str, root: Path, split: str, preprocess: ImageTransform,
                     caption_hook: CaptionHook | None = None, dress_types: Sequence[str] = FIQ_DRESS_TYPES,
                     return_reverse: bool = False, ref_aug: ImageTransform | None = None,
                     on_error: str = "raise") -> Dataset:
    """Triplets of ``name`` ('fashioniq', 'cirr' or 'shoes'); ``caption_hook`` rewrites each caption (e.g. the
    Bi-BLIP4CIR direction markers) and train items carry the backward captions with ``return_reverse``."""
    if name == "fashioniq":
        return FashionIQDataset(root, split, dress_types, "relative", preprocess, caption_hook,
                                return_reverse=return_reverse, ref_aug=ref_aug, on_error=on_error)
    if name == "cirr":
        return CIRRDataset(root, split, "relative", preprocess, caption_hook, return_reverse=return_reverse,
                           ref_aug=ref_aug, on_error=on_error)
    if name == "shoes":
        return ShoesDataset(root, split, "relative", preprocess, ref_aug=ref_aug)
    raise ValueError(f"unknown CIR dataset {name!r}; expected fashioniq, cirr or shoes")


def classic_dataset(name: str, root: Path, split: str, preprocess: ImageTransform,
                    dress_types: Sequence[str] = FIQ_DRESS_TYPES) -> Dataset:
    """(image name, image) over a split's images."""
    if name == "fashioniq":
        return FashionIQDataset(root, split, dress_types, "classic", preprocess)
    if name == "cirr":
        return CIRRDataset(root, split, "classic", preprocess)
    if name == "shoes":
        return ShoesDataset(root, split, "classic", preprocess)
    raise ValueError(f"unknown CIR dataset {name!r}; expected fashioniq, cirr or shoes")


def compose_captions(name: str, captions: Sequence, rng: random.Random) -> list[str]:
    """The query strings of a collated batch: FashionIQ draws one of four compositions of the two captions per
    triplet (``fiq_train_caption``); CIRR and Shoes use their caption as is."""
    if name == "fashioniq":
        return [fiq_train_caption(pair, rng) for pair in zip(*captions)]
    return list(captions)


def caption_rng(seed: int, rank: int, epoch: int) -> random.Random:
    """The generator of the FashionIQ caption draws of one epoch on one process (so a resumed run draws the same)."""
    return random.Random(f"{seed}:{rank}:{epoch}")


def triplet_fields(dataset: Dataset, index: int) -> tuple[str, str, Any, Any]:
    """(reference name, target name, forward captions, backward captions) of a train triplet, without images.
    Shoes has no backward captions (None)."""
    triplet = dataset.triplets[index]
    if isinstance(dataset, ShoesDataset):
        return triplet["ReferenceImageName"], triplet["ImageName"], triplet["RelativeCaption"], None
    hook = dataset.caption_hook
    if isinstance(dataset, FashionIQDataset):
        captions = triplet["captions"]
        return (triplet["candidate"], triplet["target"], [hook(c, True) for c in captions],
                [hook(c, False) for c in captions])
    caption = triplet["caption"]
    return triplet["reference"], triplet["target_hard"], hook(caption, True), hook(caption, False)


def possible_train_captions(dataset: Dataset, backward: bool = True) -> list[str]:
    """Every query string a training epoch can draw (forward, and backward with ``backward``), without repeats:
    the rows of a train text-feature table."""
    strings: dict[str, None] = {}
    for index in range(len(dataset.triplets)):
        _, _, forward_captions, backward_captions = triplet_fields(dataset, index)
        for captions in (forward_captions, backward_captions) if backward else (forward_captions,):
            if isinstance(dataset, FashionIQDataset):
                strings.update(dict.fromkeys(fiq_compositions(captions)))
            elif captions is not None:
                strings[captions] = None
    return list(strings)


class TripletRows(Dataset):
    """Train triplets as rows of an image-feature table: (reference row, target row, forward, backward captions).

    Collated exactly like the image dataset it wraps, so the two kinds of batches differ only in the image fields.
    ``backward=False`` drops the backward captions (datasets built without ``return_reverse``).
    """

    def __init__(self, dataset: Dataset, rows: dict[str, int], backward: bool = True):
        self.dataset, self.rows, self.backward = dataset, rows, backward

    def __len__(self) -> int:
        return len(self.dataset.triplets)

    def __getitem__(self, index: int) -> tuple:
        reference, target, forward, backward = triplet_fields(self.dataset, index)
        if not self.backward:
            return self.rows[reference], self.rows[target], forward
        return self.rows[reference], self.rows[target], forward, backward

    def used_images(self) -> list[str]:
        """The image names the triplets use, in first-use order."""
        names: dict[str, None] = {}
        for index in range(len(self)):
            reference, target, _, _ = triplet_fields(self.dataset, index)
            names.update(dict.fromkeys((reference, target)))
        return list(names)


class NamedImages(Dataset):
    """(name, preprocessed image) of the listed images of a CIR dataset, e.g. the train images the triplets use."""

    def __init__(self, dataset: Dataset, names: Sequence[str], preprocess: ImageTransform):
        self.dataset, self.names, self.preprocess = dataset, list(names), preprocess

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[str, Any]:
        name = self.names[index]
        return name, self.preprocess(open_image(self.dataset.image_path(name)))
