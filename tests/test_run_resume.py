"""Resume semantics: moved data and tokenizer paths may differ, a run folder is locked while a process trains into it,
a larger --num-epochs extends a finished run (run_args.json updated, derived files named as stale), the right hint
for a run that died before its first epoch ended, no ``None.json``."""
from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from torch import nn

from common.args import add_comet_args, add_output_args
from common.dist import DistInfo
from common.runtime import active_run
from common.training.lock import LOCK_FILE, RunLocked, acquire_lock, read_lock, release_lock
from common.training.resume import preflight, stale_files
from common.training.run import TrainingRun

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def parse(tmp_path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="fashioniq")
    parser.add_argument("--num-epochs", type=int, default=2)
    for flag in ("--data-root", "--fiq-root", "--shoes-root", "--cirr-root", "--tokenizer", "--clip-download-root",
                 "--blip-model-path"):
        parser.add_argument(flag, default=None)
    add_comet_args(parser)
    add_output_args(parser)
    return parser.parse_args(["--output-root", str(tmp_path), "--run-name", "run", *extra])


def params(args) -> dict:
    return {"num_epochs": args.num_epochs, "loss_weight": 0.4}


def start(args) -> TrainingRun:
    return TrainingRun(args, CPU, "prefix", {"model": nn.Linear(2, 2)}, params(args), "project", "title")


def train(run: TrainingRun, epochs) -> None:
    for epoch in epochs:
        run.log.train(epoch, 1.0)
        run.end_epoch(epoch)


@pytest.fixture
def finished(tmp_path):
    """A finished 2-epoch run whose data lay under data-a."""
    run = start(parse(tmp_path, "--data-root", "data-a", "--tokenizer", "tok-a", "--blip-model-path", "s1.pt"))
    train(run, range(2))
    return run.dir


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(run_dir, pid: int, host: str | None = None) -> None:
    owner = {"pid": pid, "host": host or socket.gethostname(), "started": "2025-01-01T10:00:00"}
    (run_dir / LOCK_FILE).write_text(json.dumps(owner))


def test_moved_data_and_tokenizer_paths_do_not_block_resume(tmp_path, finished):
    moved = parse(tmp_path, "--resume", str(finished), "--num-epochs", "3", "--data-root", "data-b", "--fiq-root",
                  "fiq", "--cirr-root", "cirr", "--shoes-root", "shoes", "--tokenizer", "tok-b",
                  "--clip-download-root", "clip", "--blip-model-path", "s1.pt")
    assert preflight(moved, params(moved)) == 2
    checkpoint = parse(tmp_path, "--resume", str(finished), "--num-epochs", "3", "--data-root", "data-a",
                       "--tokenizer", "tok-a", "--blip-model-path", "other.pt")
    with pytest.raises(ValueError, match="--blip-model-path: run 's1.pt', now 'other.pt'"):
        preflight(checkpoint, params(checkpoint))


def test_a_live_lock_stops_a_second_process_before_anything_is_written(tmp_path, finished):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(finished, holder.pid)
        before = {path.name: path.stat().st_mtime_ns for path in finished.iterdir()}
        args = parse(tmp_path, "--resume", str(finished), "--num-epochs", "3")
        message = rf"{finished}: another process trains into this folder \(pid {holder.pid} on "
        with pytest.raises(RunLocked, match=message):
            preflight(args, params(args))
        with pytest.raises(RunLocked, match=rf"If no such process runs, delete {finished / LOCK_FILE}"):
            start(args)
        assert {path.name: path.stat().st_mtime_ns for path in finished.iterdir()} == before
        write_lock(finished, holder.pid, host="elsewhere")  # another host's pid cannot be checked: held
        with pytest.raises(RunLocked, match="on elsewhere"):
            preflight(args, params(args))
    finally:
        holder.kill()
        holder.wait()


def test_a_stale_lock_is_taken_over_with_a_note_and_released_after_the_last_epoch(tmp_path, finished, caplog):
    pid = dead_pid()
    write_lock(finished, pid)
    run = start(parse(tmp_path, "--resume", str(finished), "--num-epochs", "3", "--data-root", "data-a",
                      "--tokenizer", "tok-a", "--blip-model-path", "s1.pt"))
    assert f"{finished}: taking over the lock of pid {pid} (started 2025-01-01T10:00:00)" in caplog.text
    assert read_lock(finished)["pid"] == os.getpid()
    train(run, [2])
    assert not (finished / LOCK_FILE).exists()


