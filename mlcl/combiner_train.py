"""Stage 2 of MLCL: train the multi-level Combiner (mCCL + SSCL losses) on frozen CLIP features.

    python mlcl/combiner_train.py --dataset CIRR --clip-model-name RN50x4 \\
        --clip-model-path <stage-1 run>/saved_models/tuned_clip_best.pt --projection-dim 2560 --hidden-dim 5120 \\
        --num-epochs 1000 --combiner-lr 2e-5 --batch-size 2048 --clip-bs 64 --transform targetpad \\
        --target-ratio 1.25 --save-training --save-best --validation-frequency 1 --learn_t 1

Loss per batch: α·L_h + (2 − α)·L_c + L_s + L_mid + L_high with α = 2σ(loss_weight) (the five terms and α are
logged per epoch in loss_terms.csv). Adam with two groups: every Combiner parameter at --combiner-lr and
``loss_weight`` at --loss-weight-lr. CLIP is frozen: the reference, target and caption features of the train
triplets are computed once; only the augmented reference view (a random crop/colour/flip/perspective of the
reference) is encoded at every step (``--no-feature-cache`` re-encodes everything per step, as the original).
On CUDA, as the original: CLIP weights rounded to fp16 values after loading, validation features computed in fp32,
training features (table and augmented view) by the fp16 CLIP. ``--clip-fp32`` keeps the weights exact and the
features fp32 (the augmented view under autocast unless --no-amp).

Writes ``<output-root>/dev-models-combiner/<fiq|shoes|cirr>_learnT_<t>[_<batch>]_<model>_<timestamp>/`` with the
JSON, CSVs (per-term losses in ``loss_terms.csv``), curves, ``resume.pt`` and
``saved_models/combiner{|_best|_arithmetic|_harmonic|_geometric|_last|_<epoch>}.pt`` (``{'epoch', 'Combiner'}``).

Captions longer than CLIP's 77 tokens are truncated with a warning (the original raised an error).
"""
from __future__ import annotations

import argparse
import random
import sys
from functools import partial

import torch
from torch import nn

from common.args import add_comet_args, add_output_args, setup_runtime
from common.cir.args import add_combiner_dims, preprocess_from_args
from common.cir.data import caption_rng, compose_captions, possible_train_captions, relative_dataset
from common.cir.evaluation import evaluate_composed
from common.cir.frozen import FrozenImages, FrozenTexts, encode_texts
from common.cir.training import run_epochs
from common.dist import DistInfo, cleanup
from common.features import extract_features
from common.runtime import autocast, get_logger, grad_scaler, run_main, seed_everything
from common.training.checkpoint import unwrap
from common.training.loop import data_parallel, train_loader, train_one_epoch
from common.training.resume import preflight
from common.training.run import TrainingRun
from mlcl.args import (adapt_output_args, add_clip_args, add_image_args, add_port_args, add_saving_args,
                       check_cache_dir, data_root, dataset_name, short_model_name)
from mlcl.augment import image_aug_transform
from mlcl.combiner import FUSION_WEIGHTS, Combiner, label_offset, mlcl_loss
from mlcl.data import AugmentedRows, clip_cache_key, query_sets, train_image_table
from mlcl.models import ImageEncoder, TextEncoder, build_clip, frozen_training_clip
from mlcl.training import EpochMeans, TermLog, default_run_name, hyperparameters, selected_checkpoints, warm_restart_lr

RUN_SUBDIR = "dev-models-combiner"
logger = get_logger("mlcl.combiner_train")

HYPERPARAMETERS = ("projection_dim", "hidden_dim", "num_epochs", "clip_model_name", "clip_model_path", "combiner_lr",
                   "batch_size", "clip_bs", "validation_frequency", "transform", "target_ratio", "save_training",
                   "save_best", "combiner_model_path")
