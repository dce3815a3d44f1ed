"""Ctrl-C and SIGTERM stop a training script with one line naming the run folder, the epoch and step, and the
--resume command that continues it (exit status 130 / 143, no traceback); the folder's files stay whole and the
printed command continues the run. A second process cannot train into a folder in use."""
from __future__ import annotations

import csv
import multiprocessing
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import common.runtime as runtime
from common.clip import write_tiny_clip
from common.synthetic.writers import write_fashioniq
from common.training.checkpoint import read_resume_epoch

REPO = Path(__file__).resolve().parent.parent
TINY_TRAIN = '''
import argparse
import sys
import time

import torch
from torch import nn
from torch.utils.data import TensorDataset

from common.args import add_comet_args, add_output_args, setup_runtime
from common.runtime import grad_scaler, run_main
from common.training.loop import train_loader, train_one_epoch
from common.training.resume import preflight
from common.training.run import TrainingRun


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-epochs", type=int, default=3)
    parser.add_argument("--step-seconds", type=float, default=0.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    add_comet_args(parser)
    add_output_args(parser)
    args = parser.parse_args(argv)
    dist = setup_runtime(args)
    params = {"num_epochs": args.num_epochs, "lr": 0.1}
    preflight(args, params)
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = TrainingRun(args, dist, "tiny", {"model": model, "optimizer": optimizer}, params, "project", "tiny")
    loader = train_loader(TensorDataset(torch.linspace(-1, 1, 16).unsqueeze(1)), 4, 0, dist, args.seed)

    def step(batch):
        time.sleep(args.step_seconds)
        return ((model(batch[0]) - 3 * batch[0]) ** 2).mean(), {}, len(batch[0])

    for epoch in range(run.start_epoch, args.num_epochs):
        loss = train_one_epoch(loader, step, optimizer, grad_scaler(dist.device, False), epoch, dist.device,
                               run.log.tracker, "tiny")
        run.log.train(epoch, loss)
        run.log.validation(epoch, {"recall_at1": 10.0 * epoch})
        run.end_epoch(epoch)


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
'''
LINE = re.compile(r"stopped by (?P<cause>Ctrl-C|SIGTERM) in epoch (?P<epoch>\d+)(?: \(step (?P<step>\d+) of 4\))? "
                  r"of (?P<run>\S+); (?:epoch 0 is|epochs 0-(?P<saved>\d+) are) saved, continue with: (?P<cmd>.+)")


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "VLR_NO_PROGRESS": "1"}


def start(folder: Path, script: Path, *args: str) -> subprocess.Popen:
    out, err = open(folder / "stdout.txt", "w"), open(folder / "stderr.txt", "w")
    return subprocess.Popen([sys.executable, str(script), *args], cwd=folder, env=environment(), stdout=out,
                            stderr=err)


