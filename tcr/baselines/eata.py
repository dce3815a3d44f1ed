"""EATA (Niu et al., ICML 2022), written from the paper: the TCR code only calls it (``e_margin=0.40``,
``fishers=None``) and its source was never released.

Per step, over the N-way gallery prediction: keep queries with entropy below ``E0 = e_margin·ln N`` (the paper's
0.4·ln C with C = gallery size), drop those whose prediction is redundant (|cos| with the moving-average
prediction ≥ ``d_margin`` = 0.05), weight the kept entropies by ``1/exp(H − E0)`` and average. The moving average
(momentum 0.9) is updated with the kept predictions. No Fisher (EWC) term, as in the TCR call. A step that keeps
no query makes no update.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tcr.adapter import Objective, OnlineAdapter, QueryBatch
from common.tta import softmax_entropy


class EATA(OnlineAdapter):
    name = "eata"

    def __init__(self, *args, e_margin: float = 0.4, d_margin: float = 0.05, momentum: float = 0.9, **kwargs):
        super().__init__(*args, **kwargs)
        self.e_margin = e_margin * math.log(len(self.gallery))
        self.d_margin = d_margin
        self.momentum = momentum
        self.mean_probs: torch.Tensor | None = None

    def objective(self, query: torch.Tensor, sims: torch.Tensor, batch: QueryBatch, step: int) -> Objective:
        logits = sims / self.temperature
        entropy = softmax_entropy(logits)
        selected = torch.nonzero(entropy.detach() < self.e_margin).squeeze(1)
        probs = logits.detach()[selected].softmax(dim=1)
        if self.mean_probs is not None and len(selected):
            novel = F.cosine_similarity(self.mean_probs[None], probs, dim=1).abs() < self.d_margin
            selected, probs = selected[novel], probs[novel]
        if len(selected):
            batch_mean = probs.mean(dim=0)
            self.mean_probs = batch_mean if self.mean_probs is None else (
                self.momentum * self.mean_probs + (1 - self.momentum) * batch_mean)
        if not len(selected):
            return None, {"selected": 0.0}
        kept = entropy[selected]
        loss = (kept / torch.exp(kept.detach() - self.e_margin)).mean()
        return loss, {"loss_total": loss.item(), "selected": float(len(selected))}
