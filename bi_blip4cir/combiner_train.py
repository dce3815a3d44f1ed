"""Stage II of Bi-BLIP4CIR: train the CLIP4Cir Combiner on frozen BLIP features, forward and reversed.

    python bi_blip4cir/combiner_train.py --dataset CIRR --blip-model-path <run>/saved_models/tuned_blip_mean.pt \\
        --num-epochs 300 --batch-size 512 --blip-bs 32 --projection-dim 2560 --hidden-dim 5120 --combiner-lr 2e-5 \\
        --transform targetpad --target-ratio 1.25 --save-training --save-best --validation-frequency 1

Both encoders are frozen, so the train images and every query string an epoch can draw are encoded once; an epoch
then costs only the Combiner (``--no-feature-cache`` re-encodes at every step as the original, same losses).
Writes ``<output-root>/models/combiner_trained_on_<fiq|cirr>_BLIPImgTxt_<timestamp>/`` with the CSVs, the curves,
``resume.pt`` and ``saved_models/combiner{|_mean|_arithmetic|_harmonic|_geometric|_last|_<epoch>}.pt``
(``{'epoch', 'Combiner', 'optimizer_state_dict'}``).
"""
from __future__ import annotations

import argparse
import random
import sys
from functools import partial
from pathlib import Path

import torch
from torch import nn

from bi_blip4cir.args import (add_blip_path_args, add_combiner_dims, add_image_args, add_port_args, add_saving_args,
                              add_skip_args, dataset_name, training_hyperparameters)
from bi_blip4cir.data import TrainData, build_query_sets, train_triplets
from bi_blip4cir.features import encode_text_table
from bi_blip4cir.losses import bidirectional_loss, reversed_loss_weight, stage2_logits
from bi_blip4cir.models import build_blip_encoders, check_checkpoint_flags, check_feature_dim, load_text_encoder
from common.args import add_comet_args, add_output_args, setup_runtime
from common.cir.args import SHORT_NAMES
from common.cir.combiner import Combiner
from common.cir.data import DISPLAY_NAMES, caption_rng, compose_captions, dataset_root, possible_train_captions
from common.cir.evaluation import evaluate_composed
from common.cir.frozen import FrozenImages, FrozenTexts, encode_texts
from common.cir.selection import best_checkpoint_names
from common.cir.training import run_epochs
from common.dist import DistInfo, cleanup, concat_all_gather
from common.runtime import autocast, get_logger, grad_scaler, run_main, seed_everything
from common.training.loop import data_parallel, train_loader, train_one_epoch
from common.training.resume import preflight
from common.training.run import TrainingRun

