"""common.io: safe loading, weight resolution, atomic writes, JSON errors."""
import argparse
import json
import pickletools

import numpy as np
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


def test_load_torch_file_reads_numpy_pickled_under_numpy_1_and_2(tmp_path):
    """NumPy 1.x pickles name ``numpy.core.multiarray`` where NumPy 2 writes ``numpy._core.multiarray`` (the rest is
    byte for byte the same): both load with weights_only=True, to equal arrays and scalars."""
    payload = {"names": np.array([["a", "bc"], ["d", "e"]])[:, :1], "ids": np.arange(3), "first": np.str_("a"),
               "w": torch.ones(2)}
    today = tmp_path / "numpy2.pt"
    torch.save(payload, today, _use_new_zipfile_serialization=False)  # one pickle stream: names can be edited
    before_numpy2 = tmp_path / "numpy1.pt"
    before_numpy2.write_bytes(today.read_bytes().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    with open(before_numpy2, "rb") as handle:  # magic number, protocol, system info, then the data pickle
        names = {arg for _ in range(4) for op, arg, _ in pickletools.genops(handle) if op.name == "GLOBAL"}
    assert {"numpy.core.multiarray _reconstruct", "numpy.core.multiarray scalar"} <= names
    assert not any(name.startswith("numpy._core") for name in names)
    for path in (today, before_numpy2):
        loaded = load_torch_file(path)
        assert np.array_equal(loaded["names"], payload["names"]) and loaded["names"].dtype == np.dtype("<U2")
        assert np.array_equal(loaded["ids"], payload["ids"]) and loaded["first"] == np.str_("a")
        assert torch.equal(loaded["w"], payload["w"])


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
