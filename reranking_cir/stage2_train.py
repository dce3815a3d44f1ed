"""Stage 2 of Candidate Re-ranking: train the dual multi-modal encoder that re-scores (query, candidate) pairs
(``src/stage2_train.py``).

    python reranking_cir/stage2_train.py --dataset CIRR --blip-learning-rate 2e-5 --blip-max-epoch 80 \\
        --num-epochs 100 --batch-size 16 --blip-bs 16 --transform targetpad --target-ratio 1.25 \\
        --save-training --save-best --top-k-path BLIP_stageI_b512_2e-5_cos10 --K-value 50 \\
        --validation-frequency 1 --experiment-name "BLIP_stageII_b16_2e-5_cos80_k50+[BLIP_stageI_b512_2e-5_cos10]" \\
        --blip-model-path stage1/CIRR --train

Stage 2 starts from ``model_base.pth`` (twin key duplication; ``merge_layer`` and ``cls_head`` fresh) and sees the
frozen stage-1 model (``--blip-model-path``) only through ``z_t``, computed as the original does: stage 1 in train
mode (dropout), in fp32 outside autocast, on stage 2's ViT tokens with drop-path. The ViT stays frozen (fp32, no
gradient) unless ``--blip-img-tune`` trains it through the targets, under autocast, as the original. Each batch
scores every query against every target of the batch (in-batch negatives, cross-entropy over the B x B matrix); each
target's cross-attention keys/values are computed once per step instead of once per query (``--no-kv-reuse``: the
original per-query forwards, same gradients). Every validation re-ranks the top-K file (``--top-k-path``, first
``--K-value`` columns). Checkpoints hold 'BLIP_NLVR'.
"""
from __future__ import annotations

import argparse
import sys
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from transformers import BertTokenizer

from common.args import setup_runtime
from common.blip import CirStage1, CirStage2, tokenize
from common.cir.data import compose_captions
from common.dist import DistInfo, all_gather_with_grad, cleanup, concat_all_gather
from common.runtime import autocast, run_main
from common.training.loop import data_parallel
from reranking_cir.args import add_stage2_eval_args
from reranking_cir.data import build_query_sets, gallery_tokens_for_stage2
from reranking_cir.models import build_models, resolve_stage_path
from reranking_cir.models import STAGE_KEYS, freeze
from reranking_cir.paths import top_k_pattern
from reranking_cir.stage1_train import encode_images
from reranking_cir.stage2_reranking import load_set_topk, rerank, stage2_metrics
from reranking_cir.training import (add_training_args, hyperparameters, open_run, report_validation, train_setup,
                                    train_stage)

HYPERPARAMETERS = ("num_epochs", "blip_learning_rate", "blip_max_epoch", "batch_size", "blip_bs",
                   "validation_frequency", "transform", "target_ratio", "save_training", "save_best",
                   "grad_accumulation_step", "K_value", "blip_img_tune", "kv_reuse")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_training_args(parser, num_epochs=300, img_tune_modules="the ViT, through the targets")
    parser.add_argument("--top-k-path", required=True,
                        help="stage-1 top-K file of the val split for the per-epoch validation, or the alias "
                             "BLIP_stageI_b512_2e-5_cos10 (CIRR) / BLIP_stageI_b512_2e-5_cos20 (FashionIQ); DTYPE "
                             "stands for the FashionIQ category")
    parser.add_argument("--K-value", type=int, required=True, help="candidates re-ranked per query at validation")
    parser.add_argument("--blip-model-path", required=True,
                        help="the trained stage-1 run folder or .pt file (key 'BLIP_Retrieval'); relative paths are "
                             "under --models-root")
    add_stage2_eval_args(parser)
    return parser


class PairScores(nn.Module):
    """The trained forward of one step: scores ``[Q, C]`` of every query against every candidate of the batch."""

    def __init__(self, model: CirStage2, kv_reuse: bool):
        super().__init__()
        self.model, self.kv_reuse = model, kv_reuse

    def forward(self, z_t: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                candidates: torch.Tensor) -> torch.Tensor:
        if self.kv_reuse:
            return self.model.score_grid(z_t, input_ids, attention_mask, candidates)
        n = candidates.shape[0]
        return torch.stack([self.model(z_t[i:i + 1].expand(n, -1, -1), input_ids[i:i + 1].expand(n, -1),
                                       attention_mask[i:i + 1].expand(n, -1), candidates)
                            for i in range(len(z_t))])


