"""What the two MLCL training scripts share: run names, the checkpoints kept, the hyper-parameter dict, the per-term
loss log and the warm-restart rate."""
from __future__ import annotations

import argparse
import math
from datetime import datetime
from typing import Any, Sequence

import torch

from common.cir.args import original_hyperparameters
from common.cir.selection import best_checkpoint_names
from common.dist import all_reduce_sum
from common.runtime import get_logger
from common.training.experiment import CSVLogger
from common.training.run import TrainingRun

logger = get_logger(__name__)

RUN_TIMESTAMP = "%Y-%m-%d_%H-%M-%S"
SELECTION_METRIC = {"fashioniq": "average_recall", "shoes": "recall_mean"}
CIRR_SELECTED = ("arithmetic_mean", "harmonic_mean", "geometric_mean")
TERMS_FILE = "loss_terms.csv"


def selected_checkpoints(name: str, prefix: str, single_best: str) -> dict[str, str]:
    """Metric -> best-checkpoint name: FashionIQ / Shoes one file, CIRR ``<prefix>_{arithmetic,harmonic,geometric}``
    (MLCL keeps no ``_mean`` file)."""
    names = best_checkpoint_names(name, prefix, single_best, SELECTION_METRIC.get(name, "average_recall"))
    return {metric: file for metric, file in names.items() if name != "cirr" or metric in CIRR_SELECTED}


def default_run_name(args: argparse.Namespace, prefix: str) -> str:
    """``--run-name``, else the original's ``<prefix>_<timestamp>`` with a colon-free timestamp (a ``_1``, ``_2``...
    suffix is added by the run folder if it exists)."""
    return args.run_name or f"{prefix}_{datetime.now().strftime(RUN_TIMESTAMP)}"


class TermLog:
    """``loss_terms.csv`` next to ``train_metrics.csv``: per epoch the per-sample means of the five loss terms and
    α (process 0 writes; on resume, rows of epochs that run again are dropped)."""

    def __init__(self, run: TrainingRun):
        self.run = run
        self.csv = CSVLogger(run.dir / TERMS_FILE) if run.log.enabled else None
        if self.csv is not None and self.csv.rows:
            self.csv.truncate_after(run.start_epoch - 1)

    def log(self, epoch: int, values: dict[str, float]) -> None:
        self.run.log.tracker.log_metrics(values, epoch=epoch)
        if self.csv is not None:
            self.csv.log({"epoch": epoch, **values})
            logger.info("epoch %d: %s", epoch, ", ".join(f"{key} {value:.4f}" for key, value in values.items()))


class EpochMeans:
    """Per-sample means over an epoch (all processes) of named loss parts."""

    def __init__(self, device: torch.device):
        self.device, self.sums, self.count = device, {}, 0

    def add(self, parts: dict[str, torch.Tensor], batch_size: int) -> None:
        for key, value in parts.items():
            self.sums[key] = self.sums.get(key, 0.0) + value.detach().double() * batch_size
        self.count += batch_size

    def state_dict(self) -> dict:
        """The sums so far (for a resume state written inside an epoch)."""
        return {"sums": {key: torch.as_tensor(value).cpu() for key, value in self.sums.items()}, "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.sums = {key: value.to(self.device) for key, value in state["sums"].items()}
        self.count = state["count"]

    def result(self) -> dict[str, float]:
        keys = list(self.sums)
        sums = [torch.as_tensor(self.sums[key], dtype=torch.float64, device=self.device) for key in keys]
        totals = all_reduce_sum(torch.stack([*sums, torch.tensor(float(self.count), dtype=torch.float64,
                                                                 device=self.device)]))
        return {key: (totals[i] / totals[-1]).item() for i, key in enumerate(keys)}


def warm_restart_lr(position: float, base_lr: float, period: float = 10, eta_min: float = 1e-6) -> float:
    """``CosineAnnealingWarmRestarts(T_0=period, T_mult=1, eta_min)`` at fractional epoch ``position``."""
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * (position % period) / period)) / 2


def hyperparameters(args: argparse.Namespace, keys: Sequence[str], precision: str, **extra: Any) -> dict[str, Any]:
    """The original parameter dict (``keys`` of ``args``, FashionIQ dress types), then our additions, the CLIP
    ``precision`` (``mlcl.models.clip_precision``) among them."""
    return original_hyperparameters(args, keys, seed=args.seed, num_workers=args.num_workers,
                                    clip_precision=precision, **extra)
