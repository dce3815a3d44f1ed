"""The papers' published numbers (``common/paper_numbers.json``) and their comparison with ours.

The registry is data: per paper, one result per table row with its source, the released files it belongs to
(manifest path and published hash), a tolerance, the metrics (as the scripts name them) and the commands that
evaluate the released files (used by ``reproduce.py``). ``$VLR_PAPER_NUMBERS`` names another registry file (tests
use one with the demo's numbers).

``report_paper_numbers`` is the hook of the validation scripts: when the checkpoints the run loaded (noted by
``common.run_record``) carry the hashes of a result, it prints the paper's numbers beside ours, once; otherwise it
says once that there is nothing to compare with.
"""
from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

from common import run_record
from common.errors import InputError
from common.io import PathLike, read_json

REGISTRY = Path(__file__).with_name("paper_numbers.json")
REGISTRY_ENV = "VLR_PAPER_NUMBERS"
RESULT_FIELDS = ("name", "dataset", "split", "source", "checkpoints", "tolerance", "metrics", "run")
NOT_RELEASED = "paper numbers: not the released checkpoint: no comparison"


class RegistryError(InputError, ValueError):
    """A registry file without the expected fields, or a paper it does not list."""


def registry_path(path: PathLike | None = None) -> Path:
    """``path``, else ``$VLR_PAPER_NUMBERS``, else the registry shipped with the code."""
    return Path(path or os.environ.get(REGISTRY_ENV) or REGISTRY)


def load_registry(path: PathLike | None = None) -> dict[str, Any]:
    """Read a registry and check that every result has the fields this module uses."""
    path = registry_path(path)
    registry = read_json(path, "a paper-numbers registry with a 'papers' object")
    papers = registry.get("papers") if isinstance(registry, dict) else None
    if not isinstance(papers, dict):
        raise RegistryError(f"{path}: expected a JSON object with a 'papers' object")
    for paper, entry in papers.items():
        for index, result in enumerate(entry.get("results", [])):
            missing = [name for name in RESULT_FIELDS if name not in result]
            if missing:
                raise RegistryError(f"{path}: papers.{paper}.results[{index}] lacks {missing}")
    return registry


def paper_results(registry: dict[str, Any], paper: str) -> list[dict[str, Any]]:
    """The results listed for ``paper`` (an error names the papers the registry has)."""
    if paper not in registry["papers"]:
        raise RegistryError(f"no paper {paper!r} in the registry; it lists {', '.join(registry['papers'])}")
    return registry["papers"][paper]["results"]


def metric_value(metrics: dict[str, Any], key: str) -> float | None:
    """``metrics[key]``, or the value at a dotted path (``ratta.top1``) into nested objects; None when absent."""
    if key in metrics:
        return float(metrics[key])
    value: Any = metrics
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return float(value)


@dataclass
class Row:
    """One line of a comparison: ``ours`` None when not measured, ``paper`` None when not published."""

    result: str
    metric: str
    paper: float | None
    ours: float | None
    tolerance: float
    note: str = ""

    @property
    def delta(self) -> float | None:
        return None if self.paper is None or self.ours is None else self.ours - self.paper

    @property
    def verdict(self) -> str:
        if self.delta is None:
            return "n/a"
        return "yes" if abs(self.delta) <= self.tolerance + 1e-9 else "NO"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "delta": self.delta, "within_tolerance": self.verdict}


def compare(result: dict[str, Any], metrics: dict[str, Any] | None, note: str = "") -> list[Row]:
    """One row per metric of ``result``: the paper's value, ours from ``metrics`` (None: not measured)."""
    tolerances = result.get("tolerances", {})
    return [Row(result["name"], key, paper, None if metrics is None else metric_value(metrics, key),
                float(tolerances.get(key, result["tolerance"])), note)
            for key, paper in result["metrics"].items()]


def _number(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def table_cells(rows: Iterable[Row]) -> list[list[str]]:
    """Header and one line of strings per row: result, metric, paper, ours, delta, within tolerance, note."""
    cells = [["result", "metric", "paper", "ours", "delta", "within tolerance", "note"]]
    for row in rows:
        within = row.verdict if row.verdict == "n/a" else f"{row.verdict} (±{row.tolerance:g})"
        cells.append([row.result, row.metric, _number(row.paper), _number(row.ours), _number(row.delta, True),
                      within, row.note])
    return cells


def format_text(rows: Iterable[Row]) -> str:
    """A plain aligned table."""
    cells = table_cells(rows)
    widths = [max(len(line[column]) for line in cells) for column in range(len(cells[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in cells)


def format_markdown(rows: Iterable[Row]) -> str:
    cells = table_cells(rows)
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in cells[1:]]
    return "\n".join(lines) + "\n"


def format_csv(rows: Iterable[Row]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(table_cells(rows))
    return buffer.getvalue()


def released_hashes(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The ``(algo, hash)`` pairs of the result's files whose hash is published."""
    return [(algo, entry[algo].lower()) for entry in result["checkpoints"] for algo in run_record.HASH_ALGOS
            if entry.get(algo)]


def matching_results(registry: dict[str, Any], checkpoints: Iterable[dict[str, Any]], dataset: str,
                     split: str) -> list[dict[str, Any]]:
    """Results of ``dataset``/``split`` whose every published hash is among the loaded ``checkpoints`` (dicts with
    ``sha256`` / ``sha1``, as ``run_record`` notes them); results without any published hash never match."""
    loaded = {(algo, checkpoint[algo]) for checkpoint in checkpoints for algo in run_record.HASH_ALGOS
              if checkpoint.get(algo)}
    found = []
    for paper in registry["papers"].values():
        for result in paper.get("results", []):
            wanted = released_hashes(result)
            if result["dataset"] == dataset and result["split"] == split and wanted and set(wanted) <= loaded:
                found.append(result)
    return found


_reported = False


def report_paper_numbers(dataset: str, split: str, metrics: dict[str, Any]) -> list[Row]:
    """Print the paper's numbers beside ``metrics`` when the run loaded a released checkpoint of a registry
    result, else say that there is no comparison; once per process, on rank 0. Returns the rows printed."""
    global _reported
    record = run_record.current()
    if _reported or record is None or not run_record.is_rank_zero():
        return []
    _reported = True
    results = matching_results(load_registry(), record.checkpoints.values(), dataset.lower(), split)
    if not results:
        print(NOT_RELEASED)
        return []
    rows = [row for result in results for row in compare(result, metrics) if row.paper is not None]
    if not rows:
        print(f"paper numbers: released checkpoint, but no {dataset} {split} numbers are published")
        return []
    print(f"paper numbers (released checkpoint; source: {results[0]['source']}):")
    print(format_text(rows))
    return rows


def note_metrics(dataset: str, split: str, metrics: dict[str, Any], path: PathLike) -> None:
    """The one call of a script that wrote ``metrics`` to ``path``: registers the folder for ``run_info.json`` and
    prints the paper's numbers beside ours (``report_paper_numbers``)."""
    run_record.note_output(Path(path).parent)
    report_paper_numbers(dataset, split, metrics)
