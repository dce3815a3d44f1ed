"""Bi-BLIP4CIR throughput: stage-II seconds per step with the frozen-feature tables (ours) vs re-encoding every
step (the original), over whole epochs of many steps, with the losses of both, and validation queries per second.

    python bench/bi_blip4cir_bench.py [--rounds 3] [--sets 600] [--json bench/results/bi_blip4cir_bench.json]

Each mode builds its loader, Combiner and optimizer once (ours also its feature tables, timed apart); after one
untimed epoch each, the two modes train epochs in interleaved rounds, so the per-step figures are steady-state ones
(the loader's worker start-up, once per epoch as in the script, is spread over many steps: raise --sets to shrink
its share further). Prints median [min-max] and writes JSON.

On CPU it runs the tiny BLIP (random weights) on synthetic CIRR; with CUDA it adds BLIP-base sizes (ViT-B/16 at
384 px, BERT-base, Combiner 256/2560/5120) at the README batch size 512 with --blip-bs 32 (``--setups base-cpu``:
the same at batch 4 on CPU).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset

from bi_blip4cir import combiner_train
from bi_blip4cir.data import build_query_sets
from common.cir.combiner import Combiner
from common.cir.data import caption_rng, dataset_root
from common.cir.evaluation import evaluate_composed
from common.cir.frozen import encode_texts
from bi_blip4cir.losses import reversed_loss_weight
from common.bench import Bench, RandomStreams, add_arguments
from common.blip import BlipImageEncoder, BlipTextEncoder, MedConfig, ViTConfig, build_blip_tokenizer
from common.blip.tiny import tiny_med_config, write_tiny_vocab
from common.dist import DistInfo
from common.runtime import grad_scaler, seed_everything
from common.synthetic.scenes import vocabulary
from common.synthetic.writers import write_cirr
from common.training.loop import train_one_epoch
from common.training.experiment import ExperimentTracker

SETUPS = {
    "tiny-cpu": {"vit": ViTConfig(patch_size=8, width=64, depth=2, heads=4), "med": "tiny", "image_size": 64,
                 "embed_dim": 16, "combiner": (64, 128), "batch_sizes": (128, 512)},
    "base-cuda": {"vit": ViTConfig.base(), "med": "base", "image_size": 384, "embed_dim": 256,
                  "combiner": (2560, 5120), "batch_sizes": (512,)},
    "base-cpu": {"vit": ViTConfig.base(), "med": "base", "image_size": 384, "embed_dim": 256,
                 "combiner": (2560, 5120), "batch_sizes": (4,)},
}


def build_encoders(setup: dict, vocab_dir: Path, device: torch.device) -> tuple[BlipImageEncoder, BlipTextEncoder]:
    """Random-weight encoders of the setup's size, frozen and in eval mode (as in stage II)."""
    tokenizer = build_blip_tokenizer(vocab_dir)
    vit = setup["vit"]
    med = MedConfig.base() if setup["med"] == "base" else tiny_med_config(len(tokenizer), vit.width, hidden_size=64,
                                                                           heads=4, intermediate_size=128,
                                                                           max_positions=128)
    image_encoder = BlipImageEncoder(vit, setup["image_size"], embed_dim=setup["embed_dim"])
    text_encoder = BlipTextEncoder(med, tokenizer, embed_dim=setup["embed_dim"], encoder_width=vit.width)
    return (image_encoder.to(device).eval().requires_grad_(False),
            text_encoder.to(device).eval().requires_grad_(False))


def script_args(data: Path, setup: dict, batch_size: int, cached: bool, device: torch.device) -> argparse.Namespace:
    """combiner_train.py's parsed flags for this measurement (the scripts' own defaults otherwise)."""
    projection, hidden = setup["combiner"]
    argv = ["--dataset", "CIRR", "--data-root", str(data), "--batch-size", str(batch_size), "--blip-bs", "32",
            "--input-dim", str(setup["image_size"]), "--feature-dim", str(setup["embed_dim"]),
            "--projection-dim", str(projection), "--hidden-dim", str(hidden),
            "--num-workers", str(min(4, os.cpu_count() or 1))]
    return combiner_train.build_parser().parse_args(argv + ([] if cached else ["--no-feature-cache"]))


def own_loader(data: Dataset, batch_size: int, workers: int, seed: int) -> DataLoader:
    """``train_loader``'s batches (shuffled, incomplete last batch dropped, workers started per epoch as in the
    script), shuffled by a generator of the mode's own so that interleaved modes see the same batches. (Persistent
    workers would carry the workers' random state across epochs and change the original mode's batches.)"""
    return DataLoader(data, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
                      generator=torch.Generator().manual_seed(seed))


