"""common.io: safe loading, weight resolution, atomic writes, JSON errors."""
import argparse
import json

import pytest
import torch

from common.io import (CheckpointError, atomic_torch_save, atomic_write_json, file_hash, load_torch_file,
                       read_json, resolve_weights)


def test_load_torch_file_refuses_pickled_objects_unless_trusted(tmp_path):
    path = tmp_path / "ckpt.pt"
    torch.save({"args": argparse.Namespace(lr=1.0), "w": torch.ones(2)}, path)
    with pytest.raises(CheckpointError, match="ckpt.pt.*trusted=True"):
        load_torch_file(path)
    assert load_torch_file(path, trusted=True)["args"].lr == 1.0


def test_load_torch_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_torch_file(tmp_path / "missing.pth")
    bad = tmp_path / "garbage.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pth"):
        load_torch_file(bad, trusted=True)


def test_resolve_weights_offline_and_hash_check(tmp_path):
    url = "https://example.org/models/model_base.pth"
    with pytest.raises(FileNotFoundError, match="model_base.pth.*--allow-download"):
        resolve_weights(url, cache_dir=tmp_path)
    (tmp_path / "model_base.pth").write_bytes(b"abc")
    sha = file_hash(tmp_path / "model_base.pth")
    assert sha == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert resolve_weights(url, cache_dir=tmp_path, sha256=sha) == tmp_path / "model_base.pth"
    with pytest.raises(CheckpointError, match="sha256 is ba78"):
        resolve_weights(url, cache_dir=tmp_path, sha256="0" * 64)


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "metrics.json"
    atomic_write_json({"r": 1}, path)

    class Unserialisable:
        pass

    with pytest.raises(TypeError):
        atomic_write_json({"r": Unserialisable()}, path)
    assert json.loads(path.read_text()) == {"r": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    atomic_torch_save({"x": torch.arange(3)}, tmp_path / "sub" / "a.pt")
    assert torch.equal(torch.load(tmp_path / "sub" / "a.pt")["x"], torch.arange(3))


def test_read_json_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="cap.rc2.val.json.*CIRR captions"):
        read_json(tmp_path / "cap.rc2.val.json", "CIRR captions")
    bad = tmp_path / "bad.json"
    bad.write_text('[\n{"a": 1,}\n]')
    with pytest.raises(ValueError, match=r"bad.json: malformed JSON at line 2"):
        read_json(bad)
