"""TCR's online stream side by side: the original's adaptation path (written here step by step as upstream runs it)
against ours (``tcr.engine.run_stream`` with the TCR adapter) on identical inputs and initial weights, with tent and
plain retrieval (encode + score, no gradient) for scale; queries per second, 3 steps per batch.

    python bench/tcr_bench.py [--rounds 5] [--json bench/results/tcr_bench.json]

Tiny random-weight BLIP and CLIP run on CPU; random-weight BLIP-base at 384 px (the paper's main backbone, global
batch 64, a 25,000-caption gallery as on COCO) runs only when CUDA is available. Gallery features are random unit
vectors computed once per run: the query stream is what is measured. Paths run in interleaved rounds after one
untimed call each; prints median [min-max], the original/ours ratio and the largest score difference, writes JSON.
"""
from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from common.bench import Bench, add_arguments
from common.blip import BlipItc, MedConfig, ViTConfig
from common.clip import CLIP, TINY_CLIP
from common.transforms import blip_eval_transform
from tcr.stream import query_stream, run_stream
from tcr.method import build_adapter, build_optimizer
from tcr.models import Backbone, BlipBackbone, ClipBackbone
from common.tta import train_only


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


def original_stream(backbone: Backbone, gallery: torch.Tensor, dataset: RandomImages, batch: int,
                    device: torch.device, steps: int = 3, queue_size: int = 64) -> torch.Tensor:
    """TCR's stream written step by step as the original runs it (models/tta_baselines/tcr.py, losses.py,
    main.py::test_time_tune): per step the full forward, ``z Gᵀ``, argmax candidates, B-way entropy, the
    source-like queue (step 0 of the first 10 batches, cat + argsort), the three losses, the four logged values
    read back with ``.item()``, zero_grad/backward/AdamW; the last forward's scores go into a score matrix."""
    params, _ = backbone.query_norm_params("i2t")
    optimizer = torch.optim.AdamW(params, lr=3e-4, weight_decay=1e-4)
    scores = torch.full((len(dataset), len(gallery)), -100.0, device=device)
    queue: list[torch.Tensor] = []
    logged: list[float] = []
    for query_batch in query_stream(dataset, batch, device):
        images, rows, position = query_batch.inputs, query_batch.indices, query_batch.position
        for step in range(steps):
            with torch.enable_grad():
                z = backbone.encode_query(images, "i2t")
                sims = z @ gallery.t()
                candidates = gallery[sims.detach().argmax(dim=1)]
                logits = z @ candidates.t() / 0.02
                entropy = -(logits.softmax(1) * logits.log_softmax(1)).sum(1)
                if step == 0 and position < 10:
                    si = (2 * (z - candidates).norm(dim=1) - (z - z.mean(0)).norm(dim=1)
                          - (candidates - candidates.mean(0)).norm(dim=1))
                    chosen = si.detach().argsort()[: int(0.3 * len(rows))]
                    new = [si.detach()[chosen], z.detach()[chosen], candidates[chosen], entropy.detach()[chosen]]
                    queue = [torch.cat([old, part]) for old, part in zip(queue, new)] if queue else new
                    if len(queue[0]) >= queue_size:
                        keep = queue[0].argsort()[:queue_size]
                        queue = [part[keep] for part in queue]
                threshold = queue[3].max()
                kept = entropy <= threshold
                weight = (1 - entropy.detach() / (threshold + 1e-3)).clamp_min(0)
                rem = (weight * entropy)[kept].mean() if kept.any() else entropy.sum() * 0
                uni = torch.exp(-0.1 * (z - z.mean(0)).norm(dim=1)).mean()
                target = (F.normalize(queue[1], dim=-1).mean(0) - F.normalize(queue[2], dim=-1).mean(0)).norm()
                gap = ((F.normalize(z, dim=-1).mean(0) - F.normalize(candidates, dim=-1).mean(0)).norm() - target) ** 2
                loss = rem + uni + gap
                logged += [loss.item(), rem.item(), uni.item(), gap.item()]
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        scores[rows] = sims.detach().float()
    return scores.cpu()


def stream_paths(build, n_queries: int, batch: int, n_gallery: int, device: torch.device) -> dict:
    """Calls running the whole query stream once from the same initial weights: the original's TCR path, ours
    (``tcr.engine.run_stream``), tent, and plain retrieval (encode + score, no gradient)."""
    torch.manual_seed(0)
    backbone, size = build(device)
    dataset = RandomImages(n_queries, size)
    dim = backbone.model.vision_proj.out_features if isinstance(backbone, BlipBackbone) else backbone.clip.dim
    gallery = F.normalize(torch.randn(n_gallery, dim, device=device), dim=1).to(backbone.feature_dtype)
    params, _ = backbone.query_norm_params("i2t")
    train_only(backbone, params)
    initial = copy.deepcopy(backbone.state_dict())

    def fresh() -> list:
        backbone.load_state_dict(initial)
        return backbone.query_norm_params("i2t")[0]

    def adapted(mode: str) -> torch.Tensor:
        params = fresh()
        optimizer = build_optimizer(mode, params, lr=3e-4, weight_decay=1e-4)
        adapter = build_adapter(mode, lambda x: backbone.encode_query(x, "i2t"), gallery, params, optimizer,
                                steps=3, temperature=0.02 if mode == "tcr" else 0.01,
                                **({"queue_size": batch} if mode == "tcr" else {}))
        return run_stream(adapter, dataset, n_gallery, batch, device)

    def retrieval() -> None:
        with torch.no_grad():
            for index in range(0, n_queries, batch):
                images = dataset.images[index:index + batch].to(device)
                (backbone.encode_query(images, "i2t") @ gallery.t()).topk(10, dim=1)

    def original() -> torch.Tensor:
        fresh()
        with torch.no_grad():
            return original_stream(backbone, gallery, dataset, batch, device, queue_size=batch)

    return {"original": original, "ours": lambda: adapted("tcr"), "tent": lambda: adapted("tent"),
            "retrieval": retrieval}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, "tcr_bench", rounds=5)
    args = parser.parse_args(argv)
    cpu = torch.device("cpu")
    cases = [("tiny BLIP", tiny_blip, cpu, 128, 32, 640), ("tiny CLIP", tiny_clip, cpu, 128, 32, 640)]
    if torch.cuda.is_available():
        cases.append(("BLIP-base 384px", blip_base, torch.device("cuda"), 512, 64, 25_000))
    bench = Bench("tcr_bench", args)
    for name, build, device, n_queries, batch, n_gallery in cases:
        paths = stream_paths(build, n_queries, batch, n_gallery, device)
        case, out = bench.compare(f"{name} on {device.type}: {n_queries} queries, batch {batch}, gallery {n_gallery}, "
                                  f"3 steps", paths, dict.fromkeys(paths, n_queries),
                                  {"original/ours": ("original", "ours")}, unit="query", device=device)
        case["max_abs_score_difference"] = (out["original"] - out["ours"]).abs().max().item()
        print(f"  max |score original - ours| {case['max_abs_score_difference']:.2e}")
    return bench.finish()


if __name__ == "__main__":
    main()
