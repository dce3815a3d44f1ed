"""SAR (Niu et al., ICLR 2023) as in the TCR code (``models/tta_baselines/sar.py``): reliable-entropy filtering,
SAM updates and model recovery.

Differences from the SAR paper kept from the TCR code: ``margin_e0`` (0.4) is a *fraction of the batch*: a
query is reliable when its entropy is ≤ the k-th smallest, k = ⌊0.4·B⌋. Recovery follows the original's order of
operations: the EMA (momentum 0.9) of the second-pass loss is updated, and when it is below 0.2 the LayerNorm
weights are restored (AdamW's moments are kept, as the original's ``load_state_dict`` keeps the inner optimizer's
state) while the low EMA value is put straight back (the original's ``reset()`` clears it, then ``self.ema = ema``
restores it), so the model keeps resetting until the EMA climbs above 0.2.

A step whose second selection is empty follows the TCR code: its second-pass loss is 0.0, which enters the EMA
(so such steps pull the EMA towards a reset), and there is no second backward. ``first_step(zero_grad=True)`` has
set the gradients to None (the default of ``zero_grad`` since torch 2.0), so ``second_step`` moves no parameter back
and AdamW skips them all: the weights stay at the SAM ascent point w + ρ·g/‖g‖ and AdamW's state is untouched.
"""
from __future__ import annotations

import torch

from common.tta import SAM, restore, snapshot, softmax_entropy
from tcr.adapter import OnlineAdapter, QueryBatch


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

    def record(self, second_loss: float) -> bool:
        """Fold one second-pass loss into the EMA; True when the model must be reset. The EMA is kept across a
        reset, as in the original."""
        self.ema = second_loss if self.ema is None else (
            self.ema_momentum * self.ema + (1 - self.ema_momentum) * second_loss)
        return self.ema < self.reset_constant

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
            second_loss = 0.0
            if still_reliable.any():
                loss2 = entropy2[still_reliable].mean()
                loss2.backward()
                self.sync_gradients()
                second_loss = loss2.item()
            self.optimizer.second_step(zero_grad=True)

        if self.record(second_loss):
            restore(self.params, self.initial)
            self.resets += 1
        self.log({"loss_total": loss.item()})
        return sims.detach()
