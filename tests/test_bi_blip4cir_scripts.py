"""The four Bi-BLIP4CIR scripts end to end on tiny synthetic data, plus the pieces they share.

Scripts run as subprocesses exactly as a user runs them (``python bi_blip4cir/<script>.py``), one process and
under torchrun. Module-scoped fixtures reuse the runs across tests.
"""
import csv
import dataclasses
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bi_blip4cir import cirr_test_submission, clip_fine_tune, combiner_train, validate
from bi_blip4cir.features import encode_image_table
from bi_blip4cir.models import TEXT_ENCODER_KEY, load_evaluation_models, load_text_encoder
from bi_blip4cir.losses import bidirectional_loss, stage1_logits
from bi_blip4cir.prompts import insert_marker
from common.cir.args import preprocess_from_args
from common.cir.combiner import Combiner
from common.cir.data import classic_dataset, dataset_root
from common.data.images import open_image
from common.blip import BlipImageEncoder, BlipTextEncoder, build_blip_tokenizer
from common.blip.config import ViTConfig
from common.blip.tiny import write_tiny_blip_checkpoint, write_tiny_blip_files
from common.cirr_submission import validate_cirr_submission
from common import runtime
from common.io import CheckpointError, atomic_write_json
from common.synthetic.scenes import vocabulary
from common.synthetic.writers import write_cirr, write_fashioniq
from common.training.checkpoint import load_model, save_model

REPO = Path(__file__).resolve().parent.parent
VIT = ViTConfig(patch_size=8, width=32, depth=1, heads=2)
TIMESTAMP = r"\d{4}-\d\d-\d\d_\d\d:\d\d:\d\d"
FIQ_COLUMNS = ["epoch", "dress_recall_at10", "dress_recall_at50", "toptee_recall_at10", "toptee_recall_at50",
               "shirt_recall_at10", "shirt_recall_at50", "average_recall_at10", "average_recall_at50", "average_recall"]
CIRR_COLUMNS = ["epoch", "group_recall_at1", "group_recall_at2", "group_recall_at3", "recall_at1", "recall_at5",
                "recall_at10", "recall_at50", "mean(R@5+R_s@1)", "arithmetic_mean", "harmonic_mean", "geometric_mean"]
STAGE1_KEYS = {"num_epochs", "blip_pretrained_path", "med_config_path", "blip_learning_rate", "blip_max_epoch",
               "blip_min_lr", "batch_size", "validation_frequency", "transform", "input_dim", "target_ratio",
               "save_training", "save_best"}
STAGE2_KEYS = {"projection_dim", "hidden_dim", "num_epochs", "blip_pretrained_path", "med_config_path",
               "blip_model_path", "combiner_lr", "batch_size", "blip_bs", "validation_frequency", "transform",
               "input_dim", "feature_dim", "target_ratio", "save_training", "save_best", "num_workers"}
COMBINER = ["--feature-dim", "16", "--projection-dim", "32", "--hidden-dim", "64"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """Synthetic FashionIQ/CIRR and a tiny BLIP in the released formats; ``args`` point the scripts at them."""
    root = tmp_path_factory.mktemp("bi_blip4cir")
    data, weights = root / "data", root / "weights"
    write_fashioniq(data, {"train": 12, "val": 8, "test": 4}, {"train": 8, "val": 6, "test": 2}, seed=0)
    write_cirr(data, {"train": 4, "val": 2, "test1": 9}, 3, seed=0)
    blip = write_tiny_blip_files(weights, VIT, extra_words=vocabulary())
    args = ["--data-root", str(data), *blip.flags(), "--num-workers", "0", "--device", "cpu"]
    return {"root": root, "out": root / "out", "med": blip.med, "tokenizer": build_blip_tokenizer(blip.tokenizer),
            "args": args}


def run(script: str, *argv: str, torchrun: int = 0) -> str:
    """Run a script as a user would, from the repository root; fail with its output."""
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"] if torchrun else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLR_NO_PROGRESS": "1"}
    result = subprocess.run([sys.executable, *launcher, f"bi_blip4cir/{script}.py", *argv], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames), list(reader)


def train(module, tiny: dict, *argv: str) -> None:
    """Run a training script's ``main`` in this process (as ``run`` does in a fresh one, without the start-up)."""
    module.main(["--dataset", *argv[:1], *tiny["args"], "--output-root", str(tiny["out"]), *argv[1:]])


