"""Bi-BLIP4CIR hardening: --skip-bad-images, a train table of the used images only, validate.py's metrics next to
the checkpoint, the resume guard and the cheap checks before any image is encoded, shape hints, capped workers."""
import json
import re

import pytest
import torch

from bi_blip4cir import data as bi_data
from bi_blip4cir import models as bi_models
import common.runtime as runtime
from bi_blip4cir import clip_fine_tune, validate
from common.blip.config import ViTConfig
from common.blip.tiny import write_tiny_blip_files
from common.cir.args import preprocess_from_args
from common.cir.combiner import Combiner
from common.cir.data import TripletRows, classic_dataset
from common.data.images import ImageReadError
from common.io import CheckpointError
from common.synthetic.scenes import vocabulary
from common.synthetic.writers import write_cirr
from common.training.checkpoint import save_model
from common.training.resume import ResumeMismatch

VIT = ViTConfig(patch_size=8, width=32, depth=1, heads=2)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """Synthetic CIRR and a tiny BLIP; ``args`` point the scripts at them."""
    root = tmp_path_factory.mktemp("bi_blip4cir_hardening")
    data, weights = root / "data", root / "weights"
    write_cirr(data, {"train": 4, "val": 2, "test1": 9}, 3, seed=0)
    blip = write_tiny_blip_files(weights, VIT, num_layers=1, extra_words=vocabulary())
    args = ["--data-root", str(data), *blip.flags(), "--num-workers", "0", "--device", "cpu"]
    return {"root": root, "data": data, "args": args}


def stage1(tiny, out, *extra: str) -> None:
    clip_fine_tune.main(["--dataset", "CIRR", *tiny["args"], "--batch-size", "4", "--num-epochs", "1",
                         "--blip-learning-rate", "1e-3", "--output-root", str(out), *extra])


def parsed(tiny, *extra: str):
    return clip_fine_tune.build_parser().parse_args(["--dataset", "CIRR", *tiny["args"], *extra])


