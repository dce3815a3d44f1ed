"""Offline demo of the whole MLCL pipeline on the synthetic FashionIQ, Shoes and CIRR with the tiny CLIP (RN).

Runs the real scripts: prepare_shoes_data.py on the raw Shoes layout; validate.py with the untrained CLIP and the
element-wise sum on each dataset (``baseline_metrics``); stage 1 (clip_fine_tune.py, ``--encoder both``) once on
FashionIQ; stage 2 (combiner_train.py) on each dataset from the tuned CLIP; validate.py with each trained Combiner
(``metrics``); and finally cirr_test_submission.py. Two scripts run at a time (one thread each).

The tiny CLIP has random weights (its image features of different images are almost parallel), so the recipe is
scaled to it: stage 1 trains both encoders at a higher learning rate, then a small Combiner trains for a few epochs.
Headline metrics (``headline_metrics``): FashionIQ average R@10, Shoes R@10 and the CIRR arithmetic mean.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common.demo import DemoContext, run_script

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = "mlcl"
DATASETS = {"fiq": "FashionIQ", "shoes": "Shoes", "cirr": "CIRR"}
REPORTED = {
    "fiq": ("dress_recall_at10", "toptee_recall_at10", "shirt_recall_at10", "average_recall_at10"),
    "shoes": ("recall_at1", "recall_at10"),
    "cirr": ("recall_at1", "recall_at5", "recall_at10", "group_recall_at1", "group_recall_at2", "arithmetic_mean"),
}
HEADLINE = {"fiq": "average_recall_at10", "shoes": "recall_at10", "cirr": "arithmetic_mean"}
STAGE1 = ["--num-epochs", "4", "--batch-size", "16", "--learning-rate", "1e-3", "--encoder", "both"]
STAGE2 = ["--num-epochs", "12", "--batch-size", "16", "--combiner-lr", "2e-3", "--loss-weight-lr", "1e-3"]
COMBINER = ["--projection-dim", "64", "--hidden-dim", "128"]
BEST = {"fiq": "combiner.pt", "shoes": "combiner_best.pt", "cirr": "combiner_arithmetic.pt"}
PARALLEL_SCRIPTS = 2


def model_args(ctx: DemoContext) -> list[str]:
    """Flags that point the scripts at the synthetic data and the tiny CLIP, on CPU without loader workers."""
    return ["--data-root", str(ctx.data), "--clip-model-name", str(ctx.weights / "clip_rn.pt"), "--num-workers", "0",
            "--device", "cpu"]


def validate(ctx: DemoContext, out: Path, key: str, label: str, extra: list[str]) -> dict:
    """Run validate.py and return the reported metrics as ``<dataset>_<metric>``."""
    path = out / f"metrics_{label}_{key}.json"
    argv = [f"{SCRIPTS}/validate.py", "--dataset", DATASETS[key], *model_args(ctx), "--metrics-json", str(path),
            *extra]
    run_script(ctx, argv, cwd=REPO, log=out / "logs" / f"validate_{label}_{key}.log")
    metrics = json.loads(path.read_text())
    return {f"{key}_{name}": metrics[name] for name in REPORTED[key]}


def stage1(ctx: DemoContext, out: Path) -> tuple[list[str], Path]:
    """Stage 1 once (both encoders, FashionIQ); its CLIP feeds the three stage-2 runs."""
    argv = [f"{SCRIPTS}/clip_fine_tune.py", "--dataset", "FashionIQ", *model_args(ctx), *STAGE1, "--save-training",
            "--save-best", "--no-resume-state", "--output-root", str(out), "--run-name", "stage1_fiq"]
    run_script(ctx, argv, cwd=REPO, log=out / "logs" / "stage1_fiq.log")
    return argv, out / "models-finetune" / "stage1_fiq" / "saved_models" / "tuned_clip_best.pt"


def stage2(ctx: DemoContext, out: Path, key: str, clip_path: Path) -> tuple[list[str], dict, list[str]]:
    """Stage 2 on one dataset, then validate.py with its best Combiner: (command, metrics, model flags)."""
    argv = [f"{SCRIPTS}/combiner_train.py", "--dataset", DATASETS[key], *model_args(ctx), *STAGE2, *COMBINER,
            "--clip-model-path", str(clip_path), "--validation-frequency", "3", "--save-training", "--save-best",
            "--no-resume-state", "--output-root", str(out), "--run-name", f"stage2_{key}"]
    run_script(ctx, argv, cwd=REPO, log=out / "logs" / f"stage2_{key}.log")
    combiner = out / "dev-models-combiner" / f"stage2_{key}" / "saved_models" / BEST[key]
    trained = ["--clip-model-path", str(clip_path), "--combiner-path", str(combiner), *COMBINER]
    return argv, validate(ctx, out, key, "trained", ["--combining-function", "combiner", *trained]), trained


def prepare_shoes(ctx: DemoContext, out: Path) -> None:
    shoes = ctx.data / "shoes"
    run_script(ctx, [f"{SCRIPTS}/prepare_shoes_data.py", "--image-dir", str(shoes / "images"),
                     "--annotation-dir", str(shoes / "annotations")], cwd=REPO, log=out / "logs" / "prepare_shoes.log")


def run(ctx: DemoContext) -> dict:
    start = time.perf_counter()
    # Tiny tensors gain nothing from intra-op threads; two one-thread scripts run side by side on the two cores.
    ctx = dataclasses.replace(ctx, env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **ctx.env})
    out = ctx.paper_dir("mlcl")
    # a second demo run must not read the first one's checkpoints
    ctx.clear(out / "models-finetune", out / "dev-models-combiner", out / "submission")
    baseline: dict = {}
    with ThreadPoolExecutor(PARALLEL_SCRIPTS) as pool:
        tuned = pool.submit(stage1, ctx, out)
        shoes_ready = pool.submit(prepare_shoes, ctx, out)
        baselines = [pool.submit(validate, ctx, out, key, "baseline", ["--combining-function", "sum"])
                     for key in ("fiq", "cirr")]
        shoes_ready.result()
        baselines.append(pool.submit(validate, ctx, out, "shoes", "baseline", ["--combining-function", "sum"]))
        stage1_command, clip_path = tuned.result()
        runs = {key: pool.submit(stage2, ctx, out, key, clip_path) for key in DATASETS}
        for future in baselines:
            baseline.update(future.result())
        results = {key: future.result() for key, future in runs.items()}

    metrics, outputs = {}, {"tuned CLIP (stage 1, FashionIQ)": str(clip_path)}
    for key, (_, key_metrics, trained) in results.items():
        metrics.update(key_metrics)
        combiner = Path(trained[3])
        outputs.update({f"{key} combiner (stage 2)": str(combiner),
                        f"{key} validation metrics": str(out / f"metrics_trained_{key}.json"),
                        f"{key} training curves (stage 2)": str(combiner.parent.parent / "training_curves.png")})
    submission = [f"{SCRIPTS}/cirr_test_submission.py", "--submission-name", "demo", "--combining-function",
                  "combiner", *results["cirr"][2], *model_args(ctx), "--output-root", str(out)]
    run_script(ctx, submission, cwd=REPO, log=out / "logs" / "cirr_test_submission.log")
    folder = out / "submission" / "CIRR" / "demo"
    outputs.update({"CIRR recall submission": str(folder / "recall_submission_demo.json"),
                    "CIRR recall_subset submission": str(folder / "recall_subset_submission_demo.json")})
    return {"command": results["cirr"][0], "metrics": metrics, "baseline_metrics": baseline, "outputs": outputs,
            "headline_metrics": [f"{key}_{HEADLINE[key]}" for key in DATASETS],
            "seconds": time.perf_counter() - start}
