"""Checkpoint load errors name the file, list missing and unexpected keys, hint the flag behind a size, and tell a
corrupt file from one that only ``weights_only=True`` refuses."""
import argparse
import os
import re

import pytest
import torch
from torch import nn

from common.blip.checkpoint import load_blip_checkpoint
from common.io import CheckpointError, check_torch_file, load_torch_file, torch_file_damage
from common.training.checkpoint import load_model

HINTS = {"layer.*": "--projection-dim"}


class Small(nn.Module):
    def __init__(self, width: int = 3):
        super().__init__()
        self.layer = nn.Linear(4, width)
        self.head = nn.Linear(width, 2)


@pytest.fixture
def files(tmp_path):
    good = tmp_path / "good.pt"
    torch.save({"epoch": 1, "Small": Small().state_dict()}, good)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    start = data.index(b"data/0") + 200  # inside the first tensor's bytes (stored, so the CRC catches it)
    flipped[start: start + 8] = b"\xff" * 8
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(bytes(flipped))
    pickled = tmp_path / "pickled.pt"
    torch.save({"args": argparse.Namespace(lr=1.0), "Small": Small().state_dict()}, pickled)
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    legacy = tmp_path / "legacy.pt"
    torch.save({"Small": Small().state_dict()}, legacy, _use_new_zipfile_serialization=False)
    legacy_truncated = tmp_path / "legacy_truncated.pt"
    legacy_truncated.write_bytes(legacy.read_bytes()[:-20])  # header pickles intact, tensor bytes cut
    return {"good": good, "truncated": truncated, "damaged": damaged, "pickled": pickled, "text": text,
            "empty": empty, "legacy_truncated": legacy_truncated}


@pytest.mark.parametrize("name", ["truncated", "text", "empty", "legacy_truncated"])
@pytest.mark.parametrize("trusted", [False, True])
def test_a_corrupt_file_is_reported_as_corrupt_with_its_size(files, name, trusted):
    path = files[name]
    with pytest.raises(CheckpointError) as caught:
        load_torch_file(path, trusted=trusted)
    message = str(caught.value)
    assert message.startswith(f"{path}: corrupt or not a torch checkpoint (")
    assert f"{os.path.getsize(path)} bytes" in message
    assert "--trust-checkpoints" not in message and "trusted=True" not in message


def test_damage_detection_is_specific(files):
    assert torch_file_damage(files["good"]) is None and torch_file_damage(files["pickled"]) is None
    assert "truncated" in torch_file_damage(files["truncated"])
    assert "CRC" in torch_file_damage(files["damaged"])
    assert torch_file_damage(files["empty"]) == "the file is empty"


def test_trust_advice_only_for_a_valid_pickle_that_weights_only_refuses(files):
    with pytest.raises(CheckpointError, match=re.escape(f"{files['pickled']}: the file is a valid checkpoint, but "
                                                        "it pickles objects that weights_only=True refuses")) as caught:
        load_torch_file(files["pickled"])
    assert "argparse.Namespace" in str(caught.value) and "--trust-checkpoints" in str(caught.value)
    assert load_torch_file(files["pickled"], trusted=True)["args"].lr == 1.0


def test_cheap_check_names_the_flag(files, tmp_path):
    assert check_torch_file(files["good"], "--combiner-path") == files["good"]
    with pytest.raises(FileNotFoundError, match=r"missing.pt: checkpoint file not found \(given by --combiner-path\)"):
        check_torch_file(tmp_path / "missing.pt", "--combiner-path")
    with pytest.raises(CheckpointError, match=r"notes.pt: not a torch checkpoint \(16 bytes; .*--blip-model-path"):
        check_torch_file(files["text"], "--blip-model-path")
    with pytest.raises(CheckpointError, match="is a folder"):
        check_torch_file(tmp_path, "--blip-model-path")


def test_load_model_shape_mismatch_names_key_shapes_and_flag(files):
    with pytest.raises(CheckpointError) as caught:
        load_model(files["good"], Small(width=5), flag_hints=HINTS)
    message = str(caught.value)
    assert message.startswith(f"{files['good']}: checkpoint does not fit Small: ")
    assert "shape mismatch for layer.weight: checkpoint (3, 4), model (5, 4) (that size is set by --projection-dim)" \
        in message
    assert "shape mismatch for head.weight: checkpoint (2, 3), model (2, 5);" in message  # no hint for head.*
    assert "missing keys (0): none; unexpected keys (0): none" in message


def test_load_model_lists_missing_and_unexpected_together(tmp_path):
    state = Small().state_dict()
    state["extra.weight"] = state.pop("head.weight")
    path = tmp_path / "renamed.pt"
    torch.save({"Small": state}, path)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: checkpoint does not fit Small: missing keys (1): "
                                                        "head.weight; unexpected keys (1): extra.weight")):
        load_model(path, Small())


def test_blip_loader_reports_every_problem_and_names_a_preloaded_file(tmp_path):
    state = Small(width=5).state_dict()
    state.pop("head.bias")
    state["stray"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as caught:
        load_blip_checkpoint(Small(), {"model": state}, source_name="released/model_base.pth", flag_hints=HINTS,
                             ignore=())
    message = str(caught.value)
    assert message.startswith("released/model_base.pth: checkpoint does not fit Small: ")
    assert "shape mismatch for layer.weight: checkpoint (5, 4), model (3, 4) (that size is set by --projection-dim)" \
        in message
    assert "missing keys (1): head.bias" in message and "unexpected keys (1): stray" in message


def test_blip_loader_reports_a_missing_key_as_missing_not_as_a_neighbour_shape(tmp_path):
    """A file without ``layer.weight`` (but with a wrongly sized bias) names the missing weight first."""
    state = Small().state_dict()
    state.pop("layer.weight")
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): layer.weight"):
        load_blip_checkpoint(Small(), {"model": state}, source_name="x.pth", ignore=())


def test_cheap_check_of_the_checkpoint_kind(files):
    assert check_torch_file(files["good"], "--blip-model-path", expect_any=("Small",)) == files["good"]
    with pytest.raises(CheckpointError, match=re.escape(f"{files['good']}: expected a checkpoint with one of the "
                                                        "entries ['BLIPTextEncoder'], found ['Small', 'epoch'] "
                                                        "(given by --blip-model-path)")):
        check_torch_file(files["good"], "--blip-model-path", expect_any=("BLIPTextEncoder",))
    assert check_torch_file(files["pickled"], expect_any=("other",)) == files["pickled"]  # the full load explains
