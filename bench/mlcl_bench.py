"""MLCL stage-2 throughput: seconds per combiner-training epoch when reference, augmented reference, target and
captions are re-encoded by the frozen CLIP at every step (the original) vs ours (reference, target and caption
features computed once; only the augmented view encoded per step), on the same synthetic Shoes triplets, with the
epoch losses of both (the same augmentation and dropout draws, so they agree up to float rounding).

    python bench/mlcl_bench.py [--setups tiny rn50x4] [--rounds 3] [--triplets 16] [--batch-size 8]
                               [--threads N] [--json bench/results/mlcl_bench.json]

Setups: the tiny CLIP (ModifiedResNet, 64 px, Combiner 64/128) and an RN50x4-size CLIP with random weights (288 px,
640-d, Combiner 2560/5120). After one untimed epoch each, the two paths train epochs in interleaved rounds (each
with its own random stream, so the losses stay comparable); the one-time feature extraction of ours is reported
separately. Prints median [min-max] seconds per epoch and the ratio, and writes JSON.
"""
from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch
from clip.model import CLIP

from common.bench import Bench, RandomStreams, add_arguments
from common.cir.data import possible_train_captions, relative_dataset
from common.cir.frozen import FrozenImages, FrozenTexts
from common.clip import TINY_CLIP
from common.dist import DistInfo
from common.runtime import seed_everything
from common.synthetic.writers import write_shoes_raw
from common.training.experiment import ExperimentTracker
from common.training.loop import train_loader, train_one_epoch
from common.transforms import build_preprocess
from mlcl import prepare_shoes_data
from mlcl.augment import image_aug_transform
from mlcl.combiner import Combiner
from mlcl.combiner_train import build_optimizer, combiner_step
from mlcl.data import AugmentedRows, train_image_table
from mlcl.models import ImageEncoder, TextEncoder
from mlcl.training import EpochMeans

RN50X4 = {"embed_dim": 640, "image_resolution": 288, "vision_layers": (4, 6, 10, 6), "vision_width": 80,
          "vision_patch_size": None, "context_length": 77, "vocab_size": 49408, "transformer_width": 640,
          "transformer_heads": 10, "transformer_layers": 12}
SETUPS = {"tiny": {"clip": TINY_CLIP["rn"], "combiner": (64, 128)},
          "rn50x4": {"clip": RN50X4, "combiner": (2560, 5120)}}
CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setups", nargs="+", choices=SETUPS, default=list(SETUPS),
                        help="CLIP sizes to run (default: tiny rn50x4)")
    parser.add_argument("--triplets", type=int, default=16, help="train triplets (default 16)")
    parser.add_argument("--batch-size", type=int, default=8, help="triplets per step (default 8)")
    parser.add_argument("--clip-bs", type=int, default=32, help="CLIP encoding chunk size (default 32)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    add_arguments(parser, "mlcl_bench", rounds=3, rounds_aliases=("--epochs",))
    return parser


def frozen_clip(config: dict) -> CLIP:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIP(**config)
    return model.float().eval().requires_grad_(False)


def epoch_call(data, images: FrozenImages, texts: FrozenTexts, model: CLIP, setup: dict,
               args: argparse.Namespace) -> tuple[Callable[[], float], list[float]]:
    """A call training one epoch of a freshly seeded Combiner that carries over between calls (epoch e draws the
    augmentations and dropout of epoch e whatever ran in between), and the list of its epoch losses."""
    seed_everything(0)
    streams = RandomStreams()
    loader = train_loader(data, args.batch_size, 0, CPU, 0)
    combiner = Combiner(model.text_projection.shape[1], *setup["combiner"], learn_t=1).train()
    optimizer = build_optimizer(combiner, 2e-5, 1e-3)
    augmented = FrozenImages(ImageEncoder(model, CPU.device), CPU.device, chunk_size=args.clip_bs)
    tracker = ExperimentTracker(None, None, "bench")
    losses: list[float] = []

    def epoch() -> float:
        index = len(losses)
        step = lambda batch: combiner_step(batch, random.Random(index), name="shoes", images=images,  # noqa: E731
                                           texts=texts, augmented=augmented, model=combiner, dist=CPU, amp=False,
                                           means=EpochMeans(CPU.device))
        with streams.active():
            losses.append(train_one_epoch(loader, step, optimizer, torch.amp.GradScaler("cpu", enabled=False), index,
                                          CPU.device, tracker, "bench"))
        return losses[-1]

    return epoch, losses


def bench_setup(name: str, root: Path, args: argparse.Namespace, bench: Bench) -> dict:
    setup = SETUPS[name]
    model = frozen_clip(setup["clip"])
    dim = setup["clip"]["image_resolution"]
    preprocess, augment = build_preprocess("targetpad", dim), image_aug_transform(1.25, dim)
    train = relative_dataset("shoes", root, "train", preprocess, ref_aug=augment)
    image_encoder, text_encoder = ImageEncoder(model, CPU.device), TextEncoder(model, CPU.device)

    original = epoch_call(train, FrozenImages(image_encoder, CPU.device, chunk_size=args.clip_bs),
                          FrozenTexts(text_encoder), model, setup, args)
    start = time.perf_counter()
    table, rows = train_image_table(train, image_encoder, CPU.device, argparse.Namespace(num_workers=0,
                                                                                         cache_dir=None),
                                    preprocess, args.clip_bs)
    strings = possible_train_captions(train, backward=False)
    texts = FrozenTexts(text_encoder, strings, text_encoder(strings))
    setup_seconds = time.perf_counter() - start
    ours = epoch_call(AugmentedRows(train, rows, augment), FrozenImages(image_encoder, CPU.device, table), texts,
                      model, setup, args)
    case, _ = bench.compare(f"{name} ({dim} px, {len(train)} triplets, batch {args.batch_size}, one epoch per call)",
                            {"original": original[0], "ours": ours[0]}, {"original": 1, "ours": 1},
                            {"original/ours": ("original", "ours")}, unit="epoch")
    losses = {"original": original[1], "ours": ours[1]}
    case.update(setup=name, image_size=dim, triplets=len(train), batch_size=args.batch_size,
                ours_one_time_features_s=setup_seconds, losses=losses,
                max_abs_loss_difference=max(abs(a - b) for a, b in zip(losses["original"], losses["ours"])))
    print(f"  one-time features of ours {setup_seconds:.2f} s; max |loss difference| "
          f"{case['max_abs_loss_difference']:.2e} over {len(losses['ours'])} epochs")
    return case


def main() -> None:
    args = build_parser().parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bench = Bench("mlcl_bench", args)
    with tempfile.TemporaryDirectory() as folder:
        n_images = max(8, args.triplets)
        write_shoes_raw(folder, {"train": n_images, "eval": 4}, {"train": args.triplets, "eval": 2},
                        n_cross_split=0, seed=0)
        prepare_shoes_data.main(["--data-root", folder])
        for name in args.setups:
            bench_setup(name, Path(folder), args, bench)
    bench.finish()


if __name__ == "__main__":
    main()
