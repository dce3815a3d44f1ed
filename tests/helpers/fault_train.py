"""A tiny training script on the shared stack (TrainingRun, train_loader, train_one_epoch, run_epochs) for the fault
tests: dropout (global torch RNG), a per-epoch caption-like generator (``caption_rng``), validation on process 0.

``FAULT_KILL=RANK:EPOCH:BATCH`` makes process RANK SIGKILL itself when it starts batch BATCH of EPOCH, only in the
first attempt of a torchrun group (``TORCHELASTIC_RESTART_COUNT`` 0 or unset)."""
from __future__ import annotations

import argparse
import os
import signal
import sys
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from common.args import add_comet_args, add_output_args, setup_runtime  # noqa: E402
from common.cir.data import caption_rng  # noqa: E402
from common.cir.training import run_epochs  # noqa: E402
from common.dist import cleanup  # noqa: E402
from common.runtime import grad_scaler, run_main  # noqa: E402
from common.training.loop import data_parallel, train_loader, train_one_epoch  # noqa: E402
from common.training.resume import preflight
from common.training.run import TrainingRun  # noqa: E402


def kill_point() -> tuple[int, int, int] | None:
    spec = os.environ.get("FAULT_KILL")
    if not spec or os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        return None
    rank, epoch, batch = (int(part) for part in spec.split(":"))
    return rank, epoch, batch


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--validation-frequency", type=int, default=1)
    parser.add_argument("--save-training", action="store_true")
    parser.add_argument("--save-best", action="store_true")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    add_comet_args(parser)
    add_output_args(parser)
    args = parser.parse_args(argv)
    dist = setup_runtime(args)
    params = {"num_epochs": args.num_epochs, "batch_size": args.batch_size, "lr": 0.05, "world_size": dist.world_size}
    preflight(args, params, prefix="tiny")
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(32, 6, generator=generator)
    data = TensorDataset(inputs, inputs @ torch.randn(6, 3, generator=generator))
    loader = train_loader(data, args.batch_size, 0, dist, args.seed)
    torch.manual_seed(args.seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    scaler = grad_scaler(dist.device, False)
    network = data_parallel(model, dist)
    run = TrainingRun(args, dist, "tiny", {"model": model, "optimizer": optimizer, "scaler": scaler}, params,
                      "project", "tiny")
    kill = kill_point()

    def step(batch, rng, epoch, counter):
        if kill is not None and kill == (dist.rank, epoch, counter[0]):
            os.kill(os.getpid(), signal.SIGKILL)
        counter[0] += 1
        noise = torch.tensor([rng.random() for _ in range(batch[0].shape[1])])
        loss = ((network(batch[0] + 0.1 * noise) - batch[1]) ** 2).mean()
        return loss, {}, len(batch[0])

    def train_epoch(epoch: int) -> float:
        model.train()
        rng = caption_rng(args.seed, dist.rank, epoch)
        saver = run.steps.epoch(captions=rng)
        start = saver.partial["step"] if saver.partial and saver.partial["epoch"] == epoch else 0
        return train_one_epoch(loader, partial(step, rng=rng, epoch=epoch, counter=[start]), optimizer, scaler,
                               epoch, dist.device, run.log.tracker, "tiny", saver=saver)

    def validate(epoch: int) -> dict[str, float] | None:
        if not dist.is_main:
            return None
        model.eval()
        with torch.no_grad():
            error = ((model(inputs) - data.tensors[1]) ** 2).mean().item()
        return {"score": -error}

    run_epochs(run, args, train_epoch, validate, "tiny", {"score": "tiny_best"}, model, optimizer)
    cleanup()


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
