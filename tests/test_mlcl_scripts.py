"""The MLCL scripts end to end on tiny synthetic FashionIQ, Shoes and CIRR with the tiny CLIP: folder and file names,
JSON and CSV contents, checkpoint keys, the text -> image chain, validation and the CIRR submission, bad input, and
two gloo processes against one."""
from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from common.clip import write_tiny_clip
from common.io import CheckpointError
from common.synthetic.writers import write_cirr, write_fashioniq, write_shoes_raw
from mlcl import cirr_test_submission, clip_fine_tune, combiner_train, prepare_shoes_data, validate

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
TIMESTAMP = r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d"
COMBINER = ["--projection-dim", "32", "--hidden-dim", "64"]
STAGE1_KEYS = {"num_epochs", "clip_model_name", "learning_rate", "batch_size", "validation_frequency", "transform",
               "target_ratio", "save_training", "encoder", "save_best"}
STAGE2_KEYS = {"projection_dim", "hidden_dim", "num_epochs", "clip_model_name", "clip_model_path", "combiner_lr",
               "batch_size", "clip_bs", "validation_frequency", "transform", "target_ratio", "save_training",
               "save_best", "combiner_model_path"}
TERM_COLUMNS = ["epoch", "loss_h", "loss_c", "loss_s", "loss_mid", "loss_high", "alpha"]
BEST = {"FashionIQ": ["combiner"], "Shoes": ["combiner_best"],
        "CIRR": ["combiner_arithmetic", "combiner_harmonic", "combiner_geometric"]}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("mlcl")
    data = root / "data"
    write_fashioniq(data, {"train": 8, "val": 6, "test": 2}, {"train": 8, "val": 4, "test": 2}, seed=0)
    write_cirr(data, {"train": 3, "val": 2, "test1": 9}, 2, seed=0)
    write_shoes_raw(data, {"train": 10, "eval": 8}, {"train": 8, "eval": 6}, n_cross_split=1, seed=0)
    prepare_shoes_data.main(["--data-root", str(data)])
    clip_file = write_tiny_clip(root / "clip_rn.pt", kind="rn")
    args = ["--data-root", str(data), "--clip-model-name", str(clip_file), "--num-workers", "0", "--device", "cpu"]
    return {"root": root, "out": root / "out", "args": args}


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


def only_run(folder: Path, pattern: str) -> Path:
    runs = [path for path in folder.iterdir() if re.fullmatch(pattern, path.name)]
    assert len(runs) == 1, [path.name for path in folder.iterdir()]
    return runs[0]


@pytest.fixture(scope="module")
def stage1(tiny) -> dict:
    """--encoder text on FashionIQ, then --encoder image started from its best checkpoint."""
    out = tiny["out"]
    common = [*tiny["args"], "--dataset", "FashionIQ", "--num-epochs", "2", "--batch-size", "4",
              "--learning-rate", "1e-3", "--save-training", "--save-best", "--output-root", str(out)]
    clip_fine_tune.main([*common, "--encoder", "text"])
    text_run = only_run(out / "models-finetune", rf"fiq_clip_rn_{TIMESTAMP}")
    clip_fine_tune.main([*common, "--encoder", "image", "--clip_model_ckpt",
                         str(text_run / "saved_models" / "tuned_clip_best.pt"), "--run-name", "image_stage"])
    return {"text": text_run, "image": out / "models-finetune" / "image_stage"}


