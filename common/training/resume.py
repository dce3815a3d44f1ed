"""The ``--resume`` guard of the training runs: which run folder to continue (``--resume RUN_DIR``, or ``--resume
auto``: the newest unfinished run folder of the same script and settings, else a new run) and the cheap checks made
before any heavy work (``preflight``). The flags that change the result must equal the run's, or the script stops
before it touches the folder; flags that only change how the run executes or where the data is (``IGNORED_FLAGS``)
may differ; a larger ``--num-epochs`` extends a finished run and is written to ``run_args.json``."""
from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from common.dist import broadcast_object, is_main_process
from common.errors import InputError
from common.io import PathLike, atomic_write_json, check_writable_root, read_json
from common.runtime import get_logger, track_run
from common.training.checkpoint import RESUME_FILE, read_resume_epoch
from common.training.experiment import write_hyperparameters
from common.training.lock import check_unlocked

logger = get_logger(__name__)

AUTO = "auto"
"""``--resume auto``: continue the newest unfinished run of the same settings, else start a new one."""
HYPERPARAMETERS_FILE = "training_hyperparameters.json"
ARGS_FILE = "run_args.json"
DATA_PATH_FLAGS = frozenset({
    "data_root", "fiq_root", "shoes_root", "cirr_root", "tokenizer", "clip_download_root", "cache_dir",
})
"""Paths that locate the data, the tokenizer, official CLIP files (checked against their hashes) and cached
features: a moved copy of the same files gives the same result. Checkpoint paths are not among them."""
IGNORED_FLAGS = frozenset({
    "device", "num_workers", "api_key", "workspace", "experiment_name", "resume", "run_name", "output_root",
    "no_resume_state", "allow_download", "trust_checkpoints", "no_amp", "num_epochs", "save_every_steps",
    "save_every_minutes", *DATA_PATH_FLAGS,
})
"""Flags that may differ on ``--resume``: where and how the run executes and logs and where its data lies, not what
it computes, and ``num_epochs`` (a larger value extends a run; scripts whose schedule depends on it pass
``strict=("num_epochs",)``)."""
DERIVED_PATTERNS = ("*top_*.pt", "*labels*.pt")
"""Files made from a run's checkpoints by other scripts and kept in its folder (Re-ranking's top-K files from
``validate.py --save-topk``, stage-2 label files): stale once a resume writes new checkpoints."""


class ResumeMismatch(InputError, ValueError):
    """``--resume`` with flags that would change the run."""


def plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (paths as strings, tuples as lists)."""
    return json.loads(json.dumps(value, default=str))


def resume_differences(saved: dict[str, Any], current: dict[str, Any], ignore: Iterable[str] = IGNORED_FLAGS,
                       flags: Iterable[str] = ()) -> dict[str, str]:
    """Key -> ``--flag: run <saved>, now <current>`` for each key of both dicts whose values differ (keys in
    ``flags`` are shown as command-line flags); keys in ``ignore`` and keys only one side has are skipped."""
    flags, ignore = set(flags), set(ignore)
    lines = {}
    for key in sorted(set(saved) & set(current) - ignore):
        before, now = plain(saved[key]), plain(current[key])
        if before != now:
            name = f"--{key.replace('_', '-')}" if key in flags else key
            lines[key] = f"{name}: run {before!r}, now {now!r}"
    return lines


def _settings_differ(run_dir: Path, args: argparse.Namespace, params: dict[str, Any],
                     ignored: Iterable[str]) -> dict[str, str]:
    """The result-changing settings of ``run_dir`` that differ from ``params`` and ``args`` (see ``preflight``)."""
    saved_args = (read_json(run_dir / ARGS_FILE, "the flags of the run") if (run_dir / ARGS_FILE).is_file()
                  else {})
    current_args = vars(args)
    saved_params = read_json(run_dir / HYPERPARAMETERS_FILE, "the run's hyper-parameters")
    return {**resume_differences(saved_params, params, ignored, flags=current_args),
            **resume_differences(saved_args, current_args, ignored, flags=current_args)}


def _auto_candidate(run_dir: Path, args: argparse.Namespace, params: dict[str, Any], ignored: Iterable[str],
                    total: int | None) -> bool:
    """Whether ``--resume auto`` may continue ``run_dir``: same settings (and hyper-parameter keys), a readable
    ``resume.pt`` and epochs left."""
    if not ((run_dir / HYPERPARAMETERS_FILE).is_file() and (run_dir / RESUME_FILE).is_file()):
        return False
    try:
        saved_params = read_json(run_dir / HYPERPARAMETERS_FILE, "the run's hyper-parameters")
        if set(saved_params) != set(plain(params)) or _settings_differ(run_dir, args, params, ignored):
            return False
        start = read_resume_epoch(run_dir)
    except (InputError, OSError) as error:
        logger.warning("--resume auto: skipping %s (%s)", run_dir, error)
        return False
    return total is None or start < total


def find_auto_resume(args: argparse.Namespace, params: dict[str, Any], prefix: str, subdir: str,
                     ignored: Iterable[str], total: int | None) -> Path | None:
    """The newest (by ``resume.pt`` time) unfinished run folder under ``<output-root>/<subdir>`` of this script
    (named ``<prefix>_*``, or ``--run-name`` with its ``_N`` suffixes) with the same settings, else None."""
    root = Path(args.output_root) / subdir
    if not root.is_dir():
        return None
    name = getattr(args, "run_name", None)
    named = re.compile(rf"{re.escape(name)}(_\d+)?") if name else None
    folders = [path for path in root.iterdir() if path.is_dir() and (
        path.name.startswith(f"{prefix}_") or (named is not None and named.fullmatch(path.name)))]
    found = [path for path in folders if _auto_candidate(path, args, params, ignored, total)]
    return max(found, key=lambda path: (path / RESUME_FILE).stat().st_mtime_ns, default=None)


def resolve_auto_resume(args: argparse.Namespace, params: dict[str, Any], prefix: str | None, subdir: str,
                        ignored: Iterable[str], total: int | None) -> None:
    """Replace ``--resume auto`` in ``args`` by the run folder to continue (process 0 chooses) or None."""
    if prefix is None:
        raise TypeError("--resume auto needs the script's run folder prefix (preflight(..., prefix=...))")
    found = find_auto_resume(args, params, prefix, subdir, ignored, total) if is_main_process() else None
    found = broadcast_object(str(found) if found else None)
    where = Path(args.output_root) / subdir
    if found:
        logger.info("--resume auto: continuing %s", found)
    else:
        logger.info("--resume auto: no unfinished run of these settings under %s; starting a new run", where)
    args.resume = found


def preflight(args: argparse.Namespace, params: dict[str, Any], num_epochs: int | None = None,
              ignore: Iterable[str] = (), strict: Iterable[str] = (), prefix: str | None = None,
              subdir: str = "models") -> int | None:
    """Cheap checks to run before any heavy work (feature extraction); writes nothing.

    ``--resume auto`` is first replaced by the newest unfinished run folder ``<output-root>/<subdir>/<prefix>_*``
    with the same settings (``find_auto_resume``), or None for a new run.
    A new run: ``--output-root`` must be writable; returns None. ``--resume RUN_DIR``: the folder must hold this
    script's hyper-parameter file and a readable ``resume.pt``, no live process may hold its lock (``RunLocked``),
    and ``params`` plus every flag of ``args`` must equal the run's (``IGNORED_FLAGS`` and ``ignore`` may differ,
    unless named in ``strict``), else ``ResumeMismatch`` lists each difference.
    Returns the epoch the run continues from; a run with all ``num_epochs`` (default ``args.num_epochs``) done
    says so and exits with status 0. Registers the run for ``common.runtime.run_main``'s stop line.
    """
    ignored = (IGNORED_FLAGS | set(ignore)) - set(strict)
    total = num_epochs if num_epochs is not None else getattr(args, "num_epochs", None)
    if getattr(args, "resume", None) == AUTO:
        resolve_auto_resume(args, params, prefix, subdir, ignored, total)
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
    differences = _settings_differ(run_dir, args, params, ignored)
    if differences:
        listing = "\n  ".join(differences[key] for key in sorted(differences))
        raise ResumeMismatch(
            f"{run_dir}: cannot resume, these settings differ from the run's:\n  {listing}\n"
            "Give the run's values again, or start a new run without --resume. Nothing in the folder was changed.")
    if not (run_dir / RESUME_FILE).is_file():
        raise FileNotFoundError(f"{run_dir / RESUME_FILE}: no resume state in this run folder: "
                                f"{_why_no_state(saved_args)}")
    start = read_resume_epoch(run_dir)
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
        return ("no epoch of the run finished (resume.pt is written at the end of each, and inside them with "
                "--save-every-steps), so there is nothing to resume: start the run again without --resume")
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
