"""Run-time choices made once per script: seeds, mixed precision, progress bars, rank-0 logging, and the one line a
script prints when Ctrl-C, SIGTERM or a bad input stops it (``run_main``)."""
from __future__ import annotations

import contextlib
import logging
import os
import random
import shlex
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from common.dist import is_dist, is_main_process
from common.errors import INPUT_ERRORS
from common.run_record import recording

T = TypeVar("T")


def seed_everything(seed: int) -> None:
    """Seed Python ``random``, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def amp_enabled(device: torch.device, requested: bool = True) -> bool:
    """Mixed precision runs on CUDA only; CPU always computes in full precision."""
    return requested and device.type == "cuda"


def autocast(device: torch.device, enabled: bool = True, dtype: torch.dtype = torch.float16):
    """``torch.autocast`` on CUDA when enabled, a no-op context on CPU."""
    if amp_enabled(device, enabled):
        return torch.autocast(device_type="cuda", dtype=dtype)
    return contextlib.nullcontext()


def grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """A GradScaler that is active only with CUDA mixed precision."""
    return torch.amp.GradScaler(device.type, enabled=amp_enabled(device, enabled))


def progress_enabled() -> bool:
    """Whether this process draws progress bars: rank 0 only, only when stderr is a terminal (a redirected log gets
    no ``\\r`` frames), never with ``VLR_NO_PROGRESS=1``; ``VLR_PROGRESS=1`` draws them even into a file."""
    if not is_main_process() or os.environ.get("VLR_NO_PROGRESS") == "1":
        return False
    return os.environ.get("VLR_PROGRESS") == "1" or sys.stderr.isatty()


def progress(iterable: Iterable[T], desc: str | None = None, **kwargs) -> Iterator[T]:
    """tqdm on rank 0 when stderr is a terminal, silent otherwise (see ``progress_enabled``)."""
    return tqdm(iterable, desc=desc, disable=not progress_enabled(), dynamic_ncols=True, **kwargs)


def available_cpus() -> int:
    """CPU cores this process may run on (its affinity mask where the platform has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def default_workers(wanted: int) -> int:
    """A default DataLoader worker count: the original ``wanted``, capped at the machine's cores."""
    return max(0, min(wanted, available_cpus()))


def format_metrics(metrics: dict[str, float], digits: int = 2) -> str:
    """``'name value, ...'`` with every number rounded to ``digits`` decimals, for printing (files keep all)."""
    return ", ".join(f"{key} {value:.{digits}f}" if isinstance(value, float) else f"{key} {value}"
                     for key, value in metrics.items())


def format_number(value: float, digits: int = 4) -> str:
    """A float for printing: ``digits`` significant digits (``0.00030000000000000073`` -> ``0.0003``)."""
    return f"{value:.{digits}g}"


class MainProcessFilter(logging.Filter):
    """Lets INFO and below through on rank 0 only, warnings and errors everywhere. The rank is read when a record
    is emitted (the process group, else torchrun's ``RANK``), so loggers made at import time follow it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return is_main_process() if is_dist() else os.environ.get("RANK", "0") == "0"


def get_logger(name: str) -> logging.Logger:
    """A logger that prints on rank 0 only (warnings and errors on every rank)."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        handler.addFilter(MainProcessFilter())
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}
"""Exit status of a script stopped by a signal: 128 + the signal number, as a shell reports it."""
SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}


class Terminated(BaseException):
    """SIGTERM, raised in the main thread by ``run_main``'s handler (a BaseException, like KeyboardInterrupt, so that
    ``except Exception`` blocks do not swallow it)."""


@dataclass
class RunPlace:
    """Where the training run of this process stands: its folder (None until it is made), the last epoch whose
    ``resume.pt`` is on disk (-1: none), whether epochs are saved at all, the epoch in progress and its step
    (``steps`` per epoch, None when not known), and ``(epoch, step)`` when ``resume.pt`` holds an epoch part-way
    (``--save-every-steps``)."""

    run_dir: Path | None
    resumable: bool = True
    saved_epoch: int = -1
    epoch: int = 0
    step: int = 0
    steps: int | None = None
    partial: tuple[int, int] | None = None

    def saved(self, epoch: int) -> None:
        """``resume.pt`` now holds ``epoch``; the next epoch has not started."""
        self.saved_epoch, self.epoch, self.step, self.steps, self.partial = epoch, epoch + 1, 0, None, None

    def saved_step(self, epoch: int, step: int) -> None:
        """``resume.pt`` now holds ``epoch`` up to ``step``."""
        self.partial = (epoch, step)


_active_run: RunPlace | None = None
_stop_note: Callable[[], str] | None = None


def track_run(run_dir: Path | None, resumable: bool = True, saved_epoch: int = -1) -> RunPlace:
    """Make ``run_dir`` (None: a training run whose folder is not made yet) the run that ``run_main``'s stop line
    names; one per process, the latest wins."""
    global _active_run
    _active_run = RunPlace(None if run_dir is None else Path(run_dir), resumable, saved_epoch, epoch=saved_epoch + 1)
    return _active_run


