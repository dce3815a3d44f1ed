"""Bi-BLIP4CIR training steps on two gloo processes (spawned with torchrun's environment) give the loss and the
gradients of one process on the same global batch (stage I: the text encoder; stage II: the Combiner), so each
process scores its rows against its own positives among the gathered targets. The scripts under torchrun are in
tests/test_bi_blip4cir_scripts.py."""
import importlib.util
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from common.dist import DistInfo

WORKER = Path(__file__).parent / "helpers" / "ddp_bi_blip4cir_step.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_worker():
    spec = importlib.util.spec_from_file_location("ddp_bi_blip4cir_step", WORKER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def process(rank: int, port: int, vocab_dir: Path, out: Path) -> None:
    """One of the two processes, in the environment torchrun gives. They are spawned, not forked: a child forked
    from a parent whose OpenMP pool has run (the single-process reference) can hang in its first parallel op."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    load_worker().main(str(vocab_dir), str(out))


@pytest.mark.slow
def test_two_processes_give_the_loss_and_gradients_of_one(tmp_path):
    worker = load_worker()
    single = worker.run_steps(tmp_path / "vocab_single", DistInfo(0, 1, 0, torch.device("cpu")))

    mp.start_processes(process, (free_port(), tmp_path / "vocab", tmp_path / "two.pt"), nprocs=2,
                       start_method="spawn")
    double = torch.load(tmp_path / "two.pt", weights_only=True)
    assert double["world_size"] == 2 and len(double["per_rank"]) == 2

    for stage in ("stage1", "stage2"):
        ranks = [values[stage] for values in double["per_rank"]]
        assert [r["size"] for r in ranks] == [2, 2] and single[stage]["size"] == 4
        for part in ("loss", "forward", "reversed"):  # equal blocks: the global loss is the mean of the two
            assert (ranks[0][part] + ranks[1][part]) / 2 == pytest.approx(single[stage][part], rel=1e-5, abs=1e-6)
        assert abs(ranks[0]["loss"] - ranks[1]["loss"]) > 1e-3  # the two halves really differ
        grads, expected = double["grads"][stage], single[stage]["grads"]
        assert set(grads) == set(expected)
        for name, grad in expected.items():
            torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    trained = {name for name, p in worker.tiny_text_encoder(tmp_path / "vocab_single").named_parameters()
               if p.requires_grad}
    assert set(double["grads"]["stage1"]) == trained and "text_proj.weight" in trained
    assert not any("crossattention" in name for name in trained)
    assert set(double["grads"]["stage2"]) == {name for name, _ in worker.Combiner(16, 32, 64).named_parameters()}
