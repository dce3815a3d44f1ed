"""A training run folder in CLIP4Cir's layout: ``<output-root>/models/<prefix>_<timestamp>/`` with the JSON
hyper-parameters, every flag of the run (``run_args.json``), ``train_metrics.csv``, ``validation_metrics.csv``,
``training_curves.png``, the Comet experiment, and ``resume.pt`` after every epoch (unless ``--no-resume-state``) so
that ``--resume RUN_DIR`` repeats no finished epoch.

``--resume`` is guarded: the flags that change the result must equal the run's, or the script stops before it
touches the folder; flags that only change how the run executes or where the data is (``IGNORED_FLAGS``) may
differ. ``run.lock`` keeps a second process out of a folder in use (``common.training.lock``); a larger
``--num-epochs`` extends a finished run and is written to ``run_args.json``."""
from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from common.dist import DistInfo, barrier, broadcast_object
from common.errors import InputError
from common.io import PathLike, atomic_write_json, read_json
from common.runtime import format_metrics, get_logger, track_run
from common.training.checkpoint import RESUME_FILE, load_resume_state, read_resume_epoch, save_resume_state
from common.training.experiment import CSVLogger, ExperimentTracker, make_run_dir, write_hyperparameters
from common.training.lock import RunLocked, acquire_lock, check_unlocked, release_lock
from common.training.plots import plot_training_curves

logger = get_logger(__name__)

HYPERPARAMETERS_FILE = "training_hyperparameters.json"
ARGS_FILE = "run_args.json"
DATA_PATH_FLAGS = frozenset({
    "data_root", "fiq_root", "shoes_root", "cirr_root", "tokenizer", "clip_download_root", "cache_dir",
})
"""Paths that locate the data, the tokenizer, official CLIP files (checked against their hashes) and cached
features: a moved copy of the same files gives the same result. Checkpoint paths are not among them."""
IGNORED_FLAGS = frozenset({
    "device", "num_workers", "api_key", "workspace", "experiment_name", "resume", "run_name", "output_root",
    "no_resume_state", "allow_download", "trust_checkpoints", "no_amp", "num_epochs", *DATA_PATH_FLAGS,
})
"""Flags that may differ on ``--resume``: where and how the run executes and logs and where its data lies, not what
it computes, and ``num_epochs`` (a larger value extends a run; scripts whose schedule depends on it pass
``strict=("num_epochs",)``)."""
DERIVED_PATTERNS = ("*top_*.pt", "*labels*.pt")
"""Files made from a run's checkpoints by other scripts and kept in its folder (Re-ranking's top-K files from
``validate.py --save-topk``, stage-2 label files): stale once a resume writes new checkpoints."""


class ResumeMismatch(InputError, ValueError):
    """``--resume`` with flags that would change the run."""


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (paths as strings, tuples as lists)."""
    return json.loads(json.dumps(value, default=str))


def resume_differences(saved: dict[str, Any], current: dict[str, Any], ignore: Iterable[str] = IGNORED_FLAGS,
                       flags: Iterable[str] = ()) -> dict[str, str]:
    """Key -> ``--flag: run <saved>, now <current>`` for each key of both dicts whose values differ (keys in
    ``flags`` are shown as command-line flags); keys in ``ignore`` and keys only one side has are skipped."""
    flags, ignore = set(flags), set(ignore)
    lines = {}
    for key in sorted(set(saved) & set(current) - ignore):
        before, now = _plain(saved[key]), _plain(current[key])
        if before != now:
            name = f"--{key.replace('_', '-')}" if key in flags else key
            lines[key] = f"{name}: run {before!r}, now {now!r}"
    return lines


def check_writable_root(root: PathLike, flag: str = "--output-root") -> None:
    """Fail fast when ``root`` (or the nearest folder above it that exists) cannot receive new files."""
    path = Path(root).expanduser().absolute()
    existing = next(folder for folder in (path, *path.parents) if folder.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"{flag} {root}: {existing} is a file, expected a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {root}: cannot create files in {existing} (permission denied)")


def preflight(args: argparse.Namespace, params: dict[str, Any], num_epochs: int | None = None,
              ignore: Iterable[str] = (), strict: Iterable[str] = ()) -> int | None:
    """Cheap checks to run before any heavy work (feature extraction); writes nothing.

    A new run: ``--output-root`` must be writable; returns None. ``--resume RUN_DIR``: the folder must hold this
    script's hyper-parameter file and a readable ``resume.pt``, no live process may hold its lock (``RunLocked``),
    and ``params`` plus every flag of ``args`` must equal the run's (``IGNORED_FLAGS`` and ``ignore`` may differ,
    unless named in ``strict``), else ``ResumeMismatch`` lists each difference.
    Returns the epoch the run continues from; a run with all ``num_epochs`` (default ``args.num_epochs``) done
    says so and exits with status 0. Registers the run for ``common.runtime.run_main``'s stop line.
    """
    resume = getattr(args, "resume", None)
    if not resume:
        check_writable_root(getattr(args, "output_root", "."))
        track_run(None)
        return None
    run_dir = Path(resume)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: --resume expects a run folder of an earlier run")
    if not (run_dir / HYPERPARAMETERS_FILE).is_file():
        raise FileNotFoundError(f"{run_dir}: --resume expects a run folder holding {HYPERPARAMETERS_FILE}")
    check_writable_root(run_dir, "--resume")
    check_unlocked(run_dir)
    saved_args = (read_json(run_dir / ARGS_FILE, "the flags of the run") if (run_dir / ARGS_FILE).is_file()
                  else {})
    current_args = vars(args)
    ignored = (IGNORED_FLAGS | set(ignore)) - set(strict)
    saved_params = read_json(run_dir / HYPERPARAMETERS_FILE, "the run's hyper-parameters")
    differences = {**resume_differences(saved_params, params, ignored, flags=current_args),
                   **resume_differences(saved_args, current_args, ignored, flags=current_args)}
    if differences:
        listing = "\n  ".join(differences[key] for key in sorted(differences))
        raise ResumeMismatch(
            f"{run_dir}: cannot resume, these settings differ from the run's:\n  {listing}\n"
            "Give the run's values again, or start a new run without --resume. Nothing in the folder was changed.")
    if not (run_dir / RESUME_FILE).is_file():
        raise FileNotFoundError(f"{run_dir / RESUME_FILE}: no resume state in this run folder: "
                                f"{_why_no_state(saved_args)}")
    start = read_resume_epoch(run_dir)
    total = num_epochs if num_epochs is not None else getattr(args, "num_epochs", None)
    if total is not None and start >= total:
        logger.info("%s is finished: all %d epochs are done; nothing to resume", run_dir, total)
        raise SystemExit(0)
    track_run(run_dir, saved_epoch=start - 1)
    return start


def _why_no_state(saved_args: dict[str, Any]) -> str:
    """Why a run folder has no ``resume.pt``, from the run's flags (``run_args.json``)."""
    if saved_args.get("no_resume_state"):
        return "the run was started with --no-resume-state, so it cannot be resumed"
    if saved_args:
        return ("no epoch of the run finished (resume.pt is written at the end of each), so there is nothing to "
                "resume: start the run again without --resume")
    return "no epoch finished, or the run was started with --no-resume-state; start the run again without --resume"