def test_stage1_outputs_and_chain(stage1):
    text_run, image_run = stage1["text"], stage1["image"]
    params = json.loads((text_run / "training_hyperparameters.json").read_text())
    assert STAGE1_KEYS | {"train_dress_types", "val_dress_types"} <= set(params) and params["encoder"] == "text"
    assert params["train_dress_types"] == ["dress", "toptee", "shirt"]
    columns, rows = read_csv(text_run / "train_metrics.csv")
    assert columns == ["epoch", "train_epoch_loss"] and [row["epoch"] for row in rows] == ["0", "1"]
    columns, rows = read_csv(text_run / "validation_metrics.csv")
    assert columns[0] == "epoch" and "average_recall" in columns and "shirt_recall_at50" in columns
    assert (text_run / "training_curves.png").is_file()
    assert {p.name for p in (text_run / "saved_models").iterdir()} == {"tuned_clip_best.pt", "tuned_clip_last.pt"}
    text_ckpt = torch.load(text_run / "saved_models" / "tuned_clip_best.pt", weights_only=True)
    image_ckpt = torch.load(image_run / "saved_models" / "tuned_clip_last.pt", weights_only=True)
    assert set(text_ckpt) == {"epoch", "CLIP"} and text_ckpt["CLIP"]["visual.conv1.weight"].dtype == torch.float32
    start = torch.load(text_run / "saved_models" / "tuned_clip_best.pt", weights_only=True)["CLIP"]
    for key, value in image_ckpt["CLIP"].items():  # the image stage starts from the text stage, keeps its text
        if not key.startswith("visual.") or "running_" in key or "num_batches" in key:  # and its BatchNorm stats
            assert torch.equal(value, start[key]), key
    assert not torch.equal(image_ckpt["CLIP"]["visual.conv1.weight"], start["visual.conv1.weight"])
    assert json.loads((image_run / "training_hyperparameters.json").read_text())["clip_model_ckpt"].endswith(
        "tuned_clip_best.pt")


@pytest.fixture(scope="module")
def stage2(tiny, stage1) -> dict:
    clip_path = str(stage1["text"] / "saved_models" / "tuned_clip_best.pt")
    runs = {}
    for dataset in ("FashionIQ", "Shoes", "CIRR"):
        combiner_train.main([*tiny["args"], "--dataset", dataset, "--clip-model-path", clip_path, *COMBINER,
                             "--num-epochs", "2", "--batch-size", "4", "--clip-bs", "3", "--combiner-lr", "1e-3",
                             "--validation-frequency", "1", "--save-training", "--save-best",
                             "--output-root", str(tiny["out"]),
                             *(["--use_schedule", "1"] if dataset == "Shoes" else [])])
        prefix = {"FashionIQ": "fiq_learnT_1", "Shoes": "shoes_learnT_1_4", "CIRR": "cirr_learnT_1"}[dataset]
        runs[dataset] = only_run(tiny["out"] / "dev-models-combiner", rf"{prefix}_clip_rn_{TIMESTAMP}")
    return {"clip": clip_path, "runs": runs}


@pytest.mark.parametrize("dataset", ["FashionIQ", "Shoes", "CIRR"])
def test_stage2_outputs(stage2, dataset):
    run = stage2["runs"][dataset]
    params = json.loads((run / "training_hyperparameters.json").read_text())
    assert STAGE2_KEYS <= set(params) and params["learn_t"] == 1 and params["aug_dim"] == 64
    assert params["use_schedule"] == (1 if dataset == "Shoes" else 0)
    columns, rows = read_csv(run / "loss_terms.csv")
    assert columns == TERM_COLUMNS and len(rows) == 2
    _, losses = read_csv(run / "train_metrics.csv")
    for row, loss_row in zip(rows, losses):
        alpha = float(row["alpha"])
        terms = {key: float(row[f"loss_{key}"]) for key in ("h", "c", "s", "mid", "high")}
        total = alpha * terms["h"] + (2 - alpha) * terms["c"] + terms["s"] + terms["mid"] + terms["high"]
        assert float(loss_row["train_epoch_loss"]) == pytest.approx(total, rel=1e-3)  # α changes within the epoch
    assert float(rows[0]["alpha"]) == pytest.approx(2 / 3)
    saved = {p.stem for p in (run / "saved_models").iterdir()}
    assert saved == {*BEST[dataset], "combiner_last"}
    checkpoint = torch.load(run / "saved_models" / f"{BEST[dataset][0]}.pt", weights_only=True)
    assert set(checkpoint) == {"epoch", "Combiner"} and "logit_scale_sl" in checkpoint["Combiner"]


def test_validate_reproduces_the_training_validation(tiny, stage2):
    """validate.py on the saved best Combiner gives the metrics logged at its epoch."""
    for dataset, name in (("Shoes", "combiner_best"), ("FashionIQ", "combiner")):
        run = stage2["runs"][dataset]
        checkpoint = run / "saved_models" / f"{name}.pt"
        epoch = torch.load(checkpoint, weights_only=True)["epoch"]
        path = tiny["root"] / f"validate_{dataset}.json"
        metrics = validate.main([*tiny["args"], "--dataset", dataset, "--combining-function", "combiner",
                                 "--combiner-path", str(checkpoint), "--clip-model-path", stage2["clip"],
                                 *COMBINER, "--metrics-json", str(path)])
        _, rows = read_csv(run / "validation_metrics.csv")
        logged = {key: float(value) for key, value in rows[epoch].items() if key != "epoch"}
        assert metrics == pytest.approx(logged) and json.loads(path.read_text()) == metrics


