"""Stage 1 of MLCL: contrastive fine-tuning of CLIP's text encoder, image encoder or both, as CLIP4Cir.

    python mlcl/clip_fine_tune.py --dataset FashionIQ --num-epochs 100 --clip-model-name RN50x4 --encoder text \\
        --learning-rate 2e-6 --batch-size 128 --transform targetpad --target-ratio 1.25 \\
        --save-training --save-best --validation-frequency 1

The query is normalize(E_img(reference) + E_txt(caption)), the target normalize(E_img(target)); the loss is
cross-entropy over 100 · query · targetᵀ. AdamW (eps 1e-7), AMP on CUDA. The model stays in eval mode, so BatchNorm
statistics never change while its affine parameters train. With ``--encoder text`` the frozen image features of the
train triplets and of the validation galleries are computed once. Chain stages with ``--clip_model_ckpt``.
On CUDA the loaded CLIP weights are rounded to fp16 values first, as the original's fp16 ``clip.load`` does
(``--clip-fp32`` keeps them exact); training then keeps fp32 weights under autocast, as the original.

Writes ``<output-root>/models-finetune/<fiq|clip_shoes|cirr>_<model>_<timestamp>/`` with
``training_hyperparameters.json``, ``train_metrics.csv``, ``validation_metrics.csv``, ``training_curves.png``,
``resume.pt`` and ``saved_models/tuned_clip_{best|arithmetic|harmonic|geometric|last|<epoch>}.pt`` (``{'epoch',
'CLIP'}``, fp32).

Captions longer than CLIP's 77 tokens are truncated with a warning (the original raised an error).
"""
from __future__ import annotations

import argparse
import random
import sys
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from common.args import add_comet_args, add_output_args, setup_runtime
from common.cir.args import preprocess_from_args
from common.cir.data import TripletRows, caption_rng, compose_captions, relative_dataset
from common.cir.evaluation import evaluate_composed
from common.cir.frozen import FrozenImages, encode_texts
from common.cir.training import run_epochs
from common.clip import CLIP
from common.dist import DistInfo, all_gather_with_grad, cleanup
from common.runtime import autocast, get_logger, grad_scaler, run_main, seed_everything
from common.training.loop import data_parallel, train_loader, train_one_epoch
from common.training.resume import preflight
from common.training.run import TrainingRun
from mlcl.args import (adapt_output_args, add_clip_args, add_image_args, add_port_args, add_saving_args,
                       check_cache_dir, data_root, dataset_name, short_model_name)
from mlcl.data import EXTRACT_BATCH_SIZE, clip_cache_key, query_sets, train_image_table
from mlcl.models import ImageEncoder, TextEncoder, build_clip, clip_precision, sum_fusion, tokenize_captions
from mlcl.training import default_run_name, hyperparameters, selected_checkpoints

RUN_SUBDIR = "models-finetune"
logger = get_logger("mlcl.clip_fine_tune")

ENCODERS = ("text", "image", "both")
RUN_PREFIX = {"fashioniq": "fiq", "shoes": "clip_shoes", "cirr": "cirr"}
LOGIT_SCALE = 100.0
HYPERPARAMETERS = ("num_epochs", "clip_model_name", "learning_rate", "batch_size", "validation_frequency",
                   "transform", "target_ratio", "save_training", "encoder", "save_best")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=dataset_name, required=True,
                        help="'FashionIQ', 'Shoes' or 'CIRR' (case-insensitive)")
    parser.add_argument("--num-epochs", type=int, default=300, help="number of training epochs (default 300)")
    add_clip_args(parser)
    parser.add_argument("--encoder", default="both", choices=ENCODERS,
                        help="what trains: text (everything but visual.*), image (only visual.*) or both "
                             "(default both)")
    parser.add_argument("--learning-rate", type=float, default=2e-6, help="AdamW learning rate (default 2e-6)")
    parser.add_argument("--batch-size", type=int, default=512,
                        help="triplets per step, all processes together under torchrun (default 512)")
    add_saving_args(parser, validation_frequency=1)
    add_image_args(parser)
    parser.add_argument("--clip_model_ckpt", "--clip-model-ckpt", dest="clip_model_ckpt", default="",
                        help="start from this stage-1 checkpoint ({'epoch', 'CLIP'}), e.g. the text stage's "
                             "tuned_clip_best.pt before an image stage (default: the pre-trained CLIP)")
    add_port_args(parser)
    add_comet_args(parser)
    add_output_args(parser)
    adapt_output_args(parser, RUN_SUBDIR)
    return parser


def apply_encoder_choice(model: CLIP, encoder: str) -> None:
    """The original freeze rules: ``text`` freezes ``visual.*``, ``image`` trains only ``visual.*``, ``both``
    trains everything. ``logit_scale`` is always frozen: the loss uses the fixed scale 100, so it never gets a
    gradient and AdamW would skip it anyway (freezing it keeps DDP from waiting for its gradient)."""
    for name, parameter in model.named_parameters():
        visual = name.startswith("visual.")
        parameter.requires_grad_({"text": not visual, "image": visual, "both": True}[encoder])
    model.logit_scale.requires_grad_(False)


