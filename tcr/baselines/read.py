"""READ as in the TCR code: a robust confidence term minus a batch-balance term.

``p = softmax(o)``; ``L_bal = H(softmax(Σ_i p_i))``; ``L_ra = mean_i p_max,i·(1 − log p_max,i + log γ)`` with
γ = e⁻¹ (i.e. ``−p_max log p_max``); ``L = L_ra − L_bal``.
"""
from __future__ import annotations

import math

import torch

from tcr.adapter import Objective, OnlineAdapter, QueryBatch
from common.tta import softmax_entropy

GAMMA = math.exp(-1)


class READ(OnlineAdapter):
    name = "read"

    def objective(self, query: torch.Tensor, sims: torch.Tensor, batch: QueryBatch, step: int) -> Objective:
        probs = (sims / self.temperature).softmax(dim=1)
        balance = softmax_entropy(probs.sum(dim=0))
        confidence = probs.max(dim=1).values
        robust = (confidence * (1 - confidence.log() + math.log(GAMMA))).mean()
        loss = robust - balance
        return loss, {"loss_total": loss.item()}
