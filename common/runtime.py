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

from common.dist import is_main_process

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


def progress(iterable: Iterable[T], desc: str | None = None, **kwargs) -> Iterator[T]:
    """tqdm on rank 0, silent elsewhere; also silent when ``VLR_NO_PROGRESS=1``."""
    disable = not is_main_process() or os.environ.get("VLR_NO_PROGRESS") == "1"
    return tqdm(iterable, desc=desc, disable=disable, dynamic_ncols=True, **kwargs)


def get_logger(name: str) -> logging.Logger:
    """A logger that prints on rank 0 only (warnings and errors on every rank)."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.INFO if is_main_process() else logging.WARNING)
    return logger
