"""MLCL scripts on bad input, one at a time: damaged .pt files are reported as empty / truncated naming the file,
output folders that cannot be written stop the script before any feature is computed, and the CLIP scripts do not
offer BLIP's BERT --tokenizer."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from common.args import add_runtime_args
from common.clip import write_tiny_clip
from common.io import CheckpointError
from common.synthetic.writers import write_cirr, write_shoes_raw
from mlcl import cirr_test_submission, clip_fine_tune, combiner_train, prepare_shoes_data, validate

SCRIPTS = (clip_fine_tune, combiner_train, validate, cirr_test_submission, prepare_shoes_data)
DAMAGE = {"empty": "the file is empty", "truncated": "truncated"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("mlcl_bad")
    data = root / "data"
    write_shoes_raw(data, {"train": 8, "eval": 6}, {"train": 6, "eval": 4}, n_cross_split=0, seed=0)
    write_cirr(data, {"train": 2, "val": 2, "test1": 9}, 2, seed=0)
    prepare_shoes_data.main(["--data-root", str(data)])
    clip_file = write_tiny_clip(root / "clip_rn.pt", kind="rn")
    checkpoint = write_tiny_clip(root / "tuned.pt", kind="rn", fmt="checkpoint", seed=1).read_bytes()
    (root / "empty.pt").write_bytes(b"")
    (root / "truncated.pt").write_bytes(checkpoint[:len(checkpoint) // 2])
    args = ["--data-root", str(data), "--clip-model-name", str(clip_file), "--num-workers", "0", "--device", "cpu"]
    return {"root": root, "data": data, "args": args}


def no_work(*_args, **_kwargs):
    raise AssertionError("the script started its work before checking its outputs")


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("flag", ["--clip-model-path", "--combiner-path", "--clip-model-name"])
def test_validate_names_a_damaged_file(tiny, damage, flag):
    bad = tiny["root"] / f"{damage}.pt"
    argv = [*tiny["args"], "--dataset", "Shoes", "--combining-function", "combiner" if flag == "--combiner-path"
            else "sum", flag, str(bad), "--metrics-json", str(tiny["root"] / "metrics.json")]
    with pytest.raises(CheckpointError) as error:
        validate.main(argv)
    assert str(error.value).startswith(f"{bad}: ") and DAMAGE[damage] in str(error.value)
    assert "EOFError" not in str(error.value)


@pytest.mark.parametrize("damage", DAMAGE)
def test_training_names_a_damaged_checkpoint(tiny, damage):
    bad = tiny["root"] / f"{damage}.pt"
    out = ["--output-root", str(tiny["root"] / "out")]
    with pytest.raises(CheckpointError, match=f"^{bad}: .*{DAMAGE[damage]}"):
        clip_fine_tune.main([*tiny["args"], "--dataset", "Shoes", "--clip_model_ckpt", str(bad), *out])
    with pytest.raises(CheckpointError, match=f"^{bad}: .*{DAMAGE[damage]}"):
        combiner_train.main([*tiny["args"], "--dataset", "Shoes", "--clip-model-path", str(bad), *out])


def test_validate_checks_the_metrics_folder_first(tiny, monkeypatch):
    monkeypatch.setattr(validate, "evaluation_models", no_work)
    blocker = tiny["root"] / "clip_rn.pt"  # a file where a folder is needed
    with pytest.raises(NotADirectoryError, match=f"--metrics-json {blocker}/sub: {blocker} is a file"):
        validate.main([*tiny["args"], "--dataset", "Shoes", "--combining-function", "sum",
                       "--metrics-json", str(blocker / "sub" / "m.json")])
    with pytest.raises(NotADirectoryError, match=f"--cache-dir {blocker}/cache: {blocker} is a file"):
        validate.main([*tiny["args"], "--dataset", "Shoes", "--combining-function", "sum",
                       "--metrics-json", str(tiny["root"] / "m.json"), "--cache-dir", str(blocker / "cache")])


def read_only(monkeypatch, folder: Path) -> None:
    """``os.access`` says ``folder`` cannot be written (as for a non-root user on a read-only folder)."""
    real = os.access

    def access(path, mode, *args, **kwargs):
        if Path(path) == folder and mode & os.W_OK:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def test_default_metrics_file_next_to_a_read_only_checkpoint(tiny, monkeypatch):
    monkeypatch.setattr(validate, "evaluation_models", no_work)
    read_only(monkeypatch, tiny["root"])
    with pytest.raises(PermissionError, match=f"cannot create files in {tiny['root']}"):
        validate.main([*tiny["args"], "--dataset", "Shoes", "--combining-function", "sum"])


def test_submission_checks_its_folder_first(tiny, monkeypatch):
    monkeypatch.setattr(cirr_test_submission, "evaluation_models", no_work)
    out = tiny["root"] / "readonly_out"
    out.mkdir()
    read_only(monkeypatch, out)
    with pytest.raises(PermissionError, match=f"--output-root {out}/submission/CIRR/x: cannot create files in {out}"):
        cirr_test_submission.main([*tiny["args"], "--submission-name", "x", "--combining-function", "sum",
                                   "--output-root", str(out)])


def test_prepare_shoes_checks_the_annotation_folder_first(tiny, monkeypatch):
    monkeypatch.setattr(prepare_shoes_data, "prepare_shoes", no_work)
    annotations = tiny["data"] / "shoes" / "annotations"
    read_only(monkeypatch, annotations)
    with pytest.raises(PermissionError, match=f"--annotation-dir {annotations}: cannot create files"):
        prepare_shoes_data.main(["--data-root", str(tiny["data"])])


def test_training_checks_the_cache_folder_first(tiny, monkeypatch):
    monkeypatch.setattr(combiner_train, "query_sets", no_work)
    blocker = tiny["root"] / "clip_rn.pt"
    with pytest.raises(NotADirectoryError, match="--cache-dir"):
        combiner_train.main([*tiny["args"], "--dataset", "Shoes", "--cache-dir", str(blocker / "cache"),
                             "--output-root", str(tiny["root"] / "out")])


def test_clip_scripts_have_no_bert_tokenizer_flag():
    for script in SCRIPTS:
        parser = script.build_parser()
        assert "--tokenizer" not in [flag for action in parser._actions for flag in action.option_strings], script
    with pytest.raises(SystemExit) as exit_info:
        clip_fine_tune.build_parser().parse_args(["--dataset", "Shoes", "--tokenizer", "bert"])
    assert exit_info.value.code == 2
    assert "--tokenizer" in add_runtime_args(argparse.ArgumentParser()).format_help()  # BLIP scripts keep it
