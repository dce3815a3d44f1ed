"""Batched feature extraction with an optional on-disk cache, sharded over ranks under torchrun."""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from common.dist import all_gather_object, concat_all_gather, get_world_size, is_main_process, shard_range, barrier
from common.io import PathLike, atomic_torch_save, file_hash, load_torch_file
from common.runtime import autocast, get_logger, progress

logger = get_logger(__name__)


def cache_file(cache_dir: PathLike, cache_key: dict[str, Any]) -> Path:
    """Path of the cache entry for ``cache_key`` (a JSON-able dict: checkpoint hash, split, transform...)."""
    digest = hashlib.sha256(json.dumps(cache_key, sort_keys=True, default=str).encode()).hexdigest()[:24]
    return Path(cache_dir) / f"features_{digest}.pt"


def checkpoint_fingerprint(path: PathLike) -> str:
    """SHA-1 of a checkpoint file, used in cache keys so a new checkpoint never reuses old features."""
    return file_hash(path, "sha1")


cached_fingerprint = functools.lru_cache(maxsize=None)(checkpoint_fingerprint)
"""``checkpoint_fingerprint`` computed once per path in a process (the cache keys of one run ask repeatedly)."""


@torch.no_grad()
def extract_features(
    dataset: Dataset,
    encode: Callable[[Any], torch.Tensor],
    *,
    device: torch.device,
    batch_size: int = 32,
    num_workers: int = 0,
    key_index: int = 0,
    collate_fn: Callable | None = None,
    amp: bool = True,
    cache_dir: PathLike | None = None,
    cache_key: dict[str, Any] | None = None,
    desc: str = "features",
) -> tuple[torch.Tensor, list[Any]]:
    """Encode every item of ``dataset`` and return ``(features [N, D] float32 on device, keys)``.

    Each item is a pair; ``key_index`` says which element is the key (an image name or index) and the other is the
    model input, moved to ``device`` if it is a tensor. Under torchrun each rank encodes a contiguous shard and the
    results are gathered in dataset order. With ``cache_dir`` and ``cache_key`` a second call with the same key
    loads the features from disk instead of running ``encode``.
    """
    path = cache_file(cache_dir, cache_key) if cache_dir is not None and cache_key is not None else None
    if path is not None and path.is_file():
        cached = load_torch_file(path, trusted=True)
        logger.info("loaded %d cached %s from %s", len(cached["keys"]), desc, path)
        return cached["features"].to(device), list(cached["keys"])

    shard = Subset(dataset, list(shard_range(len(dataset))))
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=collate_fn, pin_memory=device.type == "cuda")
    features, keys = [], []
    for batch in progress(loader, desc=desc):
        inputs = batch[1 - key_index]
        if isinstance(inputs, torch.Tensor):
            inputs = inputs.to(device, non_blocking=True)
        with autocast(device, amp):
            features.append(encode(inputs).float())
        batch_keys = batch[key_index]
        keys.extend(batch_keys.tolist() if isinstance(batch_keys, torch.Tensor) else list(batch_keys))
    local = torch.cat(features) if features else torch.empty(0, device=device)
    all_features = concat_all_gather(local)
    all_keys = [key for part in all_gather_object(keys) for key in part] if get_world_size() > 1 else keys

    if path is not None and is_main_process():
        atomic_torch_save({"features": all_features.cpu(), "keys": all_keys, "meta": cache_key}, path)
        logger.info("cached %d %s in %s", len(all_keys), desc, path)
    barrier()
    return all_features, all_keys

