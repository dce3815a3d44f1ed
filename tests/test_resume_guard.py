"""--resume is guarded: differing flags stop before the folder is touched, a finished run exits 0, files keep the
user's umask, --no-resume-state writes no resume.pt, and the cheap checks run before any heavy work."""
import argparse
import os
import stat

import pytest
import torch
from torch import nn

from common.args import add_comet_args, add_output_args
from common.dist import DistInfo
from common.io import CheckpointError, atomic_torch_save, atomic_write_json, atomic_write_text
from common.training.resume import ResumeMismatch, preflight
from common.training.run import TrainingRun

CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def parse(tmp_path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="fashioniq")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-epochs", type=int, default=3)
    parser.add_argument("--num-workers", type=int, default=4)
    parser.add_argument("--device", default=None)
    add_comet_args(parser)
    add_output_args(parser)
    return parser.parse_args(["--output-root", str(tmp_path), "--run-name", "run", *extra])


def params(args) -> dict:
    return {"batch_size": args.batch_size, "num_epochs": args.num_epochs, "loss_weight": 0.4}


def start(args, model=None, **kwargs) -> TrainingRun:
    return TrainingRun(args, CPU, "prefix", {"model": model or nn.Linear(2, 2)}, kwargs.pop("p", params(args)),
                       "project", "title", **kwargs)


def snapshot(folder):
    return {path.relative_to(folder): (path.stat().st_mtime_ns, path.read_bytes())
            for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture
def stopped_run(tmp_path):
    """A 3-epoch run interrupted after epoch 1 (resume.pt holds epoch 1)."""
    run = start(parse(tmp_path))
    for epoch in range(2):
        run.log.train(epoch, 1.0)
        run.end_epoch(epoch)
    return run.dir


def test_new_run_prints_its_folder_and_writes_every_flag(tmp_path, caplog):
    run = start(parse(tmp_path))
    assert f"run folder: {run.dir}" in caplog.text and run.dir == tmp_path / "models" / "run"
    assert start(parse(tmp_path, "--run-name", "other"), subdir="models-finetune").dir == \
        tmp_path / "models-finetune" / "other"
    assert (run.dir / "run_args.json").is_file() and (run.dir / "training_hyperparameters.json").is_file()


def test_resume_with_a_different_dataset_stops_and_leaves_the_folder_untouched(tmp_path, stopped_run):
    before = snapshot(stopped_run)
    args = parse(tmp_path, "--resume", str(stopped_run), "--dataset", "cirr", "--batch-size", "16")
    with pytest.raises(ResumeMismatch) as caught:
        start(args)
    message = str(caught.value)
    assert message.startswith(f"{stopped_run}: cannot resume, these settings differ from the run's:")
    assert "--dataset: run 'fashioniq', now 'cirr'" in message
    assert message.count("--batch-size: run 8, now 16") == 1  # in both files, listed once
    assert snapshot(stopped_run) == before


def test_a_differing_derived_parameter_is_listed_by_its_name(tmp_path, stopped_run):
    args = parse(tmp_path, "--resume", str(stopped_run))
    with pytest.raises(ResumeMismatch, match=r"loss_weight: run 0.4, now 0.5"):
        start(args, p={**params(args), "loss_weight": 0.5})


def test_resume_ignores_workers_device_and_logging_flags(tmp_path, stopped_run, caplog):
    args = parse(tmp_path, "--resume", str(stopped_run), "--num-workers", "0", "--device", "cpu",
                 "--experiment-name", "again")
    run = start(args)
    assert run.start_epoch == 2
    assert f"resuming {stopped_run} at epoch 2 of 3" in caplog.text


def test_more_epochs_extend_a_run_unless_the_script_makes_num_epochs_strict(tmp_path, stopped_run):
    args = parse(tmp_path, "--resume", str(stopped_run), "--num-epochs", "5")
    assert preflight(args, params(args)) == 2
    with pytest.raises(ResumeMismatch, match="--num-epochs: run 3, now 5"):
        preflight(args, params(args), strict=("num_epochs",))


def test_a_finished_run_exits_zero_without_writing(tmp_path, caplog):
    run = start(parse(tmp_path))
    for epoch in range(3):
        run.log.train(epoch, 1.0)
        run.end_epoch(epoch)
    before = snapshot(run.dir)
    with pytest.raises(SystemExit) as caught:
        start(parse(tmp_path, "--resume", str(run.dir)))
    assert caught.value.code == 0
    assert f"{run.dir} is finished: all 3 epochs are done" in caplog.text
    assert snapshot(run.dir) == before


def test_no_resume_state_writes_no_resume_file_and_such_a_run_cannot_resume(tmp_path):
    run = start(parse(tmp_path, "--no-resume-state"))
    run.end_epoch(0)
    assert not (run.dir / "resume.pt").exists()
    with pytest.raises(FileNotFoundError, match="resume.pt: no resume state.*--no-resume-state"):
        preflight(parse(tmp_path, "--resume", str(run.dir), "--no-resume-state"), params(parse(tmp_path)))


def test_help_says_resume_pt_is_written_every_epoch():
    parser = argparse.ArgumentParser()
    add_output_args(parser)
    text = " ".join(parser.format_help().split())
    assert "rewritten after every epoch" in text and "--no-resume-state" in text


def test_cheap_checks_before_heavy_work(tmp_path, monkeypatch):
    plain = tmp_path / "plain"
    plain.write_text("x")
    with pytest.raises(NotADirectoryError, match="--output-root .*plain is a file"):
        preflight(parse(plain / "sub"), {})
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: str(path) != str(locked))  # root ignores mode bits
    with pytest.raises(PermissionError, match=f"--output-root {locked / 'out'}: cannot create files in {locked}"):
        preflight(parse(locked / "out"), {})


def test_a_foreign_or_corrupt_resume_file_is_named(tmp_path, stopped_run):
    args = parse(tmp_path, "--resume", str(stopped_run))
    atomic_torch_save({"epoch": 1}, stopped_run / "resume.pt")
    with pytest.raises(CheckpointError, match="resume.pt: not a resume state"):
        preflight(args, params(args))
    (stopped_run / "resume.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(CheckpointError, match=r"resume.pt: corrupt resume state \(14 bytes; .*truncated"):
        preflight(args, params(args))
    with pytest.raises(FileNotFoundError, match="holding training_hyperparameters.json"):
        preflight(parse(tmp_path, "--resume", str(tmp_path)), {})


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_atomic_writes_keep_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        files = [atomic_write_text("x", tmp_path / "a.txt"), atomic_write_json({}, tmp_path / "a.json"),
                 atomic_torch_save({}, tmp_path / "a.pt")]
    finally:
        os.umask(old)
    assert [stat.S_IMODE(path.stat().st_mode) for path in files] == [0o666 & ~umask] * 3


def test_an_unwritable_resume_folder_is_named_before_anything_runs(tmp_path, stopped_run, monkeypatch):
    monkeypatch.setattr(os, "access", lambda path, mode: str(path) != str(stopped_run.absolute()))
    with pytest.raises(PermissionError, match=f"--resume {stopped_run}: cannot create files in {stopped_run}"):
        preflight(parse(tmp_path, "--resume", str(stopped_run)), params(parse(tmp_path)))
