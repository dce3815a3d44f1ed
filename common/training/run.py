"""A training run folder in CLIP4Cir's layout: ``<output-root>/models/<prefix>_<timestamp>/`` with the JSON
hyper-parameters, ``train_metrics.csv``, ``validation_metrics.csv``, ``training_curves.png``, the Comet experiment,
and ``resume.pt`` after every epoch so that ``--resume RUN_DIR`` repeats no finished epoch."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from common.dist import DistInfo, barrier, broadcast_object
from common.io import PathLike
from common.runtime import get_logger
from common.training.checkpoint import load_resume_state, save_resume_state
from common.training.experiment import CSVLogger, ExperimentTracker, make_run_dir, write_hyperparameters
from common.training.plots import plot_training_curves

logger = get_logger(__name__)


def open_run_dir(args: argparse.Namespace, dist: DistInfo, prefix: str) -> Path:
    """``--resume RUN_DIR``, else a new ``<output-root>/models/<prefix>_<timestamp>`` made by process 0."""
    if args.resume:
        run_dir = Path(args.resume)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"{run_dir}: --resume expects a run folder of an earlier run")
        return run_dir
    run_dir = make_run_dir(Path(args.output_root) / "models", prefix, args.run_name) if dist.is_main else None
    return Path(broadcast_object(str(run_dir) if run_dir else None))


class RunLog:
    """The run's ``train_metrics.csv``, ``validation_metrics.csv``, ``training_curves.png`` (redrawn after each
    validation and at the end) and Comet experiment; only process 0 writes. On resume, rows of epochs from
    ``start_epoch`` on are dropped."""

    def __init__(self, run_dir: Path, dist: DistInfo, args: argparse.Namespace, project: str, title: str,
                 start_epoch: int, code_dir: PathLike | None = None):
        self.run_dir, self.title, self.enabled = run_dir, title, dist.is_main
        self.tracker = ExperimentTracker(args.api_key if dist.is_main else None, args.workspace, project,
                                         args.experiment_name, code_dir=code_dir)
        if self.enabled:
            self.train_csv = CSVLogger(run_dir / "train_metrics.csv", ["epoch", "train_epoch_loss"])
            self.val_csv = CSVLogger(run_dir / "validation_metrics.csv")
            for csv in (self.train_csv, self.val_csv):
                if csv.rows:
                    csv.truncate_after(start_epoch - 1)

    def train(self, epoch: int, loss: float) -> None:
        """Log the epoch's train loss."""
        with self.tracker.context("train"):
            self.tracker.log_metrics({"epoch_loss": loss}, epoch=epoch)
        if self.enabled:
            self.train_csv.log({"epoch": epoch, "train_epoch_loss": loss})
            logger.info("epoch %d: train_epoch_loss %.4f", epoch, loss)

    def validation(self, epoch: int, metrics: dict[str, float]) -> None:
        """Log the epoch's validation metrics and redraw the curves."""
        with self.tracker.context("validate"):
            self.tracker.log_metrics(metrics, epoch=epoch)
        if self.enabled:
            self.val_csv.log({"epoch": epoch, **metrics})
            logger.info("epoch %d: %s", epoch, ", ".join(f"{k} {v:.2f}" for k, v in metrics.items()))
            self.plot()

    def plot(self) -> None:
        """Draw ``training_curves.png`` from the two CSV files."""
        if self.enabled:
            plot_training_curves(self.train_csv.path, self.val_csv.path, self.run_dir / "training_curves.png",
                                 title=self.title)


class TrainingRun:
    """A training script's run folder: a new one, or ``--resume RUN_DIR`` with its state restored into ``state``
    (name -> object with ``state_dict``); ``best`` holds the best metrics so far and is saved with the resume point.

    ``args`` needs the flags of ``common.args.add_output_args`` and ``add_comet_args``.
    """

    def __init__(self, args: argparse.Namespace, dist: DistInfo, prefix: str, state: dict[str, Any],
                 params: dict[str, Any], project: str, title: str, code_dir: PathLike | None = None):
        self.dir, self.dist, self.state = open_run_dir(args, dist, prefix), dist, state
        self.start_epoch, extra = load_resume_state(self.dir, state) if args.resume else (0, {})
        self.best: dict[str, float] = extra.get("best", {})
        if dist.is_main and not args.resume:
            write_hyperparameters(self.dir, params)
        self.log = RunLog(self.dir, dist, args, project, title, self.start_epoch, code_dir)
        self.log.tracker.log_parameters(params)

    def end_epoch(self, epoch: int) -> None:
        """Write ``resume.pt`` after ``epoch`` (process 0), then wait for every process."""
        if self.dist.is_main:
            save_resume_state(self.dir, epoch, self.state, extra={"best": self.best})
        barrier()
