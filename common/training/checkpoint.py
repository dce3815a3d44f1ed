"""Checkpoints in the papers' released layout, atomic writes, and resumable training state.

Paper files are ``{'epoch': int, '<ModelClassName>': state_dict, 'optimizer_state_dict': ...}`` (Bi-BLIP4CIR,
Candidate Re-ranking, CLIP4Cir/MLCL). Resume files carry everything needed to continue a run exactly.
"""
from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from common.io import (CheckpointError, PathLike, atomic_torch_save, file_size_text, key_problems,
                       load_torch_file, torch_file_damage)

RESUME_FILE = "resume.pt"


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel (or the module itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def model_key(model: nn.Module) -> str:
    """The dict key a paper uses for a model: its class name (``BLIPTextEncoder``, ``Combiner``...)."""
    return getattr(unwrap(model), "checkpoint_key", type(unwrap(model)).__name__)


def save_model(
    name: str,
    epoch: int,
    model: nn.Module,
    run_dir: PathLike,
    optimizer: torch.optim.Optimizer | None = None,
    key: str | None = None,
) -> Path:
    """Write ``run_dir/saved_models/<name>.pt`` in the released layout, atomically."""
    payload: dict[str, Any] = {"epoch": epoch, key or model_key(model): unwrap(model).state_dict()}
    if optimizer is not None:
        payload["optimizer_state_dict"] = optimizer.state_dict()
    return atomic_torch_save(payload, Path(run_dir) / "saved_models" / f"{name}.pt")


def load_model(path: PathLike, model: nn.Module, key: str | None = None, strict: bool = True,
               trusted: bool = False, flag_hints: Mapping[str, str] | None = None) -> dict:
    """Load ``path`` (released or ours) into ``model``; returns the whole file dict (``epoch`` etc.).

    The model entry is ``key`` if given, else the model's class name, else the only state dict in the file.
    A shape mismatch (always) or a key mismatch (with ``strict``) raises a CheckpointError naming the file and
    listing every mismatching shape, the missing and the unexpected keys; ``flag_hints`` maps fnmatch patterns of
    keys to the flag that sets their size (e.g. ``{"combiner_layer.*": "--projection-dim"}``) for the message.
    """
    payload = load_torch_file(path, trusted=trusted)
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(payload).__name__}")
    wanted = key or model_key(model)
    if wanted in payload:
        state = payload[wanted]
    else:
        candidates = [k for k, v in payload.items() if isinstance(v, dict) and k != "optimizer_state_dict"]
        if key is not None or len(candidates) != 1:
            raise CheckpointError(f"{path}: no entry '{wanted}'; the file holds {sorted(payload)}")
        state = payload[candidates[0]]
    model_state = unwrap(model).state_dict()
    missing = [name for name in model_state if name not in state]
    unexpected = [name for name in state if name not in model_state]
    shapes = {name: (tuple(value.shape), tuple(model_state[name].shape)) for name, value in state.items()
              if name in model_state and hasattr(value, "shape") and value.shape != model_state[name].shape}
    if shapes or (strict and (missing or unexpected)):
        raise CheckpointError(key_problems(path, type(unwrap(model)).__name__, missing, unexpected, shapes,
                                           flag_hints))
    unwrap(model).load_state_dict(state, strict=False)
    return payload


def rng_state() -> dict[str, Any]:
    """This process's random, numpy, torch (and CUDA) generator states."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Put back states from ``rng_state``."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_resume_state(
    run_dir: PathLike,
    epoch: int,
    modules: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Atomically write ``run_dir/resume.pt`` after finishing ``epoch``.

    ``modules`` maps names to objects with ``state_dict()`` (models, optimizers, grad scalers, schedulers);
    ``extra`` holds plain values such as best metrics. RNG states are saved too.
    """
    payload = {
        "epoch": epoch,
        "modules": {name: unwrap(obj).state_dict() if isinstance(obj, nn.Module) else obj.state_dict()
                    for name, obj in modules.items()},
        "extra": extra or {},
        "rng": rng_state(),
    }
    return atomic_torch_save(payload, Path(run_dir) / RESUME_FILE)


def read_resume_epoch(run_dir: PathLike) -> int:
    """The epoch a run continues from, read from ``run_dir/resume.pt`` without loading its tensors; a damaged or
    foreign file raises a CheckpointError naming it."""
    path = Path(run_dir) / RESUME_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no resume state in this run folder (expected {RESUME_FILE})")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as error:  # noqa: BLE001 - reported with the file's size and the damage found
        reason = torch_file_damage(path) or f"{type(error).__name__}: {error}"
        raise CheckpointError(f"{path}: corrupt resume state ({file_size_text(path)}; {reason})") from error
    if not isinstance(payload, dict) or not {"epoch", "modules", "rng"} <= set(payload):
        raise CheckpointError(f"{path}: not a resume state (expected a dict with epoch, modules and rng)")
    return int(payload["epoch"]) + 1


def load_resume_state(run_dir: PathLike, modules: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Restore ``modules`` from ``run_dir/resume.pt``; returns (next epoch to run, extra)."""
    path = Path(run_dir) / RESUME_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no resume state in this run folder (expected {RESUME_FILE})")
    payload = load_torch_file(path, trusted=True)
    missing = sorted(set(modules) - set(payload["modules"]))
    if missing:
        raise CheckpointError(f"{path}: resume state lacks {missing}; it holds {sorted(payload['modules'])}")
    for name, obj in modules.items():
        (unwrap(obj) if isinstance(obj, nn.Module) else obj).load_state_dict(payload["modules"][name])
    set_rng_state(payload["rng"])
    return payload["epoch"] + 1, payload["extra"]
