"""The online adaptation loop shared by TCR and the baselines.

Each global query batch is split over the ranks (rank r holds positions r, r+W, ..., see ``tcr.stream``); every
rank encodes its shard, the features are gathered (with gradients) into the global batch in stream order, and
every rank computes the same loss on it. With ``grad_sync='global'`` the LayerNorm gradients are then averaged over
ranks, which makes each update the exact full-batch gradient step of a single process, so N processes give the
metrics of one. ``'local'`` keeps the original's multi-GPU behaviour (its methods call ``model.module`` and bypass
DDP's gradient all-reduce, ``main.py``): each rank steps on the gradient that flows through its own shard (W times
the full-batch loss's gradient through those rows, from the gather's backward sum) and the replicas drift apart.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import nn

from common.dist import all_gather_with_grad
from common.tta import average_gradients

GRAD_SYNC_MODES = ("global", "local")


@dataclass
class QueryBatch:
    """One global batch of the query stream, as seen by one rank.

    ``inputs``: this rank's rows (an image tensor on the device, or a list of captions), or None when the rank's
    shard is empty. ``indices``: dataset indices of all B queries in stream order (identical on every rank).
    ``rank_sizes``: rows per rank. ``local_rows``: this rank's positions in the global batch (``range(rank, B, W)``;
    ``range(B)`` in one process). ``position``: index of the batch in the stream.
    """

    inputs: Any
    indices: torch.Tensor
    rank_sizes: list[int]
    local_rows: range
    position: int

    @property
    def size(self) -> int:
        return len(self.indices)


Objective = tuple[torch.Tensor | None, dict[str, float]]


class OnlineAdapter:
    """Adapt the query encoder on a stream of query batches; subclasses define ``objective``.

    ``encode_query`` maps this rank's inputs to L2-normalised features; ``gallery`` [N, d] holds the fixed,
    normalised gallery features; ``params`` are the trainable LayerNorm parameters handed to ``optimizer``.
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        encode_query: Callable[[Any], torch.Tensor],
        gallery: torch.Tensor,
        params: list[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        *,
        steps: int = 3,
        temperature: float = 0.02,
        grad_sync: str = "global",
    ):
        if steps < 1:
            raise ValueError(f"tta_steps must be at least 1, got {steps}")
        if grad_sync not in GRAD_SYNC_MODES:
            raise ValueError(f"unknown grad sync {grad_sync!r}; valid: {', '.join(GRAD_SYNC_MODES)}")
        self.encode_query = encode_query
        self.gallery = gallery
        self.params = params
        self.optimizer = optimizer
        self.steps = steps
        self.temperature = temperature
        self.grad_sync = grad_sync
        self._sums: dict[str, float] = defaultdict(float)
        self._counts: dict[str, int] = defaultdict(int)

    def objective(self, query: torch.Tensor, sims: torch.Tensor, batch: QueryBatch, step: int) -> Objective:
        """Loss on the gathered batch (None: skip this step's update) and the values to log."""
        raise NotImplementedError

    def adapt(self, batch: QueryBatch) -> torch.Tensor:
        """Run ``steps`` updates on ``batch``; return the cosine scores [B, N] of the last step's forward."""
        for step in range(self.steps):
            sims = self.update(batch, step)
        return sims

    def update(self, batch: QueryBatch, step: int) -> torch.Tensor:
        """One forward, loss, backward and optimiser step; returns the forward's detached scores."""
        with torch.enable_grad():
            query = self.encode(batch)
            sims = query @ self.gallery.t()
            loss, logs = self.objective(query, sims, batch, step)
            if loss is not None:
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.sync_gradients()
                self.optimizer.step()
        self.log(logs)
        return sims.detach()

    def encode(self, batch: QueryBatch, inputs: Any = None) -> torch.Tensor:
        """Encode this rank's inputs (default ``batch.inputs``) and gather the global batch [B, d] in stream order."""
        inputs = batch.inputs if inputs is None else inputs
        local = self.encode_query(inputs) if batch.inputs is not None else None
        return gather_rows(local, batch, self.gallery)

    def sync_gradients(self) -> None:
        if self.grad_sync == "global":
            average_gradients(self.params)

    def log(self, values: dict[str, float]) -> None:
        values = {"lr": self.optimizer.param_groups[0]["lr"], **values}
        for key, value in values.items():
            self._sums[key] += float(value)
            self._counts[key] += 1

    def averages(self) -> dict[str, float]:
        """Mean of every logged value over all steps so far (upstream's MetricLogger global averages)."""
        return {key: self._sums[key] / self._counts[key] for key in self._sums}


def gather_rows(local: torch.Tensor | None, batch: QueryBatch, like: torch.Tensor) -> torch.Tensor:
    """Gather every rank's rows of ``batch`` into [B, ...] in stream order (gradients flow back to each rank's own
    rows). Rank r's j-th row is position ``r + j·W`` of the batch.

    Shards of unequal length are zero-padded for the collective and the padding is dropped again; an empty shard
    (``local=None``) contributes only padding, shaped and typed like ``like``'s rows.
    """
    if len(batch.rank_sizes) == 1:
        return local
    per_rank = max(batch.rank_sizes)
    if local is None:
        local = like.new_zeros((0, *like.shape[1:]))
    if local.shape[0] < per_rank:
        filler = local.new_zeros((per_rank - local.shape[0], *local.shape[1:]))
        if torch.is_grad_enabled():
            filler.requires_grad_(True)
        local = torch.cat([local, filler])
    gathered = all_gather_with_grad(local)
    world_size = len(batch.rank_sizes)
    rows = [(position % world_size) * per_rank + position // world_size for position in range(batch.size)]
    return gathered[torch.tensor(rows, device=gathered.device)]
