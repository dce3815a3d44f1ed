"""Tent (Wang et al., ICLR 2021): minimise the mean prediction entropy over the full gallery."""
from __future__ import annotations

import torch

from tcr.adapter import Objective, OnlineAdapter, QueryBatch
from common.tta import softmax_entropy


class Tent(OnlineAdapter):
    name = "tent"

    def objective(self, query: torch.Tensor, sims: torch.Tensor, batch: QueryBatch, step: int) -> Objective:
        loss = softmax_entropy(sims / self.temperature).mean()
        return loss, {"loss_total": loss.item()}