def assert_same_run(run_dir: Path, expected_dir: Path, checkpoint: str, key: str, rel: float = 1e-6,
                    ignore: str | None = None) -> None:
    """Both runs logged the same epochs and metrics and saved the same weights in ``checkpoint`` (but the
    parameters whose name contains ``ignore``)."""
    for name in ("train_metrics.csv", "validation_metrics.csv"):
        columns, rows = read_csv(run_dir / name)
        expected_columns, expected_rows = read_csv(expected_dir / name)
        assert columns == expected_columns and len(rows) == len(expected_rows) > 0, name
        for row, expected in zip(rows, expected_rows):
            assert {k: float(v) for k, v in row.items()} == pytest.approx(
                {k: float(v) for k, v in expected.items()}, rel=rel, abs=1e-6), name
    payload = torch.load(run_dir / "saved_models" / checkpoint, weights_only=True)
    expected = torch.load(expected_dir / "saved_models" / checkpoint, weights_only=True)
    assert payload["epoch"] == expected["epoch"] and list(payload[key]) == list(expected[key])
    for name, value in expected[key].items():
        if ignore is None or ignore not in name:
            torch.testing.assert_close(payload[key][name], value, rtol=rel * 10, atol=1e-6, msg=name)


def stage1(tiny: dict, dataset: str, *extra: str) -> str:
    """Run stage I with a small recipe into ``tiny['out']/models``; returns the output."""
    return run("clip_fine_tune", "--dataset", dataset, *tiny["args"], "--batch-size", "4",
               "--blip-learning-rate", "1e-3", "--text-proj-lr-factor", "1", "--output-root", str(tiny["out"]), *extra)


@pytest.fixture(scope="module")
def fiq_stage1(tiny) -> Path:
    """Stage I on FashionIQ for 2 epochs with the original timestamped run folder."""
    stage1(tiny, "FashionIQ", "--num-epochs", "2", "--save-training", "--save-best")
    runs = list((tiny["out"] / "models").glob("blip_text_finetuned_on_fiq_*"))
    assert len(runs) == 1
    return runs[0]


@pytest.fixture(scope="module")
def fiq_stage2(tiny, fiq_stage1) -> Path:
    run("combiner_train", "--dataset", "fashionIQ", *tiny["args"], *COMBINER, "--batch-size", "4",
        "--num-epochs", "2", "--combiner-lr", "1e-3", "--validation-frequency", "1", "--save-training",
        "--save-best", "--blip-model-path", str(fiq_stage1 / "saved_models" / "tuned_blip_best.pt"),
        "--output-root", str(tiny["out"]))
    runs = list((tiny["out"] / "models").glob("combiner_trained_on_fiq_BLIPImgTxt_*"))
    assert len(runs) == 1
    return runs[0]


@pytest.mark.slow
def test_stage1_fashioniq_outputs(fiq_stage1):
    assert re.fullmatch(f"blip_text_finetuned_on_fiq_{TIMESTAMP}", fiq_stage1.name)
    params = json.loads((fiq_stage1 / "training_hyperparameters.json").read_text())
    assert STAGE1_KEYS <= set(params) and params["train_dress_types"] == ["dress", "toptee", "shirt"]
    assert params["loss_r_weight"] == 0.4 and params["num_epochs"] == 2
    columns, rows = read_csv(fiq_stage1 / "train_metrics.csv")
    assert columns == ["epoch", "train_epoch_loss"] and [r["epoch"] for r in rows] == ["0", "1"]
    columns, rows = read_csv(fiq_stage1 / "validation_metrics.csv")
    assert columns == FIQ_COLUMNS and len(rows) == 2
    assert sorted(p.name for p in (fiq_stage1 / "saved_models").iterdir()) == ["tuned_blip_best.pt",
                                                                               "tuned_blip_last.pt"]
    assert (fiq_stage1 / "training_curves.png").stat().st_size > 1000
    payload = torch.load(fiq_stage1 / "saved_models" / "tuned_blip_last.pt", weights_only=True)
    assert sorted(payload) == ["BLIPTextEncoder", "epoch", "optimizer_state_dict"] and payload["epoch"] == 1


