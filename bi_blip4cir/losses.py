"""The forward and reversed contrastive losses of both training stages, vectorised over the batch.

Notation (the losses of the original clip_fine_tune.py and combiner_train.py): r = reference image feature,
t = target image feature, s→ / s← = forward / reversed caption feature, n = L2 normalisation, all raw encoder
outputs. Rows are the queries of this process; targets may
be gathered from every process, so ``offset`` is the global index of row 0 (0 in a single process).

- forward: logits_f[i, j] = 100 · q_i · n(t_j), q_i = n(r_i + s→_i) (stage I) or Combiner(r_i, s→_i) (stage II).
- reversed: logits_r[i, j] = 100 · p_ij · n(r_i), p_ij = n(n(t_j) + s←_i) (stage I) or Combiner(t_j, s←_i)
  (stage II); the softmax runs over the compositions j, the positive is j = i.
- loss = CE(logits_f) + λ · CE(logits_r), λ per stage and dataset as in the original scripts.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

LOGIT_SCALE = 100.0
REVERSED_LOSS_WEIGHTS = {
    "stage1": {"fashioniq": 0.4, "cirr": 0.1},
    "stage2": {"fashioniq": 0.5, "cirr": 0.1},
}

Combine = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def reversed_loss_weight(stage: str, dataset: str, override: float | None = None) -> float:
    """λ of the reversed term: ``override`` if given, else 0.4 / 0.1 (stage I) or 0.5 / 0.1 (stage II), FIQ / CIRR."""
    return REVERSED_LOSS_WEIGHTS[stage][dataset.lower()] if override is None else override


def sum_fusion(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Stage-I composition: n(image + text)."""
    return F.normalize(image_features + text_features, dim=-1)


def _check_shapes(reference: torch.Tensor, target: torch.Tensor, offset: int) -> None:
    if target.shape[0] < 2:
        raise ValueError(
            f"the contrastive losses need at least 2 triplets per batch, got {target.shape[0]}; use a batch size "
            "of 2 or more and a train split with at least --batch-size triplets"
        )
    if offset + reference.shape[0] > target.shape[0]:
        raise ValueError(f"rows {offset}..{offset + reference.shape[0] - 1} have no positive among "
                         f"{target.shape[0]} targets")


def stage1_logits(reference: torch.Tensor, caption: torch.Tensor, reversed_caption: torch.Tensor, target: torch.Tensor,
                  offset: int = 0, scale: float = LOGIT_SCALE) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and reversed logits [B, N] of stage I (element-wise sum fusion); inputs are raw features."""
    _check_shapes(reference, target, offset)
    targets = F.normalize(target, dim=-1)
    logits_f = scale * sum_fusion(reference, caption) @ targets.T
    reversed_queries = F.normalize(targets.unsqueeze(0) + reversed_caption.unsqueeze(1), dim=-1)
    logits_r = scale * torch.einsum("ijd,id->ij", reversed_queries, F.normalize(reference, dim=-1))
    return logits_f, logits_r


def stage2_logits(combine: Combine, reference: torch.Tensor, caption: torch.Tensor, reversed_caption: torch.Tensor,
                  target: torch.Tensor, offset: int = 0,
                  scale: float = LOGIT_SCALE) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward and reversed logits [B, N] of stage II, with ONE call of ``combine`` on B + B·N pairs.

    The single call keeps DistributedDataParallel to one forward per backward; row B + i·N + j of the call combines
    target j (as the image) with reversed caption i. In train mode every pair gets its own dropout mask, as upstream.
    """
    _check_shapes(reference, target, offset)
    rows, candidates = reference.shape[0], target.shape[0]
    images = torch.cat([reference, target.repeat(rows, 1)])
    texts = torch.cat([caption, reversed_caption.repeat_interleave(candidates, dim=0)])
    combined = combine(images, texts)
    logits_f = scale * combined[:rows] @ F.normalize(target, dim=-1).T
    reversed_queries = combined[rows:].view(rows, candidates, -1)
    logits_r = scale * torch.einsum("ijd,id->ij", reversed_queries, F.normalize(reference, dim=-1))
    return logits_f, logits_r


def contrastive_loss(logits: torch.Tensor, offset: int = 0) -> torch.Tensor:
    """Cross-entropy of each row against its own column ``offset + row``."""
    labels = torch.arange(logits.shape[0], device=logits.device) + offset
    return F.cross_entropy(logits, labels)


def bidirectional_loss(logits_f: torch.Tensor, logits_r: torch.Tensor, weight: float,
                       offset: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(loss_f + weight · loss_r, loss_f, loss_r)."""
    loss_f = contrastive_loss(logits_f, offset)
    loss_r = contrastive_loss(logits_r, offset)
    return loss_f + weight * loss_r, loss_f, loss_r
