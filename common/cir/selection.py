"""CLIP4Cir's checkpoint selection: which validation metric names which best file, and the files written after
each validation."""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch
from torch import nn

from common.training.checkpoint import save_model

CIRR_BEST_METRICS = {"mean(R@5+R_s@1)": "mean", "arithmetic_mean": "arithmetic", "harmonic_mean": "harmonic",
                     "geometric_mean": "geometric"}


def best_checkpoint_names(dataset: str, prefix: str, single_best: str, single_metric: str = "average_recall"
                          ) -> dict[str, str]:
    """Metric -> file name of the original best checkpoints: one file (``single_best``, selected by
    ``single_metric``) for FashionIQ and Shoes, four for CIRR (``<prefix>_mean``, ``_arithmetic``, ...)."""
    if dataset == "cirr":
        return {metric: f"{prefix}_{suffix}" for metric, suffix in CIRR_BEST_METRICS.items()}
    return {single_metric: single_best}


def save_validated(run_dir: Path, prefix: str, best_names: dict[str, str], best: dict[str, float], epoch: int,
                   metrics: dict[str, float], model: nn.Module, optimizer: torch.optim.Optimizer,
                   args: argparse.Namespace, key: str | None = None) -> list[str]:
    """Update ``best`` (strictly greater wins) and write the original files: with ``--save-training``,
    ``<prefix>_last`` and either the improved best files (``--save-best``) or ``<prefix>_<epoch>``.
    Returns the file names written."""
    improved = [metric for metric in best_names if metrics[metric] > best.get(metric, -math.inf)]
    best.update({metric: metrics[metric] for metric in improved})
    if not args.save_training:
        return []
    names = [best_names[metric] for metric in improved] if args.save_best else [f"{prefix}_{epoch}"]
    for file_name in [*names, f"{prefix}_last"]:
        save_model(file_name, epoch, model, run_dir, optimizer, key=key)
    return [*names, f"{prefix}_last"]