@pytest.mark.slow
def test_saved_text_encoder_loads_strictly(tiny, fiq_stage1):
    encoder = BlipTextEncoder(tiny["med"], tiny["tokenizer"], embed_dim=16, encoder_width=VIT.width)
    epoch = load_text_encoder(fiq_stage1 / "saved_models" / "tuned_blip_last.pt", encoder, trusted=False)
    assert epoch == 1
    saved = torch.load(fiq_stage1 / "saved_models" / "tuned_blip_last.pt", weights_only=True)[TEXT_ENCODER_KEY]
    assert all(torch.equal(encoder.state_dict()[key], value) for key, value in saved.items())


def test_released_layout_round_trip(tiny, tmp_path):
    """A released-style file (no optimizer state) loads strictly; ours keeps the key set; a missing key raises."""
    encoder = BlipTextEncoder(tiny["med"], tiny["tokenizer"], embed_dim=16, encoder_width=VIT.width)
    state = encoder.state_dict()
    assert "text_encoder.embeddings.position_ids" in state and "text_proj.weight" in state
    assert "text_encoder.encoder.layer.0.crossattention.self.key.weight" in state
    assert not any("token_type" in key for key in state)
    torch.save({"epoch": 7, TEXT_ENCODER_KEY: state}, tmp_path / "released.pt")
    fresh = BlipTextEncoder(tiny["med"], tiny["tokenizer"], embed_dim=16, encoder_width=VIT.width)
    assert load_text_encoder(tmp_path / "released.pt", fresh, trusted=False) == 7
    assert all(torch.equal(fresh.state_dict()[key], value) for key, value in state.items())

    ours = save_model("tuned_blip_best", 3, fresh, tmp_path, torch.optim.AdamW(fresh.parameters()),
                      key=TEXT_ENCODER_KEY)
    payload = torch.load(ours, weights_only=True)
    assert sorted(payload) == ["BLIPTextEncoder", "epoch", "optimizer_state_dict"]
    assert list(payload[TEXT_ENCODER_KEY]) == list(state)

    del state["text_proj.bias"]
    torch.save({"epoch": 7, TEXT_ENCODER_KEY: state}, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="missing.*text_proj.bias"):
        load_text_encoder(tmp_path / "broken.pt", fresh, trusted=False)


def test_stage1_step_lowers_loss(tiny):
    """A few stage-I steps on a fixed batch lower the loss; cross-attention (never run in text mode) stays put."""
    torch.manual_seed(0)
    encoder = BlipTextEncoder(tiny["med"], tiny["tokenizer"], embed_dim=16, encoder_width=VIT.width)
    captions = [" [FORWARD] make the circle red", " [FORWARD] remove the square", " [FORWARD] add a blue circle",
                " [FORWARD] make the background white"]
    reversed_captions = [c.replace("FORWARD", "BACKWARD") for c in captions]
    reference, target = torch.randn(2, 4, 16).unbind(0)
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-3, weight_decay=0.05)
    before = {name: p.detach().clone() for name, p in encoder.named_parameters()}

    def loss() -> torch.Tensor:
        features = encoder(captions + reversed_captions)
        return bidirectional_loss(*stage1_logits(reference, *features.split(4), target), 0.4)[0]

    encoder.eval()
    initial = loss().item()
    encoder.train()
    for _ in range(10):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    encoder.eval()
    assert loss().item() < 0.7 * initial
    changed = {name for name, p in encoder.named_parameters() if not torch.equal(p, before[name])}
    assert "text_proj.weight" in changed and "text_encoder.encoder.layer.1.output.dense.weight" in changed
    assert not any("crossattention" in name for name in changed)


@pytest.mark.slow
def test_stage1_cirr_resume_continues_from_saved_epoch(tiny, caplog):
    """An interrupted run resumed with --resume repeats no epoch and ends where an uninterrupted run ends."""
    models = tiny["out"] / "models"
    recipe = ["--batch-size", "4", "--blip-learning-rate", "1e-3", "--text-proj-lr-factor", "1", "--save-training"]
    train(clip_fine_tune, tiny, "CIRR", *recipe, "--num-epochs", "1", "--run-name", "cut")
    assert sorted(p.name for p in (models / "cut" / "saved_models").iterdir()) == ["tuned_blip_0.pt",
                                                                                  "tuned_blip_last.pt"]
    columns, _ = read_csv(models / "cut" / "validation_metrics.csv")
    assert columns == CIRR_COLUMNS
    caplog.clear()
    with caplog.at_level(logging.INFO):
        train(clip_fine_tune, tiny, "CIRR", *recipe, "--num-epochs", "2", "--resume", str(models / "cut"))
    assert "epoch 0:" not in caplog.text and "epoch 1:" in caplog.text
    train(clip_fine_tune, tiny, "CIRR", *recipe, "--num-epochs", "2", "--run-name", "whole")
    _, resumed = read_csv(models / "cut" / "train_metrics.csv")
    assert [r["epoch"] for r in resumed] == ["0", "1"]
    assert_same_run(models / "cut", models / "whole", "tuned_blip_1.pt", TEXT_ENCODER_KEY)


