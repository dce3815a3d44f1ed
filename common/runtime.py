"""Run-time choices made once per script: seeds, mixed precision, progress bars, rank-0 logging."""
from __future__ import annotations

import contextlib
import logging
import os
import random
import sys
from typing import Iterable, Iterator, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from common.dist import is_dist, is_main_process

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
