"""The training epoch the paper scripts share: DDP wrapping, the train loader, and one pass with AMP and logging."""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from common.dist import DistInfo, all_reduce_sum
from common.errors import InvalidValue
from common.run_record import note_dataset
from common.runtime import note_step, progress
from common.training.experiment import ExperimentTracker
from common.training.steps import EpochOrder, StepSaver

StepFn = Callable[[Any], tuple[torch.Tensor, dict[str, torch.Tensor], int]]
"""``step(batch) -> (loss, named parts of the loss to log, batch size)``."""


def data_parallel(module: nn.Module, dist: DistInfo) -> nn.Module:
    """``module`` wrapped in DistributedDataParallel under torchrun, else unchanged."""
    if not dist.distributed:
        return module
    device_ids = [dist.device.index] if dist.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def train_loader(dataset: Dataset, batch_size: int, num_workers: int, dist: DistInfo, seed: int) -> DataLoader:
    """Shuffled batches without the incomplete last one; under torchrun each process takes batch_size / world.
    The shuffle (``EpochOrder``) is RandomSampler's, or DistributedSampler's under torchrun, and can resume
    part-way through an epoch."""
    if batch_size % dist.world_size:
        raise InvalidValue(f"--batch-size {batch_size} is not divisible by the {dist.world_size} processes")
    per_process = batch_size // dist.world_size
    loader = DataLoader(dataset, batch_size=per_process, sampler=EpochOrder(dataset, dist, seed),
                        num_workers=num_workers, drop_last=True, pin_memory=dist.device.type == "cuda")
    note_dataset(type(dataset).__name__, "train", samples=len(dataset), batches_per_epoch=len(loader))
    if len(loader) == 0:
        raise InvalidValue(f"the train split has {len(dataset)} samples, fewer than --batch-size {batch_size}: "
                         "no complete batch (lower --batch-size)")
    return loader


def train_one_epoch(loader: DataLoader, step: StepFn, optimizer: torch.optim.Optimizer,
                    scaler: torch.amp.GradScaler, epoch: int, device: torch.device, tracker: ExperimentTracker,
                    desc: str, accumulation: int = 1, saver: StepSaver | None = None) -> float:
    """One pass over ``loader`` (progress bar on process 0); logs ``step_loss`` and ``step_loss_<part>`` per step.

    With ``accumulation`` N > 1 the optimizer steps every N batches (and after the last one) on the summed
    gradients of the batch losses divided by N. Returns the epoch loss Σ loss·B / Σ B over all processes
    (CLIP4Cir's ``train_epoch_loss``). Each finished step is recorded for the line printed on Ctrl-C
    (``common.runtime.run_main``). ``saver`` (``TrainingRun.steps.epoch(...)``) continues a partial epoch saved
    in ``resume.pt`` and saves one every ``--save-every-steps`` / ``--save-every-minutes``.
    """
    sampler = loader.sampler
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    if accumulation < 1:
        raise ValueError(f"gradient accumulation must be at least 1 batch, got {accumulation}")
    totals = torch.zeros(2, dtype=torch.float64, device=device)
    start = saver.resume_into(epoch, sampler, totals) if saver is not None else 0
    optimizer.zero_grad(set_to_none=True)
    batches = iter(loader)
    if saver is not None:
        saver.restore_rng()
    for index, batch in enumerate(progress(batches, desc=f"[{epoch}] {desc}", total=len(loader), initial=start),
                                  start=start):
        loss, parts, batch_size = step(batch)
        scaler.scale(loss / accumulation if accumulation > 1 else loss).backward()
        stepped = (index + 1) % accumulation == 0 or index + 1 == len(loader)
        if stepped:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        value = loss.item()
        totals += torch.tensor([value * batch_size, batch_size], dtype=torch.float64, device=device)
        tracker.log_metrics({"step_loss": value, **{f"step_loss_{name}": part.item() for name, part in parts.items()}},
                            step=epoch * len(loader) + index)
        note_step(epoch, index + 1, len(loader))
        if saver is not None and stepped and index + 1 < len(loader):
            saver.after_step(epoch, index + 1, sampler, loader.batch_size, totals)
    totals = all_reduce_sum(totals)
    return (totals[0] / totals[1]).item()