@pytest.mark.slow
def test_stage2_fashioniq_and_validate_reproduce_training_metrics(tiny, fiq_stage1, fiq_stage2):
    assert re.fullmatch(f"combiner_trained_on_fiq_BLIPImgTxt_{TIMESTAMP}", fiq_stage2.name)
    params = json.loads((fiq_stage2 / "training_hyperparameters.json").read_text())
    assert STAGE2_KEYS <= set(params) and params["loss_r_weight"] == 0.5
    assert sorted(p.name for p in (fiq_stage2 / "saved_models").iterdir()) == ["combiner.pt", "combiner_last.pt"]
    payload = torch.load(fiq_stage2 / "saved_models" / "combiner_last.pt", weights_only=True)
    assert sorted(payload) == ["Combiner", "epoch", "optimizer_state_dict"]

    metrics_path = tiny["root"] / "validate_fiq.json"
    output = run("validate", "--dataset", "fashionIQ", "--combining-function", "combiner", *tiny["args"], *COMBINER,
                 "--blip-model-path", str(fiq_stage1 / "saved_models" / "tuned_blip_best.pt"),
                 "--combiner-path", str(fiq_stage2 / "saved_models" / "combiner_last.pt"),
                 "--metrics-json", str(metrics_path))
    assert re.search(r"shirt_recallat10 = [\d.]+\nshirt_recallat50", output) and "average recall50 = " in output
    metrics = json.loads(metrics_path.read_text())
    _, rows = read_csv(fiq_stage2 / "validation_metrics.csv")
    assert metrics == pytest.approx({key: float(value) for key, value in rows[-1].items() if key != "epoch"})


@pytest.mark.slow
def test_stage2_cache_gives_the_losses_of_re_encoding(tiny):
    """CIRR stage II with the feature tables and with per-step encoding (the original) give the same run."""
    models = tiny["out"] / "models"
    common = ["--dataset", "CIRR", *tiny["args"], *COMBINER, "--batch-size", "4", "--num-epochs", "2",
              "--validation-frequency", "1", "--combiner-lr", "1e-3", "--output-root", str(tiny["out"])]
    combiner_train.main([*common, "--run-name", "cached"])
    combiner_train.main([*common, "--run-name", "encoded", "--no-feature-cache"])
    for name in ("train_metrics.csv", "validation_metrics.csv"):
        _, cached = read_csv(models / "cached" / name)
        _, encoded = read_csv(models / "encoded" / name)
        assert len(cached) == 2
        for row_cached, row_encoded in zip(cached, encoded):
            assert {k: float(v) for k, v in row_cached.items()} == pytest.approx(
                {k: float(v) for k, v in row_encoded.items()}, rel=1e-4, abs=1e-4)


def submission_scores(tiny: dict, argv: list[str]) -> tuple[list[dict], list[str], torch.Tensor]:
    """The test1 queries, gallery names and [Q, N] scores of the model ``argv`` names, computed here image by image
    from the caption file (not through the script's query sets)."""
    args = cirr_test_submission.build_parser().parse_args(argv)
    image_encoder, text_encoder, combine = load_evaluation_models(args, torch.device("cpu"))
    root = tiny["root"] / "data" / "cirr_dataset"
    queries = json.loads((root / "cirr" / "captions" / "cap.rc2.test1.json").read_text())
    paths = json.loads((root / "cirr" / "image_splits" / "split.rc2.test1.json").read_text())
    names, preprocess = list(paths), preprocess_from_args(args)
    with torch.no_grad():
        gallery = torch.cat([image_encoder(preprocess(open_image(root / path))[None]) for path in paths.values()])
        references = gallery[[names.index(query["reference"]) for query in queries]]
        texts = text_encoder([insert_marker(query["caption"], True) for query in queries])
        predicted = torch.nn.functional.normalize(combine(references, texts), dim=-1)
    return queries, names, predicted @ torch.nn.functional.normalize(gallery, dim=-1).T