def test_validate_learn_t_mismatch_names_the_keys(tiny, stage2):
    checkpoint = stage2["runs"]["Shoes"] / "saved_models" / "combiner_best.pt"
    with pytest.raises(CheckpointError, match="--learn_t 0 but the checkpoint holds the keys logit_scale and "
                                              "logit_scale_sl"):
        validate.main([*tiny["args"], "--dataset", "Shoes", "--combining-function", "combiner", "--learn_t", "0",
                       "--combiner-path", str(checkpoint), *COMBINER])
    with pytest.raises(CheckpointError, match="--projection-dim"):
        validate.main([*tiny["args"], "--dataset", "Shoes", "--combining-function", "combiner",
                       "--combiner-path", str(checkpoint), "--projection-dim", "48", "--hidden-dim", "64"])


def test_cirr_submission(tiny, stage2):
    checkpoint = stage2["runs"]["CIRR"] / "saved_models" / "combiner_arithmetic.pt"
    recall_file, subset_file = cirr_test_submission.main([
        *tiny["args"], "--submission-name", "tiny", "--combining-function", "combiner", "--combiner-path",
        str(checkpoint), "--clip-model-path", stage2["clip"], *COMBINER, "--output-root", str(tiny["root"])])
    assert recall_file == tiny["root"] / "submission" / "CIRR" / "tiny" / "recall_submission_tiny.json"
    recall, subset = json.loads(recall_file.read_text()), json.loads(subset_file.read_text())
    queries = json.loads((tiny["root"] / "data" / "cirr_dataset" / "cirr" / "captions" / "cap.rc2.test1.json")
                         .read_text())
    gallery = json.loads((tiny["root"] / "data" / "cirr_dataset" / "cirr" / "image_splits" / "split.rc2.test1.json")
                         .read_text())
    assert (recall["version"], recall["metric"], subset["metric"]) == ("rc2", "recall", "recall_subset")
    assert list(recall) == sorted(recall) and recall_file.read_text().startswith('{"')
    for query in queries:
        ranked, top3 = recall[str(query["pairid"])], subset[str(query["pairid"])]
        assert len(ranked) == min(50, len(gallery) - 1) and query["reference"] not in ranked
        assert len(top3) == 3 and set(top3) <= set(query["img_set"]["members"]) - {query["reference"]}


def test_help_lists_the_original_flags():
    texts = {module.__name__: module.build_parser().format_help() for module in
             (clip_fine_tune, combiner_train, validate, cirr_test_submission, prepare_shoes_data)}
    assert "--clip_model_ckpt" in texts["mlcl.clip_fine_tune"] and "default both" in texts["mlcl.clip_fine_tune"]
    for flag in ("--learn_t", "--use_schedule", "--combiner_model_path", "--clip-bs", "--aug-dim",
                 "--fusion-weights", "--no-feature-cache"):
        assert flag in texts["mlcl.combiner_train"], flag
    assert "--learn_t" in texts["mlcl.cirr_test_submission"] and "--image-glob" in texts["mlcl.prepare_shoes_data"]
    for text in texts.values():
        assert "spec §" not in text
    args = combiner_train.build_parser().parse_args(["--dataset", "shoes"])
    assert (args.projection_dim, args.hidden_dim, args.num_epochs, args.batch_size, args.clip_bs,
            args.validation_frequency, args.learn_t, args.use_schedule) == (2560, 5120, 300, 1024, 32, 3, 1, 0)
    args = clip_fine_tune.build_parser().parse_args(["--dataset", "CIRR"])
    assert (args.num_epochs, args.learning_rate, args.batch_size, args.clip_model_name) == (300, 2e-6, 512, "RN50x4")


