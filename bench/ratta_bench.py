"""RA-TTA after-extract throughput: the per-sample loop (``--impl loop``, a port of RA-TTA:ratta_after_extract.py)
against the batched path (``--impl batched``) on identical synthetic inputs at the original's sizes.

Defaults: D = 512, AS = 100 views, C = 100 classes with 99 descriptions each (F = 10,000 bank rows), a DB of
300,000 unit fp16 rows (FGVC-sized), K_D = K_S = 20, q = 0.75. Warm-up samples are excluded from the timings.
Prints samples/s of both, the ratio, whether the predictions are identical and the largest probability gap.
``--pre_extract`` also times stage-1 view encoding (images/s) with a tiny random CLIP.

    python bench/ratta_bench.py [--device cuda] [--loop_samples 40] [--samples 512] [--batch_size 64]
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn.functional as F

from ratta.core import RattaConfig, TextBanks, adapt_batch
from ratta.loop import adapt_sample, class_blocks
from ratta.retrieval import BACKENDS, VectorIndex


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension D (default 512)")
    parser.add_argument("--classes", type=int, default=100, help="classes C (default 100)")
    parser.add_argument("--descriptions", type=int, default=99, help="descriptions per class (default 99: F=10,000)")
    parser.add_argument("--views", type=int, default=100, help="augmentation size AS (default 100)")
    parser.add_argument("--db_size", type=int, default=300_000, help="DB rows N (default 300,000)")
    parser.add_argument("--samples", type=int, default=512, help="samples timed for the batched path (default 512)")
    parser.add_argument("--loop_samples", type=int, default=40,
                        help="samples timed for the loop; compared with the batched predictions (default 40)")
    parser.add_argument("--batch_size", type=int, default=64, help="batched path batch size (default 64)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up samples/batches (default 2)")
    parser.add_argument("--search_backend", choices=BACKENDS, default="auto",
                        help="DB search of the batched path (default auto)")
    parser.add_argument("--loop_search_backend", choices=BACKENDS, default="faiss",
                        help="DB search of the loop (default faiss, as upstream)")
    parser.add_argument("--pre_extract", action="store_true", help="also time stage-1 view encoding")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs (default 0)")
    return parser


def synthetic_inputs(args: argparse.Namespace) -> dict:
    """Unit embeddings with class structure: bank rows and DB rows around class directions, test images around
    their class direction plus a distractor, views around the image."""
    g = torch.Generator().manual_seed(args.seed)
    D, C, n = args.dim, args.classes, args.descriptions + 1
    mu = F.normalize(torch.randn(C, D, generator=g), dim=1)
    name = torch.arange(C).repeat_interleave(n)
    E = F.normalize(mu[name] + 2.0 * torch.randn(C * n, D, generator=g) / D ** 0.5, dim=1)
    W = F.normalize(mu + 0.6 * torch.randn(C, D, generator=g) / D ** 0.5 * 4, dim=1).T.contiguous()
    N = args.db_size
    db_class = torch.randint(0, C, (N,), generator=g)
    db = torch.randn(N, D, generator=g) / D ** 0.5 * 5
    planted = torch.rand(N, generator=g) < 0.5
    db[planted] += mu[db_class[planted]]
    db = F.normalize(db, dim=1).half()
    total = args.samples + args.warmup * args.batch_size
    labels = torch.randint(0, C, (total,), generator=g)
    other = torch.randint(0, C, (total,), generator=g)
    x = F.normalize(mu[labels] + 0.7 * mu[other] + torch.randn(total, D, generator=g) / D ** 0.5 * 5, dim=1)
    views = F.normalize(x[:, None] + torch.randn(total, args.views, D, generator=g) / D ** 0.5 * 3, dim=2)
    return {"banks": TextBanks(W, E, name), "db": db, "x": x, "views": views, "labels": labels}


def run_loop(inputs, index, db, scale, cfg, device, start, count) -> tuple[torch.Tensor, float]:
    banks = inputs["banks"]
    blocks = class_blocks(banks.name.cpu())
    probs = []
    begin = time.perf_counter()
    for i in range(start, start + count):
        out = adapt_sample(inputs["x"][i:i + 1].to(device), inputs["views"][i].to(device), banks, blocks, index, db,
                           scale, cfg)
        probs.append(out["p"].cpu())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return torch.stack(probs), time.perf_counter() - begin


def run_batched(inputs, index, db, scale, cfg, device, start, count, batch_size) -> tuple[torch.Tensor, float]:
    probs, sets = [], []
    begin = time.perf_counter()
    for i in range(start, start + count, batch_size):
        stop = min(i + batch_size, start + count)
        out = adapt_batch(inputs["x"][i:stop].to(device), inputs["views"][i:stop].to(device), inputs["banks"], index,
                          db, scale, cfg)
        probs.append(out.p.cpu())
        sets.append(out.num_sets.cpu())
    if device.type == "cuda":
        torch.cuda.synchronize()
    run_batched.mean_sets = float(torch.cat(sets).float().mean())
    return torch.cat(probs), time.perf_counter() - begin


def bench_pre_extract(device: torch.device, views: int) -> None:
    from common.clip import CLIP, TINY_CLIP, ClipRetrievalWrapper

    model = ClipRetrievalWrapper(CLIP(**TINY_CLIP["vit"]).to(device).eval())
    images = torch.randn(4 * (views + 1), 3, 32, 32, device=device)
    with torch.no_grad():
        model.encode_image(images)
        begin = time.perf_counter()
        for _ in range(5):
            model.encode_image(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
    rate = 5 * images.shape[0] / (time.perf_counter() - begin)
    print(f"pre-extract encoding (tiny CLIP, 32 px, {views + 1} crops per test image): {rate:.0f} crops/s = "
          f"{rate / (views + 1):.1f} test images/s (excluding JPEG decoding and crops)")


def main() -> None:
    args = build_parser().parse_args()
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    inputs = synthetic_inputs(args)
    banks = inputs["banks"]
    inputs["banks"] = TextBanks(banks.W.to(device), banks.E.to(device), banks.name.to(device))
    db = inputs["db"].to(device)
    index = VectorIndex(inputs["db"], args.search_backend, device)
    loop_index = VectorIndex(inputs["db"], args.loop_search_backend, device)
    scale = torch.tensor(100.0, device=device)
    cfg = RattaConfig()
    print(f"D={args.dim} AS={args.views} C={args.classes} F={banks.E.shape[0]} N={args.db_size} on {device} "
          f"(search: loop {loop_index.backend}, batched {index.backend}; threads: {torch.get_num_threads()})")
    warm = args.warmup * args.batch_size
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_loop(inputs, loop_index, db, scale, cfg, device, 0, args.warmup)
        run_batched(inputs, index, db, scale, cfg, device, 0, warm, args.batch_size)
        loop_p, loop_s = run_loop(inputs, loop_index, db, scale, cfg, device, warm, args.loop_samples)
        batched_p, batched_s = run_batched(inputs, index, db, scale, cfg, device, warm, args.samples, args.batch_size)
    loop_rate, batched_rate = args.loop_samples / loop_s, args.samples / batched_s
    same = torch.equal(loop_p.argmax(1), batched_p[: args.loop_samples].argmax(1))
    gap = (loop_p - batched_p[: args.loop_samples]).abs().max().item()
    labels = inputs["labels"][warm:warm + args.samples]
    print(f"loop:    {loop_rate:9.1f} samples/s ({1000 / loop_rate:.1f} ms/sample, {args.loop_samples} samples)")
    print(f"batched: {batched_rate:9.1f} samples/s ({1000 / batched_rate:.2f} ms/sample, {args.samples} samples, "
          f"batch {args.batch_size})")
    print(f"speed-up batched/loop: {batched_rate / loop_rate:.1f}x")
    print(f"identical predictions on the {args.loop_samples} shared samples: {same} (max |p_loop - p_batched| "
          f"{gap:.2e}); batched top-1 {100 * (batched_p.argmax(1) == labels).float().mean():.1f}%, "
          f"{run_batched.mean_sets:.2f} sets per sample")
    if args.pre_extract:
        bench_pre_extract(device, args.views)


if __name__ == "__main__":
    main()