def no_heavy_work(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("models were built before the cheap checks")
    monkeypatch.setattr(clip_fine_tune, "build_blip_encoders", fail)


def test_train_table_encodes_only_the_images_the_triplets_use(tiny):
    args = parsed(tiny)
    image_encoder, _ = bi_models.build_blip_encoders(args, torch.device("cpu"))
    root = tiny["data"] / "cirr_dataset"
    train = bi_data.train_triplets(args, root, image_encoder, torch.device("cpu"))
    used = TripletRows(train.train_set, {}).used_images()
    split = classic_dataset("cirr", root, "train", preprocess_from_args(args))
    assert len(train.images.table) == len(used) < len(split)
    assert sorted(train.data.rows) == sorted(used) and train.skipped == []
    reference_row, target_row, _, _ = train.data[0]
    first = train.train_set.triplets[0]
    by_name = dict(zip(split.image_names, range(len(split))))
    with torch.no_grad():
        expected = image_encoder(torch.stack([split[by_name[first["reference"]]][1],
                                              split[by_name[first["target_hard"]]][1]]))
    assert torch.allclose(train.images.table[[reference_row, target_row]], expected, atol=1e-5)


@pytest.fixture
def broken(tiny, tmp_path):
    """A copy of the data whose first train triplet's reference image is damaged."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny["data"], data)
    triplets = json.loads((data / "cirr_dataset/cirr/captions/cap.rc2.train.json").read_text())
    splits = json.loads((data / "cirr_dataset/cirr/image_splits/split.rc2.train.json").read_text())
    bad = data / "cirr_dataset" / splits[triplets[0]["reference"]]
    bad.write_bytes(b"not a png")
    users = sum(triplets[0]["reference"] in (t["reference"], t["target_hard"]) for t in triplets)
    used = len({t["reference"] for t in triplets} | {t["target_hard"] for t in triplets})
    args = [data if value == str(tiny["data"]) else value for value in tiny["args"]]
    return {"args": [str(value) for value in args], "bad": bad.resolve(), "users": users, "total": len(triplets),
            "used": used}


def test_a_bad_train_image_stops_by_default_naming_the_file(broken, tmp_path):
    with pytest.raises(ImageReadError, match=re.escape(str(broken["bad"].name))):
        clip_fine_tune.main(["--dataset", "CIRR", *broken["args"], "--batch-size", "4", "--num-epochs", "1",
                             "--output-root", str(tmp_path / "out")])


@pytest.mark.slow
def test_skip_bad_images_reports_each_file_once_and_the_count(broken, tmp_path, caplog):
    clip_fine_tune.main(["--dataset", "CIRR", *broken["args"], "--batch-size", "4", "--num-epochs", "2",
                         "--output-root", str(tmp_path / "out"), "--run-name", "skip", "--skip-bad-images"])
    text = caplog.text
    assert text.count(f"--skip-bad-images: skipping {broken['bad']}") == 1
    assert f"1 of {broken['used']} train images are unreadable; {broken['users']} of {broken['total']} triplets " \
        "left out" in text
    assert "1 unreadable train image(s) were skipped" in text
    assert (tmp_path / "out" / "models" / "skip" / "train_metrics.csv").read_text().count("\n") == 3


@pytest.mark.slow
def test_resume_guard_runs_before_any_model_is_built(tiny, tmp_path, monkeypatch, caplog):
    out = tmp_path / "out"
    stage1(tiny, out, "--run-name", "done")
    run_dir = out / "models" / "done"
    before = {path.name: path.stat().st_mtime_ns for path in run_dir.iterdir()}
    no_heavy_work(monkeypatch)
    with pytest.raises(ResumeMismatch, match=r"--blip-learning-rate: run 0.001, now 0.002"):
        stage1(tiny, out, "--resume", str(run_dir), "--blip-learning-rate", "2e-3")
    with pytest.raises(SystemExit) as caught:
        stage1(tiny, out, "--resume", str(run_dir), "--num-workers", "1")
    assert caught.value.code == 0 and f"{run_dir} is finished: all 1 epochs are done" in caplog.text
    assert {path.name: path.stat().st_mtime_ns for path in run_dir.iterdir()} == before


def test_a_checkpoint_typo_fails_before_any_model_is_built(tiny, tmp_path, monkeypatch):
    no_heavy_work(monkeypatch)
    missing = tmp_path / "model_bsae.pth"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{missing}: checkpoint file not found (given by "
                                                          "--blip-pretrained-path)")):
        clip_fine_tune.main(["--dataset", "CIRR", *tiny["args"], "--blip-pretrained-path", str(missing)])


def test_validate_writes_metrics_next_to_the_checkpoint(tiny, tmp_path, capsys):
    args = parsed(tiny)
    _, text_encoder = bi_models.build_blip_encoders(args, torch.device("cpu"))
    checkpoint = save_model("tuned_blip_best", 0, text_encoder, tmp_path / "run", key=bi_models.TEXT_ENCODER_KEY)
    metrics = validate.main(["--dataset", "CIRR", *tiny["args"], "--combining-function", "sum",
                             "--blip-model-path", str(checkpoint)])
    path = checkpoint.parent / "tuned_blip_best_val_cirr_sum.json"
    assert json.loads(path.read_text()) == pytest.approx(metrics)
    printed = capsys.readouterr().out
    assert re.search(r"^recall_at1 = \d+\.\d\d$", printed, re.MULTILINE) and f"metrics written to {path}" in printed
    own = tmp_path / "chosen.json"
    validate.main(["--dataset", "CIRR", *tiny["args"], "--combining-function", "sum", "--metrics-json", str(own)])
    assert own.is_file()


def test_a_combiner_of_another_size_names_key_shapes_and_flag(tiny, tmp_path):
    path = save_model("combiner", 0, Combiner(16, 32, 64), tmp_path)
    args = validate.build_parser().parse_args(["--dataset", "CIRR", *tiny["args"], "--combining-function", "combiner",
                                               "--combiner-path", str(path), "--feature-dim", "16",
                                               "--projection-dim", "48", "--hidden-dim", "64"])
    with pytest.raises(CheckpointError) as caught:
        bi_models.combining_function(args, torch.device("cpu"))
    message = str(caught.value)
    assert message.startswith(f"{path}: checkpoint does not fit Combiner: shape mismatch for ")
    assert "text_projection_layer.weight: checkpoint (32, 16), model (48, 16) (that size is set by " \
           "--projection-dim / --feature-dim)" in message


def test_default_worker_count_is_capped_at_the_cores(tiny, monkeypatch):
    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    args = clip_fine_tune.build_parser().parse_args(["--dataset", "CIRR"])
    assert args.num_workers == 2
    assert clip_fine_tune.build_parser().parse_args(["--dataset", "CIRR", "--num-workers", "6"]).num_workers == 6


@pytest.mark.parametrize("script", ["clip_fine_tune", "combiner_train", "validate", "cirr_test_submission"])
def test_help_shows_every_default_and_cites_no_spec(script):
    import argparse
    import importlib

    parser = importlib.import_module(f"bi_blip4cir.{script}").build_parser()
    silent = [action.option_strings[0] for action in parser._actions
              if action.option_strings and action.option_strings[0] != "-h" and not action.required
              and not isinstance(action, argparse._StoreTrueAction) and "default" not in (action.help or "")]
    assert silent == []
    assert "spec §" not in parser.format_help()


def test_a_checkpoint_of_the_wrong_kind_fails_before_any_model_is_built(tiny, tmp_path, monkeypatch):
    combiner = save_model("combiner", 0, Combiner(16, 32, 64), tmp_path)
    monkeypatch.setattr(validate, "load_evaluation_models", lambda *args: pytest.fail("models were built"))
    with pytest.raises(CheckpointError, match=r"combiner.pt: expected a checkpoint with one of the entries "
                                              r"\['BLIPTextEncoder'\].*--blip-model-path"):
        validate.main(["--dataset", "CIRR", *tiny["args"], "--combining-function", "sum",
                       "--blip-model-path", str(combiner)])