def assert_top_in_order(listed: list[str], candidates: list[str], scores: dict[str, float], length: int) -> None:
    """``listed`` holds the ``length`` best-scored ``candidates`` in descending score order (ties within 1e-6)."""
    assert len(listed) == length and set(listed) <= set(candidates)
    values = [scores[name] for name in listed]
    assert all(a >= b - 1e-6 for a, b in zip(values, values[1:])), values
    rest = [scores[name] for name in candidates if name not in listed]
    assert not rest or min(values) >= max(rest) - 1e-6


@pytest.mark.slow
def test_cirr_submission_lists_each_querys_own_ranking(tiny, tmp_path):
    """Per pairid: the top 50 of that query's scores without its reference, and its top 3 among its other set
    members, in score order; lists handed to other pairids fail."""
    combiner = tmp_path / "combiner.pt"
    torch.manual_seed(0)
    torch.save({"epoch": 0, "Combiner": Combiner(16, 32, 64).state_dict()}, combiner)
    argv = ["--submission-name", "tiny", "--combining-function", "combiner", *tiny["args"], *COMBINER,
            "--combiner-path", str(combiner), "--output-root", str(tmp_path)]
    output = run("cirr_test_submission", *argv)
    folder = tmp_path / "submission" / "CIRR"
    queries, names, scores = submission_scores(tiny, argv)
    pairids = [query["pairid"] for query in queries]
    assert validate_cirr_submission(folder / "recall_submission_tiny.json", pairids, list_length=50) == {
        "metric": "recall", "num_queries": 27}
    assert validate_cirr_submission(folder / "recall_subset_submission_tiny.json", pairids)["num_queries"] == 27
    assert "27 queries" in output
    recall = json.loads((folder / "recall_submission_tiny.json").read_text())
    subset = json.loads((folder / "recall_subset_submission_tiny.json").read_text())
    assert list(subset)[-2:] == ["metric", "version"] and len(names) == 54
    for query, row in zip(queries, scores.tolist()):
        by_name = dict(zip(names, row))
        reference, members = query["reference"], query["img_set"]["members"]
        assert reference in members and reference not in recall[str(query["pairid"])]
        assert_top_in_order(recall[str(query["pairid"])], [n for n in names if n != reference], by_name, 50)
        assert_top_in_order(subset[str(query["pairid"])], [n for n in members if n != reference], by_name, 3)


@pytest.mark.slow
def test_validate_cache_dir_skips_the_image_encoder_for_the_same_checkpoint(tiny, tmp_path, monkeypatch):
    """A second validate.py with the same checkpoint reads the cached gallery (no image encoded) and gives the same
    metrics; another checkpoint gets its own entry."""
    encoded = []
    forward = BlipImageEncoder.forward
    monkeypatch.setattr(BlipImageEncoder, "forward", lambda self, images: encoded.append(len(images)) or
                        forward(self, images))
    other = tmp_path / "other_model_base.pth"
    write_tiny_blip_checkpoint(other, image_size=32, vit=VIT, med=tiny["med"], layout="pretrain", seed=1)

    def validate_cirr(*extra: str) -> dict:
        encoded.clear()
        return validate.main(["--dataset", "CIRR", "--combining-function", "sum", *tiny["args"], "--cache-dir",
                              str(tmp_path / "cache"), "--metrics-json", str(tmp_path / "metrics.json"), *extra])

    first = validate_cirr()
    assert sum(encoded) == 12  # the 2 val sets of 6 images
    assert validate_cirr() == first and encoded == []
    entries = set((tmp_path / "cache").glob("features_*.pt"))
    assert len(entries) == 1
    validate_cirr("--blip-pretrained-path", str(other))
    assert sum(encoded) == 12 and len(set((tmp_path / "cache").glob("features_*.pt")) - entries) == 1


