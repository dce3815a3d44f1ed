"""What the two training scripts share: the original flags, the run folder ``CIR_Reranking_<stage>_<fiq|cirr>_
<timestamp>_<hostname>``, and the epoch loop with the original checkpoint selection."""
from __future__ import annotations

import argparse
import socket
from datetime import datetime
from functools import partial
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader

from common.args import add_comet_args, add_output_args
from common.cir.args import (SHORT_NAMES, add_save_args, add_validation_frequency, original_hyperparameters,
                             preprocess_from_args)
from common.cir.data import caption_rng, dataset_root, relative_dataset
from common.cir.training import run_epochs
from common.dist import DistInfo, cleanup
from common.runtime import grad_scaler
from common.training.experiment import UPSTREAM_TIMESTAMP, write_hyperparameters
from common.training.loop import StepFn, train_loader, train_one_epoch
from common.training.lr import cosine_lr_schedule
from common.training.resume import preflight
from common.training.run import TrainingRun
from reranking_cir.args import DATASET_HELP, add_image_args, add_port_args, dataset_name
from reranking_cir.validate import print_metrics

BEST_FILES = {"fashioniq": {"average_recall": "blip"}, "cirr": {"mean(R@5+R_s@1)": "blip_mean"}}


def add_training_args(parser: argparse.ArgumentParser, num_epochs: int, img_tune_modules: str) -> None:
    """The flags both original training scripts have, with their defaults; ``img_tune_modules`` says what
    ``--blip-img-tune`` trains."""
    parser.add_argument("--dataset", type=dataset_name, required=True, help=DATASET_HELP)
    parser.add_argument("--train", action="store_true", help="train; without it the script validates once and exits")
    parser.add_argument("--grad-accumulation-step", type=int, default=1,
                        help="optimizer step every N batches, gradients summed over them (default 1; the original "
                             "zeroed them every batch, so N > 1 did not accumulate)")
    parser.add_argument("--preprocess-val", action="store_true",
                        help="keep the validation gallery's ViT tokens between validations (always done here while "
                             "the ViT is frozen; with --blip-img-tune they are encoded again at every validation, as "
                             "the original; accepted for compatibility)")
    add_comet_args(parser)
    parser.add_argument("--num-epochs", type=int, default=num_epochs, help=f"training epochs (default {num_epochs})")
    parser.add_argument("--blip-learning-rate", type=float, default=2e-5, help="AdamW learning rate (default 2e-5)")
    parser.add_argument("--blip-max-epoch", type=int, default=20,
                        help="half-period of the epoch cosine schedule; not clamped, so the rate rises again after "
                             "it, as the original (default 20)")
    parser.add_argument("--blip-img-tune", action="store_true",
                        help=f"also train {img_tune_modules} (same AdamW group and learning rate), its forward under "
                             "autocast with gradient, and encode the validation gallery again at every validation, "
                             "as the original (default: frozen, fp32, no gradient)")
    parser.add_argument("--batch-size", type=int, default=1024,
                        help="triplets per step, all processes together under torchrun (default 1024)")
    parser.add_argument("--blip-bs", type=int, default=32, help="images per ViT forward in training (default 32)")
    add_validation_frequency(parser, 3)
    add_image_args(parser)
    add_save_args(parser, "with --save-training keep blip_last.pt and the best (blip.pt for FashionIQ, blip_mean.pt "
                          "for CIRR) instead of one blip_<epoch>.pt per validation")
    add_port_args(parser, num_workers=4)
    add_output_args(parser)


def open_run(args: argparse.Namespace, dist: DistInfo, stage: str, state: dict[str, Any],
             params: dict[str, Any]) -> TrainingRun:
    """The run folder ``<output-root>/models/CIR_Reranking_<stage>_<fiq|cirr>_<timestamp>_<hostname>`` (or
    ``--run-name``) with ``<experiment-name>.json`` as the original names it; without a name the original wrote
    ``None.json``, here the same dict is only in ``training_hyperparameters.json``."""
    prefix = f"CIR_Reranking_{stage}_{SHORT_NAMES[args.dataset]}"
    preflight(args, params, prefix=prefix)  # --resume auto becomes a run folder or None before the run is named
    if args.run_name is None and args.resume is None:
        args.run_name = f"{prefix}_{datetime.now().strftime(UPSTREAM_TIMESTAMP)}_{socket.gethostname()}"
    run = TrainingRun(args, dist, prefix, state, params, "candidate-reranking-cir",
                      f"Candidate re-ranking {stage} on {args.dataset}")
    if dist.is_main and args.resume is None and args.experiment_name:
        write_hyperparameters(run.dir, params, name=f"{args.experiment_name}.json")
    return run


def report_validation(metrics: dict[str, float], dist: DistInfo) -> None:
    """Without ``--train``: print the validation metrics (process 0) and leave the process group."""
    if dist.is_main:
        print_metrics(metrics)
    cleanup()


def train_setup(args: argparse.Namespace, dist: DistInfo,
                parameters: Sequence[nn.Parameter]) -> tuple[DataLoader, torch.optim.Optimizer, torch.amp.GradScaler]:
    """The train triplets' loader, AdamW over ``parameters`` (weight decay 0.05, as the original) and the AMP
    scaler."""
    data = relative_dataset(args.dataset, dataset_root(args.dataset, args.data_root), "train",
                            preprocess_from_args(args))
    loader = train_loader(data, args.batch_size, args.num_workers, dist, args.seed)
    optimizer = torch.optim.AdamW(parameters, lr=args.blip_learning_rate, weight_decay=0.05)
    return loader, optimizer, grad_scaler(dist.device, not args.no_amp)


def train_stage(args: argparse.Namespace, dist: DistInfo, run: TrainingRun, loader: DataLoader, step: StepFn,
                optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, modules: Sequence[nn.Module],
                desc: str, validate: Callable[[], dict[str, float]], model: nn.Module, key: str) -> None:
    """The original epoch loop: cosine rate per epoch, ``modules`` in train mode, one pass (``step`` draws its
    FashionIQ captions from the epoch's generator), validation on every process every ``--validation-frequency``
    epochs, then ``model`` saved as ``blip_last.pt`` and the best / per-epoch files of the original selection."""

    def train_epoch(epoch: int) -> float:
        cosine_lr_schedule(optimizer, epoch, args.blip_max_epoch, args.blip_learning_rate, 0.0)
        for module in modules:
            module.train()
        rng = caption_rng(args.seed, dist.rank, epoch)
        return train_one_epoch(loader, partial(step, rng=rng), optimizer, scaler, epoch, dist.device,
                               run.log.tracker, desc, accumulation=args.grad_accumulation_step,
                               saver=run.steps.epoch(captions=rng))

    def validate_epoch(epoch: int) -> dict[str, float] | None:
        metrics = validate()
        return metrics if dist.is_main else None

    run_epochs(run, args, train_epoch, validate_epoch, "blip", BEST_FILES[args.dataset], model, optimizer, key=key)


def hyperparameters(args: argparse.Namespace, keys: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    """The original parameter dict (``keys`` of ``args``) plus what this port adds."""
    return original_hyperparameters(args, keys, dress_types=False, seed=args.seed, vit_config=args.vit_config,
                                    blip_pretrained_path=str(args.blip_pretrained_path), **extra)
