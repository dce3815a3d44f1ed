"""Offline demo of the whole Bi-BLIP4CIR pipeline on the synthetic FashionIQ and CIRR with tiny BLIP weights.

Runs the real scripts on both datasets: validate.py on the untrained model (``baseline_metrics``, the pre-trained
text encoder with the normalised sum), stage I (clip_fine_tune.py), validate.py with the tuned text encoder and the
sum (``metrics``), stage II (combiner_train.py), validate.py with the Combiner (``metrics`` keys ending in
"(combiner)", compared with the same untrained baseline), and finally cirr_test_submission.py.

The backbone is the demo's pre-trained tiny BLIP (``model_base_retrieval_coco.pth``: ITC-trained on a clean
synthetic COCO split of its own), as the paper starts from pre-trained BLIP; the recipe is scaled to it: a higher
learning rate with text_proj at the base rate, fewer epochs, and a small Combiner. The validation splits hold 300
queries each (FashionIQ: 100 per category, galleries of 80; CIRR: 300 images), so the gains are more than noise.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from pathlib import Path

from common.demo import DemoContext, run_script
from common.io import load_torch_file, read_json

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = "bi_blip4cir"
BACKBONE = "model_base_retrieval_coco.pth"
REPORTED = {
    "fiq": ("dress_recall_at10", "toptee_recall_at10", "shirt_recall_at10", "average_recall_at10",
            "average_recall_at50"),
    "cirr": ("recall_at1", "recall_at5", "recall_at10", "group_recall_at1", "group_recall_at2", "mean(R@5+R_s@1)"),
}
DATASETS = {"fiq": "FashionIQ", "cirr": "CIRR"}
STAGE1 = {"fiq": ["--num-epochs", "12", "--batch-size", "32", "--validation-frequency", "3"],
          "cirr": ["--num-epochs", "10", "--batch-size", "32", "--validation-frequency", "1"]}
STAGE2 = {"fiq": ["--num-epochs", "30", "--batch-size", "32", "--validation-frequency", "3"],
          "cirr": ["--num-epochs", "20", "--batch-size", "32", "--validation-frequency", "2"]}
BEST = {"fiq": ("tuned_blip_best.pt", "combiner.pt"), "cirr": ("tuned_blip_mean.pt", "combiner_mean.pt")}


@functools.cache
def tiny_sizes(weights: Path) -> tuple[int, int]:
    """(image size, feature width) of the tiny BLIP in ``weights``, read once from its position grid and
    ``vision_proj``."""
    state = load_torch_file(weights / BACKBONE)["model"]
    patch = read_json(weights / "vit_config.json")["patch_size"]
    image_size = math.isqrt(state["visual_encoder.pos_embed"].shape[1] - 1) * patch
    return image_size, state["vision_proj.weight"].shape[0]


def model_args(ctx: DemoContext) -> list[str]:
    """Flags that point the scripts at the synthetic data and the tiny BLIP, on CPU without loader workers."""
    weights = ctx.weights
    image_size, _ = tiny_sizes(weights)
    return ["--data-root", str(ctx.data), "--blip-pretrained-path", str(weights / BACKBONE),
            "--med-config-path", str(weights / "med_config.json"), "--vit-config", str(weights / "vit_config.json"),
            "--tokenizer", str(weights / "tokenizer"), "--input-dim", str(image_size), "--num-workers", "0",
            "--device", "cpu"]


def combiner_args(ctx: DemoContext) -> list[str]:
    """A small Combiner on the tiny checkpoint's feature width."""
    _, width = tiny_sizes(ctx.weights)
    return ["--feature-dim", str(width), "--projection-dim", "64", "--hidden-dim", "128"]


def validate(ctx: DemoContext, out: Path, key: str, label: str, extra: list[str], suffix: str = "") -> dict:
    """Run validate.py and return the reported metrics as ``<fiq|cirr>_<metric><suffix>``."""
    path = out / f"metrics_{label}_{key}.json"
    argv = [f"{SCRIPTS}/validate.py", "--dataset", DATASETS[key], *model_args(ctx), "--metrics-json", str(path), *extra]
    run_script(ctx, argv, cwd=REPO, log=out / "logs" / f"validate_{label}_{key}.log")
    metrics = json.loads(path.read_text())
    return {f"{key}_{name}{suffix}": metrics[name] for name in REPORTED[key]}


