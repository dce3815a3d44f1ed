"""TCR in the offline demo: image-to-text retrieval on synthetic COCO (500 images, 2,500 captions) whose image
queries carry impulse noise (severity 4). The source model is the demo's ``model_base_retrieval_coco.pth``, a tiny
BLIP fine-tuned with ITC on a clean synthetic split without these scenes, as TCR starts from BLIP's fine-tuned
retrieval files. TCR adaptation is compared with the same model without adaptation on the noisy queries
(``baseline_metrics``) and on the clean ones (``clean_metrics``).

Batches of 16 queries (upstream 64) give the 500-query stream 32 adaptation batches; lr, steps, τ and the queue
keep the upstream defaults. The command in the summary also runs under
``python -m torch.distributed.run --nproc_per_node 2`` with the same metrics.
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
CORRUPTION = "COCO_IP_impulse_noise_4"
SOURCE_MODEL = "model_base_retrieval_coco.pth"
METRIC_KEYS = ("txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "txt_map")


def demo_config(ctx: DemoContext, path: Path, image_root: Path) -> Path:
    """An upstream-format QS i2t config for synthetic COCO images under ``image_root`` and the tiny fine-tuned
    BLIP (64-px input)."""
    return dump_config({
        "image_root": str(image_root),
        "ann_root": str(ctx.data / "coco" / "coco_annotations") + "/",
        "dataset": "coco",
        "pretrained": str(ctx.weights / SOURCE_MODEL),
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
    config = demo_config(ctx, out / f"{CORRUPTION}.yaml", ctx.data / "coco-IP" / CORRUPTION)
    clean_config = demo_config(ctx, out / "retrieval_coco.yaml", ctx.data / "coco" / "coco_image")
    # tiny models on a busy machine: one intra-op thread each is much faster than two
    ctx = dataclasses.replace(ctx, env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **ctx.env})
    model_flags = ["--device", "cpu", "--num_workers", "0", "--vit_config", str(ctx.weights / "vit_config.json"),
                   "--med_config", str(ctx.weights / "med_config.json"),
                   "--tokenizer", str(ctx.weights / "tokenizer")]
    start = time.perf_counter()
    command = ["tcr/main.py", "--retrieval", "i2t", "--config", str(config), "--method", "tcr",
               "--output_dir", str(out / "tcr"), *model_flags, "--report", str(out / "report"),
               "--report-queries", "12"]
    run_script(ctx, command, cwd=REPO, log=out / "tcr.log")
    for name, run_config in (("no_adaptation", config), ("clean", clean_config)):
        baseline = ["tcr/main.py", "--retrieval", "None", "--config", str(run_config),
                    "--output_dir", str(out / name), *model_flags]
        run_script(ctx, baseline, cwd=REPO, log=out / f"{name}.log")
    result, reference, clean = (json.loads((out / name / "result.json").read_text())
                                for name in ("tcr", "no_adaptation", "clean"))
    return {
        "command": command,
        "metrics": {key: result["metrics"][key] for key in METRIC_KEYS},
        "baseline_metrics": {key: reference["metrics"][key] for key in METRIC_KEYS},
        "clean_metrics": {key: clean["metrics"][key] for key in METRIC_KEYS},
        "outputs": {"result": str(out / "tcr" / "result.json"),
                    "baseline_result": str(out / "no_adaptation" / "result.json"),
                    "clean_result": str(out / "clean" / "result.json"),
                    "config": str(config), "log": str(out / "tcr.log"),
                    "retrieval report": str(out / "report" / "index.html")},
        "seconds": time.perf_counter() - start,
    }
