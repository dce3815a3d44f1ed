"""Long runs survive faults (one process): ``--save-every-steps`` writes the resume state inside an epoch and a run
SIGKILLed part-way ends bit-identical to an uninterrupted one after ``--resume auto``; ``--resume auto`` picks the
newest unfinished run of the same settings; a full disk keeps the previous ``resume.pt``; the stop line names the
saved step."""
from __future__ import annotations

import argparse
import errno
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import common.io
import common.training.steps as steps
from common.args import add_comet_args, add_output_args
from common.dist import DistInfo
from common.errors import InputError
from common.io import DiskFull
from common.runtime import stop_message, track_run
from common.training.checkpoint import RESUME_FILE
from common.training.resume import preflight
from common.training.run import TrainingRun
from common.training.steps import StepSaver

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "tests" / "helpers" / "fault_train.py"
CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "VLR_NO_PROGRESS": "1", **extra}


def tiny_run(out: Path, *argv: str, **env: str) -> subprocess.CompletedProcess:
    """The tiny script as a command (so that it can be SIGKILLed)."""
    return subprocess.run([sys.executable, str(SCRIPT), "--output-root", str(out), "--save-training", *argv],
                          env=environment(**env), capture_output=True, text=True, timeout=240)


def tiny_main(out: Path, *argv: str) -> None:
    """The tiny script in this process (faster)."""
    spec = importlib.util.spec_from_file_location("fault_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--output-root", str(out), "--save-training", *argv])


