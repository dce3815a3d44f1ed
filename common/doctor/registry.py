"""The datasets the doctor knows, each a ``DatasetSpec``: where its folder lies under a data root, how to survey it,
its published sizes. ``common.doctor.layouts`` registers the datasets whose readers live in ``common.data``; each
paper registers its own in ``<paper>/doctor.py`` (imported by the top-level doctor.py's ``load_paper_datasets``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from common.doctor.counts import Published
from common.doctor.report import DatasetReport

Survey = Callable[[DatasetReport, Path], list[Path]]
"""Fills a report with layout checks, ``counts`` and facts; returns the image files the annotations list. Never
raises for a bad copy: a reader's error becomes a failed check naming the file."""
Explain = Callable[[DatasetReport, Path, list[str]], None]
"""Adds a check naming why the listed images are missing (e.g. CIRR's flat train folder)."""


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of the doctor: ``folders`` (relative to the data root, first match wins, ``""`` is the root
    itself) where one of ``markers`` (sub-folders; none: the folder itself) must exist to count as present."""

    name: str
    survey: Survey
    folders: tuple[str, ...]
    markers: tuple[str, ...] = ()
    published: Mapping[str, Published] = field(default_factory=dict)
    """Count name (as the survey reports it) -> published size; a count absent here is reported, not compared."""
    explain: Explain | None = None

    def find(self, root: Path) -> Path | None:
        """The dataset folder under ``root``, None when no candidate holds a marker."""
        for sub in self.folders:
            folder = root / sub
            if any((folder / marker).is_dir() for marker in self.markers) if self.markers else folder.is_dir():
                return folder
        return None

    def where(self, root: Path) -> str:
        """Where ``find`` looked, for the 'absent' check."""
        markers = f"{{{','.join(self.markers)}}}" if len(self.markers) > 1 else "".join(self.markers)
        return " or ".join(f"{root / sub / markers}".rstrip("/") + "/" for sub in self.folders)


DATASETS: dict[str, DatasetSpec] = {}
"""Name -> spec, in registration order: a live registry (``name in DATASETS``, ``', '.join(DATASETS)``)."""


def register_dataset(name: str, survey: Survey, folders: tuple[str, ...], markers: tuple[str, ...] = (),
                     published: Mapping[str, Published] | None = None, explain: Explain | None = None) -> DatasetSpec:
    """Add dataset ``name`` (lower case) to ``DATASETS``; ValueError when the name is taken."""
    if name != name.lower():
        raise ValueError(f"dataset name {name!r} must be lower case")
    if name in DATASETS:
        raise ValueError(f"dataset {name!r} is already registered (by {DATASETS[name].survey.__module__})")
    spec = DatasetSpec(name, survey, folders, markers, dict(published or {}), explain)
    DATASETS[name] = spec
    return spec
