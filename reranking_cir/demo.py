"""Offline demo of the whole Candidate Re-ranking pipeline on the synthetic CIRR and FashionIQ with tiny BLIP weights.

Per dataset (the two chains run side by side): validate.py on the pre-trained model (``untrained_stage1_metrics``),
stage1_train.py, validate.py --save-topk (the stage-1 recalls are ``baseline_metrics``), stage2_train.py on the top-K
file, validate_stage2.py --save-labels (``metrics``: the re-ranked top K = 20 of 50); then plot_ranking_delta.py for
FashionIQ and both CIRR test submission scripts.

Both stages start from the tiny BLIP whose ITC path was trained on clean synthetic COCO (the stand-in for the
pre-trained ``model_base.pth``; the demo's ``model_base.pth`` is random, and with a random ViT neither stage learns
in a few epochs). Its cross-attention, like stage 2's ``merge_layer`` and ``cls_head``, is untrained, so stage 2
needs more training than stage 1: on CIRR it trains on the larger train split of ``ctx.data_large`` (1,500
triplets; val and test1 are the shared ones) for 10 epochs, under ``torch.distributed.run`` on both cores. The tiny
MED runs without dropout (``med_config_no_dropout.json``): at this size dropout costs a third of a CPU training step.
Both stages follow a cosine that ends at zero with the last epoch.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common.demo import DemoContext, run_script
from common.io import atomic_write_json, load_torch_file, read_json

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = "reranking_cir"
DATASETS = {"cirr": "CIRR", "fiq": "fashionIQ"}
REPORTED = {
    "fiq": ("dress_recall_at10", "toptee_recall_at10", "shirt_recall_at10", "average_recall_at10"),
    "cirr": ("recall_at1", "recall_at5", "recall_at10", "group_recall_at1", "mean(R@5+R_s@1)"),
}
BEST = {"fiq": "blip.pt", "cirr": "blip_mean.pt"}
PRETRAINED = "model_base_retrieval_coco.pth"
TOPK = {"fiq": "fiq_top_{k}_val_DTYPE.pt", "cirr": "cirr_top_{k}_val.pt"}
K_SAVED, K_RERANK = 50, 20
EPOCHS = {"cirr": (3, 10), "fiq": (8, 4)}
"""Training epochs of stage 1 and stage 2 per dataset."""
STAGE2_BATCH = {"cirr": 8, "fiq": 16}
"""``--batch-size`` of stage 2, the triplets of one step in all processes together: every query is scored against
that many targets. The original's 16 for FashionIQ; 8 for CIRR: half the pair forwards, and it learned at least
as fast there."""
STAGE2_PROCESSES = {"cirr": 2, "fiq": 1}
"""CIRR's stage 2, the longest step, runs under ``torch.distributed.run`` on both cores (gloo)."""


def epochs(n: int) -> list[str]:
    """``n`` epochs of a cosine ending at zero, validated after the first and the last (the best of the two is
    kept)."""
    return ["--num-epochs", str(n), "--blip-max-epoch", str(n), "--validation-frequency", str(n - 1)]


def model_args(ctx: DemoContext, out: Path) -> list[str]:
    """Flags that point the scripts at the tiny pre-trained BLIP (its MED without dropout), on CPU without
    workers."""
    weights = ctx.weights
    state = load_torch_file(weights / PRETRAINED)["model"]
    patch = read_json(weights / "vit_config.json")["patch_size"]
    image_size = math.isqrt(state["visual_encoder.pos_embed"].shape[1] - 1) * patch
    med_config = out / "med_config_no_dropout.json"
    atomic_write_json({**read_json(weights / "med_config.json"), "hidden_dropout_prob": 0.0,
                       "attention_probs_dropout_prob": 0.0}, med_config, indent=2)
    return ["--blip-pretrained-path", str(weights / PRETRAINED), "--med-config-path", str(med_config),
            "--vit-config", str(weights / "vit_config.json"), "--tokenizer", str(weights / "tokenizer"),
            "--input-dim", str(image_size), "--num-workers", "0", "--device", "cpu"]


