"""The original RA-TTA class-name lists (RA-TTA:src/dataloader/*.py, stored in ``original_classnames.json``) and the
check of a dataset's own class names against them. The prompts and the description lookup use these lists, indexed
by label; the names in the dataset's files are only compared with them."""
from __future__ import annotations

import functools
import re
import warnings
from pathlib import Path
from typing import Iterable

from common.io import read_json

ORIGINAL_CLASSNAMES_FILE = Path(__file__).with_name("original_classnames.json")


def spaced_names(names: Iterable[str]) -> list[str]:
    """``names`` with ``_`` replaced by a space, as the original scripts do."""
    return [name.replace("_", " ") for name in names]


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
    return spaced_names(_original_raw(key))


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
