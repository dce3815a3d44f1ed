"""SHOT's information maximisation as in the TCR code, plus pseudo-label cross-entropy on confident queries.

``L = mean_i H(p_i) + Σ_j p̄_j log(p̄_j + 1e-5) + clf_coeff · CE(o_i, argmax p_i)`` over queries with
``max p_i > threshold`` (0.9; coefficient 0.1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from tcr.adapter import Objective, OnlineAdapter, QueryBatch
from common.tta import softmax_entropy


class SHOT(OnlineAdapter):
    name = "shot"

    def __init__(self, *args, threshold: float = 0.9, clf_coeff: float = 0.1, **kwargs):
        super().__init__(*args, **kwargs)
        self.threshold = threshold
        self.clf_coeff = clf_coeff

    def objective(self, query: torch.Tensor, sims: torch.Tensor, batch: QueryBatch, step: int) -> Objective:
        logits = sims / self.temperature
        probs = logits.softmax(dim=1)
        mean_probs = probs.mean(dim=0)
        loss = softmax_entropy(logits).mean() + (mean_probs * torch.log(mean_probs + 1e-5)).sum()
        confidence, pseudo_labels = probs.detach().max(dim=1)
        confident = confidence > self.threshold
        if bool(confident.any()):
            loss = loss + self.clf_coeff * F.cross_entropy(logits[confident], pseudo_labels[confident])
        return loss, {"loss_total": loss.item()}
