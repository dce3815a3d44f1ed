"""Run folders, hyper-parameter files, CSV metric logs and optional Comet tracking."""
from __future__ import annotations

import contextlib
import csv
import io
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from common.io import PathLike, atomic_write_json, atomic_write_text
from common.runtime import get_logger

logger = get_logger(__name__)

UPSTREAM_TIMESTAMP = "%Y-%m-%d_%H:%M:%S"


def make_run_dir(root: PathLike, prefix: str, run_name: str | None = None, timestamp: str = UPSTREAM_TIMESTAMP) -> Path:
    """Create ``root/<prefix>_<timestamp>`` (or ``root/<run_name>``) that did not exist before.

    The upstream timestamp format is kept; if two runs start in the same second a ``_1``, ``_2``... suffix is added.
    """
    base = Path(root) / (run_name or f"{prefix}_{datetime.now().strftime(timestamp)}")
    candidate, n = base, 0
    while True:
        try:
            candidate.mkdir(parents=True, exist_ok=False)
            return candidate
        except FileExistsError:
            n += 1
            candidate = base.with_name(f"{base.name}_{n}")


def write_hyperparameters(run_dir: PathLike, params: dict[str, Any],
                          name: str = "training_hyperparameters.json") -> Path:
    """Write the run's parameter dict as upstream does (sorted keys, indent 4), atomically."""
    clean = {k: (str(v) if isinstance(v, Path) else v) for k, v in params.items()}
    return atomic_write_json(clean, Path(run_dir) / name, sort_keys=True, indent=4)


class CSVLogger:
    """A metrics table rewritten whole (atomically) after each row, like the upstream pandas CSVs.

    Re-opening an existing file (on resume) keeps its rows and columns (``columns`` first, then the file's others);
    ``truncate_after(epoch)`` drops rows of epochs that will be run again.
    """

    def __init__(self, path: PathLike, columns: list[str] | None = None):
        self.path = Path(path)
        self.columns: list[str] = list(columns or [])
        self.rows: list[dict[str, Any]] = []
        if self.path.is_file():
            with open(self.path, newline="") as handle:
                reader = csv.DictReader(handle)
                self.columns += [name for name in reader.fieldnames or [] if name not in self.columns]
                self.rows = [dict(row) for row in reader]

    def truncate_after(self, epoch: int) -> None:
        self.rows = [row for row in self.rows if int(float(row["epoch"])) <= epoch]
        self._write()

    def log(self, row: dict[str, Any]) -> None:
        for key in row:
            if key not in self.columns:
                self.columns.append(key)
        self.rows.append(dict(row))
        self._write()

    def _write(self) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(buffer.getvalue(), self.path)


class ExperimentTracker:
    """Comet-ml logging when both an API key and a workspace are given and ``comet_ml`` imports; else a no-op.

    It never raises because Comet is missing, unconfigured or unreachable: it logs one notice and carries on.
    """

    def __init__(self, api_key: str | None, workspace: str | None, project_name: str,
                 experiment_name: str | None = None, code_dir: PathLike | None = None):
        self.experiment = None
        if not (api_key and workspace):
            logger.info("Comet logging DISABLED (give --api-key and --workspace to enable it)")
            return
        try:
            import comet_ml

            self.experiment = comet_ml.Experiment(api_key=api_key, project_name=project_name, workspace=workspace)
            if experiment_name:
                self.experiment.set_name(experiment_name)
            if code_dir is not None:
                self.experiment.log_code(folder=str(code_dir))
        except Exception as error:  # noqa: BLE001 - tracking must never stop training
            logger.warning("Comet logging DISABLED: %s: %s", type(error).__name__, error)
            self.experiment = None

    @property
    def enabled(self) -> bool:
        return self.experiment is not None

    def log_parameters(self, params: dict[str, Any]) -> None:
        if self.enabled:
            self.experiment.log_parameters(params)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None, epoch: int | None = None) -> None:
        if self.enabled:
            self.experiment.log_metrics(metrics, step=step, epoch=epoch)

    @contextlib.contextmanager
    def context(self, name: str) -> Iterator[None]:
        """Comet's ``train()`` / ``validate()`` contexts; a plain block when disabled."""
        if self.enabled:
            with getattr(self.experiment, name)():
                yield
        else:
            yield
