"""SAR (Niu et al., ICLR 2023) as in the TCR code: reliable-entropy filtering, SAM updates and model recovery.

Differences from the SAR paper kept from the TCR code: ``margin_e0`` (0.4) is a *fraction of the batch*: a
query is reliable when its entropy is ≤ the k-th smallest, k = ⌊0.4·B⌋. The reset fires when the EMA of the
second-pass loss drops below 0.2; it restores the LayerNorm weights but not AdamW's moments (upstream keeps them).
"""
from __future__ import annotations

import torch

from tcr.adapter import OnlineAdapter, QueryBatch
from common.tta import SAM, restore, snapshot, softmax_entropy


class SAR(OnlineAdapter):
    name = "sar"

    def __init__(self, *args, margin_e0: float = 0.4, reset_constant: float = 0.2, ema_momentum: float = 0.9,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.optimizer, SAM):
            raise TypeError("SAR needs a SAM optimizer (build it with tcr.method.build_optimizer('sar', ...))")
        self.margin_e0 = margin_e0
        self.reset_constant = reset_constant
        self.ema_momentum = ema_momentum
        self.ema: float | None = None
        self.resets = 0
        self.initial = snapshot(self.params)

    def update(self, batch: QueryBatch, step: int) -> torch.Tensor:
        with torch.enable_grad():
            sims = self.encode(batch) @ self.gallery.t()
            entropy = softmax_entropy(sims / self.temperature)
            k = max(1, int(self.margin_e0 * batch.size))
            threshold = entropy.detach().kthvalue(k).values
            reliable = entropy.detach() <= threshold
            loss = entropy[reliable].mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.sync_gradients()
            self.optimizer.first_step(zero_grad=True)

            entropy2 = softmax_entropy(self.encode(batch) @ self.gallery.t() / self.temperature)[reliable]
            still_reliable = entropy2.detach() < threshold
            loss2 = entropy2[still_reliable].mean() if bool(still_reliable.any()) else entropy2.sum() * 0
            loss2.backward()
            self.sync_gradients()
            self.optimizer.second_step(zero_grad=True)

        value = loss2.item()
        self.ema = value if self.ema is None else self.ema_momentum * self.ema + (1 - self.ema_momentum) * value
        if self.ema < self.reset_constant:
            restore(self.params, self.initial)
            self.ema = None
            self.resets += 1
        self.log({"loss_total": loss.item()})
        return sims.detach()
