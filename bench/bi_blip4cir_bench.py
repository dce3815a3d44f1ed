"""Bi-BLIP4CIR throughput: stage-II seconds per epoch with the frozen-feature tables vs re-encoding every step (the
original), with the losses of both, and validation queries per second.

    python bench/bi_blip4cir_bench.py [--out bench/results/bi_blip4cir_bench.json] [--epochs 2]

On CPU it runs the tiny BLIP (random weights) on synthetic CIRR; with CUDA it adds BLIP-base sizes (ViT-B/16 at
384 px, BERT-base, Combiner 256/2560/5120) at the README batch size 512 with --blip-bs 32 (``--setups base-cpu``:
the same at batch 4 on CPU). Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from bi_blip4cir import combiner_train
from bi_blip4cir.data import build_query_sets
from common.cir.combiner import Combiner
from common.cir.data import caption_rng, dataset_root
from common.cir.evaluation import evaluate_composed
from common.cir.frozen import encode_texts
from bi_blip4cir.losses import reversed_loss_weight
from common.blip import BlipImageEncoder, BlipTextEncoder, MedConfig, ViTConfig, build_blip_tokenizer
from common.blip.tiny import tiny_med_config, write_tiny_vocab
from common.dist import DistInfo
from common.io import atomic_write_json
from common.runtime import grad_scaler, seed_everything
from common.synthetic.scenes import vocabulary
from common.synthetic.writers import write_cirr
from common.training.loop import train_loader, train_one_epoch
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


def stage2_epochs(args: argparse.Namespace, encoders: tuple, device: torch.device, epochs: int) -> dict:
    """Seconds for the feature tables (0 when re-encoding) and per epoch, and the epoch losses."""
    dist = DistInfo(rank=0, world_size=1, local_rank=0, device=device)
    root = dataset_root("cirr", args.data_root)
    start = time.perf_counter()
    images, texts, data, workers = combiner_train.train_features(args, root, *encoders, device)
    prepare = time.perf_counter() - start
    loader = train_loader(data, args.batch_size, workers, dist, args.seed)
    seed_everything(args.seed)
    combiner = Combiner(args.feature_dim, args.projection_dim, args.hidden_dim).to(device).train()
    optimizer = torch.optim.Adam(combiner.parameters(), lr=args.combiner_lr)
    step = partial(combiner_train.stage2_step, name="cirr", images=images, texts=texts, model=combiner,
                   weight=reversed_loss_weight("stage2", "cirr"), dist=dist, amp=not args.no_amp)
    tracker, seconds, losses = ExperimentTracker(None, None, "bench"), [], []
    for epoch in range(epochs):
        start = time.perf_counter()
        losses.append(train_one_epoch(loader, partial(step, rng=caption_rng(args.seed, 0, epoch)), optimizer,
                                      grad_scaler(device, not args.no_amp), epoch, device, tracker, "bench"))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return {"prepare_seconds": prepare, "epoch_seconds": seconds, "losses": losses, "steps_per_epoch": len(loader)}


def validation_rate(args: argparse.Namespace, encoders: tuple, device: torch.device, repeats: int = 5) -> float:
    """Validation queries per second as validate.py computes them: caption encoding, Combiner, ranking and
    recalls (the gallery is encoded once per run and not timed)."""
    image_encoder, text_encoder = encoders
    query_sets = build_query_sets("cirr", "val", dataset_root("cirr", args.data_root), image_encoder, device, args)
    combine = Combiner(args.feature_dim, args.projection_dim, args.hidden_dim).to(device).eval()
    start = time.perf_counter()
    for _ in range(repeats):
        evaluate_composed(query_sets, [encode_texts(text_encoder, s.captions) for s in query_sets], combine)
    return repeats * sum(len(s.captions) for s in query_sets) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/results/bi_blip4cir_bench.json", help="JSON result file")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per mode (default 2)")
    parser.add_argument("--sets", type=int, default=180,
                        help="synthetic CIRR train image sets (3 triplets each; default 180 = 540 triplets)")
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
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        write_cirr(data, {"train": args.sets, "val": 10, "test1": 9}, 3, seed=0)
        write_tiny_vocab(Path(tmp) / "vocab", extra_words=vocabulary())
        for name in setups:
            setup = SETUPS[name]
            device = torch.device("cuda" if name.endswith("cuda") else "cpu")
            encoders = build_encoders(setup, Path(tmp) / "vocab", device)
            batch_sizes = args.batch_sizes or setup["batch_sizes"]
            rate = validation_rate(script_args(data, setup, batch_sizes[0], True, device), encoders, device)
            for batch_size in batch_sizes:
                runs = {mode: stage2_epochs(script_args(data, setup, batch_size, mode == "cached", device),
                                            encoders, device, args.epochs) for mode in ("cached", "re-encoding")}
                cached, encoded = (min(runs[mode]["epoch_seconds"]) for mode in ("cached", "re-encoding"))
                loss_gap = max(abs(a - b) / abs(b) for a, b in zip(runs["cached"]["losses"],
                                                                   runs["re-encoding"]["losses"]))
                results.append({"setup": name, "device": str(device), "batch_size": batch_size, **runs,
                                "speedup": encoded / cached, "max_relative_loss_difference": loss_gap,
                                "validation_queries_per_second": rate})
    print(f"\n{'setup':<10}{'batch':>6}{'steps':>6}{'cached s/ep':>13}{'re-enc s/ep':>13}{'speedup':>9}"
          f"{'table s':>9}{'loss diff':>11}{'val q/s':>9}")
    for r in results:
        print(f"{r['setup']:<10}{r['batch_size']:>6}{r['cached']['steps_per_epoch']:>6}"
              f"{min(r['cached']['epoch_seconds']):>13.3f}{min(r['re-encoding']['epoch_seconds']):>13.3f}"
              f"{r['speedup']:>8.1f}x{r['cached']['prepare_seconds']:>9.2f}{r['max_relative_loss_difference']:>11.1e}"
              f"{r['validation_queries_per_second']:>9.0f}")
    out = atomic_write_json({"results": results, "torch": torch.__version__, "cpu_threads": torch.get_num_threads()},
                            args.out, indent=2)
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
