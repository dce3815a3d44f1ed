"""A training run folder in CLIP4Cir's layout: ``<output-root>/models/<prefix>_<timestamp>/`` with the JSON
hyper-parameters, every flag of the run (``run_args.json``), ``train_metrics.csv``, ``validation_metrics.csv``,
``training_curves.png``, the Comet experiment, and ``resume.pt`` after every epoch (unless ``--no-resume-state``) so
that ``--resume RUN_DIR`` repeats no finished epoch; with ``--save-every-steps`` / ``--save-every-minutes`` also inside
epochs (``common.training.steps``), so that it repeats no saved step. Which folder to continue and the checks made
before (``--resume auto``, the flags that must match) are in ``common.training.resume``; ``run.lock`` keeps a second
process out of a folder in use (``common.training.lock``)."""
from __future__ import annotations

import argparse
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from common.dist import DistInfo, barrier, broadcast_object
from common.errors import InputError
from common.io import PathLike, atomic_write_json
from common.run_record import note_output
from common.runtime import format_metrics, get_logger, track_run
from common.training.checkpoint import RESUME_FILE, load_resume_state, save_resume_state
from common.training.experiment import CSVLogger, ExperimentTracker, make_run_dir, write_hyperparameters
from common.training.lock import RunLocked, acquire_lock, release_lock
from common.training.plots import plot_training_curves
from common.training.resume import ARGS_FILE, DERIVED_PATTERNS, plain, preflight, record_num_epochs, stale_files
from common.training.steps import StepSaver

logger = get_logger(__name__)

def open_run_dir(args: argparse.Namespace, dist: DistInfo, prefix: str, subdir: str = "models") -> Path:
    """``--resume RUN_DIR``, else a new ``<output-root>/<subdir>/<prefix>_<timestamp>`` made by process 0."""
    if args.resume:
        run_dir = Path(args.resume)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"{run_dir}: --resume expects a run folder of an earlier run")
        return run_dir
    run_dir = make_run_dir(Path(args.output_root) / subdir, prefix, args.run_name) if dist.is_main else None
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
            logger.info("epoch %d: %s", epoch, format_metrics(metrics))
            self.plot()

    def plot(self) -> None:
        """Draw ``training_curves.png`` from the two CSV files."""
        if self.enabled:
            plot_training_curves(self.train_csv.path, self.val_csv.path, self.run_dir / "training_curves.png",
                                 title=self.title)