def script(ctx: DemoContext, out: Path, name: str, argv: list[str], log: str, processes: int = 1) -> list[str]:
    """Run ``reranking_cir/<name>.py`` (under ``torch.distributed.run`` with ``processes`` > 1)."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] if processes > 1 \
        else []
    command = [*launcher, f"{SCRIPTS}/{name}.py", *argv]
    run_script(ctx, command, cwd=REPO, log=out / "logs" / f"{log}.log")
    return command


def reported(path: Path, key: str) -> dict[str, float]:
    metrics = json.loads(path.read_text())
    return {f"{key}_{name}": metrics[name] for name in REPORTED[key]}


def pipeline(ctx: DemoContext, out: Path, key: str, args: list[str]) -> dict:
    """The stage-1 -> top-K -> stage-2 -> re-ranking chain on one dataset."""
    dataset, runs = DATASETS[key], out / "models"
    stage1_epochs, stage2_epochs = EPOCHS[key]
    args = ["--data-root", str(ctx.data_large if key == "cirr" else ctx.data), *args]
    script(ctx, out, "validate", ["--dataset", dataset, *args, "--metrics-json", str(out / f"untrained_{key}.json")],
           f"validate_untrained_{key}")
    stage1 = script(ctx, out, "stage1_train", [
        "--dataset", dataset, *args, *epochs(stage1_epochs), "--batch-size", "16", "--blip-learning-rate", "1e-3",
        "--save-training", "--save-best", "--output-root", str(out),
        "--run-name", f"stage1_{key}", "--train"], f"stage1_{key}")
    stage1_run = runs / f"stage1_{key}"
    script(ctx, out, "validate", ["--dataset", dataset, *args, "--stage1-path", str(stage1_run), "--save-topk",
                                  "--k", str(K_SAVED), "--metrics-json", str(out / f"stage1_{key}.json")],
           f"validate_stage1_{key}")
    topk = str(stage1_run / TOPK[key].format(k=K_SAVED))
    processes = STAGE2_PROCESSES[key]
    script(ctx, out, "stage2_train", [
        "--dataset", dataset, *args, *epochs(stage2_epochs), "--batch-size", str(STAGE2_BATCH[key]),
        "--blip-learning-rate", "1e-3", "--save-training", "--save-best", "--output-root", str(out),
        "--run-name", f"stage2_{key}", "--blip-model-path", str(stage1_run), "--top-k-path", topk,
        "--K-value", str(K_RERANK), "--train"], f"stage2_{key}", processes)
    labels = str(out / f"{key}_stageII_labels_val{'_DTYPE' if key == 'fiq' else ''}.pt")
    script(ctx, out, "validate_stage2", [
        "--dataset", dataset, *args, "--stage1-path", str(stage1_run), "--stage2-path", str(runs / f"stage2_{key}"),
        "--top-k-path", topk, "--k", str(K_RERANK), "--save-labels", labels,
        "--metrics-json", str(out / f"stage2_{key}.json"), "--report", str(out / "report" / key),
        "--report-queries", "12"], f"validate_stage2_{key}")
    outputs = {f"{key} top-{K_SAVED} file(s)": topk, f"{key} re-ordered labels": labels,
               f"{key} re-ranking report (stage 1 vs stage 2)": str(out / "report" / key / "index.html"),
               f"{key} stage-2 checkpoint": str(runs / f"stage2_{key}" / "saved_models" / BEST[key])}
    if key == "fiq":
        script(ctx, out, "plot_ranking_delta", ["--dataset", dataset, "--stage1-topk", topk, "--stage2-labels",
                                                labels, "--k", str(K_RERANK), "--out-dir", str(out / "figures"),
                                                "--combined"], f"plot_{key}")
        outputs[f"{key} Figure 8 (dress, shirt, toptee)"] = str(out / "figures" /
                                                                "fiq_init_index_vs_delta_avg_combined.png")
    else:
        outputs.update(submissions(ctx, out, stage1_run, runs / f"stage2_{key}", args))
    return {"command": stage1, "outputs": outputs}


def submissions(ctx: DemoContext, out: Path, stage1_run: Path, stage2_run: Path, args: list[str]) -> dict[str, str]:
    """Both CIRR test1 submissions: stage 1 (with its top-50 file), then the re-ranked one."""
    script(ctx, out, "cirr_test_submission", ["--submission-name", "stage1_demo", "--stage1-path", str(stage1_run),
                                              "--save-topk", "--k", "50", *args, "--output-root", str(out)],
           "cirr_test_submission")
    script(ctx, out, "cirr_test_submission_stage2", [
        "--submission-name", "stage2_demo", "--stage1-path", str(stage1_run), "--stage2-path", str(stage2_run),
        "--top-k-path", str(stage1_run / "cirr_top_50_test1.pt"), "--k", str(K_RERANK), *args,
        "--output-root", str(out)], "cirr_test_submission_stage2")
    folder = out / "submission" / "CIRR"
    outputs = {"CIRR test1 top-50 file": str(stage1_run / "cirr_top_50_test1.pt")}
    for stage in ("stage1", "stage2"):
        outputs[f"CIRR {stage} recall submission"] = str(folder / f"recall_submission_{stage}_demo.json")
        outputs[f"CIRR {stage} recall_subset submission"] = str(folder / f"recall_subset_submission_{stage}_demo.json")
    return outputs


def run(ctx: DemoContext) -> dict:
    """Both dataset chains, one per core (each script single-threaded)."""
    start = time.perf_counter()
    ctx = dataclasses.replace(ctx, env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **ctx.env})
    out = ctx.paper_dir("reranking_cir")
    for folder in ("models", "submission", "figures", "report"):  # earlier run folders would get a _1 suffix
        shutil.rmtree(out / folder, ignore_errors=True)
    args = model_args(ctx, out)
    with ThreadPoolExecutor(max_workers=len(DATASETS)) as pool:
        chains = dict(zip(DATASETS, pool.map(lambda key: pipeline(ctx, out, key, args), DATASETS)))
    metrics, baseline, untrained, outputs = {}, {}, {}, {}
    for key, chain in chains.items():
        outputs.update(chain["outputs"])
        untrained.update(reported(out / f"untrained_{key}.json", key))
        baseline.update(reported(out / f"stage1_{key}.json", key))
        metrics.update(reported(out / f"stage2_{key}.json", key))
    return {"command": chains["fiq"]["command"], "metrics": metrics, "baseline_metrics": baseline,
            "untrained_stage1_metrics": untrained, "outputs": outputs, "seconds": time.perf_counter() - start}
