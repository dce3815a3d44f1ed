"""Worker for tests/test_dist.py: features and a recall computed by 1 or N processes (gloo on CPU)."""
import json
import sys

import torch
from torch.utils.data import Dataset

from common.dist import all_gather_with_grad, cleanup, get_world_size, init_distributed, is_main_process, shard_range
from common.features import extract_features


class Points(Dataset):
    """11 named items (an odd count, so shards differ in length)."""

    def __init__(self):
        self.x = torch.linspace(-1, 1, 11 * 6).reshape(11, 6)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return f"item{i}", self.x[i]


def main(out_path: str) -> None:
    info = init_distributed("cpu")
    torch.manual_seed(0)
    encoder = torch.nn.Linear(6, 4)
    feats, names = extract_features(Points(), encoder, device=info.device, batch_size=3)
    scores = feats @ feats.T
    recall_at1 = (scores.argmax(1) == torch.arange(len(names))).float().mean().item() * 100

    local = torch.arange(4, dtype=torch.float32).reshape(2, 2) + 10 * info.rank
    local.requires_grad_(True)
    gathered = all_gather_with_grad(local)
    (gathered.sum() * (info.rank + 1)).backward()
    grads = [local.grad.tolist()]
    if info.distributed:
        from common.dist import all_gather_object
        grads = all_gather_object(local.grad.tolist())
    if is_main_process():
        with open(out_path, "w") as handle:
            json.dump({"features": feats.tolist(), "names": names, "recall_at1": recall_at1,
                       "world_size": get_world_size(), "shard0": list(shard_range(11, 0, get_world_size())),
                       "gathered_rows": gathered.shape[0], "grads": grads}, handle)
    cleanup()


if __name__ == "__main__":
    main(sys.argv[1])
