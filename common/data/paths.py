"""Dataset-root resolution: an explicit flag value, then environment variables, then an error naming the layout.

A root may be the parent folder (upstream ``base_path``, holding ``fashionIQ_dataset/``, ``cirr_dataset/``,
``shoes/``...) or the dataset folder itself. Resolution returns the dataset folder.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from common.errors import InvalidValue
from common.io import PathLike


@dataclass(frozen=True)
class DatasetLayout:
    folder: str
    """Name of the dataset folder inside a parent root."""
    expected: tuple[str, ...]
    """Sub-paths the dataset folder must contain."""
    env: tuple[str, ...]
    """Environment variables consulted in order when no explicit root is given."""


LAYOUTS: dict[str, DatasetLayout] = {
    "fashioniq": DatasetLayout("fashionIQ_dataset", ("captions", "image_splits", "images"),
                               ("FASHIONIQ_ROOT", "CIR_DATA_ROOT", "DATA_ROOT")),
    "cirr": DatasetLayout("cirr_dataset", ("cirr/captions", "cirr/image_splits"),
                          ("CIRR_ROOT", "CIR_DATA_ROOT", "DATA_ROOT")),
    "shoes": DatasetLayout("shoes", ("annotations", "images"), ("SHOES_ROOT", "CIR_DATA_ROOT", "DATA_ROOT")),
    "coco": DatasetLayout("coco", ("coco_annotations", "coco_image"), ("COCO_ROOT", "DATA_ROOT")),
    "flickr": DatasetLayout("flickr", ("flickr_annotations", "flickr_image"), ("FLICKR_ROOT", "DATA_ROOT")),
}


def _layout(name: str) -> DatasetLayout:
    if name not in LAYOUTS:
        raise InvalidValue(f"unknown dataset {name!r}; valid names: {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def _missing(folder: Path, expected: tuple[str, ...]) -> list[str]:
    return [sub for sub in expected if not (folder / sub).is_dir()]


def dataset_dir(name: str, root: PathLike, source: str = "the given root") -> Path:
    """The dataset folder for ``root``: ``root/<folder>`` when that holds the layout, else ``root`` itself.

    Raises FileNotFoundError naming ``source`` (e.g. ``--data-root`` or ``$CIRR_ROOT``) and the sub-folders expected.
    """
    layout = _layout(name)
    root = Path(root).expanduser()
    nested = root / layout.folder
    if nested.is_dir() and not _missing(nested, layout.expected):
        return nested
    if root.is_dir() and not _missing(root, layout.expected):
        return root
    if not root.is_dir():
        detail = "no such folder"
    else:
        probe = nested if nested.is_dir() else root
        detail = f"{probe} lacks {', '.join(_missing(probe, layout.expected))}"
    raise FileNotFoundError(
        f"{root} ({source}) is not a {name} dataset root: expected "
        f"{root}/{layout.folder}/{{{','.join(layout.expected)}}} or {root}/{{{','.join(layout.expected)}}} ({detail})"
    )


def resolve_dataset_root(name: str, explicit: PathLike | None = None) -> Path:
    """Resolve the dataset folder of ``name`` from ``explicit`` (a flag value), else the first set env variable.

    ``name`` is one of ``fashioniq``, ``cirr``, ``shoes``, ``coco``, ``flickr``. The variables are, in order, the
    dataset's own (``FASHIONIQ_ROOT``, ``CIRR_ROOT``, ``SHOES_ROOT``, ``COCO_ROOT``, ``FLICKR_ROOT``), then
    ``CIR_DATA_ROOT`` (CIR datasets only), then ``DATA_ROOT``.
    """
    layout = _layout(name)
    if explicit is not None and str(explicit) != "":
        return dataset_dir(name, explicit, "explicit root")
    for variable in layout.env:
        value = os.environ.get(variable)
        if value:
            return dataset_dir(name, value, f"${variable}")
    raise FileNotFoundError(
        f"no {name} dataset root given: pass the root flag or set one of {', '.join('$' + v for v in layout.env)} "
        f"to a folder holding {layout.folder}/{{{','.join(layout.expected)}}}"
    )
