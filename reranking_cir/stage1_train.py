"""Stage 1 of Candidate Re-ranking: train BLIP's image-grounded text encoder as the query encoder
(``src/stage1_train.py``).

    python reranking_cir/stage1_train.py --dataset CIRR --blip-learning-rate 2e-5 --blip-max-epoch 10 \\
        --num-epochs 40 --batch-size 512 --blip-bs 16 --transform targetpad --target-ratio 1.25 \\
        --save-training --save-best --validation-frequency 1 --experiment-name BLIP_stageI_b512_2e-5_cos10 --train

The caption (``[ENC]`` first) cross-attends to the reference image's ViT tokens; in-batch InfoNCE of the queries
against the target features (``q tᵀ / temp``). Trained, in one AdamW group: the text encoder, ``text_proj`` and
``temp``; the ViT and ``vision_proj`` stay frozen (fp32, no gradient) unless ``--blip-img-tune`` trains them too,
the ViT under autocast with gradient through references and targets, as the original. Writes
``<output-root>/models/CIR_Reranking_stageI_<fiq|cirr>_<time>_<host>/`` with ``<experiment-name>.json``,
``train_metrics.csv``, ``validation_metrics.csv``, ``training_curves.png``, ``resume.pt`` and
``saved_models/blip{,_mean,_last,_<epoch>}.pt`` ({'epoch', 'BLIP_Retrieval', ...}).
"""
from __future__ import annotations

import argparse
import random
import sys
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertTokenizer

from common.args import setup_runtime
from common.blip import CirStage1, tokenize
from common.cir.data import compose_captions
from common.dist import DistInfo, all_gather_with_grad, cleanup, concat_all_gather
from common.runtime import autocast, run_main
from common.training.loop import data_parallel
from reranking_cir.data import build_query_sets
from reranking_cir.models import build_models
from reranking_cir.models import STAGE_KEYS, freeze
from reranking_cir.stage1_ranking import stage1_metrics, stage1_scores
from reranking_cir.training import (add_training_args, hyperparameters, open_run, report_validation, train_setup,
                                    train_stage)

HYPERPARAMETERS = ("num_epochs", "blip_learning_rate", "blip_max_epoch", "batch_size", "blip_bs",
                   "validation_frequency", "transform", "target_ratio", "save_training", "save_best",
                   "grad_accumulation_step", "blip_img_tune")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(parser, num_epochs=20, img_tune_modules="the ViT and vision_proj")
    return parser


class QueryLogits(nn.Module):
    """The trained forward of one step: fused queries of (reference tokens, caption) against target features."""

    def __init__(self, model: CirStage1):
        super().__init__()
        self.model = model

    def forward(self, reference_embeds: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                targets: torch.Tensor) -> torch.Tensor:
        return self.model.logits(self.model(reference_embeds, input_ids, attention_mask), targets)


def encode_images(encode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, chunk: int, *, grad: bool,
                  amp: bool) -> torch.Tensor:
    """``encode`` over ``images`` in chunks of ``--blip-bs``, returned as fp32. The original runs the frozen ViT in
    fp32 under no_grad; with ``--blip-img-tune`` (``grad``) under autocast (``amp``) with gradient."""
    with torch.set_grad_enabled(grad), autocast(images.device, amp):
        return torch.cat([encode(part).float() for part in images.split(chunk)])


def trainable_parameters(model: CirStage1, img_tune: bool) -> list[nn.Parameter]:
    """Freeze what the original does not train and return the rest (one AdamW group, as the original): the text
    encoder, ``text_proj`` and ``temp``; with ``img_tune`` also the ViT and ``vision_proj``. (Without it the
    original leaves ``vision_proj`` trainable, but its frozen targets are encoded under no_grad, so it never gets a
    gradient and AdamW skips it.)"""
    if not img_tune:
        freeze(model.visual_encoder)
        freeze(model.vision_proj)
    return [p for p in model.parameters() if p.requires_grad]


def stage1_step(batch: tuple, rng: random.Random, *, name: str, model: CirStage1, logits_fn: nn.Module,
                tokenizer: BertTokenizer, dist: DistInfo, amp: bool, chunk: int,
                img_tune: bool) -> tuple[torch.Tensor, dict, int]:
    """(InfoNCE loss, {}, batch size) of one batch; targets are gathered over processes (in-batch negatives of
    the whole batch), with their gradient when the ViT trains."""
    references, targets = batch[0].to(dist.device), batch[1].to(dist.device)
    captions = compose_captions(name, batch[2], rng)
    reference_embeds = encode_images(model.image_embeds, references, chunk, grad=img_tune, amp=amp and img_tune)
    target_features = encode_images(lambda x: model.target_features(model.image_embeds(x)), targets, chunk,
                                    grad=img_tune, amp=amp and img_tune)
    input_ids, mask = tokenize(tokenizer, captions, device=dist.device)
    all_targets = (all_gather_with_grad if img_tune else concat_all_gather)(target_features)
    labels = torch.arange(len(captions), device=dist.device) + dist.rank * len(captions)
    with autocast(dist.device, amp):
        logits = logits_fn(reference_embeds, input_ids, mask, all_targets)
        loss = F.cross_entropy(logits.float(), labels)
    return loss, {}, len(captions)


def validate(models, val_sets, args) -> dict[str, float]:
    """Stage-1 metrics of the validation split (every process takes part)."""
    models.stage1.eval()
    return stage1_metrics(val_sets, [stage1_scores(models, query_set, args) for query_set in val_sets])


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    dist = setup_runtime(args)
    device, name, amp = dist.device, args.dataset, not args.no_amp
    models = build_models(args, device)
    model = models.stage1
    parameters = trainable_parameters(model, args.blip_img_tune)
    val_sets = build_query_sets(args, name, "val", model.visual_encoder, device)
    if not args.train:
        report_validation(validate(models, val_sets, args), dist)
        return

    loader, optimizer, scaler = train_setup(args, dist, parameters)
    logits_fn = data_parallel(QueryLogits(model), dist)
    run = open_run(args, dist, "stageI", {"model": model, "optimizer": optimizer, "scaler": scaler},
                   hyperparameters(args, HYPERPARAMETERS, world_size=dist.world_size))
    step = partial(stage1_step, name=name, model=model, logits_fn=logits_fn, tokenizer=models.tokenizer, dist=dist,
                   amp=amp, chunk=args.blip_bs, img_tune=args.blip_img_tune)

    def validate_epoch() -> dict[str, float]:
        nonlocal val_sets
        if args.blip_img_tune:  # the ViT has changed: the gallery tokens are encoded again
            val_sets = build_query_sets(args, name, "val", model.visual_encoder, device)
        return validate(models, val_sets, args)

    train_stage(args, dist, run, loader, step, optimizer, scaler, [model], "stage I", validate_epoch, model,
                STAGE_KEYS[1])
    cleanup()


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
