"""The seven Candidate Re-ranking scripts end to end on tiny synthetic CIRR and FashionIQ: flags, files, metrics,
torchrun equality, training steps and bad input. Scripts run in-process through their ``main(argv)`` (the code a
user's command runs), torchrun and one plain command as subprocesses."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from common.blip.config import ViTConfig
from common.blip.tiny import write_tiny_blip_files
from common.dist import init_distributed
from common.synthetic.scenes import vocabulary
from common.synthetic.writers import write_cirr, write_fashioniq
from reranking_cir import (cirr_test_submission, cirr_test_submission_stage2, plot_ranking_delta, stage1_train,
                           stage2_train, validate, validate_stage2)
from reranking_cir.args import add_port_args
from reranking_cir.models import build_models
from reranking_cir.topk import read_topk

REPO = Path(__file__).resolve().parent.parent
VIT = ViTConfig(patch_size=8, width=32, depth=1, heads=2)
TRAINING_DEFAULTS = {"grad_accumulation_step": 1, "num_workers": 4, "blip_learning_rate": 2e-5, "blip_max_epoch": 20,
                     "batch_size": 1024, "blip_bs": 32, "validation_frequency": 3, "target_ratio": 1.25,
                     "transform": "targetpad", "train": False, "preprocess_val": False, "blip_img_tune": False,
                     "save_training": False, "save_best": False, "api_key": None, "workspace": None,
                     "experiment_name": None}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("reranking")
    data, weights = root / "data", root / "weights"
    write_fashioniq(data, {"train": 10, "val": 8, "test": 4}, {"train": 8, "val": 6, "test": 2}, seed=0)
    write_cirr(data, {"train": 3, "val": 2, "test1": 9}, 3, seed=0)
    blip = write_tiny_blip_files(weights, VIT, extra_words=vocabulary())
    args = ["--data-root", str(data), *blip.flags(), "--num-workers", "0", "--device", "cpu"]
    return {"root": root, "data": data, "out": root / "out", "args": args}


@pytest.fixture(scope="module")
def cirr_runs(tiny) -> dict:
    """stage 1 -> top-K -> stage 2 on CIRR, run once for the tests below."""
    out, args = tiny["out"], tiny["args"]
    stage1_train.main(["--dataset", "CIRR", *args, "--train", "--num-epochs", "1", "--batch-size", "3",
                       "--validation-frequency", "1", "--save-training", "--save-best", "--output-root", str(out),
                       "--experiment-name", "s1", "--blip-learning-rate", "1e-4"])
    stage1_run, = (out / "models").glob("CIR_Reranking_stageI_cirr_*")
    validate.main(["--dataset", "CIRR", *args, "--stage1-path", str(stage1_run), "--save-topk", "--k", "11",
                   "--metrics-json", str(out / "s1.json")])
    stage2_train.main(["--dataset", "cirr", *args, "--train", "--num-epochs", "1", "--batch-size", "3",
                       "--validation-frequency", "1", "--save-training", "--output-root", str(out),
                       "--blip-model-path", str(stage1_run), "--top-k-path", str(stage1_run / "cirr_top_11_val.pt"),
                       "--K-value", "3"])
    stage2_run, = (out / "models").glob("CIR_Reranking_stageII_cirr_*")
    return {"stage1": stage1_run, "stage2": stage2_run, "topk": stage1_run / "cirr_top_11_val.pt"}


def test_help_lists_the_original_flags_and_defaults():
    for module, defaults in ((stage1_train, {**TRAINING_DEFAULTS, "num_epochs": 20}),
                             (stage2_train, {**TRAINING_DEFAULTS, "num_epochs": 300, "kv_reuse": True})):
        parser = module.build_parser()
        assert {key: parser.get_default(key) for key in defaults} == defaults
        assert "--num_workers" in parser.format_help() and "--K-value" in stage2_train.build_parser().format_help()
    assert validate.build_parser().get_default("k") == 200
    assert validate_stage2.build_parser().get_default("k") == 50
    assert cirr_test_submission.build_parser().get_default("k") == 50
    assert cirr_test_submission_stage2.build_parser().get_default("k") == 50
    assert plot_ranking_delta.build_parser().get_default("k") == 200
    for module in (validate, validate_stage2, cirr_test_submission, cirr_test_submission_stage2):
        text = module.build_parser().format_help()
        assert "--stage1-path" in text and "--target-ratio" in text and "--transform" in text
        assert "spec" not in text.lower()


def test_stage1_run_folder_and_checkpoints(cirr_runs):
    run = cirr_runs["stage1"]
    assert run.name.startswith("CIR_Reranking_stageI_cirr_") and (run / "s1.json").is_file()
    with open(run / "validation_metrics.csv") as handle:
        assert "mean(R@5+R_s@1)" in next(csv.reader(handle))
    assert {p.name for p in (run / "saved_models").iterdir()} == {"blip_mean.pt", "blip_last.pt"}
    checkpoint = torch.load(run / "saved_models" / "blip_mean.pt", weights_only=True)
    assert set(checkpoint) == {"epoch", "BLIP_Retrieval", "optimizer_state_dict"}
    assert (run / "training_curves.png").stat().st_size > 0


def test_topk_file_of_validate(tiny, cirr_runs):
    topk = read_topk(cirr_runs["topk"])
    assert topk.split == "val" and topk.sorted_index_names.shape == (6, 11)  # the whole ranking of 12 - 1 images
    assert topk.labels.shape == (6, 11) and topk.group_labels.shape == (6, 5)
    assert topk.group_labels.sum(1).tolist() == [1] * 6  # the target is one of the 5 non-reference members
    captions = json.loads((tiny["data"] / "cirr_dataset/cirr/captions/cap.rc2.val.json").read_text())
    assert topk.target_names == [entry["target_hard"] for entry in captions]
    for row, entry in zip(topk.sorted_index_names.tolist(), captions):
        assert entry["reference"] not in row
    metrics = json.loads((tiny["out"] / "s1.json").read_text())
    assert metrics["recall_at5"] == pytest.approx(100 * topk.labels[:, :5].any(1).double().mean().item())


def test_stage2_checkpoint_and_reranking(tiny, cirr_runs):
    checkpoint = torch.load(cirr_runs["stage2"] / "saved_models" / "blip_0.pt", weights_only=True)
    assert set(checkpoint) == {"epoch", "BLIP_NLVR", "optimizer_state_dict"}
    params = json.loads((cirr_runs["stage2"] / "training_hyperparameters.json").read_text())
    assert params["top_k_path"].endswith("cirr_top_11_val.pt") and params["K_value"] == 3
    common = ["--dataset", "CIRR", *tiny["args"], "--stage1-path", str(cirr_runs["stage1"]),
              "--stage2-path", str(cirr_runs["stage2"] / "saved_models" / "blip_0.pt"),
              "--top-k-path", str(cirr_runs["topk"]), "--k", "4"]
    labels_path = tiny["out"] / "labels.pt"
    batched = validate_stage2.main([*common, "--save-labels", str(labels_path),
                                    "--metrics-json", str(tiny["out"] / "s2.json")])
    reference = validate_stage2.main([*common, "--no-kv-reuse", "--metrics-json", str(tiny["out"] / "s2_ref.json")])
    assert batched == reference
    stage1 = json.loads((tiny["out"] / "s1.json").read_text())
    labels = torch.load(labels_path, weights_only=True)
    topk = read_topk(cirr_runs["topk"])
    assert labels.dtype == torch.bool and labels.shape == (6, 4)
    assert torch.equal(labels.any(1), topk.labels[:, :4].any(1))  # only the order inside the top 4 changes
    for k in (5, 10, 50):  # final lists: the re-ranked top 4, then stage-1 ranks 5..11
        assert batched[f"recall_at{k}"] == pytest.approx(stage1[f"recall_at{k}"])
    assert stage1["recall_at50"] == 100.0
    stats = plot_ranking_delta.main(["--dataset", "CIRR", "--stage1-topk", str(cirr_runs["topk"]), "--stage2-labels",
                                     str(labels_path), "--k", "4", "--out-dir", str(tiny["out"] / "fig"),
                                     "--scatter"])
    assert sum(stats["cirr"]["counts"]) == int(labels.any(1).sum())
    for name in ("cirr_init_index_vs_delta_avg.png", "cirr_init_index_vs_delta_avg_stats.json",
                 "cirr_init_index_vs_delta_scatter.png"):
        assert (tiny["out"] / "fig" / name).stat().st_size > 0


def test_cirr_submissions(tiny, cirr_runs):
    out = tiny["out"]
    cirr_test_submission.main(["--submission-name", "s1", "--stage1-path", str(cirr_runs["stage1"]), "--save-topk",
                               "--k", "50", *tiny["args"], "--output-root", str(out)])
    test_topk = cirr_runs["stage1"] / "cirr_top_50_test1.pt"
    assert read_topk(test_topk).split == "test1" and read_topk(test_topk).labels is None
    cirr_test_submission_stage2.main(["--submission-name", "s2", "--stage1-path", str(cirr_runs["stage1"]),
                                      "--stage2-path", str(cirr_runs["stage2"] / "saved_models" / "blip_0.pt"),
                                      "--top-k-path", str(test_topk), "--k", "6", *tiny["args"],
                                      "--output-root", str(out)])
    first = json.loads((out / "submission/CIRR/recall_submission_s1.json").read_text())
    second = json.loads((out / "submission/CIRR/recall_submission_s2.json").read_text())
    subset = json.loads((out / "submission/CIRR/recall_subset_submission_s2.json").read_text())
    assert second["version"] == "rc2" and second["metric"] == "recall"
    pairids = [key for key in first if key.isdigit()]
    assert len(pairids) == 27 and set(pairids) == {key for key in second if key.isdigit()}
    for key in pairids:
        assert len(first[key]) == len(second[key]) == 50 and len(subset[key]) == 3
        assert set(second[key][:6]) == set(first[key][:6]) and second[key][6:] == first[key][6:]


def test_fashioniq_chain_with_dtype_paths(tiny, cirr_runs):
    out, args = tiny["out"], tiny["args"]
    validate.main(["--dataset", "fashionIQ", *args, "--save-topk", "--k", "8", "--topk-dir", str(out / "fiq"),
                   "--metrics-json", str(out / "fiq1.json")])
    assert sorted(p.name for p in (out / "fiq").iterdir()) == [f"fiq_top_8_val_{t}.pt"
                                                               for t in ("dress", "shirt", "toptee")]
    topk = read_topk(out / "fiq" / "fiq_top_8_val_shirt.pt")
    assert topk.dress_type == "shirt" and topk.sorted_index_names.shape == (6, 8)
    metrics = validate_stage2.main(["--dataset", "fashionIQ", *args, "--stage1-path",
                                    str(cirr_runs["stage1"] / "saved_models" / "blip_mean.pt"), "--stage2-path",
                                    str(cirr_runs["stage2"] / "saved_models" / "blip_0.pt"), "--top-k-path",
                                    str(out / "fiq" / "fiq_top_8_val_DTYPE.pt"), "--k", "6",
                                    "--metrics-json", str(out / "fiq2.json")])
    assert set(metrics) == {f"{t}_recall_at{k}" for t in ("dress", "toptee", "shirt") for k in (10, 50)} | {
        "average_recall_at10", "average_recall_at50", "average_recall"}
    with pytest.raises(ValueError, match="fiq_top_8_val_dress.pt.*fewer than the requested K = 9"):
        validate_stage2.main(["--dataset", "fashionIQ", *args, "--stage1-path",
                              str(cirr_runs["stage1"] / "saved_models" / "blip_mean.pt"), "--stage2-path",
                              str(cirr_runs["stage2"] / "saved_models" / "blip_0.pt"), "--top-k-path",
                              str(out / "fiq" / "fiq_top_8_val_DTYPE.pt"), "--k", "9"])


def test_wrong_checkpoint_kind_is_named(tiny, cirr_runs):
    with pytest.raises(Exception, match="blip_0.pt: is a stage-2 checkpoint"):
        validate.main(["--dataset", "CIRR", *tiny["args"], "--stage1-path",
                       str(cirr_runs["stage2"] / "saved_models" / "blip_0.pt")])


def test_unreadable_image_raises_with_its_name(tiny, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny["data"] / "cirr_dataset", data / "cirr_dataset")
    broken = sorted((data / "cirr_dataset" / "dev").iterdir())[0]
    broken.write_bytes(b"not an image")
    args = [*tiny["args"]]
    args[1] = str(data)
    with pytest.raises(OSError, match=broken.name):
        validate.main(["--dataset", "CIRR", *args])


def _run(script: str, argv: list[str], nproc: int = 0) -> None:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLR_NO_PROGRESS": "1"}
    result = subprocess.run([sys.executable, *launcher, f"reranking_cir/{script}.py", *argv], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.slow
def test_two_gloo_processes_match_one(tiny, cirr_runs, tmp_path):
    common = ["--dataset", "CIRR", *tiny["args"], "--stage1-path", str(cirr_runs["stage1"])]
    _run("validate", [*common, "--save-topk", "--k", "11", "--topk-dir", str(tmp_path / "two"),
                      "--metrics-json", str(tmp_path / "two.json")], nproc=2)
    _run("validate_stage2", [*common, "--stage2-path", str(cirr_runs["stage2"] / "saved_models" / "blip_0.pt"),
                             "--top-k-path", str(cirr_runs["topk"]), "--k", "4",
                             "--metrics-json", str(tmp_path / "two_stage2.json")], nproc=2)
    one, two = read_topk(cirr_runs["topk"]), read_topk(tmp_path / "two" / "cirr_top_11_val.pt")
    assert np.array_equal(one.sorted_index_names, two.sorted_index_names) and torch.equal(one.labels, two.labels)
    assert json.loads((tmp_path / "two.json").read_text()) == json.loads((tiny["out"] / "s1.json").read_text())
    assert json.loads((tmp_path / "two_stage2.json").read_text()) == json.loads((tiny["out"] / "s2.json").read_text())


def _models(tiny):
    parser = __import__("argparse").ArgumentParser()
    add_port_args(parser)
    return build_models(parser.parse_args(tiny["args"]), torch.device("cpu"), stage2=True)


def _batch(tiny):
    from common.cir.data import dataset_root, relative_dataset
    from common.transforms import build_preprocess
    dataset = relative_dataset("cirr", dataset_root("cirr", tiny["data"]), "train", build_preprocess("targetpad", 32))
    items = [dataset[i] for i in range(4)]
    return torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items]), [i[2] for i in items]


def test_one_stage1_step_lowers_the_loss_and_keeps_the_vit(tiny):
    models = _models(tiny)
    model = models.stage1.eval()  # dropout off, gradients on
    model.visual_encoder.requires_grad_(False)
    model.vision_proj.requires_grad_(False)
    frozen = {k: v.clone() for k, v in model.state_dict().items() if k.startswith(("visual_encoder", "vision_proj"))}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    dist, batch = init_distributed("cpu"), _batch(tiny)
    losses = []
    for _ in range(4):
        loss, _, _ = stage1_train.stage1_step(batch, None, name="cirr", model=model,
                                              logits_fn=stage1_train.QueryLogits(model), tokenizer=models.tokenizer,
                                              dist=dist, amp=False, chunk=2, img_tune=False)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(model.state_dict()[k], v) for k, v in frozen.items())


def test_one_stage2_step_lowers_the_loss_and_keeps_stage1(tiny):
    models = _models(tiny)
    stage1, stage2 = models.stage1.eval().requires_grad_(False), models.stage2.eval()
    stage2.visual_encoder.requires_grad_(False)
    frozen = {**{"s1." + k: v.clone() for k, v in stage1.state_dict().items()},
              **{k: v.clone() for k, v in stage2.state_dict().items() if k.startswith("visual_encoder")}}
    optimizer = torch.optim.AdamW([p for p in stage2.parameters() if p.requires_grad], lr=1e-3)
    dist, batch = init_distributed("cpu"), _batch(tiny)
    losses = []
    for _ in range(4):
        loss, _, _ = stage2_train.stage2_step(batch, None, name="cirr", stage1=stage1, stage2=stage2,
                                              scores_fn=stage2_train.PairScores(stage2, True),
                                              tokenizer=models.tokenizer, dist=dist, amp=False, chunk=2)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    state = {**{"s1." + k: v for k, v in stage1.state_dict().items()}, **stage2.state_dict()}
    assert all(torch.equal(state[k], v) for k, v in frozen.items())


@pytest.mark.slow
def test_stage2_training_under_torchrun(tiny, cirr_runs, tmp_path):
    _run("stage2_train", ["--dataset", "CIRR", *tiny["args"], "--train", "--num-epochs", "1", "--batch-size", "4",
                          "--validation-frequency", "1", "--save-training", "--output-root", str(tmp_path),
                          "--run-name", "ddp", "--blip-model-path", str(cirr_runs["stage1"]),
                          "--top-k-path", str(cirr_runs["topk"]), "--K-value", "3"], nproc=2)
    checkpoint = torch.load(tmp_path / "models" / "ddp" / "saved_models" / "blip_0.pt", weights_only=True)
    assert set(checkpoint) == {"epoch", "BLIP_NLVR", "optimizer_state_dict"}
