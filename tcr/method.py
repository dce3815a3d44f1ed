"""TCR: query prediction refinement with candidate selection, the source-like pair queue and the joint objective
``L_REM + L_UNI + L_EMG`` (the original's ``models/tta_baselines/tcr.py`` and ``losses.py``), plus the registry
of all adaptation methods (``models/tta_baselines/set_model.py``)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tcr.adapter import Objective, OnlineAdapter, QueryBatch
from tcr.baselines import BASELINES
from tcr.losses import (loss_emg, loss_rem, loss_uni, modality_gap, refined_entropy, select_candidates,
                        source_like_indicator)
from common.tta import SAM


class SourceLikeQueue:
    """The source-like query–candidate pairs: each entry is (SI, z, c, H), kept sorted by SI once full.

    ``push`` appends the ``count`` pairs of a batch with the smallest SI; once the queue holds at least
    ``capacity`` entries it is sorted by SI (ascending) and cut to ``capacity``. SI values are never recomputed.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError(f"queue capacity must be positive, got {capacity}")
        self.capacity = capacity
        self.indicators = torch.empty(0)
        self.queries = torch.empty(0)
        self.candidates = torch.empty(0)
        self.entropies = torch.empty(0)

    def __len__(self) -> int:
        return len(self.indicators)

    @torch.no_grad()
    def push(self, indicators: torch.Tensor, queries: torch.Tensor, candidates: torch.Tensor,
             entropies: torch.Tensor, count: int) -> None:
        chosen = torch.argsort(indicators.detach(), stable=True)[:count]
        parts = (indicators, queries, candidates, entropies)
        if len(self):
            merged = [torch.cat([old, new.detach()[chosen]]) for old, new in
                      zip((self.indicators, self.queries, self.candidates, self.entropies), parts)]
        else:
            merged = [new.detach()[chosen].clone() for new in parts]
        if len(merged[0]) >= self.capacity:
            keep = torch.argsort(merged[0], stable=True)[: self.capacity]
            merged = [values[keep] for values in merged]
        self.indicators, self.queries, self.candidates, self.entropies = merged

    def margin(self) -> torch.Tensor:
        """Target gap Δ*: the modality gap of the queued pairs."""
        return modality_gap(self.queries, self.candidates)

    def entropy_threshold(self) -> torch.Tensor:
        """H*: the largest entropy in the queue."""
        return self.entropies.max()


class TCR(OnlineAdapter):
    """Test-time adaptation for cross-modal retrieval (Li et al., ICLR 2025).

    Per step: nearest gallery candidate of each query; B-way refined prediction over the batch's candidates with
    temperature τ; at step 0 of the first ``queue_updates`` batches the ``⌊con_ratio·B⌋`` most source-like pairs
    enter the queue; loss ``L_REM(H, H*) + L_UNI(z, t) + L_EMG(z, C, Δ*)`` with unit weights.
    """

    name = "tcr"

    def __init__(self, *args, t: float = 0.1, con_ratio: float = 0.3, queue_size: int = 64,
                 queue_updates: int = 10, **kwargs):
        super().__init__(*args, **kwargs)
        self.t = t
        self.con_ratio = con_ratio
        self.queue_updates = queue_updates
        self.queue = SourceLikeQueue(queue_size)

    def objective(self, query: torch.Tensor, sims: torch.Tensor, batch: QueryBatch, step: int) -> Objective:
        _, candidates = select_candidates(sims, self.gallery)
        entropy = refined_entropy(query, candidates, self.temperature)
        if step == 0 and batch.position < self.queue_updates:
            self.queue.push(source_like_indicator(query, candidates), query, candidates, entropy,
                            int(self.con_ratio * batch.size))
        uniformity = loss_uni(query, self.t)
        if len(self.queue):
            robust_entropy = loss_rem(entropy, self.queue.entropy_threshold())
            gap = loss_emg(query, candidates, self.queue.margin())
        else:
            robust_entropy = gap = uniformity.new_zeros(())
        total = robust_entropy + uniformity + gap
        return total, {"loss_total": total.item(), "loss_REM": robust_entropy.item(),
                       "loss_UNI": uniformity.item(), "loss_EMG": gap.item()}


METHODS: dict[str, type[OnlineAdapter]] = {"tcr": TCR, **BASELINES}

BASELINE_TEMPERATURE = {
    "coco": 0.01, "flickr": 0.01,
    "nocaps_entire_domain": 0.01, "nocaps_in_domain": 0.01, "nocaps_near_domain": 0.01, "nocaps_out_domain": 0.01,
    "fashion_gen": 0.001, "fashion_gen_detail": 0.001,
    "cuhk_pedes": 1e-4, "icfg_pedes": 1e-4,
}
"""Upstream ``set_temperature``: every method but TCR uses this τ (0.01 for unlisted datasets)."""


def check_method(name: str) -> str:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; valid methods: {', '.join(METHODS)}")
    return name


def method_temperature(method: str, dataset: str, temperature: float) -> float:
    """τ as upstream sets it: ``--temperature`` for TCR, the per-dataset value for every baseline."""
    return temperature if check_method(method) == "tcr" else BASELINE_TEMPERATURE.get(dataset, 0.01)


def build_optimizer(method: str, params: list[nn.Parameter], lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW (default betas/eps), or SAM around AdamW (ρ = 0.05) for SAR."""
    if check_method(method) == "sar":
        return SAM(params, torch.optim.AdamW, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def build_adapter(method: str, *args: Any, **kwargs: Any) -> OnlineAdapter:
    """The adapter for ``method``, built from ``OnlineAdapter``'s arguments (``encode_query``, ``gallery``,
    ``params``, ``optimizer``, keyword ``steps``, ``temperature``, ``grad_sync``) and that method's own keyword
    arguments (e.g. TCR's ``t``)."""
    return METHODS[check_method(method)](*args, **kwargs)