def torchrun(script: str, processes: int, *argv: str) -> None:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLR_NO_PROGRESS": "1"}
    result = subprocess.run([sys.executable, *launcher, f"mlcl/{script}.py", *argv], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_two_gloo_processes_validate_as_one(tiny, stage2):
    checkpoint = stage2["runs"]["CIRR"] / "saved_models" / "combiner_arithmetic.pt"
    results = {}
    for processes in (1, 2):
        path = tiny["root"] / f"validate_cirr_{processes}.json"
        torchrun("validate", processes, *tiny["args"], "--dataset", "CIRR", "--combining-function", "combiner",
                 "--combiner-path", str(checkpoint), "--clip-model-path", stage2["clip"], *COMBINER,
                 "--metrics-json", str(path))
        results[processes] = json.loads(path.read_text())
    assert results[1] == pytest.approx(results[2], abs=1e-9) and "geometric_mean" in results[1]


def test_stage2_under_torchrun(tiny, stage2):
    torchrun("combiner_train", 2, *tiny["args"], "--dataset", "CIRR", "--clip-model-path", stage2["clip"],
             *COMBINER, "--num-epochs", "2", "--batch-size", "4", "--clip-bs", "3", "--validation-frequency", "1",
             "--save-training", "--save-best", "--output-root", str(tiny["out"]), "--run-name", "ddp")
    run = tiny["out"] / "dev-models-combiner" / "ddp"
    assert json.loads((run / "training_hyperparameters.json").read_text())["world_size"] == 2
    assert len(read_csv(run / "loss_terms.csv")[1]) == 2
    assert {p.stem for p in (run / "saved_models").iterdir()} == {*BEST["CIRR"], "combiner_last"}


def test_stage2_resume_and_feature_cache(tiny, stage2):
    """An interrupted run resumed with --resume equals an uninterrupted one; --cache-dir reuses the features."""
    common = [*tiny["args"], "--dataset", "Shoes", "--clip-model-path", stage2["clip"], *COMBINER, "--batch-size",
              "4", "--clip-bs", "3", "--combiner-lr", "1e-3", "--validation-frequency", "1",
              "--output-root", str(tiny["out"]), "--cache-dir", str(tiny["root"] / "cache")]
    combiner_train.main([*common, "--num-epochs", "3", "--run-name", "straight"])
    assert len(list((tiny["root"] / "cache").glob("features_*.pt"))) == 3  # gallery, train images, train captions
    combiner_train.main([*common, "--num-epochs", "1", "--run-name", "interrupted"])
    runs = tiny["out"] / "dev-models-combiner"
    combiner_train.main([*common, "--num-epochs", "3", "--resume", str(runs / "interrupted")])
    assert len(list((tiny["root"] / "cache").glob("features_*.pt"))) == 3
    for file in ("train_metrics.csv", "loss_terms.csv", "validation_metrics.csv"):
        _, straight = read_csv(tiny["out"] / "dev-models-combiner" / "straight" / file)
        _, resumed = read_csv(tiny["out"] / "dev-models-combiner" / "interrupted" / file)
        assert [row["epoch"] for row in resumed] == ["0", "1", "2"]
        for row, other in zip(straight, resumed):
            assert {k: float(v) for k, v in row.items()} == pytest.approx({k: float(v) for k, v in other.items()},
                                                                          rel=1e-5)


def test_no_feature_cache_gives_the_same_run(tiny, stage2):
    """--no-feature-cache (the original's per-step encoding of reference, target and captions) and the default
    (tables) draw the same augmentations and dropout masks, so the whole run's losses and metrics agree."""
    common = [*tiny["args"], "--dataset", "FashionIQ", "--clip-model-path", stage2["clip"], *COMBINER,
              "--batch-size", "4", "--clip-bs", "3", "--combiner-lr", "1e-3", "--validation-frequency", "1",
              "--num-epochs", "2", "--output-root", str(tiny["out"])]
    combiner_train.main([*common, "--run-name", "tables"])
    combiner_train.main([*common, "--run-name", "reencoded", "--no-feature-cache"])
    for file in ("train_metrics.csv", "loss_terms.csv", "validation_metrics.csv"):
        _, tables = read_csv(tiny["out"] / "dev-models-combiner" / "tables" / file)
        _, reencoded = read_csv(tiny["out"] / "dev-models-combiner" / "reencoded" / file)
        assert len(tables) == 2
        for row, other in zip(tables, reencoded):
            assert {k: float(v) for k, v in row.items()} == pytest.approx({k: float(v) for k, v in other.items()},
                                                                          rel=1e-5, abs=1e-6)