def stale_files(run_dir: PathLike, patterns: Iterable[str] = DERIVED_PATTERNS,
                before: float | None = None) -> list[Path]:
    """Files under ``run_dir`` matching ``patterns`` (fnmatch, searched in every sub-folder) and last written before
    ``before`` (a ``time.time()``; default now): made from the run's earlier checkpoints."""
    before = time.time() if before is None else before
    found = {path for pattern in patterns for path in Path(run_dir).rglob(pattern)
             if path.is_file() and path.stat().st_mtime < before}
    return sorted(found)


def record_num_epochs(run_dir: Path, num_epochs: int) -> int | None:
    """Write ``num_epochs`` into ``run_args.json`` (and the hyper-parameter file, where it holds the key) when it
    changed; returns the run's earlier value, or None when nothing changed."""
    args_file = run_dir / ARGS_FILE
    saved = read_json(args_file, "the flags of the run") if args_file.is_file() else {}
    before = saved.get("num_epochs")
    if before is None or before == num_epochs:
        return None
    atomic_write_json({**saved, "num_epochs": num_epochs}, args_file, sort_keys=True, indent=4)
    params = read_json(run_dir / HYPERPARAMETERS_FILE, "the run's hyper-parameters")
    if params.get("num_epochs") == before:
        write_hyperparameters(run_dir, {**params, "num_epochs": num_epochs})
    return before


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
    matching ``derived_patterns`` (made from the earlier checkpoints) are named as stale.
    """

    def __init__(self, args: argparse.Namespace, dist: DistInfo, prefix: str, state: dict[str, Any],
                 params: dict[str, Any], project: str, title: str, code_dir: PathLike | None = None,
                 num_epochs: int | None = None, resume_ignore: Iterable[str] = (), resume_strict: Iterable[str] = (),
                 subdir: str = "models", derived_patterns: Iterable[str] = DERIVED_PATTERNS):
        preflight(args, params, num_epochs, resume_ignore, resume_strict)
        started = time.time()
        self.dir, self.dist, self.state = open_run_dir(args, dist, prefix, subdir), dist, state
        self.lock = self._hold_lock()
        self.save_resume = not getattr(args, "no_resume_state", False)
        self.start_epoch, extra = load_resume_state(self.dir, state) if args.resume else (0, {})
        self.best: dict[str, float] = extra.get("best", {})
        self.total = num_epochs if num_epochs is not None else getattr(args, "num_epochs", None)
        self.place = track_run(self.dir, self.save_resume, self.start_epoch - 1)
        if args.resume:
            logger.info("resuming %s at epoch %d of %s (epochs 0-%d are done)", self.dir, self.start_epoch,
                        self.total if self.total is not None else "?", self.start_epoch - 1)
            if dist.is_main:
                self._note_resume(args, derived_patterns, started)
        else:
            logger.info("run folder: %s", self.dir)
        if dist.is_main and not args.resume:
            write_hyperparameters(self.dir, params)
            atomic_write_json(_plain(vars(args)), self.dir / ARGS_FILE, sort_keys=True, indent=4)
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
