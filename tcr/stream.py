"""Gallery encoding, the online query stream and score placement (the original's ``main.py``
``test_time_tune``).

Stream semantics: the query order is ``randperm(N)`` from a generator seeded with 0 (the original's
``DistributedSampler`` default, independent of ``--seed``); global batch i is positions ``[i·B, (i+1)·B)`` of that
order. Rank r of W holds the strided positions r, r+W, r+2W, ... of every global batch, which is what the original's
``DistributedSampler`` (rank r reads ``order[r::W]``) and per-rank batches of B/W give, so ``--ddp_grad local``
on N processes sees the original's N-GPU shards (when W divides B and N; the original pads the last shard with
repeated queries, we don't). Every rank holds the gathered features of the whole batch in stream order, so each rank
computes the same scores, and row i of the score matrix is always query i (scores are assigned by dataset index,
never summed).
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from common.dist import get_rank, get_world_size
from common.features import extract_features
from common.runtime import progress
from tcr.adapter import OnlineAdapter, QueryBatch
from tcr.models import Backbone

STREAM_SEED = 0


def stream_order(n: int) -> torch.Tensor:
    """The order in which the queries arrive: ``randperm(n)`` of a generator seeded with 0."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(STREAM_SEED))


def global_batches(order: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    return list(order.split(batch_size))


def shard_rows(batch_size: int, rank: int, world_size: int) -> range:
    """Positions of rank ``rank`` in a global batch: ``rank, rank + W, rank + 2W, ...``."""
    return range(rank, batch_size, world_size)


class ShardSampler(Sampler[list[int]]):
    """Batch sampler yielding this rank's non-empty shard (:func:`shard_rows`) of every global batch."""

    def __init__(self, batches: Sequence[torch.Tensor], rank: int, world_size: int):
        self.shards = [batch[list(shard_rows(len(batch), rank, world_size))].tolist() for batch in batches]
        self.shards = [shard for shard in self.shards if shard]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.shards)

    def __len__(self) -> int:
        return len(self.shards)


def to_device(inputs: Any, device: torch.device) -> Any:
    return inputs.to(device, non_blocking=True) if isinstance(inputs, torch.Tensor) else inputs


def query_stream(dataset: Dataset, batch_size: int, device: torch.device,
                 num_workers: int = 0) -> Iterator[QueryBatch]:
    """Yield every global query batch in stream order, holding this rank's inputs (on ``device``)."""
    rank, world_size = get_rank(), get_world_size()
    batches = global_batches(stream_order(len(dataset)), batch_size)
    loader = DataLoader(dataset, batch_sampler=ShardSampler(batches, rank, world_size), num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    local_batches = iter(loader)
    for position, indices in enumerate(batches):
        rows = shard_rows(len(indices), rank, world_size)
        sizes = [len(shard_rows(len(indices), r, world_size)) for r in range(world_size)]
        inputs = to_device(next(local_batches)[0], device) if len(rows) else None
        yield QueryBatch(inputs=inputs, indices=indices, rank_sizes=sizes, local_rows=rows, position=position)


@torch.no_grad()
def encode_all(backbone: Backbone, dataset: Dataset, modality: str, device: torch.device, batch_size: int,
               num_workers: int = 0) -> torch.Tensor:
    """Unit-norm features [N, d] of every item of an image or text dataset, in dataset order, in the model's dtype
    (ranks encode contiguous shards, gathered)."""
    encode = backbone.encode_image if modality == "image" else backbone.encode_text
    features, keys = extract_features(dataset, encode, device=device, batch_size=batch_size, key_index=1,
                                      num_workers=num_workers, amp=False, desc=f"{modality} features")
    if keys != list(range(len(dataset))):
        raise RuntimeError(f"{modality} features came back out of order")
    return features.to(backbone.feature_dtype)


def run_stream(adapter: OnlineAdapter, dataset: Dataset, n_gallery: int, batch_size: int, device: torch.device,
               num_workers: int = 0) -> torch.Tensor:
    """Adapt on every query batch; return the scores [N_query, N_gallery] (CPU, float32) placed by query index."""
    scores = torch.full((len(dataset), n_gallery), -100.0)
    stream = query_stream(dataset, batch_size, device, num_workers)
    n_batches = -(-len(dataset) // batch_size)
    for batch in progress(stream, desc="Processing", total=n_batches, leave=False):
        scores[batch.indices] = adapter.adapt(batch).float().cpu()
    return scores
