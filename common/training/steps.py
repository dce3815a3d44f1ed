"""Resume state written inside an epoch (``--save-every-steps N`` / ``--save-every-minutes M``).

``resume.pt`` then holds, besides the model, optimizer, scaler and best metrics of the last finished epoch's format,
a ``partial`` entry: the epoch in progress, the steps done, and for every process its data order (the epoch's
shuffled permutation or its ``DistributedSampler`` share), its loss totals so far, its RNG states and the state of
the epoch's own objects (the caption generator of ``common.cir.data.caption_rng``, running means, a per-step
schedule). A resumed run skips the done batches without loading them and continues at the next step; with
``--num-workers 0`` it ends bit-identical to an uninterrupted run on CPU (random draws made inside loader workers
are not part of the state).
"""
from __future__ import annotations

import random
import time
from typing import Any, Callable

import torch
from torch.utils.data import Dataset, RandomSampler, Sampler
from torch.utils.data.distributed import DistributedSampler

from common.dist import DistInfo, all_gather_object, broadcast_object
from common.errors import InputError
from common.training.checkpoint import rng_state, set_rng_state


class EpochOrder(Sampler[int]):
    """The train loader's shuffle: ``RandomSampler`` (one draw of the global torch generator per epoch) or, under
    torchrun, ``DistributedSampler`` (seed + epoch), as before. It keeps the epoch's order (``order``) and can start
    the next pass part-way through a saved order (``start_at``)."""

    def __init__(self, dataset: Dataset, dist: DistInfo, seed: int):
        self.inner: Sampler[int] = (DistributedSampler(dataset, shuffle=True, drop_last=True, seed=seed)
                                    if dist.distributed else RandomSampler(dataset))
        self.order: list[int] = []
        self._resume: tuple[list[int], int] | None = None

    def __len__(self) -> int:
        return len(self.inner)

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.inner, DistributedSampler):
            self.inner.set_epoch(epoch)

    def start_at(self, order: list[int], position: int) -> None:
        """Make the next pass yield ``order[position:]`` instead of a new shuffle."""
        self._resume = (list(order), position)

    def __iter__(self):
        if self._resume is not None:
            (self.order, position), self._resume = self._resume, None
        else:
            self.order, position = list(self.inner), 0
        return iter(self.order[position:])


def _get_state(obj: Any) -> Any:
    if isinstance(obj, dict):
        return dict(obj)
    return obj.getstate() if isinstance(obj, random.Random) else obj.state_dict()


def _set_state(obj: Any, state: Any) -> None:
    if isinstance(obj, dict):
        obj.clear()
        obj.update(state)
    elif isinstance(obj, random.Random):
        obj.setstate(state)
    else:
        obj.load_state_dict(state)


class StepSaver:
    """Writes the resume state inside epochs every ``every_steps`` batches and/or ``every_minutes`` minutes (rank 0
    decides the time, every process follows), and restores a saved partial epoch.

    ``write(epoch, step, ranks)`` writes the file (``TrainingRun.save_partial``); ``partial`` is the saved partial
    epoch to continue, if any. Steps count batches: with gradient accumulation the state is saved at the first
    optimizer step after every ``every_steps`` batches."""

    def __init__(self, dist: DistInfo, write: Callable[[int, int, list[dict]], None], partial: dict | None,
                 every_steps: int | None = None, every_minutes: float | None = None):
        self.dist, self.write, self.partial = dist, write, partial
        self.every_steps, self.every_minutes = every_steps, every_minutes
        self.states: dict[str, Any] = {}
        self.last_step, self.last_time = 0, time.monotonic()
        self._rng: dict | None = None

    def epoch(self, **states: Any) -> StepSaver:
        """This saver for a new epoch whose own objects (``random.Random``, a dict of plain values taken at the
        epoch's start, or anything with ``state_dict`` and ``load_state_dict``: running sums, a per-step schedule)
        are saved and restored with it."""
        self.states, self.last_step = states, 0
        return self

    def resume_into(self, epoch: int, sampler: Sampler, totals: torch.Tensor) -> int:
        """Before the pass: when ``partial`` is of ``epoch``, put its order, totals and states back and return the
        steps done (its RNG states follow in ``restore_rng``); else 0."""
        partial, self.partial = self.partial, None
        if partial is None or partial["epoch"] != epoch:
            return 0
        if len(partial["ranks"]) != self.dist.world_size:
            raise InputError(f"resume.pt holds epoch {epoch} part-way with {len(partial['ranks'])} processes; "
                             f"resume it with as many (now {self.dist.world_size})")
        if not isinstance(sampler, EpochOrder):
            raise TypeError("a partial epoch resumes only on a loader made by common.training.loop.train_loader")
        mine = partial["ranks"][self.dist.rank]
        missing = sorted(set(self.states) - set(mine["states"]))
        if missing:
            raise InputError(f"resume.pt: the partial epoch {epoch} lacks the state of {missing}")
        for name, obj in self.states.items():
            _set_state(obj, mine["states"][name])
        totals.copy_(torch.tensor(mine["totals"], dtype=totals.dtype))
        sampler.start_at(mine["order"], mine["position"])
        self._rng = mine["rng"]
        self.last_step = partial["step"]
        return partial["step"]

    def restore_rng(self) -> None:
        """After the loader's iterator is made (it draws a seed): the RNG states of the saved step."""
        if self._rng is not None:
            set_rng_state(self._rng)
            self._rng = None

    def due(self, step: int) -> bool:
        """Whether to save after ``step`` (the same answer on every process)."""
        due = self.every_steps is not None and step - self.last_step >= self.every_steps
        if self.every_minutes is not None:
            timed = time.monotonic() - self.last_time >= 60 * self.every_minutes
            due = due or bool(broadcast_object(timed) if self.dist.distributed else timed)
        return due

    def after_step(self, epoch: int, step: int, sampler: Sampler, batch_size: int, totals: torch.Tensor) -> None:
        """Save the partial epoch after ``step`` steps (the optimizer just stepped) when it is due."""
        if not self.due(step):
            return
        if not isinstance(sampler, EpochOrder):
            raise TypeError("--save-every-steps needs a loader made by common.training.loop.train_loader")
        mine = {"order": sampler.order, "position": step * batch_size, "totals": totals.tolist(),
                "rng": rng_state(), "states": {name: _get_state(obj) for name, obj in self.states.items()}}
        ranks = all_gather_object(mine) if self.dist.distributed else [mine]
        self.write(epoch, step, ranks)
        self.last_step, self.last_time = step, time.monotonic()