@pytest.mark.slow
def test_stage1_fashioniq_resume_continues_the_caption_draws(tiny, fiq_stage1):
    """FashionIQ stage I stopped after epoch 0 and resumed equals the uninterrupted run (fixture): same losses,
    recalls and weights, so the shuffle and the caption draws of epoch 1 continue their streams."""
    models = tiny["out"] / "models"
    recipe = ["--batch-size", "4", "--blip-learning-rate", "1e-3", "--text-proj-lr-factor", "1", "--save-training",
              "--save-best"]
    train(clip_fine_tune, tiny, "FashionIQ", *recipe, "--num-epochs", "1", "--run-name", "fiq_cut")
    train(clip_fine_tune, tiny, "FashionIQ", *recipe, "--num-epochs", "2", "--resume", str(models / "fiq_cut"))
    # the fixture ran in a fresh process and this run in the test's: the key bias, whose true gradient is 0, then
    # follows different float noise (AdamW scales it to full steps), so it is left out as in the torchrun test
    for checkpoint in ("tuned_blip_last.pt", "tuned_blip_best.pt"):
        assert_same_run(models / "fiq_cut", fiq_stage1, checkpoint, TEXT_ENCODER_KEY, ignore="attention.self.key.bias")


@pytest.mark.slow
def test_stage2_resume_equals_the_uninterrupted_run(tiny):
    models = tiny["out"] / "models"
    recipe = [*COMBINER, "--batch-size", "4", "--combiner-lr", "1e-3", "--validation-frequency", "1",
              "--save-training"]
    train(combiner_train, tiny, "CIRR", *recipe, "--num-epochs", "2", "--run-name", "s2_whole")
    train(combiner_train, tiny, "CIRR", *recipe, "--num-epochs", "1", "--run-name", "s2_cut")
    assert not (models / "s2_cut" / "saved_models" / "combiner_1.pt").exists()
    train(combiner_train, tiny, "CIRR", *recipe, "--num-epochs", "2", "--resume", str(models / "s2_cut"))
    assert_same_run(models / "s2_cut", models / "s2_whole", "combiner_last.pt", "Combiner")
    assert_same_run(models / "s2_cut", models / "s2_whole", "combiner_0.pt", "Combiner")


@pytest.mark.slow
def test_stage1_torchrun_equals_one_process(tiny, tmp_path):
    """Two gloo processes on batches of all 12 CIRR triplets (6 each), text-encoder dropout off, log the losses
    and recalls and save the weights of one process: each process scores its rows against its own positives among
    the gathered targets, and the gradients are averaged."""
    med = tmp_path / "med_config_no_dropout.json"
    atomic_write_json({**dataclasses.asdict(tiny["med"]), "hidden_dropout_prob": 0.0,
                       "attention_probs_dropout_prob": 0.0}, med)
    argv = ["--dataset", "CIRR", *tiny["args"], "--med-config-path", str(med), "--blip-learning-rate", "1e-3",
            "--batch-size", "12", "--num-epochs", "2", "--save-training", "--output-root", str(tiny["out"])]
    run("clip_fine_tune", *argv, "--run-name", "s1_ddp", torchrun=2)
    clip_fine_tune.main([*argv, "--run-name", "s1_one"])
    run_dir = tiny["out"] / "models" / "s1_ddp"
    assert json.loads((run_dir / "training_hyperparameters.json").read_text())["world_size"] == 2
    # the key bias gets a gradient of exactly 0 (softmax ignores a shift shared by all keys), i.e. float noise
    # that AdamW scales up to full steps of either sign
    assert_same_run(run_dir, tiny["out"] / "models" / "s1_one", "tuned_blip_last.pt", TEXT_ENCODER_KEY, rel=1e-5,
                    ignore="attention.self.key.bias")


@pytest.mark.slow
def test_stage2_under_torchrun(tiny):
    """Stage II on two gloo processes: one run folder written once, every epoch logged, the Combiner trained and
    saved in the released layout (the Combiner's dropout makes the losses differ from one process; the equality
    of one step is tests/test_bi_blip4cir_dist.py)."""
    run("combiner_train", "--dataset", "CIRR", *tiny["args"], *COMBINER, "--batch-size", "4", "--num-epochs", "2",
        "--validation-frequency", "1", "--combiner-lr", "1e-3", "--save-training", "--output-root", str(tiny["out"]),
        "--run-name", "s2_ddp", torchrun=2)
    run_dir = tiny["out"] / "models" / "s2_ddp"
    assert json.loads((run_dir / "training_hyperparameters.json").read_text())["world_size"] == 2
    _, rows = read_csv(run_dir / "train_metrics.csv")
    assert [r["epoch"] for r in rows] == ["0", "1"]
    columns, rows = read_csv(run_dir / "validation_metrics.csv")
    assert columns == CIRR_COLUMNS and len(rows) == 2
    assert sorted(p.name for p in (run_dir / "saved_models").iterdir()) == ["combiner_0.pt", "combiner_1.pt",
                                                                           "combiner_last.pt"]
    first, last = Combiner(16, 32, 64), Combiner(16, 32, 64)
    assert load_model(run_dir / "saved_models" / "combiner_0.pt", first)["epoch"] == 0
    assert load_model(run_dir / "saved_models" / "combiner_last.pt", last)["epoch"] == 1
    assert not torch.equal(first.output_layer.weight, last.output_layer.weight)  # epoch 1 trained it


