"""TCR's query stream across ranks: the original's DistributedSampler shards, and ``--ddp_grad local`` vs global
under two gloo processes."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DistributedSampler

from common.tta import layernorm_parameters, softmax_entropy, train_only
from tcr.stream import ShardSampler, global_batches, stream_order

REPO = Path(__file__).resolve().parents[1]


class Numbers(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index):
        return index


@pytest.mark.parametrize("n, batch_size, world_size", [(24, 8, 2), (22, 8, 2), (36, 12, 4)])
def test_rank_shards_are_the_original_distributed_sampler_batches(n, batch_size, world_size):
    """The original: DistributedSampler(shuffle=True, seed=0) per rank, loader batches of batch_size // W."""
    batches = global_batches(stream_order(n), batch_size)
    for rank in range(world_size):
        sampler = DistributedSampler(Numbers(n), num_replicas=world_size, rank=rank, shuffle=True, seed=0)
        indices = list(sampler)
        local = batch_size // world_size
        original = [indices[i:i + local] for i in range(0, len(indices), local)]
        assert ShardSampler(batches, rank, world_size).shards == original


def test_one_rank_reads_the_permutation_in_order():
    batches = global_batches(stream_order(10), 4)
    assert [len(b) for b in batches] == [4, 4, 2]
    assert ShardSampler(batches, 0, 1).shards == [b.tolist() for b in batches]
    assert torch.equal(stream_order(10), torch.randperm(10, generator=torch.Generator().manual_seed(0)))


WORKER = textwrap.dedent('''
    import json, sys
    import torch, torch.nn.functional as F
    from torch import nn
    from common.dist import cleanup, init_distributed
    from common.tta import layernorm_parameters, train_only
    from tcr.stream import query_stream
    from tcr.method import build_adapter

    def toy():
        torch.manual_seed(0)
        encoder = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 4))
        generator = torch.Generator().manual_seed(1)
        gallery = F.normalize(torch.randn(12, 4, generator=generator), dim=1)
        queries = torch.randn(16, 6, generator=generator)
        return encoder, gallery, queries

    info = init_distributed("cpu")
    result = {"rank": info.rank}
    for mode in ("local", "global"):
        encoder, gallery, queries = toy()
        params, _ = layernorm_parameters(encoder)
        train_only(encoder, params)
        optimizer = torch.optim.SGD(params, lr=0.5)
        adapter = build_adapter("tent", lambda x: F.normalize(encoder(x), dim=-1), gallery, params, optimizer,
                                steps=1, temperature=0.1, grad_sync=mode)
        batch = next(query_stream([(queries[i], i) for i in range(16)], 8, torch.device("cpu")))
        local = batch.indices[list(batch.local_rows)]
        scores = adapter.adapt(batch)
        result[mode] = {"indices": batch.indices.tolist(), "local": local.tolist(), "scores": scores.tolist(),
                        "inputs_are_local": bool(torch.equal(batch.inputs, queries[local])),
                        "loss": adapter.averages()["loss_total"], "params": [p.tolist() for p in params]}
    with open(f"{sys.argv[1]}/rank{info.rank}.json", "w") as handle:
        json.dump(result, handle)
    cleanup()
''')


def expected_params(rows: list[int] | None, world_size: int):
    """SGD(lr 0.5) after one Tent step: the gradient through ``rows`` only, times W (None: the full batch)."""
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 4))
    generator = torch.Generator().manual_seed(1)
    gallery = F.normalize(torch.randn(12, 4, generator=generator), dim=1)
    queries = torch.randn(16, 6, generator=generator)
    params, _ = layernorm_parameters(encoder)
    train_only(encoder, params)
    batch = stream_order(16)[:8]
    z = F.normalize(encoder(queries[batch]), dim=-1)
    scale = 1.0
    if rows is not None:
        keep = torch.zeros(8, 1, dtype=torch.bool)
        keep[rows] = True
        z, scale = torch.where(keep, z, z.detach()), float(world_size)
    sims = z @ gallery.t()
    loss = softmax_entropy(sims / 0.1).mean()
    loss.backward()
    return [(p - 0.5 * scale * p.grad).detach() for p in params], loss.item(), sims.detach()


@pytest.mark.slow
def test_local_grad_mode_steps_each_rank_on_its_strided_shard(tmp_path):
    (tmp_path / "worker.py").write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLR_NO_PROGRESS": "1", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29533", str(tmp_path / "worker.py"), str(tmp_path)], env=env, capture_output=True,
                         text=True, timeout=240, cwd=REPO)
    assert run.returncode == 0, run.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    order = stream_order(16)[:8].tolist()
    full, full_loss, full_scores = expected_params(None, 2)
    for rank, result in enumerate(ranks):
        local = result["local"]
        assert local["indices"] == order and local["local"] == order[rank::2] and local["inputs_are_local"]
        own, loss, _ = expected_params(list(range(rank, 8, 2)), 2)
        assert local["loss"] == pytest.approx(loss, abs=1e-6) and loss == pytest.approx(full_loss)
        for mode in ("local", "global"):  # row i of the batch's scores is query order[i]
            torch.testing.assert_close(torch.tensor(result[mode]["scores"]), full_scores, rtol=0, atol=1e-6)
        for got, want in zip(local["params"], own):
            torch.testing.assert_close(torch.tensor(got), want, rtol=0, atol=1e-6)
        for got, want in zip(result["global"]["params"], full):
            torch.testing.assert_close(torch.tensor(got), want, rtol=0, atol=1e-6)
    assert ranks[0]["local"]["params"] != ranks[1]["local"]["params"]