def stage2_epoch(args: argparse.Namespace, encoders: tuple, device: torch.device) -> tuple[Callable[[], float], dict]:
    """A call training one stage-II epoch (the Combiner and optimizer carry over between calls; epoch e draws the
    captions of epoch e in both modes) and facts about it: table seconds (the one-time features; with
    re-encoding only the triplet list), steps per epoch and the losses of every call so far."""
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    root = dataset_root("cirr", args.data_root)
    start = time.perf_counter()
    train, texts = combiner_train.train_features(args, root, *encoders, device)
    facts = {"prepare_seconds": time.perf_counter() - start, "losses": []}
    loader = own_loader(train.data, args.batch_size, train.workers, args.seed)
    facts["steps_per_epoch"] = len(loader)
    seed_everything(args.seed)
    streams = RandomStreams()
    combiner = Combiner(args.feature_dim, args.projection_dim, args.hidden_dim).to(device).train()
    optimizer = torch.optim.Adam(combiner.parameters(), lr=args.combiner_lr)
    scaler = grad_scaler(device, not args.no_amp)
    step = partial(combiner_train.stage2_step, name="cirr", images=train.images, texts=texts, model=combiner,
                   weight=reversed_loss_weight("stage2", "cirr"), dist=dist, amp=not args.no_amp)
    tracker = ExperimentTracker(None, None, "bench")

    def epoch() -> float:
        index = len(facts["losses"])
        with streams.active():
            loss = train_one_epoch(loader, partial(step, rng=caption_rng(args.seed, 0, index)), optimizer, scaler,
                                   index, device, tracker, "bench")
        facts["losses"].append(loss)
        return loss

    return epoch, facts


def validation_call(args: argparse.Namespace, encoders: tuple, device: torch.device) -> tuple[Callable, int]:
    """A call validating as validate.py does (caption encoding, Combiner, ranking and recalls; the gallery is
    encoded once, outside the call) and its number of queries."""
    image_encoder, text_encoder = encoders
    query_sets = build_query_sets("cirr", "val", dataset_root("cirr", args.data_root), image_encoder, device, args)
    combine = Combiner(args.feature_dim, args.projection_dim, args.hidden_dim).to(device).eval()
    return (lambda: evaluate_composed(query_sets, [encode_texts(text_encoder, s.captions) for s in query_sets],
                                      combine), sum(len(s.captions) for s in query_sets))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser, "bi_blip4cir_bench", rounds=3, rounds_aliases=("--epochs",))
    parser.add_argument("--sets", type=int, default=600,
                        help="synthetic CIRR train image sets (3 triplets each; default 600 = 1,800 triplets: 14 steps "
                             "per epoch at batch 128)")
    parser.add_argument("--setups", nargs="+", choices=sorted(SETUPS), default=None,
                        help="what to measure (default: tiny-cpu, plus base-cuda where CUDA is present; base-cpu "
                             "is BLIP-base at batch 4 on CPU, slow: use it with --sets 4)")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=None,
                        help="stage-II batch sizes to time (default: the setup's, 128 and 512 tiny, 512 base-cuda, "
                             "4 base-cpu)")
    args = parser.parse_args()
    setups = args.setups or ["tiny-cpu"] + (["base-cuda"] if torch.cuda.is_available() else [])
    if "base-cuda" in setups and not torch.cuda.is_available():
        parser.error("--setups base-cuda needs CUDA")
    bench = Bench("bi_blip4cir_bench", args)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_cirr(data, {"train": args.sets, "val": 10, "test1": 9}, 3, seed=0)
        write_tiny_vocab(Path(tmp) / "vocab", extra_words=vocabulary())
        for name in setups:
            setup = SETUPS[name]
            device = torch.device("cuda" if name.endswith("cuda") else "cpu")
            encoders = build_encoders(setup, Path(tmp) / "vocab", device)
            batch_sizes = args.batch_sizes or setup["batch_sizes"]
            validate, queries = validation_call(script_args(data, setup, batch_sizes[0], True, device), encoders,
                                                device)
            bench.compare(f"{name} validation ({queries} queries)", {"ours": validate}, {"ours": queries}, {},
                          unit="query", device=device)
            for batch_size in batch_sizes:
                calls, facts = {}, {}
                for mode, cached in (("original", False), ("ours", True)):
                    calls[mode], facts[mode] = stage2_epoch(script_args(data, setup, batch_size, cached, device),
                                                            encoders, device)
                steps = facts["ours"]["steps_per_epoch"]
                case, _ = bench.compare(f"{name} stage II, batch {batch_size}, {steps} steps per epoch (original: "
                                        f"re-encoding every step; ours: feature tables)", calls,
                                        {mode: facts[mode]["steps_per_epoch"] for mode in calls},
                                        {"original/ours": ("original", "ours")}, unit="step", device=device)
                losses = [facts[mode]["losses"] for mode in ("ours", "original")]
                case.update(setup=name, batch_size=batch_size, table_seconds=facts["ours"]["prepare_seconds"],
                            losses=dict(zip(("ours", "original"), losses)),
                            max_relative_loss_difference=max(abs(a - b) / abs(b) for a, b in zip(*losses)))
                print(f"  one-time feature tables {case['table_seconds']:.2f} s; max relative loss difference "
                      f"{case['max_relative_loss_difference']:.1e} over {len(losses[0])} epochs")
    bench.finish()


if __name__ == "__main__":
    main()