RESTART_PERIOD, LR_FLOOR = 10, 1e-6


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=dataset_name, required=True,
                        help="'FashionIQ', 'Shoes' or 'CIRR' (case-insensitive)")
    add_combiner_dims(parser)
    parser.add_argument("--num-epochs", type=int, default=300, help="number of training epochs (default 300)")
    add_clip_args(parser)
    parser.add_argument("--clip-model-path", default=None,
                        help="stage-1 checkpoint ({'epoch', 'CLIP'}) loaded into CLIP "
                             "(default: the pre-trained CLIP)")
    parser.add_argument("--combiner-lr", type=float, default=2e-5,
                        help="Adam learning rate of every Combiner parameter except loss_weight (default 2e-5)")
    parser.add_argument("--batch-size", type=int, default=1024,
                        help="triplets per step, all processes together under torchrun (default 1024)")
    parser.add_argument("--clip-bs", type=int, default=32,
                        help="chunk size of frozen CLIP image encoding (default 32)")
    add_saving_args(parser, validation_frequency=3)
    add_image_args(parser)
    parser.add_argument("--combiner_model_path", "--combiner-model-path", dest="combiner_model_path", default=None,
                        help="recorded in the JSON and otherwise ignored, as in the original (use --resume to "
                             "continue a run) (default none)")
    parser.add_argument("--use_schedule", "--use-schedule", dest="use_schedule", type=int, default=0, choices=(0, 1),
                        help="1: cosine warm restarts (period 10 epochs, floor 1e-6, stepped every iteration) on "
                             "both parameter groups; Shoes only, as the original (ignored with a warning otherwise) "
                             "(default 0)")
    parser.add_argument("--learn_t", "--learn-t", dest="learn_t", type=int, default=1, choices=(0, 1),
                        help="1: learnable temperatures logit_scale / logit_scale_sl (init 100); 0: fixed 100 "
                             "(default 1)")
    group = parser.add_argument_group("additions of this port (training)")
    group.add_argument("--aug-dim", type=int, default=None,
                       help="side of the augmented reference view (default: the CLIP input resolution, 288 for "
                            "RN50x4 as the original's hard-coded value)")
    group.add_argument("--loss-weight-lr", type=float, default=1e-3,
                       help="Adam learning rate of loss_weight (default 1e-3, the original's constant)")
    group.add_argument("--fusion-weights", default="upstream", choices=FUSION_WEIGHTS,
                       help="validation query: 'upstream' = (2-α)·f_h + α·f_c + f_s as the original (α swapped "
                            "relative to training), 'train-consistent' = α·f_h + (2-α)·f_c + f_s "
                            "(default upstream)")
    group.add_argument("--no-feature-cache", action="store_true",
                       help="encode reference, augmented reference, target and captions at every step as the "
                            "original (default: reference, target and captions once; same losses)")
    add_port_args(parser)
    add_comet_args(parser)
    add_output_args(parser)
    adapt_output_args(parser, RUN_SUBDIR)
    return parser


def run_prefix(args: argparse.Namespace) -> str:
    """The original folder prefix: ``fiq_learnT_<t>_<model>``, ``shoes_learnT_<t>_<batch>_<model>``, ..."""
    model = short_model_name(args.clip_model_name)
    if args.dataset == "shoes":
        return f"shoes_learnT_{args.learn_t}_{args.batch_size}_{model}"
    return f"{'fiq' if args.dataset == 'fashioniq' else 'cirr'}_learnT_{args.learn_t}_{model}"


def build_optimizer(combiner: Combiner, combiner_lr: float, loss_weight_lr: float) -> torch.optim.Adam:
    """Adam with the original's two groups: everything but ``loss_weight``, then ``loss_weight``."""
    others = [p for name, p in combiner.named_parameters() if name != "loss_weight"]
    return torch.optim.Adam([{"params": others, "lr": combiner_lr},
                             {"params": [combiner.loss_weight], "lr": loss_weight_lr}])