def train(ctx: DemoContext, out: Path, key: str) -> tuple[list[str], Path, Path]:
    """Stage I then stage II on one dataset; returns the stage-I command and the two selected checkpoints."""
    stage1 = [f"{SCRIPTS}/clip_fine_tune.py", "--dataset", DATASETS[key], *model_args(ctx), *STAGE1[key],
              "--blip-learning-rate", "1e-3", "--text-proj-lr-factor", "1", "--blip-max-epoch", "100",
              "--save-training", "--save-best",
              "--output-root", str(out), "--run-name", f"stage1_{key}"]
    run_script(ctx, stage1, cwd=REPO, log=out / "logs" / f"stage1_{key}.log")
    text_encoder = out / "models" / f"stage1_{key}" / "saved_models" / BEST[key][0]
    stage2 = [f"{SCRIPTS}/combiner_train.py", "--dataset", DATASETS[key], *model_args(ctx), *STAGE2[key],
              *combiner_args(ctx), "--blip-model-path", str(text_encoder), "--combiner-lr", "1e-3",
              "--save-training", "--save-best",
              "--output-root", str(out), "--run-name", f"stage2_{key}"]
    run_script(ctx, stage2, cwd=REPO, log=out / "logs" / f"stage2_{key}.log")
    return stage1, text_encoder, out / "models" / f"stage2_{key}" / "saved_models" / BEST[key][1]


def run(ctx: DemoContext) -> dict:
    start = time.perf_counter()
    # Tiny tensors gain nothing from intra-op threads, and on busy cores extra threads cost up to 10x.
    ctx = dataclasses.replace(ctx, env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **ctx.env})
    out = ctx.paper_dir("bi_blip4cir")
    ctx.clear(out / "models", out / "submission", out / "report")  # a second run must not read the first one's files
    baseline, metrics, outputs, commands, trained = {}, {}, {}, {}, {}
    for key in DATASETS:
        untrained = validate(ctx, out, key, "baseline", ["--combining-function", "sum"])
        baseline.update({**untrained, **{f"{name} (combiner)": value for name, value in untrained.items()}})
        commands[key], text_encoder, combiner = train(ctx, out, key)
        stage1 = ["--blip-model-path", str(text_encoder)]
        trained[key] = [*stage1, "--combiner-path", str(combiner), *combiner_args(ctx)]
        metrics.update(validate(ctx, out, key, "stage1", ["--combining-function", "sum", *stage1]))
        report = ["--report", str(out / "report" / key), "--report-queries", "12"]
        metrics.update(validate(ctx, out, key, "stage2", ["--combining-function", "combiner", *trained[key], *report],
                                suffix=" (combiner)"))
        outputs[f"{key} retrieval report (stage II)"] = str(out / "report" / key / "index.html")
        outputs.update({f"{key} text encoder (stage I)": str(text_encoder), f"{key} combiner (stage II)": str(combiner),
                        f"{key} training curves (stage I)": str(text_encoder.parent.parent / "training_curves.png")})

    submission = [f"{SCRIPTS}/cirr_test_submission.py", "--submission-name", "demo", "--combining-function",
                  "combiner", *trained["cirr"], *model_args(ctx), "--output-root", str(out)]
    run_script(ctx, submission, cwd=REPO, log=out / "logs" / "cirr_test_submission.log")
    folder = out / "submission" / "CIRR"
    outputs.update({"CIRR recall submission": str(folder / "recall_submission_demo.json"),
                    "CIRR recall_subset submission": str(folder / "recall_subset_submission_demo.json")})
    return {"command": commands["fiq"], "metrics": metrics, "baseline_metrics": baseline, "outputs": outputs,
            "seconds": time.perf_counter() - start}
