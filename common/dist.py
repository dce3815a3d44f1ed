"""Distributed helpers that also work as no-ops in a plain single process.

Under ``python -m torch.distributed.run`` the environment carries ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``;
``init_distributed`` then joins the process group with ``nccl`` on CUDA and ``gloo`` on CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def attempt_store() -> dist.Store | None:
    """Under torchrun's agent store (``TORCHELASTIC_USE_AGENT_STORE``), a client of it whose keys are those of this
    restart attempt (``TORCHELASTIC_RESTART_COUNT``), else None (``init_process_group`` reads the environment).

    The agent keeps one store across ``--max-restarts`` restarts, so a restarted group would otherwise read the
    addresses its dead predecessors published and fail to connect (pytorch/pytorch#135712)."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), int(os.environ["WORLD_SIZE"]),
                          is_master=False)
    return dist.PrefixStore(f"vlr/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def init_distributed(device: str | torch.device | None = None) -> DistInfo:
    """Choose the device once and join the process group when launched by torchrun.

    ``device`` overrides the automatic choice (``cuda`` when available, else ``cpu``); under torchrun with CUDA
    each process takes ``cuda:LOCAL_RANK``.
    """
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    requested = torch.device(device) if device is not None else None
    use_cuda = torch.cuda.is_available() if requested is None else requested.type == "cuda"
    if use_cuda:
        chosen = torch.device("cuda", local_rank if requested is None or requested.index is None else requested.index)
        torch.cuda.set_device(chosen)
    else:
        chosen = requested or torch.device("cpu")
    if launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1 and not dist.is_initialized():
        store = attempt_store()
        backend = "nccl" if use_cuda else "gloo"
        if store is None:
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(backend=backend, store=store, rank=int(os.environ["RANK"]),
                                    world_size=int(os.environ["WORLD_SIZE"]))
    return DistInfo(rank=get_rank(), world_size=get_world_size(), local_rank=local_rank, device=chosen)


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    if is_dist():
        dist.barrier()


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()


def shard_range(n: int, rank: int | None = None, world_size: int | None = None) -> range:
    """Contiguous slice of ``range(n)`` owned by ``rank``; concatenating all ranks' slices gives ``range(n)``."""
    rank = get_rank() if rank is None else rank
    world_size = get_world_size() if world_size is None else world_size
    per_rank = -(-n // world_size)
    return range(min(rank * per_rank, n), min((rank + 1) * per_rank, n))


def concat_all_gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0 (no gradient). Ranks may hold different lengths."""
    if not is_dist():
        return tensor
    sizes = [torch.zeros(1, dtype=torch.long, device=tensor.device) for _ in range(get_world_size())]
    dist.all_gather(sizes, torch.tensor([tensor.shape[0]], device=tensor.device))
    max_len = int(max(size.item() for size in sizes))
    padded = tensor.new_zeros((max_len, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded.contiguous())
    return torch.cat([part[: int(size.item())] for part, size in zip(gathered, sizes)], dim=0)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> tuple[torch.Tensor, ...]:  # noqa: D102
        parts = [torch.zeros_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return tuple(parts)

    @staticmethod
    def backward(ctx, *grads: torch.Tensor) -> torch.Tensor:  # noqa: D102
        stacked = torch.stack(grads)
        dist.all_reduce(stacked)
        return stacked[dist.get_rank()]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equal-sized ``tensor``s from all ranks along dim 0, with gradients flowing back to each rank."""
    if not is_dist():
        return tensor
    return torch.cat(_GatherWithGrad.apply(tensor), dim=0)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (returns a new tensor; the input is unchanged)."""
    if not is_dist():
        return tensor.clone()
    out = tensor.clone()
    dist.all_reduce(out)
    return out


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    return all_reduce_sum(tensor) / get_world_size()


def all_gather_object(obj: Any) -> list[Any]:
    """Gather a picklable object from every rank (a one-element list in a single process)."""
    if not is_dist():
        return [obj]
    out: list[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send ``obj`` from rank ``src`` to every rank."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
