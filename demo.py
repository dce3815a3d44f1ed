"""Offline end-to-end demo: synthetic data, tiny weights, and every paper pipeline that exists.

    python demo.py --out demo_out [--only bi_blip4cir tcr]

Writes ``<out>/data`` (synthetic datasets in the real on-disk formats), ``<out>/data_large`` (the same CIRR with
a larger train split), ``<out>/weights`` (tiny checkpoints in the
released formats; the retrieval one is ITC-trained on ``<out>/source_data``), one folder per pipeline with a
``commands.sh`` that replays the commands it ran (``bash <out>/<paper>/commands.sh``), and ``<out>/summary.json``
(per pipeline its metrics and ``"commands"``, every command in order). Exits non-zero if any pipeline fails.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
import time
import traceback
from pathlib import Path

import torch

from common.blip.config import MedConfig, ViTConfig
from common.blip.tiny import write_tiny_blip_checkpoint, write_tiny_vocab
from common.clip import write_tiny_clip
from common.demo import DemoContext, write_commands_script
from common.io import atomic_write_json
from common.runtime import seed_everything
from common.synthetic.scenes import vocabulary
from common.synthetic.source_model import train_tiny_blip_itc
from common.synthetic.writers import (DEMO_CIRR_EXTRA_TRAIN_SETS, DEMO_CIRR_QUERIES, DEMO_CIRR_SETS, write_all,
                                     write_cirr, write_karpathy)

PAPERS = ("bi_blip4cir", "reranking_cir", "mlcl", "tcr", "ratta")
REPO = Path(__file__).resolve().parent

DEMO_IMAGE_SIZE = 64
DEMO_EMBED_DIM = 32
DEMO_VIT = ViTConfig(patch_size=8, width=64, depth=2, heads=4)
DEMO_MED = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                max_position_embeddings=128)
SOURCE_TRAIN_IMAGES = 1000
INPUTS_VERSION = 3
"""Bump when the synthetic data or the tiny weights change, so that cached inputs are rewritten."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    parser.add_argument("--only", nargs="*", choices=PAPERS, help="run only these pipelines (default: all present)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and tiny weights (default 0)")
    return parser


def prepare_inputs(out: Path, seed: int) -> DemoContext:
    """Write the synthetic datasets and the tiny weights once; later runs with the same seed and
    ``INPUTS_VERSION`` reuse them."""
    data, data_large, weights = out / "data", out / "data_large", out / "weights"
    stamp = f"seed {seed}, inputs version {INPUTS_VERSION}\n"
    if not is_complete(data, stamp):
        write_all(data, seed=seed)
        (data / ".complete").write_text(stamp)
    if not is_complete(data_large, stamp):
        write_cirr(data_large, DEMO_CIRR_SETS, DEMO_CIRR_QUERIES, seed, extra_train_sets=DEMO_CIRR_EXTRA_TRAIN_SETS)
        (data_large / ".complete").write_text(stamp)
    if not is_complete(weights, stamp):
        vocab_file = write_tiny_vocab(weights / "tokenizer", extra_words=vocabulary())
        vocab_size = len(vocab_file.read_text().splitlines()) + 2
        med = MedConfig(vocab_size=vocab_size, encoder_width=DEMO_VIT.width, **DEMO_MED)
        atomic_write_json(dataclasses.asdict(med), weights / "med_config.json", indent=2)
        atomic_write_json(dataclasses.asdict(DEMO_VIT), weights / "vit_config.json", indent=2)
        write_tiny_blip_checkpoint(weights / "model_base.pth", image_size=DEMO_IMAGE_SIZE, vit=DEMO_VIT, med=med,
                                   embed_dim=DEMO_EMBED_DIM, layout="pretrain", seed=seed)
        write_tiny_clip(weights / "clip_vit.pt", kind="vit")
        write_tiny_clip(weights / "clip_rn.pt", kind="rn")
        write_source_model(out / "source_data", data, weights, med, seed)
        (weights / ".complete").write_text(stamp)
    return DemoContext(out=out, data=data, weights=weights, data_large=data_large, python=sys.executable)


