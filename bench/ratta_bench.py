"""RA-TTA after-extract throughput: the per-sample loop (``--impl loop``, a port of RA-TTA:ratta_after_extract.py)
against the batched path (``--impl batched``) on identical synthetic inputs at the original's sizes, and the batched
path against its floor: the ``Z·Eᵀ`` matmul (views x description bank) over the same samples.

Defaults: D = 512, AS = 100 views, C = 100 classes with 99 descriptions each (F = 10,000 bank rows), a DB of
300,000 unit fp16 rows (FGVC-sized), K_D = K_S = 20, q = 0.75. After one untimed call of each, floor, loop and
batched run in interleaved rounds; prints the median [min-max] ms per sample of each, the loop/batched speed-up,
the batched/floor multiple, whether the predictions are identical and the largest probability gap, and writes JSON.
``--pre_extract`` also times stage-1 view encoding (images/s) with a tiny random CLIP.

    python bench/ratta_bench.py [--device cuda] [--loop_samples 16] [--samples 192] [--batch_size 64] [--rounds 5]
"""
from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn.functional as F

from common.bench import Bench, add_arguments
from ratta.core import CHUNK_ELEMENTS, RattaConfig, TextBanks, adapt_batch
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
    parser.add_argument("--samples", type=int, default=192,
                        help="samples timed for the batched path and the floor (default 192)")
    parser.add_argument("--loop_samples", type=int, default=16,
                        help="samples timed for the loop; compared with the batched predictions (default 16)")
    parser.add_argument("--batch_size", type=int, default=64, help="batched path batch size (default 64)")
    parser.add_argument("--search_backend", choices=BACKENDS, default="auto",
                        help="DB search of the batched path (default auto)")
    parser.add_argument("--loop_search_backend", choices=BACKENDS, default="faiss",
                        help="DB search of the loop (default faiss, as upstream)")
    parser.add_argument("--pre_extract", action="store_true", help="also time stage-1 view encoding")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic inputs (default 0)")
    add_arguments(parser, "ratta_bench", rounds=5)
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
    total = max(args.samples, args.loop_samples)
    labels = torch.randint(0, C, (total,), generator=g)
    other = torch.randint(0, C, (total,), generator=g)
    x = F.normalize(mu[labels] + 0.7 * mu[other] + torch.randn(total, D, generator=g) / D ** 0.5 * 5, dim=1)
    views = F.normalize(x[:, None] + torch.randn(total, args.views, D, generator=g) / D ** 0.5 * 3, dim=2)
    return {"banks": TextBanks(W, E, name), "db": db, "x": x, "views": views, "labels": labels}


def run_loop(inputs, index, db, scale, cfg, device, start, count) -> torch.Tensor:
    banks = inputs["banks"]
    blocks = class_blocks(banks.name.cpu())
    probs = []
    for i in range(start, start + count):
        out = adapt_sample(inputs["x"][i:i + 1].to(device), inputs["views"][i].to(device), banks, blocks, index, db,
                           scale, cfg)
        probs.append(out["p"].cpu())
    return torch.stack(probs)


def run_batched(inputs, index, db, scale, cfg, device, start, count, batch_size) -> tuple[torch.Tensor, torch.Tensor]:
    """Probabilities [count, C] and sets per sample [count]."""
    probs, sets = [], []
    for i in range(start, start + count, batch_size):
        stop = min(i + batch_size, start + count)
        out = adapt_batch(inputs["x"][i:stop].to(device), inputs["views"][i:stop].to(device), inputs["banks"], index,
                          db, scale, cfg)
        probs.append(out.p.cpu())
        sets.append(out.num_sets.cpu())
    return torch.cat(probs), torch.cat(sets)


def run_floor(inputs, device, start, count, batch_size) -> None:
    """The batched path's unavoidable work: ``Z·Eᵀ`` over the same samples, chunked as in ``top_descriptions``."""
    E = inputs["banks"].E
    for i in range(start, start + count, batch_size):
        stop = min(i + batch_size, start + count)
        Z = torch.cat([inputs["x"][i:stop, None], inputs["views"][i:stop]], dim=1).to(device)
        step = max(1, CHUNK_ELEMENTS // (Z.shape[1] * E.shape[0]))
        for j in range(0, Z.shape[0], step):
            Z[j:j + step] @ E.T


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
    bench = Bench("ratta_bench", args)
    paths = {"floor": lambda: run_floor(inputs, device, 0, args.samples, args.batch_size),
             "loop": lambda: run_loop(inputs, loop_index, db, scale, cfg, device, 0, args.loop_samples),
             "batched": lambda: run_batched(inputs, index, db, scale, cfg, device, 0, args.samples, args.batch_size)}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case, out = bench.compare("after-extract", paths, {"floor": args.samples, "loop": args.loop_samples,
                                                           "batched": args.samples},
                                  {"loop/batched": ("loop", "batched"), "batched/floor": ("batched", "floor")},
                                  unit="sample", device=device)
    loop_p, (batched_p, sets) = out["loop"], out["batched"]
    shared = batched_p[: args.loop_samples]
    case["identical_predictions"] = bool(torch.equal(loop_p.argmax(1), shared.argmax(1)))
    case["max_abs_probability_difference"] = (loop_p - shared).abs().max().item()
    case["batched_top1"] = (batched_p.argmax(1) == inputs["labels"][: args.samples]).float().mean().item()
    case["sets_per_sample"] = sets.float().mean().item()
    print(f"identical predictions on the {args.loop_samples} shared samples: {case['identical_predictions']} "
          f"(max |p_loop - p_batched| {case['max_abs_probability_difference']:.2e}); batched top-1 "
          f"{100 * case['batched_top1']:.1f}%, {case['sets_per_sample']:.2f} sets per sample")
    if args.pre_extract:
        bench_pre_extract(device, args.views)
    bench.finish(device=str(device), sizes={"dim": args.dim, "views": args.views, "classes": args.classes,
                                            "bank_rows": banks.E.shape[0], "db_rows": args.db_size,
                                            "batch_size": args.batch_size})


if __name__ == "__main__":
    main()
