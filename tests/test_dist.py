"""Two gloo processes under torchrun give the same features and metrics as one process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.dist import shard_range

WORKER = Path(__file__).parent / "helpers" / "ddp_features.py"


def run_worker(out: Path, nproc: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLR_NO_PROGRESS": "1"}
    if nproc == 1:
        cmd = [sys.executable, str(WORKER), str(out)]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
               "--master_port", "29517", str(WORKER), str(out)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def test_shard_range_covers_everything_once():
    parts = [list(shard_range(11, r, 3)) for r in range(3)]
    assert parts == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert list(shard_range(2, 2, 3)) == []


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path):
    single = run_worker(tmp_path / "one.json", 1)
    double = run_worker(tmp_path / "two.json", 2)
    assert single["world_size"] == 1 and double["world_size"] == 2
    assert double["names"] == single["names"] == [f"item{i}" for i in range(11)]
    assert torch.allclose(torch.tensor(double["features"]), torch.tensor(single["features"]), atol=1e-6)
    assert double["recall_at1"] == single["recall_at1"]
    assert double["shard0"] == list(range(6))
    # all_gather_with_grad: rank r scales the sum by (r + 1), so each rank's rows get grad 1 + 2 = 3.
    assert double["gathered_rows"] == 4
    assert double["grads"] == [[[3.0, 3.0], [3.0, 3.0]]] * 2
    assert single["grads"] == [[[1.0, 1.0], [1.0, 1.0]]]
