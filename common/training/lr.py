"""Learning-rate schedules of the original recipes."""
from __future__ import annotations

import math

import torch


def cosine_lr_schedule(
    optimizer: torch.optim.Optimizer,
    epoch: int,
    max_epoch: int,
    init_lr: float,
    min_lr: float,
    only_group0: bool = True,
    clamp: bool = False,
) -> float:
    """BLIP's per-epoch cosine: ``(init - min) * (1 + cos(pi * epoch / max_epoch)) / 2 + min``.

    As upstream (Bi-BLIP4CIR, Candidate Re-ranking), only param group 0 is rescheduled by default and the epoch is
    not clamped, so the rate is periodic once ``epoch > max_epoch``; ``clamp=True`` holds it at ``min_lr`` instead.
    Returns the new rate.
    """
    progress = min(epoch, max_epoch) if clamp else epoch
    lr = (init_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress / max_epoch)) + min_lr
    groups = optimizer.param_groups[:1] if only_group0 else optimizer.param_groups
    for group in groups:
        group["lr"] = lr
    return lr