def trainable_parameters(stage1: CirStage1, stage2: CirStage2, img_tune: bool) -> list[nn.Parameter]:
    """Freeze stage 1 entirely and stage 2's ViT unless ``img_tune``; return the rest of stage 2 (one AdamW group,
    as the original)."""
    freeze(stage1)
    if not img_tune:
        freeze(stage2.visual_encoder)
    return [p for p in stage2.parameters() if p.requires_grad]


def stage2_step(batch: tuple, rng, *, name: str, stage1: CirStage1, stage2: CirStage2, scores_fn: nn.Module,
                tokenizer: BertTokenizer, dist: DistInfo, amp: bool, chunk: int,
                img_tune: bool = False) -> tuple[torch.Tensor, dict, int]:
    """(cross-entropy over the batch's candidates, {}, batch size); targets are gathered over processes, with their
    gradient when the ViT trains. ``z_t`` is computed in fp32 under no_grad, outside autocast, as the original."""
    references, targets = batch[0].to(dist.device), batch[1].to(dist.device)
    captions = compose_captions(name, batch[2], rng)
    input_ids, mask = tokenize(tokenizer, captions, device=dist.device)
    # the references reach the loss only through z_t (no gradient), so the ViT trains through the targets alone
    reference_embeds = encode_images(stage2.image_embeds, references, chunk, grad=False, amp=amp and img_tune)
    target_embeds = encode_images(stage2.image_embeds, targets, chunk, grad=img_tune, amp=amp and img_tune)
    target_embeds = (all_gather_with_grad if img_tune else concat_all_gather)(target_embeds)
    with torch.no_grad():
        z_t = stage1(reference_embeds, input_ids, mask, return_raw=True)
    labels = torch.arange(len(captions), device=dist.device) + dist.rank * len(captions)
    with autocast(dist.device, amp):
        scores = scores_fn(z_t, input_ids, mask, target_embeds)
        loss = F.cross_entropy(scores.float(), labels)
    return loss, {}, len(captions)


def validate(models, val_sets, topks, args, device: torch.device) -> dict[str, float]:
    """Stage-2 metrics of the validation top-K files (every process takes part)."""
    models.stage1.eval()
    models.stage2.eval()
    results = []
    for query_set, topk in zip(val_sets, topks):
        candidates = gallery_tokens_for_stage2(models, query_set, args.dataset, "val", args, device)
        results.append(rerank(models, query_set, topk, args.K_value, args, candidates))
    return stage2_metrics(results)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    dist = setup_runtime(args)
    device, name, amp = dist.device, args.dataset, not args.no_amp
    args.blip_model_path = str(resolve_stage_path(args.blip_model_path, name, args))
    models = build_models(args, device, args.blip_model_path, stage2=True)
    stage1, stage2 = models.stage1, models.stage2
    parameters = trainable_parameters(stage1, stage2, args.blip_img_tune)
    val_sets = build_query_sets(args, name, "val", stage1.visual_encoder, device)
    topks = [load_set_topk(args, query_set, args.top_k_path, name, "val", args.K_value) for query_set in val_sets]
    if not args.train:
        report_validation(validate(models, val_sets, topks, args, device), dist)
        return

    loader, optimizer, scaler = train_setup(args, dist, parameters)
    scores_fn = data_parallel(PairScores(stage2, args.kv_reuse), dist)
    params = hyperparameters(args, HYPERPARAMETERS, world_size=dist.world_size, blip_model_path=args.blip_model_path,
                             top_k_path=top_k_pattern(args.top_k_path, name, models_root=args.models_root))
    run = open_run(args, dist, "stageII", {"model": stage2, "optimizer": optimizer, "scaler": scaler}, params)
    step = partial(stage2_step, name=name, stage1=stage1, stage2=stage2, scores_fn=scores_fn,
                   tokenizer=models.tokenizer, dist=dist, amp=amp, chunk=args.blip_bs, img_tune=args.blip_img_tune)
    # both in train mode, as the original: z_t with dropout, drop-path in the stage-2 ViT
    train_stage(args, dist, run, loader, step, optimizer, scaler, [stage1, stage2], "stage II",
                partial(validate, models, val_sets, topks, args, device), stage2, STAGE_KEYS[2])
    cleanup()


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