@pytest.mark.parametrize("module, flags", [
    (clip_fine_tune, ["--dataset", "--api-key", "--workspace", "--experiment-name", "--blip-pretrained-path",
                      "--med-config-path", "--num-epochs", "--blip-learning-rate", "--batch-size", "--blip-min-lr",
                      "--blip-max-epoch", "--target-ratio", "--transform", "--input-dim", "--validation-frequency",
                      "--save-training", "--save-best"]),
    (combiner_train, ["--dataset", "--num_workers", "--api-key", "--workspace", "--experiment-name",
                      "--blip-pretrained-path", "--med-config-path", "--num-epochs", "--combiner-lr", "--batch-size",
                      "--feature-dim", "--projection-dim", "--hidden-dim", "--blip-model-path", "--blip-bs",
                      "--target-ratio", "--transform", "--input-dim", "--validation-frequency", "--save-training",
                      "--save-best"]),
    (validate, ["--dataset", "--combining-function", "--blip-pretrained-path", "--med-config-path",
                "--combiner-path", "--projection-dim", "--hidden-dim", "--blip-model-path", "--target-ratio",
                "--transform", "--input-dim", "--feature-dim"]),
    (cirr_test_submission, ["--submission-name", "--combining-function", "--blip-pretrained-path",
                            "--med-config-path", "--combiner-path", "--projection-dim", "--hidden-dim",
                            "--blip-model-path", "--target-ratio", "--transform", "--input-dim", "--feature-dim"]),
])
def test_original_flags_are_listed_and_explained(module, flags):
    parser = module.build_parser()
    options = {option: action for action in parser._actions for option in action.option_strings}
    assert set(flags) <= set(options)
    assert all(action.help for action in parser._actions)
    assert "--num-workers" in options and options["--num-workers"].dest == "num_workers"


def test_original_defaults(monkeypatch):
    monkeypatch.setattr(runtime, "available_cpus", lambda: 64)  # worker defaults are capped at the machine's cores
    stage1_args = clip_fine_tune.build_parser().parse_args(["--dataset", "cirr"])
    assert (stage1_args.dataset, stage1_args.num_epochs, stage1_args.blip_learning_rate, stage1_args.batch_size,
            stage1_args.blip_max_epoch, stage1_args.num_workers, stage1_args.text_proj_lr_factor) == (
        "cirr", 300, 1e-5, 512, 10, 8, 100)
    stage2_args = combiner_train.build_parser().parse_args(["--dataset", "FashionIQ"])
    assert (stage2_args.batch_size, stage2_args.projection_dim, stage2_args.hidden_dim, stage2_args.combiner_lr,
            stage2_args.validation_frequency, stage2_args.num_workers, stage2_args.blip_bs) == (
        1024, 2560, 5120, 2e-5, 3, 4, 32)
    with pytest.raises(SystemExit):
        clip_fine_tune.build_parser().parse_args(["--dataset", "shoes"])
    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    assert clip_fine_tune.build_parser().parse_args(["--dataset", "cirr"]).num_workers == 2


def test_unreadable_image_names_the_file(tmp_path):
    """The original printed and dropped a failing sample; here the error names the file."""
    write_cirr(tmp_path, {"train": 1, "val": 2, "test1": 9}, 1, seed=0)
    broken = next((tmp_path / "cirr_dataset" / "train").rglob("*.png"))
    broken.write_bytes(b"not a png")
    args = combiner_train.build_parser().parse_args(["--dataset", "CIRR", "--input-dim", "32", "--num-workers", "0"])
    images = classic_dataset("cirr", dataset_root("cirr", tmp_path), "train", preprocess_from_args(args))
    with pytest.raises(OSError, match=re.escape(str(broken))):
        encode_image_table(torch.nn.Identity(), images, torch.device("cpu"), args)
