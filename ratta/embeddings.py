"""The pre-extracted test embeddings: ``<save_dir>/<net>/<seed>/<dataset>.pth``.

'list' (upstream's layout, RA-TTA:ratta_pre_extract.py): a list with one ``(x [1, D], views [AS, D], y [1])`` tuple
per test image. 'stacked' (loads fast): ``{'x': [N, D], 'views': [N, AS, D], 'y': [N], 'net_name', 'seed',
'aug_size', 'format_version'}``. Both load with ``weights_only=True``.
"""
from __future__ import annotations

from pathlib import Path

import torch

from common.io import CheckpointError, MalformedFileError, atomic_torch_save, load_torch_file
from ratta.vector_db import net_tag

SAVE_FORMATS = ("list", "stacked")


def embedding_path(root: str | Path, net_name: str, seed: int, dataset: str) -> Path:
    return Path(root) / net_tag(net_name) / str(seed) / f"{dataset}.pth"


def save_embeddings(path: str | Path, x: torch.Tensor, views: torch.Tensor, y: torch.Tensor, save_format: str,
                    meta: dict) -> Path:
    """Write x [N, D], views [N, AS, D], labels [N] in ``save_format`` (atomically)."""
    if save_format == "list":
        records = [(x[i:i + 1].clone(), views[i].clone(), y[i:i + 1].clone()) for i in range(x.shape[0])]
        return atomic_torch_save(records, path)
    if save_format == "stacked":
        return atomic_torch_save({"x": x, "views": views, "y": y, **meta, "format_version": 1}, path)
    raise ValueError(f"unknown --save_format {save_format!r}; choose from {', '.join(SAVE_FORMATS)}")


def load_embeddings(path: str | Path, aug_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x [N, D], views [N, AS, D], y [N]) from either layout; ``aug_size`` must equal the file's AS."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no test embeddings; run ratta_pre_extract.py with the same --net_name, "
                                f"--seed and --dataset first")
    try:
        data = load_torch_file(path, what="test-embedding file")
    except CheckpointError as error:
        raise CheckpointError(f"{error} ratta_pre_extract.py writes it: run it again with the same --net_name, "
                              f"--seed and --dataset.") from None
    if isinstance(data, dict) and {"x", "views", "y"} <= set(data):
        x, views, y = data["x"], data["views"], data["y"]
    elif isinstance(data, list) and data and all(isinstance(item, (tuple, list)) and len(item) == 3 for item in data):
        x = torch.cat([item[0] for item in data])
        views = torch.stack([item[1] for item in data])
        y = torch.cat([item[2].reshape(-1) for item in data])
    else:
        raise MalformedFileError(f"{path}: expected a list of (x [1, D], views [AS, D], y [1]) tuples or a dict with "
                                 f"x / views / y")
    if aug_size is not None and views.shape[1] != aug_size:
        raise MalformedFileError(f"{path}: holds {views.shape[1]} views per image but --augmentation_size is "
                                 f"{aug_size}; pass --augmentation_size {views.shape[1]} or re-run pre-extraction")
    return x, views, y.long()
