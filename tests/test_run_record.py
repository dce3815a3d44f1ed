"""The run record (common/run_record.py): run_info.json beside a script's outputs, the banner, the hash cache."""
import argparse
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from common import run_record
from common.blip.config import ViTConfig
from common.blip.tiny import write_tiny_blip_files
from common.synthetic.scenes import vocabulary
from common.synthetic.writers import write_fashioniq

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def hash_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("RANK", raising=False)


@pytest.mark.slow
def test_validate_script_writes_run_info_beside_its_metrics(tmp_path):
    """A real script run (Bi-BLIP4CIR validate.py on tiny data) writes the record with every field."""
    data, weights, out = tmp_path / "data", tmp_path / "weights", tmp_path / "out"
    write_fashioniq(data, {"train": 4, "val": 8, "test": 2}, {"train": 2, "val": 6, "test": 2}, seed=0)
    blip = write_tiny_blip_files(weights, ViTConfig(patch_size=8, width=32, depth=1, heads=2),
                                 extra_words=vocabulary())
    argv = ["bi_blip4cir/validate.py", "--dataset", "FashionIQ", "--combining-function", "sum", "--data-root",
            str(data), *blip.flags(), "--num-workers", "0", "--device", "cpu", "--metrics-json", str(out / "m.json")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLR_NO_PROGRESS": "1", "VLR_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert result.stdout.count("== bi_blip4cir/validate.py") == 1

    info = json.loads((out / "run_info.json").read_text())
    assert info["status"] == "completed" and info["format_version"] == 1
    assert info["command"].startswith("python bi_blip4cir/validate.py --dataset FashionIQ")
    assert info["flags"]["combining_function"] == "sum" and info["flags"]["num_workers"] == 0
    assert set(info["versions"]) == {"python", "torch", "cuda", "transformers", "numpy"}
    assert info["device"] == "cpu" and info["world_size"] == 1
    assert set(info["git"]) == {"commit", "dirty"}
    checkpoint = next(entry for entry in info["checkpoints"] if entry["path"] == str(blip.checkpoint.resolve()))
    content = blip.checkpoint.read_bytes()
    assert checkpoint["sha256"] == hashlib.sha256(content).hexdigest() and checkpoint["size"] == len(content)
    assert checkpoint["sha1"] == hashlib.sha1(content).hexdigest()
    counts = {entry["name"]: (entry["split"], entry["queries"]) for entry in info["datasets"]}
    assert counts == {"dress": ("val", 6), "toptee": ("val", 6), "shirt": ("val", 6)}
    assert info["outputs"] == [str(out.resolve())]


def test_hash_cache_reads_a_file_once_until_it_changes(tmp_path, monkeypatch):
    calls = []
    real = run_record.file_hashes
    monkeypatch.setattr(run_record, "file_hashes", lambda path, algos: calls.append(path) or real(path, algos))
    path = tmp_path / "weights.pt"
    path.write_bytes(b"weights")
    first = run_record.cached_hashes(path)
    assert run_record.cached_hashes(path) == first and len(calls) == 1
    assert first["sha256"] == hashlib.sha256(b"weights").hexdigest()

    mtime = path.stat().st_mtime_ns
    path.write_bytes(b"weightz")  # same size: only the modification time tells
    os.utime(path, ns=(mtime, mtime + 10**9))
    assert run_record.cached_hashes(path)["sha256"] == hashlib.sha256(b"weightz").hexdigest()
    assert len(calls) == 2
    stored = json.loads((tmp_path / "cache" / "file_hashes.json").read_text())
    assert stored[str(path.resolve())]["mtime_ns"] == mtime + 10**9

    other = tmp_path / "other.pt"
    other.write_bytes(b"other")
    path.unlink()
    run_record.cached_hashes(other)
    assert list(json.loads((tmp_path / "cache" / "file_hashes.json").read_text())) == [str(other.resolve())]


def test_a_damaged_hash_cache_is_replaced(tmp_path):
    cache = tmp_path / "cache" / "file_hashes.json"
    cache.parent.mkdir()
    cache.write_text("{not json")
    path = tmp_path / "f.bin"
    path.write_bytes(b"x")
    assert run_record.cached_hashes(path)["sha1"] == hashlib.sha1(b"x").hexdigest()
    assert str(path.resolve()) in json.loads(cache.read_text())


def test_git_absent_or_no_checkout_gives_unknown(tmp_path):
    assert run_record.git_state(REPO, executable=str(tmp_path / "no-git")) == {"commit": "unknown",
                                                                              "dirty": "unknown"}
    assert run_record.git_state(tmp_path) == {"commit": "unknown", "dirty": "unknown"}


def test_banner_is_printed_once_and_only_on_rank_zero(capsys, monkeypatch):
    args = argparse.Namespace(device="cpu", path=Path("x"))
    with run_record.recording(["--device", "cpu"]):
        run_record.note_args(args, "cpu", 1)
        run_record.note_args(args, "cpu", 1)
        assert run_record.current().flags == {"device": "cpu", "path": "x"}
    assert capsys.readouterr().out.count("run_info.json is written beside the outputs") == 1
    monkeypatch.setenv("RANK", "1")
    with run_record.recording([]):
        run_record.note_args(args, "cuda:1", 2)
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("error, status", [(KeyboardInterrupt(), "interrupted (KeyboardInterrupt)"),
                                           (ValueError("bad flag"), "failed: ValueError: bad flag"),
                                           (SystemExit(1), "exit status 1"), (SystemExit(0), "completed")])
def test_record_is_written_with_the_status_when_the_script_stops(tmp_path, error, status):
    with pytest.raises(type(error)):
        with run_record.recording(["--x"]):
            run_record.note_output(tmp_path)
            raise error
    assert json.loads((tmp_path / "run_info.json").read_text())["status"] == status
    assert run_record.current() is None


def test_checkpoints_are_noted_once_with_their_hashes(tmp_path):
    path, chunk = tmp_path / "a.pt", tmp_path / "chunk_0.pt"
    path.write_bytes(b"abc")
    chunk.write_bytes(b"partial")
    with run_record.recording([]) as record:
        run_record.note_checkpoint(path)
        run_record.note_checkpoint(tmp_path / "." / "a.pt", "CLIP weights")
        run_record.note_checkpoint(chunk, "pre-extraction chunk")
        assert list(record.checkpoints.values()) == [{"path": str(path.resolve()), "what": "checkpoint", "size": 3,
                                                      "sha256": hashlib.sha256(b"abc").hexdigest(),
                                                      "sha1": hashlib.sha1(b"abc").hexdigest()}]


def test_the_train_loader_notes_the_train_split_size():
    """Training scripts record the size of their train split (``common.training.loop.train_loader``)."""
    import torch
    from torch.utils.data import TensorDataset

    from common.dist import DistInfo
    from common.training.loop import train_loader

    dataset = TensorDataset(torch.arange(10))
    single = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    with run_record.recording([]) as record:
        train_loader(dataset, batch_size=4, num_workers=0, dist=single, seed=0)
    assert record.datasets == [{"name": "TensorDataset", "split": "train", "samples": 10, "batches_per_epoch": 2}]


def test_a_second_run_in_the_folder_keeps_the_records_before_it(tmp_path):
    """A resumed run (or another script writing beside the results) keeps the earlier records, oldest first."""
    for flag in ("--first", "--second", "--third"):
        with run_record.recording([flag]):
            run_record.note_output(tmp_path)
    record = json.loads((tmp_path / "run_info.json").read_text())
    assert record["command"].endswith("--third")
    assert [run["command"].split()[-1] for run in record["earlier_runs"]] == ["--first", "--second"]
    assert all("earlier_runs" not in run for run in record["earlier_runs"])
    (tmp_path / "run_info.json").write_text("{not json")
    with run_record.recording(["--fourth"]):
        run_record.note_output(tmp_path)
    assert json.loads((tmp_path / "run_info.json").read_text())["earlier_runs"] == []
