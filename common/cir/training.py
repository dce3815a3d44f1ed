"""The CLIP4Cir training loop the paper scripts share: train an epoch, validate every ``--validation-frequency``
epochs, keep the original best / per-epoch checkpoints, and close the epoch (resume state, curves)."""
from __future__ import annotations

import argparse
from typing import Callable

import torch
from torch import nn

from common.cir.selection import save_validated
from common.training.run import TrainingRun


def run_epochs(run: TrainingRun, args: argparse.Namespace, train_epoch: Callable[[int], float],
               validate: Callable[[int], dict[str, float] | None], prefix: str, best_names: dict[str, str],
               model: nn.Module, optimizer: torch.optim.Optimizer | None, key: str | None = None,
               after_train: Callable[[int], None] | None = None) -> None:
    """Epochs ``run.start_epoch`` to ``--num-epochs`` - 1, then the training curves.

    ``train_epoch(epoch)`` returns the epoch loss (logged, then ``after_train(epoch)``); when ``epoch %
    --validation-frequency == 0``, ``validate(epoch)`` returns the metrics, or None on a process that does not
    log them; they are logged and ``model`` is saved by the original rules (``common.cir.selection``)."""
    for epoch in range(run.start_epoch, args.num_epochs):
        run.log.train(epoch, train_epoch(epoch))
        if after_train is not None:
            after_train(epoch)
        if epoch % args.validation_frequency == 0:
            metrics = validate(epoch)
            if metrics is not None:
                run.log.validation(epoch, metrics)
                save_validated(run.dir, prefix, best_names, run.best, epoch, metrics, model, optimizer, args, key=key)
        run.end_epoch(epoch)
    run.log.plot()
