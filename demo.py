"""Offline end-to-end demo: synthetic data, tiny weights, and every paper pipeline that exists.

    python demo.py --out demo_out [--only bi_blip4cir tcr]

Writes ``<out>/data`` (synthetic datasets in the real on-disk formats), ``<out>/weights`` (tiny checkpoints in the
released formats), one folder per pipeline, and ``<out>/summary.json``. Exits non-zero if any pipeline fails.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import time
import traceback
from pathlib import Path

from common.blip.config import MedConfig, ViTConfig
from common.blip.tiny import write_tiny_blip_checkpoint, write_tiny_vocab
from common.clip import write_tiny_clip
from common.demo import DemoContext
from common.io import atomic_write_json
from common.runtime import seed_everything
from common.synthetic.scenes import vocabulary
from common.synthetic.writers import write_all

PAPERS = ("bi_blip4cir", "reranking_cir", "mlcl", "tcr", "ratta")
REPO = Path(__file__).resolve().parent

DEMO_IMAGE_SIZE = 64
DEMO_EMBED_DIM = 32
DEMO_VIT = ViTConfig(patch_size=8, width=64, depth=2, heads=4)
DEMO_MED = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                max_position_embeddings=128)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", help="output folder (default demo_out)")
    parser.add_argument("--only", nargs="*", choices=PAPERS, help="run only these pipelines (default: all present)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and tiny weights (default 0)")
    return parser


def prepare_inputs(out: Path, seed: int) -> DemoContext:
    """Write the synthetic datasets and the tiny weights once; later runs reuse them."""
    data, weights = out / "data", out / "weights"
    if not (data / ".complete").is_file():
        write_all(data, seed=seed)
        (data / ".complete").write_text("ok\n")
    if not (weights / ".complete").is_file():
        vocab_file = write_tiny_vocab(weights / "tokenizer", extra_words=vocabulary())
        vocab_size = len(vocab_file.read_text().splitlines()) + 2
        med = MedConfig(vocab_size=vocab_size, encoder_width=DEMO_VIT.width, **DEMO_MED)
        atomic_write_json(dataclasses.asdict(med), weights / "med_config.json", indent=2)
        atomic_write_json(dataclasses.asdict(DEMO_VIT), weights / "vit_config.json", indent=2)
        write_tiny_blip_checkpoint(weights / "model_base.pth", image_size=DEMO_IMAGE_SIZE, vit=DEMO_VIT, med=med,
                                   embed_dim=DEMO_EMBED_DIM, layout="pretrain", seed=seed)
        write_tiny_clip(weights / "clip_vit.pt", kind="vit")
        write_tiny_clip(weights / "clip_rn.pt", kind="rn")
        (weights / ".complete").write_text("ok\n")
    return DemoContext(out=out, data=data, weights=weights, python=sys.executable)


def print_table(summary: dict) -> None:
    print(f"\n{'pipeline':<16}{'seconds':>9}  metric: baseline -> result")
    for name, entry in summary["pipelines"].items():
        if "error" in entry:
            print(f"{name:<16}{'':>9}  FAILED: {entry['error'].splitlines()[0]}")
            continue
        print(f"{name:<16}{entry['seconds']:>9.1f}")
        for metric, value in entry["metrics"].items():
            before = entry["baseline_metrics"].get(metric)
            before_text = f"{before:8.2f}" if isinstance(before, (int, float)) else f"{'-':>8}"
            print(f"{'':<27}{metric:<28}{before_text} -> {value:8.2f}")


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
            summary["pipelines"][paper] = importlib.import_module(f"{paper}.demo").run(ctx)
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
