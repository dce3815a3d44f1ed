"""Throughput of TCR's online stream: queries per second of adaptation (tcr, tent; 3 steps per batch) and of plain
retrieval (encode + score, no gradient), image queries against a fixed text gallery.

    python bench/tcr_bench.py [--out bench/results/tcr_bench.json]

Tiny random-weight BLIP and CLIP run on CPU; random-weight BLIP-base at 384 px (the paper's main backbone, global
batch 64, a 25,000-caption gallery as on COCO) runs only when CUDA is available. Gallery features are random unit
vectors computed once per run: the query stream is what is measured. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from common.blip import BlipItc, MedConfig, ViTConfig
from common.clip import CLIP, TINY_CLIP
from common.transforms import blip_eval_transform
from tcr.engine import run_stream
from tcr.method import build_adapter, build_optimizer
from tcr.models import Backbone, BlipBackbone, ClipBackbone
from common.tta import train_only

ADAPTIVE = ("tcr", "tent")


class RandomImages(Dataset):
    """``n`` fixed random images (item: ``(image, index)``)."""

    def __init__(self, n: int, size: int, seed: int = 0):
        self.images = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], index


def tiny_blip(device: torch.device) -> tuple[Backbone, int]:
    vit = ViTConfig(patch_size=8, width=64, depth=2, heads=4)
    med = MedConfig(vocab_size=128, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=128, max_position_embeddings=64, encoder_width=64)
    return BlipBackbone(BlipItc(vit, med, 64, embed_dim=64), None, 64).to(device), 64


def tiny_clip(device: torch.device) -> tuple[Backbone, int]:
    return ClipBackbone(CLIP(**TINY_CLIP["vit"]), blip_eval_transform(32)).to(device), 32


def blip_base(device: torch.device) -> tuple[Backbone, int]:
    return BlipBackbone(BlipItc("base", MedConfig.base(), 384), None, 384).to(device), 384


def queries_per_second(mode: str, build, n_queries: int, batch: int, n_gallery: int, device: torch.device) -> float:
    """Run the whole stream once for warm-up and once timed; return queries per second of the timed pass."""
    torch.manual_seed(0)
    backbone, size = build(device)
    dataset = RandomImages(n_queries, size)
    dim = backbone.model.vision_proj.out_features if isinstance(backbone, BlipBackbone) else backbone.clip.dim
    gallery = F.normalize(torch.randn(n_gallery, dim, device=device), dim=1).to(backbone.feature_dtype)
    params, _ = backbone.query_norm_params("i2t")
    train_only(backbone, params)
    elapsed = 0.0
    for timed in (False, True):
        if mode == "retrieval":
            start = _sync(device)
            with torch.no_grad():
                for index in range(0, n_queries, batch):
                    images = dataset.images[index:index + batch].to(device)
                    (backbone.encode_query(images, "i2t") @ gallery.t()).topk(10, dim=1)
        else:
            optimizer = build_optimizer(mode, params, lr=3e-4, weight_decay=1e-4)
            adapter = build_adapter(mode, lambda x: backbone.encode_query(x, "i2t"), gallery, params, optimizer,
                                    steps=3, temperature=0.02 if mode == "tcr" else 0.01,
                                    **({"queue_size": batch} if mode == "tcr" else {}))
            start = _sync(device)
            run_stream(adapter, dataset, n_gallery, batch, device)
        elapsed = _sync(device) - start if timed else 0.0
    return n_queries / elapsed


def _sync(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results/tcr_bench.json", help="JSON output file")
    args = parser.parse_args(argv)
    cpu = torch.device("cpu")
    cases = [("tiny BLIP", tiny_blip, cpu, 128, 32, 640), ("tiny CLIP", tiny_clip, cpu, 128, 32, 640)]
    if torch.cuda.is_available():
        cases.append(("BLIP-base 384px", blip_base, torch.device("cuda"), 512, 64, 25_000))
    rows = []
    print(f"{'backbone':<16}{'device':<7}{'mode':<10}{'queries/s':>10}")
    for name, build, device, n_queries, batch, n_gallery in cases:
        for mode in ("retrieval", *ADAPTIVE):
            qps = queries_per_second(mode, build, n_queries, batch, n_gallery, device)
            rows.append({"backbone": name, "device": device.type, "mode": mode, "queries": n_queries,
                         "batch": batch, "gallery": n_gallery, "steps": 0 if mode == "retrieval" else 3,
                         "queries_per_second": round(qps, 1)})
            print(f"{name:<16}{device.type:<7}{mode:<10}{qps:>10.1f}", flush=True)
    result = {"benchmark": "tcr", "torch": torch.__version__, "threads": torch.get_num_threads(),
              "machine": platform.machine(),
              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "rows": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