def only_run(out: Path) -> Path:
    runs = list((out / "models").iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def leaves(value, prefix: str = ""):
    """(path, leaf) of every tensor, array and plain value in a nested checkpoint."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{prefix}/{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from leaves(item, f"{prefix}/{index}")
    else:
        yield prefix, value


def assert_same_files(run: Path, other: Path) -> None:
    """Every tensor of resume.pt and of each saved model, and the metric CSVs, are equal."""
    names = sorted(path.name for path in (run / "saved_models").iterdir())
    assert names == sorted(path.name for path in (other / "saved_models").iterdir())
    for name in [RESUME_FILE, *(f"saved_models/{file}" for file in names)]:
        mine, theirs = (dict(leaves(torch.load(folder / name, weights_only=False))) for folder in (run, other))
        assert mine.keys() == theirs.keys(), name
        for key, value in mine.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, theirs[key]), f"{name}{key}"
            else:
                assert np.array_equal(np.asarray(value), np.asarray(theirs[key])), f"{name}{key}"
    for csv in ("train_metrics.csv", "validation_metrics.csv"):
        assert (run / csv).read_text() == (other / csv).read_text(), csv


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    """The tiny run without faults: 3 epochs of 8 steps."""
    out = tmp_path_factory.mktemp("straight")
    tiny_main(out)
    return only_run(out)


def test_sigkill_inside_an_epoch_then_resume_auto_is_bit_identical(tmp_path, straight, caplog):
    """SIGKILL at batch 5 of epoch 1 with a save every 2 steps: resume.pt holds epoch 1 up to step 4; the same
    command with --resume auto continues there and ends with the uninterrupted run's tensors and CSVs."""
    command = ("--save-every-steps", "2", "--resume", "auto")
    killed = tiny_run(tmp_path, *command, FAULT_KILL="0:1:5")
    assert killed.returncode == -signal.SIGKILL
    run = only_run(tmp_path)
    partial = torch.load(run / RESUME_FILE, weights_only=False)["extra"]["partial"]
    assert (partial["epoch"], partial["step"]) == (1, 4)
    assert partial["ranks"][0]["position"] == 16 and sorted(partial["ranks"][0]["order"]) == list(range(32))
    assert not list(run.rglob(".*.tmp"))
    tiny_main(tmp_path, *command)
    assert f"--resume auto: continuing {run}" in caplog.text
    assert f"resuming {run} at epoch 1 of 3, after its step 4" in caplog.text
    assert only_run(tmp_path) == run
    assert_same_files(run, straight)


def parse(out: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=0.1)
    add_comet_args(parser)
    add_output_args(parser)
    return parser.parse_args(["--output-root", str(out), *extra])


def params(args: argparse.Namespace) -> dict:
    return {"num_epochs": args.num_epochs, "lr": args.lr}


def start(args: argparse.Namespace, prefix: str = "tiny") -> TrainingRun:
    return TrainingRun(args, CPU, prefix, {"model": nn.Linear(2, 2)}, params(args), "project", "title")


def finish_epochs(run: TrainingRun, epochs) -> None:
    for epoch in epochs:
        run.log.train(epoch, 1.0)
        run.end_epoch(epoch)


def test_resume_auto_takes_the_newest_unfinished_run_of_the_same_settings(tmp_path, caplog):
    older = start(parse(tmp_path, "--run-name", "tiny_a"))
    finish_epochs(older, [0])
    other_rate = start(parse(tmp_path, "--run-name", "tiny_b", "--lr", "0.5"))
    finish_epochs(other_rate, [0])
    newer = start(parse(tmp_path, "--run-name", "tiny_c"))
    finish_epochs(newer, [0])
    finished = start(parse(tmp_path, "--run-name", "tiny_d"))
    finish_epochs(finished, range(3))
    other_script = start(parse(tmp_path, "--run-name", "other_e"), prefix="other")
    finish_epochs(other_script, [0, 1])
    os.utime(older.dir / RESUME_FILE, ns=(1, 1))  # older than the others

    args = parse(tmp_path, "--resume", "auto")
    assert preflight(args, params(args), prefix="tiny") == 1
    assert args.resume == str(newer.dir)
    assert f"--resume auto: continuing {newer.dir}" in caplog.text
    resumed = start(parse(tmp_path, "--resume", "auto"))
    assert resumed.dir == newer.dir and resumed.start_epoch == 1

    fresh = parse(tmp_path, "--resume", "auto", "--lr", "0.9")
    assert preflight(fresh, params(fresh), prefix="tiny") is None and fresh.resume is None
    assert "no unfinished run of these settings" in caplog.text
    with pytest.raises(TypeError, match="prefix"):
        preflight(parse(tmp_path, "--resume", "auto"), params(args))


def test_a_full_disk_keeps_the_previous_resume_state(tmp_path, monkeypatch):
    """The write fails half-way with ENOSPC: resume.pt keeps the last saved epoch, the error says so in one line,
    and no temporary file is left."""
    run = start(parse(tmp_path, "--run-name", "full"))
    finish_epochs(run, [0])
    before = (run.dir / RESUME_FILE).read_bytes()

    def full_disk(obj, handle):
        handle.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(DiskFull) as caught:
        run.end_epoch(1)
    message = str(caught.value)
    assert message == (f"{run.dir / RESUME_FILE}: disk full while writing it (No space left on device); the "
                       "previous file is kept unchanged")
    assert (run.dir / RESUME_FILE).read_bytes() == before
    assert sorted(path.name for path in run.dir.iterdir() if path.name.startswith(".")) == []
    with pytest.raises(DiskFull, match="nothing was written under that name"):
        common.io.atomic_torch_save({}, tmp_path / "new.pt")
    assert not list(tmp_path.glob(".new.pt*")) and not (tmp_path / "new.pt").exists()


def test_the_stop_line_names_the_saved_step(tmp_path):
    place = track_run(tmp_path / "run", saved_epoch=0)
    place.epoch, place.step, place.steps = 1, 7, 10
    place.saved_step(1, 6)
    line = stop_message(signal.SIGINT, ["--lr", "0.1"])
    assert f"stopped by Ctrl-C in epoch 1 (step 7 of 10) of {tmp_path / 'run'}; epoch 1 up to step 6 is saved, " \
           "continue with: " in line and line.endswith(f"--resume {tmp_path / 'run'}")
    place.saved(1)
    assert "; epochs 0-1 are saved, continue with" in stop_message(signal.SIGINT, []) and place.partial is None
    track_run(None)


def test_step_flags_are_checked(tmp_path, capsys):
    for bad in ("0", "-3", "two"):
        with pytest.raises(SystemExit):
            parse(tmp_path, "--save-every-steps", bad)
        assert "--save-every-steps: expected a positive whole number" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse(tmp_path, "--save-every-minutes", "nan")
    with pytest.raises(InputError, match="cannot be combined with --no-resume-state"):
        start(parse(tmp_path, "--save-every-steps", "5", "--no-resume-state"))


def test_the_epoch_order_is_random_samplers(tmp_path):
    """The loader draws the same shuffle as before (RandomSampler on the global generator), so runs without the
    new flags are unchanged."""
    from torch.utils.data import DataLoader, TensorDataset

    from common.training.loop import train_loader

    data = TensorDataset(torch.arange(12))
    torch.manual_seed(3)
    ours = [batch[0].tolist() for batch in train_loader(data, 4, 0, CPU, 0)]
    torch.manual_seed(3)
    before = [batch[0].tolist() for batch in DataLoader(data, batch_size=4, shuffle=True, drop_last=True)]
    assert ours == before


def test_save_every_minutes_counts_from_the_last_save(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(steps.time, "monotonic", lambda: clock[0])
    written = []
    saver = StepSaver(CPU, lambda epoch, step, ranks: written.append((epoch, step)), None, every_minutes=2).epoch()
    sampler = steps.EpochOrder(list(range(8)), CPU, 0)
    list(sampler)
    for step, now in enumerate([30.0, 130.0, 200.0, 260.0], start=1):
        clock[0] = now
        saver.after_step(0, step, sampler, 1, torch.zeros(2))
    assert written == [(0, 2), (0, 4)]


def test_a_partial_epoch_resumes_only_with_as_many_processes():
    partial = {"epoch": 1, "step": 2, "ranks": [{}, {}]}
    saver = StepSaver(CPU, lambda *args: None, partial).epoch()
    with pytest.raises(InputError, match="part-way with 2 processes; resume it with as many \\(now 1\\)"):
        saver.resume_into(1, steps.EpochOrder(list(range(8)), CPU, 0), torch.zeros(2))
