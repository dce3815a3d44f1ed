"""Candidate Re-ranking stage-2 throughput: pairs per second of the original per-query re-ranking (one forward per
query over its K candidates, every candidate's cross-attention keys/values recomputed for every pair, fp32) vs ours
(keys/values once per candidate image, many pairs per forward), on identical random inputs, with the score difference.

    python bench/reranking_cir_bench.py [--sizes tiny base] [--captions fixed cirr fashioniq] [--rounds 5]
        [--json bench/results/reranking_cir_bench.json]

Default sizes: tiny and base with CUDA, tiny alone on CPU (base takes minutes there: ask for it with --sizes base).

Sizes: ``tiny`` (the demo's BLIP: 65 image tokens of width 64, 2 layers of width 64) and ``base`` (ViT-B/16 tokens at
384 px: 577 x 768; BERT-base dual encoder, 12 layers). Random weights, K = 50. Caption lengths (``--captions``):
``fixed`` gives every caption ``--length`` tokens; ``cirr`` and ``fashioniq`` draw them (seed 0) from the real CIRR val
and FashionIQ val captions in ``--annotations`` (FashionIQ as queried, "C1 and c2"; a source whose files are absent is
skipped). Their tokens: the demo's tiny vocabulary at tiny size; at base size BLIP's BERT tokenizer where it is found
(``$BLIP_TOKENIZER_DIR`` or the Hugging Face cache), else BERT's basic word split + 2 as an approximation (it ignores
word-piece splits). With real lengths, our path also runs without length-sorted pair batches ("unbucketed":
image-major batches, each padded to its longest caption), and the caption tokens per pair that ``stage2_scores``
forms at its default pair batch and image chunk are counted over all val queries (K random candidates each from
their val gallery), with and without length-sorted batches.

``--queries`` queries draw their top-K from a gallery of ``--gallery`` images (so each image serves
queries x K / gallery pairs, about 90 on CIRR val); the original path runs on the first ``--reference-queries`` of
them (its pairs/s does not depend on how many), ours on all; scores are compared on the common queries. On CUDA
bf16 is measured too. The paths run in interleaved rounds after one untimed call each; prints median
[min-max] pairs/s and the original/ours (and unbucketed/ours) ratios, writes JSON.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
from pathlib import Path

import torch
from torch import nn
from transformers.models.bert.tokenization_bert import BasicTokenizer

from common.bench import Bench, add_arguments
from common.blip import CirStage2, MedConfig, ViTConfig, build_blip_tokenizer
from common.blip.tiny import tiny_med_config, write_tiny_vocab
from common.data.cir import FIQ_DRESS_TYPES, fiq_val_caption
from common.synthetic.scenes import vocabulary
from reranking_cir.scoring import Queries, stage2_scores

ANNOTATIONS = Path(__file__).resolve().parents[2] / "shared" / "real_annotations"
CAPTION_SOURCES = ("fixed", "cirr", "fashioniq")

SIZES = {
    "tiny": {"vit": ViTConfig(patch_size=8, width=64, depth=2, heads=4), "image_size": 64,
             "med": tiny_med_config(123, 64, hidden_size=64, heads=4, intermediate_size=128, max_positions=512),
             "queries": 128, "gallery": 80, "reference_queries": 64},
    "base": {"vit": ViTConfig.base(), "image_size": 384, "med": MedConfig.base(), "queries": 12, "gallery": 50,
             "reference_queries": 2},
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=None, choices=list(SIZES),
                        help="model sizes (default: tiny and base with CUDA, tiny on CPU)")
    parser.add_argument("--k", type=int, default=50, help="candidates per query (default 50)")
    parser.add_argument("--captions", nargs="+", default=list(CAPTION_SOURCES), choices=CAPTION_SOURCES,
                        help="caption-length sources (default: all; see above)")
    parser.add_argument("--length", type=int, default=24, help="caption tokens of --captions fixed (default 24)")
    parser.add_argument("--annotations", type=Path, default=ANNOTATIONS,
                        help=f"folder of the real annotation files (default {ANNOTATIONS})")
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


def real_query_sets(source: str, annotations: Path) -> list[tuple[list[str], int]] | None:
    """(val query strings, gallery size) of each query set of ``source`` ('cirr'; 'fashioniq': one per category) in
    ``annotations``, or None where absent."""
    if source == "cirr":
        names = [("cirr/captions/cap.rc2.val.json", "cirr/image_splits/split.rc2.val.json")]
    else:
        names = [(f"fashioniq/captions/cap.{name}.val.json", f"fashioniq/image_splits/split.{name}.val.json")
                 for name in FIQ_DRESS_TYPES]
    paths = [(annotations / captions, annotations / split) for captions, split in names]
    if not all(path.is_file() for pair in paths for path in pair):
        return None
    sets = []
    for captions, split in paths:
        triplets = json.loads(captions.read_text())
        sets.append(([t["caption"] if source == "cirr" else fiq_val_caption(t["captions"]) for t in triplets],
                     len(json.loads(split.read_text()))))
    return sets


class PaddingCounter(nn.Module):
    """A stand-in stage 2 for ``stage2_scores`` that scores nothing and counts the caption tokens of its pair
    batches, padding included."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.tokens = 0

    def candidate_kv(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens

    def score_pairs(self, z_t, input_ids, attention_mask, kv, rows) -> torch.Tensor:
        self.tokens += input_ids.numel()
        return torch.zeros(len(rows))


def tokens_per_pair(query_sets: list[tuple[list[int], int]], k: int, by_length: bool) -> float:
    """Caption tokens per pair (padding included) of ``stage2_scores`` at its default pair batch and image chunk,
    each query of caption lengths ``query_sets[i][0]`` with ``k`` random candidates of its set's gallery."""
    counter, pairs, generator = PaddingCounter(), 0, torch.Generator().manual_seed(0)
    for lengths, n_images in query_sets:
        queries = Queries([torch.zeros(n, dtype=torch.long) for n in lengths], z_t=[torch.zeros(n, 1) for n in lengths])
        candidates = torch.stack([torch.randperm(n_images, generator=generator)[:k] for _ in lengths])
        stage2_scores(counter, queries, candidates, lambda rows: rows, by_length=by_length,
                      desc="padding count")
        pairs += candidates.numel()
    return counter.tokens / pairs


def length_counter(size_name: str):
    """``(count, name)``: the token count of a caption at this size and how it is counted."""
    if size_name == "tiny":
        with tempfile.TemporaryDirectory() as folder:
            tokenizer = build_blip_tokenizer(write_tiny_vocab(folder, extra_words=vocabulary()))
        return lambda text: len(tokenizer(text)["input_ids"]), "demo tiny vocabulary"
    try:
        tokenizer = build_blip_tokenizer()
        return lambda text: len(tokenizer(text)["input_ids"]), "BERT tokenizer"
    except FileNotFoundError:
        basic = BasicTokenizer(do_lower_case=True)
        return lambda text: len(basic.tokenize(text)) + 2, "basic word split + 2 (approximate: no BERT vocab)"


def caption_lengths(source: str, size_name: str, args: argparse.Namespace) -> dict | None:
    """The caption lengths of ``source``: ``sets`` (each real val query set's lengths and gallery size; for 'fixed'
    none) and ``counted_by``; None when the source's files are absent."""
    if source == "fixed":
        return {"sets": [], "counted_by": "fixed"}
    query_sets = real_query_sets(source, args.annotations)
    if query_sets is None:
        print(f"skipped {source}: its val captions or image splits are not in {args.annotations}")
        return None
    count, counted = length_counter(size_name)
    return {"sets": [([count(text) for text in captions], n_images) for captions, n_images in query_sets],
            "counted_by": counted}


def inputs(size: dict, args: argparse.Namespace, device: torch.device, lengths: list[int]):
    """Random stage 2 (eval), gallery tokens, queries of caption ``lengths`` and their top-K rows, from seed 0."""
    torch.manual_seed(0)
    model = CirStage2(size["vit"], size["med"], size["image_size"], enc_token_id=size["med"].vocab_size - 1,
                      merge_start_layer=size["med"].num_hidden_layers // 2).to(device).eval()
    n_tokens = (size["image_size"] // size["vit"].patch_size) ** 2 + 1
    gallery = torch.randn(args.gallery or size["gallery"], n_tokens, size["vit"].width, device=device)
    if args.k > len(gallery):
        raise SystemExit(f"--k {args.k} exceeds the {len(gallery)} gallery images: raise --gallery")
    hidden = size["med"].hidden_size
    queries = Queries([torch.randint(1000 % size["med"].vocab_size, size["med"].vocab_size - 2, (n,)) for n in lengths],
                      z_t=[torch.randn(n, hidden, device=device) for n in lengths])
    candidates = torch.stack([torch.randperm(len(gallery))[:args.k] for _ in lengths])
    return model, gallery, queries, candidates


def subset(queries: Queries, n: int) -> Queries:
    return Queries(queries.input_ids[:n], z_t=queries.z_t[:n])


def bench_case(name: str, source: str, args: argparse.Namespace, device: torch.device, bench: Bench) -> dict | None:
    size = SIZES[name]
    found = caption_lengths(source, name, args)
    if found is None:
        return None
    n_queries = args.queries or size["queries"]
    every_length = [n for lengths, _ in found["sets"] for n in lengths]
    lengths = random.Random(0).sample(every_length, n_queries) if every_length else [args.length] * n_queries
    model, gallery, queries, candidates = inputs(size, args, device, lengths)
    tokens = lambda rows: gallery[rows.to(device)]  # noqa: E731
    n_ref = min(args.reference_queries or size["reference_queries"], len(queries))
    options = dict(pair_batch=args.pair_batch, image_chunk=args.image_chunk)
    paths = {"original": lambda: stage2_scores(model, subset(queries, n_ref), candidates[:n_ref], tokens,
                                               kv_reuse=False),
             "ours": lambda: stage2_scores(model, queries, candidates, tokens, **options)}
    units = {"original": n_ref * args.k, "ours": len(queries) * args.k}
    ratios = {"original/ours": ("original", "ours")}
    if source != "fixed":
        paths["unbucketed"] = lambda: stage2_scores(model, queries, candidates, tokens, by_length=False, **options)
        units["unbucketed"] = units["ours"]
        ratios["unbucketed/ours"] = ("unbucketed", "ours")
    if device.type == "cuda":
        paths["ours bf16"] = lambda: stage2_scores(model, queries, candidates, tokens, dtype="bf16", **options)
        units["ours bf16"] = units["ours"]
    length_text = (f"{args.length} tokens" if source == "fixed" else
                   f"{source} val caption lengths (mean {statistics.mean(lengths):.1f}, max {max(lengths)} tokens)")
    label = (f"{name} on {device}: K={args.k}, {length_text}, original {n_ref} queries, ours {len(queries)} "
             f"queries ({len(queries) * args.k / len(gallery):.0f} pairs per image)")
    case, out = bench.compare(label, paths, units, ratios, unit="pair", device=device)
    reference, ours = out["original"], out["ours"][:n_ref]
    case.update(size=name, device=str(device), k=args.k, captions=source, lengths_counted_by=found["counted_by"],
                length_mean=statistics.mean(lengths), length_max=max(lengths), gallery=len(gallery),
                reference_queries=n_ref, queries=len(queries), pairs_per_image=len(queries) * args.k / len(gallery),
                max_abs_score_diff=(ours - reference).abs().max().item(),
                same_order=bool(torch.equal(ours.argsort(dim=1), reference.argsort(dim=1))))
    if "unbucketed" in out:
        case["max_abs_unbucketed_diff"] = (out["ours"] - out["unbucketed"]).abs().max().item()
        case["val_tokens_per_pair"] = {"unpadded": statistics.mean(every_length),
                                       **{key: tokens_per_pair(found["sets"], args.k, by_length)
                                          for key, by_length in (("unbucketed", False), ("ours", True))}}
        print(f"  max |bucketed - unbucketed| {case['max_abs_unbucketed_diff']:.2e}; all {len(every_length)} val "
              f"queries, script's pair batches: " + ", ".join(f"{key} {value:.1f}" for key, value in
                                                             case["val_tokens_per_pair"].items()) + " tokens per pair")
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
        for source in args.captions:
            bench_case(name, source, args, device, bench)
    return bench.finish()


if __name__ == "__main__":
    main()