def wait_until(condition, process: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, "the run ended before it could be interrupted"
        assert time.monotonic() < deadline, "the run did not get there in time"
        time.sleep(0.05)


def stop(process: subprocess.Popen, signum: int, folder: Path) -> tuple[int, str, str]:
    process.send_signal(signum)
    code = process.wait(timeout=120)
    return code, (folder / "stdout.txt").read_text(), (folder / "stderr.txt").read_text()


def epochs_in(path: Path) -> list[str]:
    with open(path, newline="") as handle:
        return [row["epoch"] for row in csv.DictReader(handle)]


def assert_whole(run_dir: Path, saved: int) -> None:
    """resume.pt holds the saved epoch, the CSVs parse, no temporary file is left, the lock is released."""
    assert read_resume_epoch(run_dir) == saved + 1
    assert epochs_in(run_dir / "train_metrics.csv")[: saved + 1] == [str(e) for e in range(saved + 1)]
    assert epochs_in(run_dir / "validation_metrics.csv")[: saved + 1] == [str(e) for e in range(saved + 1)]
    assert not [path.name for path in run_dir.rglob(".*")]
    assert not (run_dir / "run.lock").exists()


@pytest.fixture
def tiny(tmp_path) -> Path:
    (tmp_path / "tiny_train.py").write_text(TINY_TRAIN)
    return tmp_path


def interrupt_mid_run(folder: Path, signum: int, status: int) -> tuple[re.Match, int]:
    """Start the tiny run, send ``signum`` once two epochs are saved; check the exit, the one line and the files.
    Returns the line's match and the last saved epoch."""
    run_dir = folder / "models" / "cut"
    process = start(folder, folder / "tiny_train.py", "--num-epochs", "1000", "--step-seconds", "0.05",
                    "--run-name", "cut")
    wait_until(lambda: (run_dir / "resume.pt").is_file() and len(epochs_in(run_dir / "train_metrics.csv")) >= 2,
               process)
    code, stdout, stderr = stop(process, signum, folder)
    assert code == status
    assert "Traceback" not in stdout + stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    match = LINE.fullmatch(lines[0])
    assert match, lines[0]
    assert match["cause"] == ("Ctrl-C" if signum == signal.SIGINT else "SIGTERM") and match["run"] == "models/cut"
    saved = int(match["saved"] or 0)
    assert int(match["epoch"]) == saved + 1
    assert_whole(run_dir, saved)
    return match, saved


@pytest.mark.slow
def test_sigterm_mid_run_prints_one_line_and_exits_143(tiny):
    interrupt_mid_run(tiny, signal.SIGTERM, 143)


@pytest.mark.slow
def test_ctrl_c_mid_run_prints_the_command_that_continues_it(tiny):
    match, saved = interrupt_mid_run(tiny, signal.SIGINT, 130)
    command = shlex.split(match["cmd"])
    assert command[:2] == ["python", str(tiny / "tiny_train.py")] and command[-2:] == ["--resume", "models/cut"]
    assert "--run-name" not in command
    command[0] = sys.executable
    command[command.index("--num-epochs") + 1] = str(saved + 3)
    resumed = subprocess.run(command, cwd=tiny, env=environment(), capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming models/cut at epoch {saved + 1} of {saved + 3}" in resumed.stdout
    assert epochs_in(tiny / "models" / "cut" / "train_metrics.csv") == [str(e) for e in range(saved + 3)]
    assert not (tiny / "models" / "cut" / "run.lock").exists()


@pytest.mark.slow
def test_a_run_stopped_before_its_first_epoch_ended_says_there_is_nothing_to_resume(tiny):
    process = start(tiny, tiny / "tiny_train.py", "--step-seconds", "3", "--run-name", "early")
    wait_until(lambda: "run folder:" in (tiny / "stdout.txt").read_text(), process)
    code, stdout, stderr = stop(process, signal.SIGINT, tiny)
    assert code == 130 and "Traceback" not in stdout + stderr
    assert re.fullmatch(r"stopped by Ctrl-C in epoch 0( \(step [0-3] of 4\))? of models/early; no epoch finished, "
                        r"so there is nothing to resume: start the run again", stderr.strip()), stderr
    assert not (tiny / "models" / "early" / "resume.pt").exists()
    assert not (tiny / "models" / "early" / "run.lock").exists()


@pytest.fixture
def tracked(monkeypatch):
    """A clean run registry and a plain ``python script.py`` launch."""
    monkeypatch.setattr(runtime, "_active_run", None)
    monkeypatch.setattr(sys, "argv", ["bi_blip4cir/clip_fine_tune.py"])
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None)
    for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "RANK"):
        monkeypatch.delenv(name, raising=False)


def test_the_stop_line_for_each_stage_of_a_run(tracked):
    argv = ["--dataset", "CIRR", "--run-name", "x", "--resume=old", "--num-epochs", "5"]
    assert runtime.stop_message(signal.SIGINT, argv) == "stopped by Ctrl-C"
    runtime.track_run(None)
    assert runtime.stop_message(signal.SIGTERM, argv) == \
        "stopped by SIGTERM before the run folder was made; nothing to resume: start the run again"
    place = runtime.track_run(Path("models/run"))
    runtime.note_step(0, 3, 10)
    assert runtime.stop_message(signal.SIGINT, argv) == ("stopped by Ctrl-C in epoch 0 (step 3 of 10) of models/run; "
                                                         "no epoch finished, so there is nothing to resume: start "
                                                         "the run again")
    place.saved(0)
    assert runtime.stop_message(signal.SIGINT, argv) == (
        "stopped by Ctrl-C in epoch 1 of models/run; epoch 0 is saved, continue with: python "
        "bi_blip4cir/clip_fine_tune.py --dataset CIRR --num-epochs 5 --resume models/run")
    runtime.track_run(Path("models/run"), resumable=False)
    assert runtime.stop_message(signal.SIGINT, argv).endswith("it runs with --no-resume-state, so it cannot be resumed")


def test_the_resume_command_under_torchrun_and_python_m(tracked, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert runtime.resume_command(["--dataset", "CIRR"], Path("models/a b")) == \
        "python -m torch.distributed.run --nproc_per_node 4 bi_blip4cir/clip_fine_tune.py --dataset CIRR " \
        "--resume 'models/a b'"
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", type("Spec", (), {"name": "mlcl.validate"})())
    assert runtime.resume_command([], Path("r")) == "python -m mlcl.validate --resume r"


def test_run_main_turns_a_signal_into_one_line_and_the_shell_status(tracked, capsys, monkeypatch):
    def interrupted(argv):
        raise KeyboardInterrupt

    def terminated(argv):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)

    handler = signal.getsignal(signal.SIGTERM)
    for main, status, cause in ((interrupted, 130, "Ctrl-C"), (terminated, 143, "SIGTERM")):
        with pytest.raises(SystemExit) as caught:
            runtime.run_main(main, [])
        assert caught.value.code == status
        assert capsys.readouterr().err == f"stopped by {cause}\n"
    assert signal.getsignal(signal.SIGTERM) is handler  # restored
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit):
        runtime.run_main(interrupted, [])
    assert capsys.readouterr().err == ""  # only rank 0 prints