class QueryTarget(nn.Module):
    """One forward for DDP: (normalised query, normalised target) of a batch. Image fields are preprocessed images
    [B, 3, H, W], or precomputed features [B, D] when the image encoder is frozen."""

    def __init__(self, clip_model: CLIP):
        super().__init__()
        self.clip = clip_model

    def image_features(self, field: torch.Tensor) -> torch.Tensor:
        return field if field.dim() == 2 else self.clip.encode_image(field)

    def forward(self, reference: torch.Tensor, target: torch.Tensor,
                tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        query = self.image_features(reference) + self.clip.encode_text(tokens)
        return F.normalize(query, dim=-1), F.normalize(self.image_features(target), dim=-1)


def fine_tune_loss(query: torch.Tensor, target: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Cross-entropy over 100 · query · targetᵀ (targets of every process; own rows start at ``offset``)."""
    targets = all_gather_with_grad(target)
    labels = torch.arange(query.shape[0], device=query.device) + offset
    return F.cross_entropy(LOGIT_SCALE * query @ targets.T, labels)


def fine_tune_step(batch: tuple, rng: random.Random, *, name: str, images: FrozenImages | None, model: nn.Module,
                   dist: DistInfo, amp: bool) -> tuple[torch.Tensor, dict, int]:
    """(loss, no parts, batch size) of one batch; FashionIQ draws one of its four caption compositions."""
    device = dist.device
    load = images or (lambda field: field.to(device, non_blocking=True))
    reference, target = load(batch[0]), load(batch[1])
    captions = compose_captions(name, batch[2], rng)
    tokens = tokenize_captions(captions).to(device)
    with autocast(device, amp):
        query, target_features = model(reference, target, tokens)
        loss = fine_tune_loss(query, target_features, dist.rank * len(captions))
    return loss, {}, len(captions)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    dist = setup_runtime(args)
    device, name, amp = dist.device, args.dataset, not args.no_amp
    root = data_root(args, name)
    prefix = f"{RUN_PREFIX[name]}_{short_model_name(args.clip_model_name)}"
    args.run_name = default_run_name(args, prefix)
    params = hyperparameters(args, HYPERPARAMETERS, clip_precision(device, args.clip_fp32),
                             clip_model_ckpt=args.clip_model_ckpt, world_size=dist.world_size)
    preflight(args, params, prefix=prefix, subdir=RUN_SUBDIR)
    check_cache_dir(args)

    model, info = build_clip(args, device, args.clip_model_ckpt)
    apply_encoder_choice(model, args.encoder)
    model.eval()
    dim = info["input_resolution"]
    preprocess = preprocess_from_args(args, dim)
    image_encoder, text_encoder = ImageEncoder(model, device), TextEncoder(model, device)
    # the frozen image features of --encoder text: the original encodes them under autocast at every step
    table_encoder = ImageEncoder(model, device, amp and info["precision"] == "fp16")
    visual_frozen = args.encoder == "text"
    fixed_val_sets = (query_sets(args, name, "val", image_encoder, device, dim, args.clip_model_ckpt)
                      if visual_frozen else None)

    train_set = relative_dataset(name, root, "train", preprocess)
    if visual_frozen:
        key = clip_cache_key(args, args.clip_model_ckpt, dim, table_encoder, what="train images", root=str(root))
        table, rows = train_image_table(train_set, table_encoder, device, args, preprocess, EXTRACT_BATCH_SIZE, key)
        images, data, workers = FrozenImages(table_encoder, device, table), TripletRows(train_set, rows, False), 0
    else:
        images, data, workers = None, train_set, args.num_workers
    loader = train_loader(data, args.batch_size, workers, dist, args.seed)
    seed_everything(args.seed)  # the training stream does not depend on how the features were prepared

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.learning_rate,
                                  betas=(0.9, 0.999), eps=1e-7)
    scaler = grad_scaler(device, amp)
    network = data_parallel(QueryTarget(model), dist)
    run = TrainingRun(args, dist, prefix, {"clip": model, "optimizer": optimizer, "scaler": scaler}, params,
                      "MLCL clip_fine_tune", f"MLCL CLIP fine-tuning ({args.encoder}) on {name}", subdir=RUN_SUBDIR)
    best_names = selected_checkpoints(name, "tuned_clip", "tuned_clip_best")

    step = partial(fine_tune_step, name=name, images=images, model=network, dist=dist, amp=amp)

    def train_epoch(epoch: int) -> float:
        model.eval()  # BatchNorm statistics stay frozen, as in the original
        rng = caption_rng(args.seed, dist.rank, epoch)
        return train_one_epoch(loader, partial(step, rng=rng), optimizer, scaler, epoch, device, run.log.tracker,
                               f"CLIP fine-tune ({args.encoder})", saver=run.steps.epoch(captions=rng))

    def validate(epoch: int) -> dict[str, float] | None:
        val_sets = fixed_val_sets or query_sets(args, name, "val", image_encoder, device, dim, cache=False)
        if not dist.is_main:
            return None
        texts = [encode_texts(text_encoder, query_set.captions) for query_set in val_sets]
        return evaluate_composed(val_sets, texts, sum_fusion)

    run_epochs(run, args, train_epoch, validate, "tuned_clip", best_names, model, None)
    cleanup()


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
