"""Stage I of Bi-BLIP4CIR: fine-tune the BLIP text encoder with forward and reversed queries (image encoder frozen).

    python bi_blip4cir/clip_fine_tune.py --dataset FashionIQ --num-epochs 20 --batch-size 128 --blip-max-epoch 10 \\
        --blip-min-lr 0 --blip-learning-rate 5e-5 --transform targetpad --target-ratio 1.25 \\
        --save-training --save-best --validation-frequency 1

Writes ``<output-root>/models/blip_text_finetuned_on_<fiq|cirr>_<timestamp>/`` with ``training_hyperparameters.json``,
``train_metrics.csv``, ``validation_metrics.csv``, ``training_curves.png``, ``resume.pt`` and
``saved_models/tuned_blip_{best|mean|arithmetic|harmonic|geometric|last|<epoch>}.pt``
(``{'epoch', 'BLIPTextEncoder', 'optimizer_state_dict'}``).
"""
from __future__ import annotations

import argparse
import random
import sys
from functools import partial
from pathlib import Path

import torch
from torch import nn

from bi_blip4cir.args import (add_blip_path_args, add_image_args, add_port_args, add_saving_args, add_skip_args,
                              dataset_name, training_hyperparameters)
from bi_blip4cir.data import build_query_sets, train_triplets
from bi_blip4cir.losses import bidirectional_loss, reversed_loss_weight, stage1_logits, sum_fusion
from bi_blip4cir.models import TEXT_ENCODER_KEY, build_blip_encoders, check_checkpoint_flags
from common.args import add_comet_args, add_output_args, setup_runtime
from common.cir.args import SHORT_NAMES
from common.cir.data import DISPLAY_NAMES, caption_rng, compose_captions, dataset_root
from common.cir.evaluation import evaluate_composed
from common.cir.frozen import FrozenImages, encode_texts
from common.cir.selection import best_checkpoint_names
from common.cir.training import run_epochs
from common.dist import DistInfo, cleanup, concat_all_gather
from common.runtime import autocast, get_logger, grad_scaler, run_main, seed_everything
from common.training.loop import data_parallel, train_loader, train_one_epoch
from common.training.lr import cosine_lr_schedule
from common.training.resume import preflight
from common.training.run import TrainingRun

logger = get_logger("bi_blip4cir.clip_fine_tune")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=dataset_name, required=True, help="should be either 'CIRR' or 'FashionIQ'")
    add_comet_args(parser)
    add_blip_path_args(parser)
    parser.add_argument("--num-epochs", type=int, default=300, help="number of training epochs (default 300)")
    parser.add_argument("--blip-learning-rate", type=float, default=1e-5,
                        help="learning rate of the text encoder, cosine-scheduled; text_proj trains at a constant "
                             "--text-proj-lr-factor times it (default 1e-5)")
    parser.add_argument("--batch-size", type=int, default=512,
                        help="triplets per step, all processes together under torchrun (default 512)")
    parser.add_argument("--blip-min-lr", type=float, default=0, help="floor of the cosine schedule (default 0)")
    parser.add_argument("--blip-max-epoch", type=int, default=10,
                        help="cosine half-period in epochs; the rate is periodic beyond it (default 10)")
    add_image_args(parser)
    add_saving_args(parser, validation_frequency=1)
    add_port_args(parser, num_workers=8)
    parser.add_argument("--loss-r-weight", type=float, default=None,
                        help="weight of the reversed loss (default: 0.4 FashionIQ, 0.1 CIRR, as the original)")
    parser.add_argument("--text-proj-lr-factor", type=float, default=100.0,
                        help="learning rate of text_proj relative to --blip-learning-rate, constant "
                             "(default 100, as the original)")
    parser.add_argument("--clamp-cosine", action="store_true",
                        help="hold the rate at --blip-min-lr after --blip-max-epoch "
                             "(default: periodic, as the original)")
    parser.add_argument("--no-feature-cache", action="store_true",
                        help="encode the train images at every step as the original (default: once, same losses)")
    add_skip_args(parser)
    add_output_args(parser)
    return parser


def hyperparameters(args: argparse.Namespace, weight: float, world_size: int) -> dict:
    """The original parameter dict (plus the settings this port adds)."""
    keys = ("num_epochs", "blip_pretrained_path", "med_config_path", "blip_learning_rate", "blip_max_epoch",
            "blip_min_lr", "batch_size", "validation_frequency", "transform", "input_dim", "target_ratio",
            "save_training", "save_best")
    return training_hyperparameters(args, keys, loss_r_weight=weight, text_proj_lr_factor=args.text_proj_lr_factor,
                                    clamp_cosine=args.clamp_cosine, world_size=world_size)