def note_stop(describe: Callable[[], str] | None) -> None:
    """Make ``describe()`` the end of ``run_main``'s stop line (for a script that is no training run, e.g. ``N of M
    images done, ...; run the same command again to continue``); None removes it."""
    global _stop_note
    _stop_note = describe


def active_run() -> RunPlace | None:
    """The run registered by ``track_run``, if any."""
    return _active_run


def note_step(epoch: int, step: int, steps: int | None) -> None:
    """Record that ``step`` of the ``steps`` of ``epoch`` are done (no-op without an active run)."""
    if _active_run is not None:
        _active_run.epoch, _active_run.step, _active_run.steps = epoch, step, steps


def _without_flags(argv: list[str], flags: tuple[str, ...]) -> list[str]:
    """``argv`` without ``--flag VALUE`` / ``--flag=VALUE`` for each of ``flags``."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in flags:
            skip = True
        elif not arg.startswith(tuple(f"{flag}=" for flag in flags)):
            kept.append(arg)
    return kept


def resume_command(argv: list[str], run_dir: Path) -> str:
    """The shell command that continues this script's run in ``run_dir``: the same flags (without ``--run-name`` and
    an earlier ``--resume``), then ``--resume RUN_DIR``; under torchrun with its process count."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    module = spec.name.removesuffix(".__main__") if spec is not None else "__main__"
    target = ["-m", module] if module != "__main__" else [sys.argv[0]]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    launcher = ["python"]
    if world > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", os.environ.get("LOCAL_WORLD_SIZE", str(world))]
    flags = _without_flags(argv, ("--resume", "--run-name"))
    return shlex.join([*launcher, *target, *flags, "--resume", str(run_dir)])


def stop_message(signum: int, argv: list[str]) -> str:
    """The line printed when ``signum`` stops the script: where the active run stopped and how to continue it."""
    cause = f"stopped by {SIGNAL_NAMES[signum]}"
    if _stop_note is not None:
        return f"{cause}: {_stop_note()}"
    run = _active_run
    if run is None:
        return cause
    if run.run_dir is None:
        return f"{cause} before the run folder was made; nothing to resume: start the run again"
    steps = f" (step {run.step} of {run.steps})" if run.steps else ""
    where = f"{cause} in epoch {run.epoch}{steps} of {run.run_dir}"
    if run.partial is not None:
        epoch, step = run.partial
        return f"{where}; epoch {epoch} up to step {step} is saved, continue with: {resume_command(argv, run.run_dir)}"
    if run.saved_epoch >= 0:
        done = "epoch 0 is" if run.saved_epoch == 0 else f"epochs 0-{run.saved_epoch} are"
        return f"{where}; {done} saved, continue with: {resume_command(argv, run.run_dir)}"
    if not run.resumable:
        return f"{where}; it runs with --no-resume-state, so it cannot be resumed"
    return f"{where}; no epoch finished, so there is nothing to resume: start the run again"


def _terminate_handler(owner: int) -> Callable[[int, Any], None]:
    """A SIGTERM handler raising Terminated in process ``owner``; a forked child (a DataLoader worker) that inherits
    it dies of the signal as before, silently."""

    def handle(signum: int, frame: Any) -> None:
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise Terminated(signum)

    return handle


def run_main(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> None:
    """Run a script's ``main(argv)`` (default ``sys.argv[1:]``). Ctrl-C or SIGTERM ends it with one line (no
    traceback) that says where the run stopped and the ``--resume`` command that continues it, and exit status
    130 (SIGINT) or 143 (SIGTERM); under torchrun only rank 0 prints. Bad input (``common.errors.INPUT_ERRORS``:
    a missing or damaged file, differing resume flags...) ends with ``<script>: error: <message>`` and status 1,
    with no traceback unless ``VLR_TRACEBACK=1``. Files already written stay whole (every writer is atomic) and the
    run's lock is released at exit."""
    argv = list(sys.argv[1:] if argv is None else argv)
    previous = {signum: signal.getsignal(signum) for signum in EXIT_STATUS}
    signal.signal(signal.SIGTERM, _terminate_handler(os.getpid()))
    try:
        with recording(argv):
            main(argv)
    except INPUT_ERRORS as error:
        if os.environ.get("VLR_TRACEBACK") == "1":
            raise
        rank = os.environ.get("RANK", "0")
        where = "" if rank == "0" else f" (rank {rank})"
        print(f"{Path(sys.argv[0]).name}{where}: error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(1) from None
    except (KeyboardInterrupt, Terminated) as stop:
        signum = signal.SIGTERM if isinstance(stop, Terminated) else signal.SIGINT
        for ignored in EXIT_STATUS:  # a second signal must not cut the line
            signal.signal(ignored, signal.SIG_IGN)
        if os.environ.get("RANK", "0") == "0":
            print(stop_message(signum, argv), file=sys.stderr, flush=True)
        raise SystemExit(EXIT_STATUS[signum]) from None
    finally:
        note_stop(None)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
