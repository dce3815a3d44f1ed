"""Candidate Re-ranking stage-2 throughput: pairs per second of the original per-query re-ranking (one forward per
query over its K candidates, every candidate's cross-attention keys/values recomputed for every pair, fp32) vs ours
(keys/values once per candidate image, many pairs per forward), on identical random inputs, with the score difference.

    python bench/reranking_cir_bench.py [--sizes tiny base] [--rounds 5] [--json bench/results/reranking_cir_bench.json]

Default sizes: tiny and base with CUDA, tiny alone on CPU (base takes minutes there: ask for it with --sizes base).

Sizes: ``tiny`` (the demo's BLIP: 65 image tokens of width 64, 2 layers of width 64) and ``base`` (ViT-B/16 tokens at
384 px: 577 x 768; BERT-base dual encoder, 12 layers). Random weights, captions of ``--length`` tokens, K = 50.
``--queries`` queries draw their top-K from a gallery of ``--gallery`` images (so each image serves
queries x K / gallery pairs, about 90 on CIRR val); the original path runs on the first ``--reference-queries`` of
them (its pairs/s does not depend on how many), ours on all; scores are compared on the common queries. On CUDA
bf16 is measured too. The paths run in interleaved rounds after one untimed call each; prints median
[min-max] pairs/s and the original/ours ratio, writes JSON.
"""
from __future__ import annotations

import argparse

import torch

from common.bench import Bench, add_arguments
from common.blip import CirStage2, MedConfig, ViTConfig
from common.blip.tiny import tiny_med_config
from reranking_cir.scoring import Queries, stage2_scores

SIZES = {
    "tiny": {"vit": ViTConfig(patch_size=8, width=64, depth=2, heads=4), "image_size": 64,
             "med": tiny_med_config(123, 64, hidden_size=64, heads=4, intermediate_size=128, max_positions=128),
             "queries": 64, "gallery": 40, "reference_queries": 64},
    "base": {"vit": ViTConfig.base(), "image_size": 384, "med": MedConfig.base(), "queries": 12, "gallery": 50,
             "reference_queries": 2},
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=None, choices=list(SIZES),
                        help="model sizes (default: tiny and base with CUDA, tiny on CPU)")
    parser.add_argument("--k", type=int, default=50, help="candidates per query (default 50)")
    parser.add_argument("--length", type=int, default=24, help="caption tokens (default 24)")
    parser.add_argument("--queries", type=int, default=None, help="queries of our path (default per size)")
    parser.add_argument("--gallery", type=int, default=None, help="gallery images (default per size)")
    parser.add_argument("--reference-queries", type=int, default=None,
                        help="queries of the original path (default per size)")
    parser.add_argument("--pair-batch", type=int, default=128, help="pairs per forward of our path (default 128)")
    parser.add_argument("--image-chunk", type=int, default=16, help="images whose keys/values are held (default 16)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add_arguments(parser, "reranking_cir_bench", rounds=5)
    return parser


def inputs(size: dict, args: argparse.Namespace, device: torch.device):
    """Random stage 2 (eval), gallery tokens, queries and their top-K rows, all from seed 0."""
    torch.manual_seed(0)
    model = CirStage2(size["vit"], size["med"], size["image_size"], enc_token_id=size["med"].vocab_size - 1,
                      merge_start_layer=size["med"].num_hidden_layers // 2).to(device).eval()
    n_tokens = (size["image_size"] // size["vit"].patch_size) ** 2 + 1
    gallery = torch.randn(args.gallery or size["gallery"], n_tokens, size["vit"].width, device=device)
    n_queries = args.queries or size["queries"]
    hidden = size["med"].hidden_size
    queries = Queries([torch.randint(1000 % size["med"].vocab_size, size["med"].vocab_size - 2, (args.length,))
                       for _ in range(n_queries)],
                      z_t=[torch.randn(args.length, hidden, device=device) for _ in range(n_queries)])
    candidates = torch.stack([torch.randperm(len(gallery))[:args.k] for _ in range(n_queries)])
    return model, gallery, queries, candidates


def subset(queries: Queries, n: int) -> Queries:
    return Queries(queries.input_ids[:n], z_t=queries.z_t[:n])


def bench_size(name: str, args: argparse.Namespace, device: torch.device, bench: Bench) -> dict:
    size = SIZES[name]
    model, gallery, queries, candidates = inputs(size, args, device)
    tokens = lambda rows: gallery[rows.to(device)]  # noqa: E731
    n_ref = min(args.reference_queries or size["reference_queries"], len(queries))
    options = dict(pair_batch=args.pair_batch, image_chunk=args.image_chunk)
    paths = {"original": lambda: stage2_scores(model, subset(queries, n_ref), candidates[:n_ref], tokens,
                                               kv_reuse=False),
             "ours": lambda: stage2_scores(model, queries, candidates, tokens, **options)}
    units = {"original": n_ref * args.k, "ours": len(queries) * args.k}
    if device.type == "cuda":
        paths["ours bf16"] = lambda: stage2_scores(model, queries, candidates, tokens, dtype="bf16", **options)
        units["ours bf16"] = units["ours"]
    label = (f"{name} on {device}: K={args.k}, {args.length} tokens, original {n_ref} queries, ours {len(queries)} "
             f"queries ({len(queries) * args.k / len(gallery):.0f} pairs per image)")
    case, out = bench.compare(label, paths, units, {"original/ours": ("original", "ours")}, unit="pair",
                              device=device)
    reference, ours = out["original"], out["ours"][:n_ref]
    case.update(size=name, device=str(device), k=args.k, length=args.length, gallery=len(gallery),
                reference_queries=n_ref, queries=len(queries), pairs_per_image=len(queries) * args.k / len(gallery),
                max_abs_score_diff=(ours - reference).abs().max().item(),
                same_order=bool(torch.equal(ours.argsort(dim=1), reference.argsort(dim=1))))
    if device.type == "cuda":
        order = out["ours bf16"][:n_ref].argsort(dim=1, descending=True) == reference.argsort(dim=1, descending=True)
        case["bf16_same_rank_fraction"] = order.float().mean().item()
    print(f"  max |score diff| {case['max_abs_score_diff']:.2e}, same order {case['same_order']}")
    return case


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench("reranking_cir_bench", args)
    for name in args.sizes or (["tiny", "base"] if device.type == "cuda" else ["tiny"]):
        bench_size(name, args, device, bench)
    return bench.finish()


if __name__ == "__main__":
    main()