def test_the_lock_is_atomic_and_released_only_by_its_owner(tmp_path):
    owner = acquire_lock(tmp_path)
    assert read_lock(tmp_path) == owner and owner["pid"] == os.getpid()
    again = acquire_lock(tmp_path)  # this process's own lock: taken over
    release_lock(tmp_path, {**owner, "pid": -1})
    assert read_lock(tmp_path) == again
    release_lock(tmp_path, again)
    assert read_lock(tmp_path) is None
    (tmp_path / LOCK_FILE).write_text("")
    with pytest.raises(RunLocked, match="names no process"):
        acquire_lock(tmp_path)


def test_extending_a_finished_run_updates_run_args_and_names_stale_files(tmp_path, finished, caplog):
    (finished / "cirr_top_200_val.pt").write_bytes(b"x")
    (finished / "analysis").mkdir()
    (finished / "analysis" / "cirr_stageII_labels_val.pt").write_bytes(b"x")
    args = parse(tmp_path, "--resume", str(finished), "--num-epochs", "4", "--data-root", "data-b",
                 "--tokenizer", "tok-a", "--blip-model-path", "s1.pt")
    run = start(args)
    assert run.start_epoch == 2
    assert json.loads((finished / "run_args.json").read_text())["num_epochs"] == 4
    assert json.loads((finished / "run_args.json").read_text())["data_root"] == "data-a"
    assert json.loads((finished / "training_hyperparameters.json").read_text())["num_epochs"] == 4
    assert f"{finished}: num_epochs 2 -> 4, written to run_args.json" in caplog.text
    assert "stale once it saves new ones (make them again afterwards): analysis/cirr_stageII_labels_val.pt, " \
        "cirr_top_200_val.pt" in caplog.text
    assert stale_files(finished, ["*.csv"]) == [finished / "train_metrics.csv"]
    assert stale_files(finished, before=0) == []


def test_a_run_that_died_before_its_first_epoch_gets_the_right_hint(tmp_path):
    died = start(parse(tmp_path)).dir
    args = parse(tmp_path, "--resume", str(died))
    with pytest.raises(FileNotFoundError) as caught:
        preflight(args, params(args))
    assert "no epoch of the run finished" in str(caught.value) and "start the run again" in str(caught.value)
    assert "--no-resume-state" not in str(caught.value)
    (died / "run_args.json").unlink()  # a folder without the run's flags: both causes are possible
    with pytest.raises(FileNotFoundError, match="no epoch finished, or the run was started with --no-resume-state"):
        preflight(args, params(args))


def test_preflight_and_the_run_register_where_training_stands(tmp_path, finished):
    args = parse(tmp_path, "--run-name", "new")
    preflight(args, params(args))
    assert active_run().run_dir is None
    run = start(args)
    assert active_run().run_dir == run.dir and active_run().saved_epoch == -1
    train(run, [0])
    assert active_run().saved_epoch == 0 and active_run().epoch == 1
    resume = parse(tmp_path, "--resume", str(finished), "--num-epochs", "5", "--data-root", "data-a",
                   "--tokenizer", "tok-a", "--blip-model-path", "s1.pt")
    preflight(resume, params(resume))
    assert active_run().run_dir == finished and active_run().saved_epoch == 1


def test_reranking_writes_no_none_json_without_an_experiment_name(tmp_path):
    from reranking_cir.training import open_run

    def args(*extra: str) -> argparse.Namespace:
        namespace = parse(tmp_path, *extra)
        namespace.dataset = "cirr"
        return namespace

    unnamed = open_run(args("--run-name", "unnamed"), CPU, "stageI", {"model": nn.Linear(2, 2)}, {"k": 1})
    assert not (unnamed.dir / "None.json").exists() and (unnamed.dir / "training_hyperparameters.json").is_file()
    named = open_run(args("--run-name", "named", "--experiment-name", "s1"), CPU, "stageI",
                     {"model": nn.Linear(2, 2)}, {"k": 1})
    assert json.loads((named.dir / "s1.json").read_text()) == {"k": 1}