def stage1_step(batch: tuple, rng: random.Random, *, name: str, images: FrozenImages, model: nn.Module,
                weight: float, dist: DistInfo, amp: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """(loss, its forward and reversed parts, batch size) of one batch: frozen image features, FashionIQ caption
    draws, then forward and reversed strings in ONE text-encoder call (one forward per backward under DDP)."""
    reference, target = images(batch[0]), images(batch[1])
    captions = compose_captions(name, batch[2], rng)
    reversed_captions = compose_captions(name, batch[3], rng)
    offset = dist.rank * len(captions)
    with autocast(dist.device, amp):
        caption_features, reversed_features = model(captions + reversed_captions).split(len(captions))
        logits = stage1_logits(reference, caption_features, reversed_features, concat_all_gather(target), offset)
        loss, loss_f, loss_r = bidirectional_loss(*logits, weight, offset)
    return loss, {"forward": loss_f, "reversed": loss_r}, len(captions)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    dist = setup_runtime(args)
    device, name, amp = dist.device, args.dataset, not args.no_amp
    weight = reversed_loss_weight("stage1", name, args.loss_r_weight)
    root = dataset_root(name, args.data_root)
    params = hyperparameters(args, weight, dist.world_size)
    check_checkpoint_flags(args)
    prefix = f"blip_text_finetuned_on_{SHORT_NAMES[name]}"
    preflight(args, params, prefix=prefix)  # output folder, --resume and its flags, before any image is encoded

    image_encoder, text_encoder = build_blip_encoders(args, device)
    for parameter_name, parameter in text_encoder.named_parameters():
        if "crossattention" in parameter_name:
            parameter.requires_grad_(False)  # never run in text mode; AdamW skips them anyway
    val_sets = build_query_sets(name, "val", root, image_encoder, device, args)

    train = train_triplets(args, root, image_encoder, device)
    images = train.images
    loader = train_loader(train.data, args.batch_size, train.workers, dist, args.seed)
    seed_everything(args.seed)  # the training stream does not depend on how the features were prepared

    other = [p for n, p in text_encoder.named_parameters() if "text_proj" not in n]
    optimizer = torch.optim.AdamW([
        {"params": other, "lr": args.blip_learning_rate, "weight_decay": 0.05},
        {"params": text_encoder.text_proj.parameters(), "lr": args.blip_learning_rate * args.text_proj_lr_factor,
         "weight_decay": 0.05},
    ])
    scaler = grad_scaler(device, amp)
    model = data_parallel(text_encoder, dist)

    state = {"text_encoder": text_encoder, "optimizer": optimizer, "scaler": scaler}
    run = TrainingRun(args, dist, prefix, state, params,
                      f"BLIP4Cir_Bi blip_text_finetune {DISPLAY_NAMES[name]}",
                      f"Bi-BLIP4CIR stage I on {DISPLAY_NAMES[name]}", code_dir=Path(__file__).parent)
    best_names = best_checkpoint_names(name, "tuned_blip", "tuned_blip_best")

    step = partial(stage1_step, name=name, images=images, model=model, weight=weight, dist=dist, amp=amp)

    def train_epoch(epoch: int) -> float:
        cosine_lr_schedule(optimizer, epoch, args.blip_max_epoch, args.blip_learning_rate, args.blip_min_lr,
                           clamp=args.clamp_cosine)
        text_encoder.train()
        rng = caption_rng(args.seed, dist.rank, epoch)
        return train_one_epoch(loader, partial(step, rng=rng), optimizer, scaler, epoch, device, run.log.tracker,
                               "stage I", saver=run.steps.epoch(captions=rng))

    def validate(epoch: int) -> dict[str, float] | None:
        if not dist.is_main:
            return None
        text_encoder.eval()
        val_texts = [encode_texts(text_encoder, query_set.captions) for query_set in val_sets]
        return evaluate_composed(val_sets, val_texts, sum_fusion)

    run_epochs(run, args, train_epoch, validate, "tuned_blip", best_names, text_encoder, optimizer,
               key=TEXT_ENCODER_KEY)
    if train.skipped:
        logger.warning("--skip-bad-images: %d unreadable train image(s) were skipped (listed above)",
                       len(train.skipped))
    cleanup()


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
