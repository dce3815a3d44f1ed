"""What the two training scripts share: the original flags, the run folder ``CIR_Reranking_<stage>_<fiq|cirr>_
<timestamp>_<hostname>``, and checkpoint selection."""
from __future__ import annotations

import argparse
import socket
from datetime import datetime
from typing import Any

import torch

from common.args import add_comet_args, add_output_args
from common.cir.selection import save_validated
from common.dist import DistInfo
from common.training.experiment import UPSTREAM_TIMESTAMP, write_hyperparameters
from common.training.run import TrainingRun
from reranking_cir.engine import DATASET_HELP, DATASETS, add_image_args, add_port_args, dataset_name

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
    parser.add_argument("--batch-size", type=int, default=1024, help="triplets per step, all processes together under torchrun (default 1024)")
    parser.add_argument("--blip-bs", type=int, default=32, help="images per ViT forward in training (default 32)")
    parser.add_argument("--validation-frequency", type=int, default=3,
                        help="validate when epoch %% frequency == 0 (default 3)")
    add_image_args(parser)
    parser.add_argument("--save-training", action="store_true", help="write checkpoints at all")
    parser.add_argument("--save-best", action="store_true",
                        help="with --save-training keep blip_last.pt and the best (blip.pt for FashionIQ, "
                             "blip_mean.pt for CIRR) instead of one blip_<epoch>.pt per validation")
    add_port_args(parser, num_workers=4)
    add_output_args(parser)


def open_run(args: argparse.Namespace, dist: DistInfo, stage: str, state: dict[str, Any],
             params: dict[str, Any]) -> TrainingRun:
    """The run folder ``<output-root>/models/CIR_Reranking_<stage>_<fiq|cirr>_<timestamp>_<hostname>`` (or
    ``--run-name``) with ``<experiment-name>.json`` as the original names it; without a name the original wrote
    ``None.json``, here the same dict is only in ``training_hyperparameters.json``."""
    prefix = f"CIR_Reranking_{stage}_{DATASETS[args.dataset]}"
    if args.run_name is None and args.resume is None:
        args.run_name = f"{prefix}_{datetime.now().strftime(UPSTREAM_TIMESTAMP)}_{socket.gethostname()}"
    run = TrainingRun(args, dist, prefix, state, params, "candidate-reranking-cir",
                      f"Candidate re-ranking {stage} on {args.dataset}")
    if dist.is_main and args.resume is None and args.experiment_name:
        write_hyperparameters(run.dir, params, name=f"{args.experiment_name}.json")
    return run


def save_checkpoints(run: TrainingRun, args: argparse.Namespace, epoch: int, metrics: dict[str, float],
                     model: torch.nn.Module, optimizer: torch.optim.Optimizer, key: str) -> list[str]:
    """``blip_last.pt`` and the best / per-epoch files of the original selection rules."""
    return save_validated(run.dir, "blip", BEST_FILES[args.dataset], run.best, epoch, metrics, model, optimizer,
                          args, key=key)


def hyperparameters(args: argparse.Namespace, keys: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    """The original parameter dict (``keys`` of ``args``) plus what this port adds."""
    params = {key: getattr(args, key) for key in keys}
    params.update(seed=args.seed, vit_config=args.vit_config, blip_pretrained_path=str(args.blip_pretrained_path),
                  **extra)
    return params