def is_complete(folder: Path, stamp: str) -> bool:
    """Whether ``folder/.complete`` exists and holds ``stamp`` (written last, once the folder is complete)."""
    marker = folder / ".complete"
    return marker.is_file() and marker.read_text() == stamp


def write_source_model(source_data: Path, data: Path, weights: Path, med: MedConfig, seed: int) -> None:
    """``weights/model_base_retrieval_coco.pth``: the tiny BLIP ITC-trained on a clean synthetic COCO split of
    its own (``source_data``, seed + 1), without the scenes of the demo's COCO set in ``data``."""
    write_karpathy(source_data, "coco", SOURCE_TRAIN_IMAGES, seed=seed + 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))  # tiny model: one thread is fastest
    try:
        stats = train_tiny_blip_itc(source_data, weights / "model_base_retrieval_coco.pth", vit=DEMO_VIT, med=med,
                                    tokenizer_dir=weights / "tokenizer", image_size=DEMO_IMAGE_SIZE,
                                    embed_dim=DEMO_EMBED_DIM, held_out=data, seed=seed)
    finally:
        torch.set_num_threads(threads)
    print(f"source retrieval model: ITC loss {stats['loss_first']:.2f} -> {stats['loss_last']:.2f} over "
          f"{stats['steps']} steps on {stats['images']} clean images in {stats['seconds']:.0f}s")


def run_pipeline(ctx: DemoContext, paper: str, run) -> dict:
    """``run(ctx)`` of one paper with its own command record; the entry gets ``"commands"`` and the paper folder a
    ``commands.sh`` replaying them (written also when the pipeline fails, up to the failing command)."""
    paper_ctx = dataclasses.replace(ctx, runs=[], cleared=[])
    try:
        entry = run(paper_ctx)
    finally:
        write_commands_script(ctx.paper_dir(paper) / "commands.sh", paper_ctx.runs, REPO, ctx.python,
                              f"{paper} demo pipeline", paper_ctx.cleared)
    return {**entry, "commands": [run.argv for run in paper_ctx.runs]}


def print_table(summary: dict) -> None:
    print(f"\n{'pipeline':<16}{'seconds':>9}\n{'':<4}{'metric':<40}{'baseline':>8} -> {'result':>8}")
    for name, entry in summary["pipelines"].items():
        if "error" in entry:
            print(f"{name:<16}{'':>9}  FAILED: {entry['error'].splitlines()[0]}")
            continue
        print(f"{name:<16}{entry['seconds']:>9.1f}")
        for metric, value in entry["metrics"].items():
            before = entry["baseline_metrics"].get(metric)
            before_text = f"{before:8.2f}" if isinstance(before, (int, float)) else f"{'-':>8}"
            clean = entry.get("clean_metrics", {}).get(metric)
            clean_text = f"  (clean {clean:.2f})" if isinstance(clean, (int, float)) else ""
            print(f"{'':<4}{metric:<40}{before_text} -> {value:8.2f}{clean_text}")


def main() -> int:
    args = build_parser().parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(args.seed)
    start = time.perf_counter()
    ctx = prepare_inputs(out, args.seed)
    print(f"synthetic data and tiny weights ready in {time.perf_counter() - start:.1f}s under {out}")

    summary: dict = {"pipelines": {}}
    failed = False
    for paper in args.only or PAPERS:
        if not (REPO / paper / "demo.py").is_file():
            continue
        print(f"== {paper}")
        try:
            summary["pipelines"][paper] = run_pipeline(ctx, paper, importlib.import_module(f"{paper}.demo").run)
        except Exception:  # noqa: BLE001 - report every pipeline, then fail
            failed = True
            summary["pipelines"][paper] = {"error": traceback.format_exc()}
            print(traceback.format_exc(), file=sys.stderr)
        atomic_write_json(summary, out / "summary.json", indent=2)
    atomic_write_json(summary, out / "summary.json", indent=2)
    print_table(summary)
    print(f"\nsummary: {out / 'summary.json'} ({time.perf_counter() - start:.0f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