logger = get_logger("bi_blip4cir.combiner_train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=dataset_name, required=True, help="should be either 'CIRR' or 'FashionIQ'")
    add_comet_args(parser)
    add_blip_path_args(parser)
    parser.add_argument("--num-epochs", type=int, default=300, help="number of training epochs (default 300)")
    parser.add_argument("--combiner-lr", type=float, default=2e-5, help="Combiner learning rate, Adam (default 2e-5)")
    parser.add_argument("--batch-size", type=int, default=1024,
                        help="triplets per step, all processes together under torchrun (default 1024)")
    add_combiner_dims(parser)
    parser.add_argument("--blip-model-path", default=None,
                        help="stage-I text-encoder checkpoint, e.g. tuned_blip_best.pt (default: the pre-trained "
                             "BLIP text encoder, with a warning)")
    parser.add_argument("--blip-bs", type=int, default=32, help="batch size of BLIP image encoding (default 32)")
    add_image_args(parser)
    add_saving_args(parser, validation_frequency=3)
    add_port_args(parser, num_workers=4, underscore_first=True)
    parser.add_argument("--loss-r-weight", type=float, default=None,
                        help="weight of the reversed loss (default: 0.5 FashionIQ, 0.1 CIRR, as the original)")
    parser.add_argument("--no-feature-cache", action="store_true",
                        help="encode images and captions at every step as the original (default: once, same losses)")
    add_skip_args(parser)
    add_output_args(parser)
    return parser


def hyperparameters(args: argparse.Namespace, weight: float, world_size: int) -> dict:
    """The original parameter dict (plus the settings this port adds)."""
    keys = ("projection_dim", "hidden_dim", "num_epochs", "blip_pretrained_path", "med_config_path", "blip_model_path",
            "combiner_lr", "batch_size", "blip_bs", "validation_frequency", "transform", "input_dim", "feature_dim",
            "target_ratio", "save_training", "save_best", "num_workers")
    return training_hyperparameters(args, keys, loss_r_weight=weight, world_size=world_size)


def train_features(args: argparse.Namespace, root: Path, image_encoder: nn.Module, text_encoder: nn.Module,
                   device: torch.device) -> tuple[TrainData, FrozenTexts]:
    """The train triplets with their image features (``train_triplets``), and their text features.

    By default the train images and every query string an epoch can draw are encoded once into tables;
    ``--no-feature-cache`` encodes them at every step (the original).
    """
    train = train_triplets(args, root, image_encoder, device, batch_size=args.blip_bs)
    if args.no_feature_cache:
        return train, FrozenTexts(text_encoder)
    strings = possible_train_captions(train.train_set)
    texts = FrozenTexts(text_encoder, strings, encode_text_table(
        text_encoder, strings, device, args, batch_size=args.blip_bs, root=str(root), prompt_mode=args.prompt_mode))
    return train, texts


def stage2_step(batch: tuple, rng: random.Random, *, name: str, images: FrozenImages, texts: FrozenTexts,
                model: nn.Module, weight: float, dist: DistInfo,
                amp: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """(loss, its forward and reversed parts, batch size) of one batch: frozen features, FashionIQ caption draws,
    then the Combiner on this process's rows against the targets of all processes."""
    reference, target = images(batch[0]), images(batch[1])
    captions = texts(compose_captions(name, batch[2], rng))
    reversed_captions = texts(compose_captions(name, batch[3], rng))
    offset = dist.rank * len(captions)
    with autocast(dist.device, amp):
        logits = stage2_logits(model, reference, captions, reversed_captions, concat_all_gather(target), offset)
        loss, loss_f, loss_r = bidirectional_loss(*logits, weight, offset)
    return loss, {"forward": loss_f, "reversed": loss_r}, len(captions)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.transform == "squarepad":
        logger.warning("squarepad is not the recommended preprocessing (targetpad is)")
    dist = setup_runtime(args)
    device, name, amp = dist.device, args.dataset, not args.no_amp
    weight = reversed_loss_weight("stage2", name, args.loss_r_weight)
    root = dataset_root(name, args.data_root)
    params = hyperparameters(args, weight, dist.world_size)
    check_checkpoint_flags(args)
    prefix = f"combiner_trained_on_{SHORT_NAMES[name]}_BLIPImgTxt"
    preflight(args, params, prefix=prefix)  # output folder, --resume and its flags, before any image is encoded

    image_encoder, text_encoder = build_blip_encoders(args, device)
    check_feature_dim(args, text_encoder)
    if args.blip_model_path:
        load_text_encoder(args.blip_model_path, text_encoder, args.trust_checkpoints)
    else:
        logger.warning("no --blip-model-path: the Combiner trains on the pre-trained BLIP text encoder")
    text_encoder.requires_grad_(False)
    text_encoder.eval()
    val_sets = build_query_sets(name, "val", root, image_encoder, device, args)
    val_texts = [encode_texts(text_encoder, query_set.captions) for query_set in val_sets]

    train, texts = train_features(args, root, image_encoder, text_encoder, device)
    images = train.images
    loader = train_loader(train.data, args.batch_size, train.workers, dist, args.seed)
    seed_everything(args.seed)  # the training stream does not depend on how the features were prepared

    combiner = Combiner(args.feature_dim, args.projection_dim, args.hidden_dim).to(device)
    optimizer = torch.optim.Adam(combiner.parameters(), lr=args.combiner_lr)
    scaler = grad_scaler(device, amp)
    model = data_parallel(combiner, dist)

    state = {"combiner": combiner, "optimizer": optimizer, "scaler": scaler}
    run = TrainingRun(args, dist, prefix, state, params,
                      f"BLIP4Cir_Bi combiner_training {DISPLAY_NAMES[name]}",
                      f"Bi-BLIP4CIR stage II on {DISPLAY_NAMES[name]}", code_dir=Path(__file__).parent)
    best_names = best_checkpoint_names(name, "combiner", "combiner")

    step = partial(stage2_step, name=name, images=images, texts=texts, model=model, weight=weight, dist=dist, amp=amp)

    def train_epoch(epoch: int) -> float:
        combiner.train()
        rng = caption_rng(args.seed, dist.rank, epoch)
        return train_one_epoch(loader, partial(step, rng=rng), optimizer, scaler, epoch, device, run.log.tracker,
                               "stage II", saver=run.steps.epoch(captions=rng))

    def validate(epoch: int) -> dict[str, float] | None:
        if not dist.is_main:
            return None
        combiner.eval()
        return evaluate_composed(val_sets, val_texts, combiner)

    run_epochs(run, args, train_epoch, validate, "combiner", best_names, combiner, optimizer)
    if train.skipped:
        logger.warning("--skip-bad-images: %d unreadable train image(s) were skipped (listed above)",
                       len(train.skipped))
    cleanup()


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