class WarmRestarts:
    """``--use_schedule 1``: the rate of global step k is CosineAnnealingWarmRestarts at fractional epoch
    (k − 1) / steps_per_epoch (base rate at k = 0), as the original's ``scheduler.step(epoch + idx / iters)``
    after every optimiser step."""

    def __init__(self, optimizer: torch.optim.Optimizer, base_lrs: list[float], steps_per_epoch: int, epoch: int):
        self.optimizer, self.base_lrs, self.steps = optimizer, base_lrs, steps_per_epoch
        self.step_index = epoch * steps_per_epoch

    def __call__(self) -> None:
        position = max(self.step_index - 1, 0) / self.steps
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = warm_restart_lr(position, base, RESTART_PERIOD, LR_FLOOR)
        self.step_index += 1

    def state_dict(self) -> dict[str, int]:
        return {"step_index": self.step_index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step_index = state["step_index"]


def combiner_step(batch: tuple, rng: random.Random, *, name: str, images: FrozenImages, texts: FrozenTexts,
                  augmented: FrozenImages, model: nn.Module, dist: DistInfo, amp: bool, means: EpochMeans,
                  schedule: WarmRestarts | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """(total loss, its five terms, batch size) of one batch of frozen features and the augmented view."""
    if schedule is not None:
        schedule()
    reference, target = images(batch[0]), images(batch[1])
    captions = texts(compose_captions(name, batch[2], rng))
    reference_aug = augmented(batch[3])
    with autocast(dist.device, amp):
        logits = model(reference, captions, target, reference_aug)
        loss, terms = mlcl_loss(logits, unwrap(model).loss_weight, label_offset(dist.rank, len(captions)))
    means.add(terms, len(captions))
    return loss.squeeze(0), terms, len(captions)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    dist = setup_runtime(args)
    device, name, amp = dist.device, args.dataset, not args.no_amp
    if args.use_schedule and name != "shoes":
        logger.warning("--use_schedule applies to Shoes only (as the original); ignored for %s", name)
    if args.combiner_model_path:
        logger.warning("--combiner_model_path is recorded but not loaded, as in the original; use --resume")
    root = data_root(args, name)
    args.run_name = default_run_name(args, run_prefix(args))

    model, info = build_clip(args, device, args.clip_model_path)
    if not args.clip_model_path:
        logger.warning("no --clip-model-path: the Combiner trains on the pre-trained CLIP")
    model.requires_grad_(False).eval()
    dim, feature_dim, precision = info["input_resolution"], info["embed_dim"], info["precision"]
    aug_dim = args.aug_dim or dim
    params = hyperparameters(args, HYPERPARAMETERS, precision, learn_t=args.learn_t, use_schedule=args.use_schedule,
                             aug_dim=aug_dim, loss_weight_lr=args.loss_weight_lr, fusion_weights=args.fusion_weights,
                             feature_cache=not args.no_feature_cache, world_size=dist.world_size)
    preflight(args, params, prefix=run_prefix(args), subdir=RUN_SUBDIR)
    check_cache_dir(args)

    image_encoder, text_encoder = ImageEncoder(model, device), TextEncoder(model, device)
    val_sets = query_sets(args, name, "val", image_encoder, device, dim, args.clip_model_path)
    val_texts = [encode_texts(text_encoder, query_set.captions) for query_set in val_sets] if dist.is_main else []
    frozen_training_clip(model, precision)  # validation features are done; training features as the original

    preprocess, augment = preprocess_from_args(args, dim), image_aug_transform(args.target_ratio, aug_dim)
    train_set = relative_dataset(name, root, "train", preprocess, ref_aug=augment)
    if args.no_feature_cache:
        images, texts = FrozenImages(image_encoder, device, chunk_size=args.clip_bs), FrozenTexts(text_encoder)
        data = train_set
    else:
        key = clip_cache_key(args, args.clip_model_path, dim, image_encoder, what="train images", root=str(root))
        table, rows = train_image_table(train_set, image_encoder, device, args, preprocess, args.clip_bs, key)
        strings = possible_train_captions(train_set, backward=False)
        text_key = clip_cache_key(args, args.clip_model_path, dim, text_encoder, what="train captions",
                                  root=str(root))
        text_table, _ = extract_features([(text, text) for text in strings], text_encoder, device=device,
                                         batch_size=args.clip_bs, amp=False, cache_dir=args.cache_dir,
                                         cache_key=text_key, desc="train caption features")
        images, texts = FrozenImages(image_encoder, device, table), FrozenTexts(text_encoder, strings, text_table)
        data = AugmentedRows(train_set, rows, augment)
    # the augmented view: the fp16 CLIP as is in the 'fp16' precision, else autocast unless --no-amp
    augmented = FrozenImages(ImageEncoder(model, device, amp and precision == "fp32"), device,
                             chunk_size=args.clip_bs)
    loader = train_loader(data, args.batch_size, args.num_workers, dist, args.seed)
    seed_everything(args.seed)  # the training stream does not depend on how the features were prepared

    combiner = Combiner(feature_dim, args.projection_dim, args.hidden_dim, args.learn_t).to(device)
    optimizer = build_optimizer(combiner, args.combiner_lr, args.loss_weight_lr)
    scaler = grad_scaler(device, amp)
    network = data_parallel(combiner, dist)
    run = TrainingRun(args, dist, run_prefix(args), {"combiner": combiner, "optimizer": optimizer, "scaler": scaler},
                      params, "MLCL combiner_train", f"MLCL combiner on {name} (learn_t={args.learn_t})",
                      subdir=RUN_SUBDIR)
    best_names = selected_checkpoints(name, "combiner", "combiner" if name == "fashioniq" else "combiner_best")
    terms = TermLog(run)
    schedule = (WarmRestarts(optimizer, [args.combiner_lr, args.loss_weight_lr], len(loader), run.start_epoch)
                if args.use_schedule and name == "shoes" else None)

    epoch_terms: dict[int, dict[str, float]] = {}

    def train_epoch(epoch: int) -> float:
        start = {"alpha": combiner.alpha().item()}  # restored with a partial epoch, as the rng, means, schedule
        means, rng = EpochMeans(device), caption_rng(args.seed, dist.rank, epoch)
        step = partial(combiner_step, rng=rng, name=name, images=images, texts=texts, augmented=augmented,
                       model=network, dist=dist, amp=amp, means=means, schedule=schedule)
        combiner.train()
        states = {"start": start, "captions": rng, "means": means,
                  **({"schedule": schedule} if schedule is not None else {})}
        loss = train_one_epoch(loader, step, optimizer, scaler, epoch, device, run.log.tracker, "combiner",
                               saver=run.steps.epoch(**states))
        if name != "cirr":
            logger.info("epoch %d: alpha = 2·sigmoid(loss_weight) = %.4f at the epoch's start", epoch, start["alpha"])
        epoch_terms[epoch] = {**{f"loss_{key}": value for key, value in means.result().items()},
                              "alpha": start["alpha"]}
        return loss

    def validate(epoch: int) -> dict[str, float] | None:
        if not dist.is_main:
            return None
        combiner.eval()
        return evaluate_composed(val_sets, val_texts, partial(combiner.fused_query, fusion_weights=args.fusion_weights))

    run_epochs(run, args, train_epoch, validate, "combiner", best_names, combiner, None,
               after_train=lambda epoch: terms.log(epoch, epoch_terms.pop(epoch)))
    cleanup()


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