class TrainingRun:
    """A training script's run folder: a new one, or ``--resume RUN_DIR`` with its state restored into ``state``
    (name -> object with ``state_dict``); ``best`` holds the best metrics so far and is saved with the resume point.

    ``args`` needs the flags of ``common.args.add_output_args`` and ``add_comet_args``. ``preflight`` runs first
    (call it yourself before heavy work to fail early): a resume with differing flags stops before the folder is
    touched, a finished run exits 0. ``num_epochs`` defaults to ``args.num_epochs``; ``resume_ignore`` names more
    flags that may differ on resume, ``resume_strict`` flags of ``IGNORED_FLAGS`` that must not. The run folder is
    ``<output-root>/<subdir>/<prefix>_<timestamp>``; process 0 holds its ``run.lock`` until the last epoch ends
    (or the process exits). On resume, a changed ``--num-epochs`` is written to ``run_args.json`` and files
    matching ``derived_patterns`` (made from the earlier checkpoints) are named as stale. ``steps`` (a
    ``StepSaver``) saves and continues partial epochs: pass ``run.steps.epoch(...)`` to ``train_one_epoch``.
    """

    def __init__(self, args: argparse.Namespace, dist: DistInfo, prefix: str, state: dict[str, Any],
                 params: dict[str, Any], project: str, title: str, code_dir: PathLike | None = None,
                 num_epochs: int | None = None, resume_ignore: Iterable[str] = (), resume_strict: Iterable[str] = (),
                 subdir: str = "models", derived_patterns: Iterable[str] = DERIVED_PATTERNS):
        preflight(args, params, num_epochs, resume_ignore, resume_strict, prefix, subdir)
        started = time.time()
        self.dir, self.dist, self.state = open_run_dir(args, dist, prefix, subdir), dist, state
        self.lock = self._hold_lock()
        self.save_resume = not getattr(args, "no_resume_state", False)
        self.start_epoch, extra = load_resume_state(self.dir, state) if args.resume else (0, {})
        self.best: dict[str, float] = extra.get("best", {})
        self.total = num_epochs if num_epochs is not None else getattr(args, "num_epochs", None)
        self.place = track_run(self.dir, self.save_resume, self.start_epoch - 1)
        note_output(self.dir)
        partial = extra.get("partial")
        self.steps = StepSaver(dist, self.save_partial, partial, *self._step_interval(args))
        if partial is not None:
            self.place.saved_step(partial["epoch"], partial["step"])
        if args.resume:
            after = f", after its step {partial['step']}" if partial is not None else ""
            done = f"epochs 0-{self.start_epoch - 1} are done" if self.start_epoch else "no epoch is done"
            logger.info("resuming %s at epoch %d of %s%s (%s)", self.dir, self.start_epoch,
                        self.total if self.total is not None else "?", after, done)
            if dist.is_main:
                self._note_resume(args, derived_patterns, started)
        else:
            logger.info("run folder: %s", self.dir)
        if dist.is_main and not args.resume:
            write_hyperparameters(self.dir, params)
            atomic_write_json(plain(vars(args)), self.dir / ARGS_FILE, sort_keys=True, indent=4)
        self.log = RunLog(self.dir, dist, args, project, title, self.start_epoch, code_dir)
        self.log.tracker.log_parameters(params)

    def _hold_lock(self) -> dict | None:
        """Take the folder's lock on process 0; every process stops with its message when another run holds it."""
        owner, problem = None, None
        if self.dist.is_main:
            try:
                owner = acquire_lock(self.dir)
            except RunLocked as error:
                problem = str(error)
        problem = broadcast_object(problem)
        if problem:
            raise RunLocked(problem)
        return owner

    def _note_resume(self, args: argparse.Namespace, derived_patterns: Iterable[str], started: float) -> None:
        """Record a changed ``--num-epochs`` and name the files made from the checkpoints written before."""
        before = record_num_epochs(self.dir, args.num_epochs) if hasattr(args, "num_epochs") else None
        if before is not None:
            logger.info("%s: num_epochs %d -> %d, written to %s", self.dir, before, args.num_epochs, ARGS_FILE)
        stale = stale_files(self.dir, derived_patterns, started)
        if stale:
            names = ", ".join(str(path.relative_to(self.dir)) for path in stale)
            logger.warning("%s: made from the run's checkpoints before this resume, stale once it saves new ones "
                           "(make them again afterwards): %s", self.dir, names)

    def _step_interval(self, args: argparse.Namespace) -> tuple[int | None, float | None]:
        """``--save-every-steps`` and ``--save-every-minutes`` (None: not given)."""
        steps, minutes = getattr(args, "save_every_steps", None), getattr(args, "save_every_minutes", None)
        if (steps or minutes) and not self.save_resume:
            raise InputError("--save-every-steps/--save-every-minutes write the resume state inside epochs; they "
                             "cannot be combined with --no-resume-state")
        return steps, minutes

    def save_partial(self, epoch: int, step: int, ranks: list[dict]) -> None:
        """Write ``resume.pt`` inside ``epoch`` after ``step`` steps (process 0), with every process's part
        (``common.training.steps``), then wait for every process."""
        if self.dist.is_main:
            partial = {"epoch": epoch, "step": step, "ranks": ranks}
            save_resume_state(self.dir, epoch - 1, self.state, extra={"best": self.best, "partial": partial})
            logger.info("epoch %d step %d: resume state saved to %s", epoch, step, self.dir / RESUME_FILE)
        self.place.saved_step(epoch, step)
        barrier()

    def end_epoch(self, epoch: int) -> None:
        """Write ``resume.pt`` after ``epoch`` (process 0; not with ``--no-resume-state``), then wait for every
        process; after the last epoch the folder's lock is released."""
        if self.dist.is_main and self.save_resume:
            save_resume_state(self.dir, epoch, self.state, extra={"best": self.best})
        if self.save_resume:
            self.place.saved(epoch)
        barrier()
        if self.lock is not None and self.total is not None and epoch + 1 >= self.total:
            release_lock(self.dir, self.lock)
