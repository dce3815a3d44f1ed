"""Candidate Re-ranking stage-2 training memory: peak resident memory of one training step (forward over the
batch's B x B query-candidate pairs, cross-entropy, backward) with the original per-query path (every pair
recomputes and keeps its candidate's cross-attention keys/values) against ours (keys/values once per candidate
image, ``--kv_reuse``), at BLIP-base size with random weights on CPU.

    python bench/reranking_memory_bench.py [--batch 4] [--length 24] [--rounds 2]

Each measurement runs in a fresh Python process: it builds the model and the step's inputs, reads its peak
resident set (``ru_maxrss``), runs the step and reads it again; the step's peak is the difference. The ViT is frozen
(stage 2's default) and the target tokens are inputs, as in ``reranking_cir/stage2_train.py``; the model is in
train mode, so dropout draws differ between the paths (their equal scores are tested in tests/test_reranking_*).
Prints median [min-max] MB over the rounds and the ratio, and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from common.bench import Bench, add_arguments, spread
from common.blip import CirStage2, MedConfig, ViTConfig
from reranking_cir.stage2_train import PairScores

VARIANTS = {"original": False, "ours": True}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=4, help="queries per step B (B x B pairs; default 4)")
    parser.add_argument("--length", type=int, default=24, help="caption tokens (default 24)")
    parser.add_argument("--variant", choices=VARIANTS, default=None, help=argparse.SUPPRESS)
    add_arguments(parser, "reranking_memory_bench", rounds=2, warmup=None)
    return parser


def peak_mb() -> float:
    """This process's peak resident set so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(variant: str, batch: int, length: int) -> dict:
    """One training step of ``variant`` in this process: peak MB before and after, and seconds."""
    torch.manual_seed(0)
    med = MedConfig.base()
    model = CirStage2(ViTConfig.base(), med, 384, enc_token_id=med.vocab_size - 1,
                      merge_start_layer=med.num_hidden_layers // 2).train()
    model.visual_encoder.requires_grad_(False)
    scores_fn = PairScores(model, VARIANTS[variant])
    z_t = torch.randn(batch, length, med.hidden_size)
    input_ids = torch.randint(1000, med.vocab_size - 2, (batch, length))
    mask = torch.ones(batch, length, dtype=torch.long)
    targets = torch.randn(batch, 577, 768)
    before = peak_mb()
    start = time.perf_counter()
    scores = scores_fn(z_t, input_ids, mask, targets)
    F.cross_entropy(scores.float(), torch.arange(batch)).backward()
    return {"peak_before_mb": before, "peak_after_mb": peak_mb(), "step_mb": peak_mb() - before,
            "seconds": time.perf_counter() - start}


def run_child(variant: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--variant", variant, "--batch", str(args.batch), "--length", str(args.length)]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])


def main() -> None:
    args = build_parser().parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.batch, args.length)))
        return
    bench = Bench("reranking_memory_bench", args)
    runs = {variant: [] for variant in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            runs[variant].append(run_child(variant, args))
    step = {variant: [run["step_mb"] for run in runs[variant]] for variant in VARIANTS}
    case = {"label": f"BLIP-base stage-2 training step, B={args.batch} ({args.batch ** 2} pairs), "
                     f"{args.length} tokens, CPU fp32", "rounds": args.rounds,
            "paths": {variant: {"step_peak_mb": spread(step[variant]),
                                "peak_before_mb": spread([r["peak_before_mb"] for r in runs[variant]]),
                                "seconds": spread([r["seconds"] for r in runs[variant]])} for variant in VARIANTS},
            "ratios": {"original/ours": spread([a / b for a, b in zip(step["original"], step["ours"])])}}
    bench.cases.append(case)
    print(f"{case['label']} ({args.rounds} fresh processes each, median [min-max]):")
    for variant, path in case["paths"].items():
        s = path["step_peak_mb"]
        print(f"  {variant:<9} step peak +{s['median']:.0f} MB [{s['min']:.0f}-{s['max']:.0f}] over "
              f"{path['peak_before_mb']['median']:.0f} MB (model and inputs), {path['seconds']['median']:.1f} s")
    r = case["ratios"]["original/ours"]
    print(f"  original/ours {r['median']:.2f}x [{r['min']:.2f}-{r['max']:.2f}]")
    bench.finish()


if __name__ == "__main__":
    main()