def sleep_when_ready(ready) -> None:
    ready.set()
    time.sleep(30)


def test_a_forked_dataloader_worker_dies_of_sigterm_silently(capfd):
    previous = signal.signal(signal.SIGTERM, runtime._terminate_handler(os.getpid()))
    try:
        context = multiprocessing.get_context("fork")
        ready = context.Event()
        child = context.Process(target=sleep_when_ready, args=(ready,))
        child.start()
        assert ready.wait(30)
        os.kill(child.pid, signal.SIGTERM)
        child.join(30)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert child.exitcode == -signal.SIGTERM
    assert "Traceback" not in capfd.readouterr().err


@pytest.mark.slow
def test_a_paper_script_stopped_by_sigterm(tmp_path):
    """MLCL stage 1 on tiny FashionIQ: SIGTERM after an epoch ends it with the line and status 143."""
    write_fashioniq(tmp_path / "data", {"train": 8, "val": 6, "test": 2}, {"train": 8, "val": 4, "test": 2}, seed=0)
    write_tiny_clip(tmp_path / "clip_rn.pt", kind="rn")
    process = start(tmp_path, REPO / "mlcl" / "clip_fine_tune.py", "--dataset", "FashionIQ", "--data-root", "data",
                    "--clip-model-name", "clip_rn.pt", "--num-workers", "0", "--device", "cpu", "--num-epochs",
                    "1000", "--batch-size", "4", "--output-root", "out", "--run-name", "cut")
    run_dir = tmp_path / "out" / "models-finetune" / "cut"
    wait_until(lambda: (run_dir / "resume.pt").is_file(), process)
    code, stdout, stderr = stop(process, signal.SIGTERM, tmp_path)
    assert code == 143 and "Traceback" not in stdout + stderr
    line, = stderr.strip().splitlines()
    assert line.startswith("stopped by SIGTERM in epoch ") and " of out/models-finetune/cut; " in line
    assert line.endswith("--output-root out --resume out/models-finetune/cut")
    saved = int(re.search(r"(?:epochs 0-(\d+) are|epoch 0 is) saved", line).group(1) or 0)
    assert_whole(run_dir, saved)


@pytest.mark.slow
def test_a_second_process_cannot_train_into_a_folder_in_use(tiny):
    """While one process trains into models/busy, a second one resuming it stops naming the folder and the pid;
    the first one's lock is released when it is stopped."""
    run_dir = tiny / "models" / "busy"
    first = start(tiny, tiny / "tiny_train.py", "--num-epochs", "1000", "--step-seconds", "0.05",
                  "--run-name", "busy")
    wait_until(lambda: (run_dir / "resume.pt").is_file(), first)
    second = subprocess.run([sys.executable, str(tiny / "tiny_train.py"), "--num-epochs", "1000", "--step-seconds",
                             "0.05", "--resume", "models/busy"], cwd=tiny, env=environment(), capture_output=True,
                            text=True, timeout=180)
    assert second.returncode == 1
    assert f"models/busy: another process trains into this folder (pid {first.pid} on " in second.stderr
    assert first.poll() is None
    code, _, _ = stop(first, signal.SIGINT, tiny)
    assert code == 130 and not (run_dir / "run.lock").exists()


def test_bad_input_ends_with_one_line_and_status_1(monkeypatch, capsys):
    from common.io import read_json

    def main(argv):
        read_json(argv[0], "the flags of the run")

    monkeypatch.delenv("VLR_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as stop:
        runtime.run_main(main, ["/nowhere/run_args.json"])
    assert stop.value.code == 1
    assert capsys.readouterr().err == (f"{Path(sys.argv[0]).name}: error: /nowhere/run_args.json: not found "
                                       "(expected the flags of the run)\n")
    monkeypatch.setenv("VLR_TRACEBACK", "1")
    with pytest.raises(FileNotFoundError):
        runtime.run_main(main, ["/nowhere/run_args.json"])


def test_a_bug_keeps_its_traceback():
    def main(argv):
        raise ValueError("a bug, not an input")

    with pytest.raises(ValueError, match="a bug"):
        runtime.run_main(main, [])


def test_a_stop_note_replaces_the_run_place_and_is_cleared_after(capsys):
    def main(argv):
        runtime.note_stop(lambda: "3 of 9 images done; run the same command again to continue")
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as stop:
        runtime.run_main(main, [])
    assert stop.value.code == 130
    assert capsys.readouterr().err == "stopped by Ctrl-C: 3 of 9 images done; run the same command again to continue\n"
    assert "images done" not in runtime.stop_message(signal.SIGINT, [])
