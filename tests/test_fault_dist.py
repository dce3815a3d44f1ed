"""Long runs survive faults under torchrun (two gloo processes on the tiny script of tests/helpers/fault_train.py):
a SIGKILLed rank 0 makes ``--max-restarts`` relaunch the group, which takes over the dead process's lock, continues
from the last ``--save-every-steps`` state with ``--resume auto`` and ends with the weights and CSVs of an
uninterrupted run; two one-process "nodes" on loopback (c10d rendezvous) train and validate as one node of two."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from test_fault_steps import assert_same_files

# slow: each test launches torchrun (about 20-40 s on two cores: process start-up, gloo rendezvous, a restart)
pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tests" / "helpers" / "fault_train.py"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch(launcher: list[str], out: Path, *argv: str, **env: str) -> subprocess.Popen:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "VLR_NO_PROGRESS": "1", **env}
    command = [sys.executable, "-m", "torch.distributed.run", *launcher, str(SCRIPT), "--output-root", str(out),
               "--save-training", *argv]
    return subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def finish(process: subprocess.Popen, timeout: float = 240) -> str:
    """The launch's output once it ended with status 0; a launch still running after ``timeout`` seconds is killed
    with its workers and fails the test with the end of its output."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"torchrun still running after {timeout} s:\n{output[-4000:]}")
    assert process.returncode == 0, output[-4000:]
    return output


def only_run(out: Path) -> Path:
    runs = list((out / "models").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


@pytest.fixture(scope="module")
def one_node(tmp_path_factory) -> Path:
    """The uninterrupted run of two processes on one node."""
    out = tmp_path_factory.mktemp("one_node")
    finish(launch(["--nproc_per_node", "2", "--master_port", str(free_port())], out))
    return only_run(out)


def test_a_killed_rank_restarts_the_group_from_the_last_step(tmp_path, one_node):
    launcher = ["--nproc_per_node", "2", "--max-restarts", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                f"127.0.0.1:{free_port()}"]
    output = finish(launch(launcher, tmp_path, "--resume", "auto", "--save-every-steps", "2", FAULT_KILL="0:1:5"))
    run = only_run(tmp_path)
    assert "epoch 1 step 4: resume state saved" in output
    assert f"--resume auto: continuing {run}" in output and "taking over the lock of pid" in output
    assert f"resuming {run} at epoch 1 of 3, after its step 4" in output
    assert not (run / "run.lock").exists()
    assert_same_files(run, one_node)


def test_two_nodes_train_and_validate_as_one(tmp_path, one_node):
    launcher = ["--nnodes", "2", "--nproc_per_node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                f"127.0.0.1:{free_port()}", "--rdzv-id", "two_nodes"]
    nodes = [launch([*launcher, "--node_rank", str(rank)], tmp_path) for rank in (0, 1)]
    for node in nodes:
        finish(node)
    assert_same_files(only_run(tmp_path), one_node)
