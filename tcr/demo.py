"""TCR in the offline demo: image-to-text retrieval on synthetic COCO whose image queries carry Gaussian noise
(severity 5), with the tiny BLIP; TCR adaptation against the same model without adaptation.

The command in the summary also runs under ``python -m torch.distributed.run --nproc_per_node 2`` with the same
metrics.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from common.demo import DemoContext, run_script
from tcr.config import dump_config

REPO = Path(__file__).resolve().parents[1]
CORRUPTION = "COCO_IP_gaussian_noise_5"
METRIC_KEYS = ("txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "txt_map")


def demo_config(ctx: DemoContext, path: Path) -> Path:
    """An upstream-format QS i2t config for the synthetic corrupted COCO and the tiny BLIP (64-px input)."""
    return dump_config({
        "image_root": str(ctx.data / "coco-IP" / CORRUPTION),
        "ann_root": str(ctx.data / "coco" / "coco_annotations") + "/",
        "dataset": "coco",
        "pretrained": str(ctx.weights / "model_base.pth"),
        "backbone": "blip",
        "vit": "base",
        "vit_ckpt_layer": 4,
        "vit_grad_ckpt": True,
        "image_size": 64,
        "batch_size_image": 16,
        "batch_size_text": 16,
        "batch_size_total": 16,
    }, path)


def run(ctx: DemoContext) -> dict[str, Any]:
    out = ctx.paper_dir("tcr")
    config = demo_config(ctx, out / f"{CORRUPTION}.yaml")
    # tiny models on a busy machine: one intra-op thread each is much faster than two
    ctx = dataclasses.replace(ctx, env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **ctx.env})
    model_flags = ["--device", "cpu", "--num_workers", "0", "--vit_config", str(ctx.weights / "vit_config.json"),
                   "--med_config", str(ctx.weights / "med_config.json"),
                   "--tokenizer", str(ctx.weights / "tokenizer")]
    start = time.perf_counter()
    command = ["tcr/main.py", "--retrieval", "i2t", "--config", str(config), "--method", "tcr",
               "--output_dir", str(out / "tcr"), *model_flags]
    run_script(ctx, command, cwd=REPO, log=out / "tcr.log")
    baseline = ["tcr/main.py", "--retrieval", "None", "--config", str(config),
                "--output_dir", str(out / "no_adaptation"), *model_flags]
    run_script(ctx, baseline, cwd=REPO, log=out / "no_adaptation.log")
    result = json.loads((out / "tcr" / "result.json").read_text())
    reference = json.loads((out / "no_adaptation" / "result.json").read_text())
    return {
        "command": command,
        "metrics": {key: result["metrics"][key] for key in METRIC_KEYS},
        "baseline_metrics": {key: reference["metrics"][key] for key in METRIC_KEYS},
        "outputs": {"result": str(out / "tcr" / "result.json"),
                    "baseline_result": str(out / "no_adaptation" / "result.json"),
                    "config": str(config), "log": str(out / "tcr.log")},
        "seconds": time.perf_counter() - start,
    }
