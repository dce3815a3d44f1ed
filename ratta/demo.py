"""Offline demo of the RA-TTA pipeline on a synthetic DTD (CoOp layout) with a tiny CLIP trained on the spot.

Steps, all through the real scripts except the data and model preparation: synthetic textures in DTD's layout
(test images shifted by noise and lower contrast), a CuPL-style description JSON, clean web-like images, a tiny
CLIP trained briefly on clean image-caption pairs; then ratta_build_db.py on the web images,
ratta_pre_extract.py on the test split, and ratta_after_extract.py with ``--impl batched`` and ``--impl loop``.
``baseline_metrics`` is the zero-shot classifier (the log's "CuPL" line), ``metrics`` RA-TTA's.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from common.demo import DemoContext, run_script
from common.synthetic.textures import train_tiny_texture_clip, write_descriptions, write_dtd, write_web_images

REPO = Path(__file__).resolve().parent.parent
NET = "test/tiny"
CLIP_STEPS = 200


def prepare(out: Path, seed: int = 0) -> dict[str, Path]:
    """Synthetic data, descriptions, web images and the tiny CLIP (trained once per output folder)."""
    paths = {"data": out / "data", "web": out / "web_images", "descriptions": out / "descriptions",
             "clip": out / "weights" / "tiny_texture_clip.pt"}
    write_dtd(paths["data"], seed=seed)
    write_web_images(paths["web"], seed=seed + 1)
    write_descriptions(paths["descriptions"] / "CuPL_prompts_dtd.json")
    if not paths["clip"].is_file():
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a model this small trains about as fast on one thread, and no slower under load
        try:
            stats = train_tiny_texture_clip(paths["clip"], steps=CLIP_STEPS, seed=seed)
        finally:
            torch.set_num_threads(threads)
        print(f"tiny texture CLIP: loss {stats['loss_first']:.2f} -> {stats['loss_last']:.2f} over "
              f"{stats['steps']} steps in {stats['seconds']:.0f}s")
    return paths


def run(ctx: DemoContext) -> dict:
    start = time.perf_counter()
    ctx = dataclasses.replace(ctx, env={"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), **ctx.env})
    out = ctx.paper_dir("ratta")
    paths = prepare(out)
    ctx.clear(*(out / name for name in ("db_embedding", "test_embedding", "log_batched", "log_loop", "report")))
    steps = {"prepare data and tiny CLIP": time.perf_counter() - start}
    model = ["--net_name", NET, "--weights", str(paths["clip"]), "--device", "cpu"]
    logs = out / "logs"
    build = ["ratta/ratta_build_db.py", "--image_root", str(paths["web"]), "--dataset", "dtd",
             "--db_root", str(out / "db_embedding"), "--num_workers", "0", *model]
    steps["ratta_build_db.py"] = run_script(ctx, build, cwd=REPO, log=logs / "build_db.log").seconds
    pre = ["ratta/ratta_pre_extract.py", "--root", str(paths["data"]), "--dataset", "dtd", "--seed", "0",
           "--save_dir", str(out / "test_embedding"), "--num_workers", "0", "--image_batch", "16", *model]
    steps["ratta_pre_extract.py"] = run_script(ctx, pre, cwd=REPO, log=logs / "pre_extract.log").seconds
    results, commands = {}, {}
    for impl in ("batched", "loop"):
        after = ["ratta/ratta_after_extract.py", "--db_root", str(out / "db_embedding"), "--tst_embedding_root",
                 str(out / "test_embedding"), "--dataset", "dtd", "--seed", "0",
                 "--output_dir", str(out / f"log_{impl}"), "--descriptions_dir", str(paths["descriptions"]),
                 "--impl", impl, "--results_json", str(out / f"results_{impl}.json"), *model]
        if impl == "batched":
            after += ["--report", str(out / "report"), "--report-queries", "12", "--report_root", str(paths["data"]),
                      "--report_db_images", str(paths["web"])]
        commands[impl] = after
        steps[f"ratta_after_extract.py --impl {impl}"] = run_script(
            ctx, after, cwd=REPO, log=logs / f"after_extract_{impl}.log").seconds
        results[impl] = json.loads((out / f"results_{impl}.json").read_text())
    print("  ".join(f"{name}: {seconds:.1f}s" for name, seconds in steps.items()))
    batched, loop = results["batched"], results["loop"]
    identical = batched["predictions"] == loop["predictions"]
    if not identical:
        raise RuntimeError("--impl batched and --impl loop disagree on the demo predictions")
    return {
        "command": commands["batched"],
        "metrics": {"top1": batched["ratta"]["top1"], "top5": batched["ratta"]["top5"]},
        "baseline_metrics": {"top1": batched["zero_shot"]["top1"], "top5": batched["zero_shot"]["top5"]},
        "outputs": {"test embeddings": str(out / "test_embedding" / "test_tiny" / "0" / "dtd.pth"),
                    "DB": str(out / "db_embedding" / "LAION2B_dtd_aux_test_tiny.npz"),
                    "log": str(out / "log_batched" / "test_tiny" / "dtd_log.txt"),
                    "results JSON": str(out / "results_batched.json"),
                    "retrieval report": str(out / "report" / "index.html"),
                    "loop vs batched": f"identical predictions, {loop['samples_per_second']:.0f} vs "
                                       f"{batched['samples_per_second']:.0f} samples/s"},
        "seconds": time.perf_counter() - start,
    }
