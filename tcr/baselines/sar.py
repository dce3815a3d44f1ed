"""SAR (Niu et al., ICLR 2023) as in the TCR code (``models/tta_baselines/sar.py``): reliable-entropy filtering,
SAM updates and model recovery.

Differences from the SAR paper kept from the TCR code: ``margin_e0`` (0.4) is a *fraction of the batch*: a
query is reliable when its entropy is ≤ the k-th smallest, k = ⌊0.4·B⌋. Recovery follows the original's order of
operations: the EMA (momentum 0.9) of the second-pass loss is updated, and when it is below 0.2 the LayerNorm
weights are restored (AdamW's moments are kept, as the original's ``load_state_dict`` keeps the inner optimizer's
state) while the low EMA value is put straight back (the original's ``reset()`` clears it, then ``self.ema = ema``
restores it), so the model keeps resetting until the EMA climbs above 0.2.

An empty second selection makes the original's second-pass loss the mean of an empty tensor, NaN under current
torch: its ``isnan`` guard leaves the EMA untouched, and the backward of that NaN gives zero gradients, so the SAM
second step goes back to the first-pass weights and AdamW steps on a zero gradient. We do the same, and log no
second-pass loss for that step.
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

    def record(self, second_loss: float | None) -> bool:
        """Fold one second-pass loss (None: empty selection, left out) into the EMA; True when the model must be
        reset. The EMA is kept across a reset, as in the original."""
        if second_loss is not None:
            self.ema = second_loss if self.ema is None else (
                self.ema_momentum * self.ema + (1 - self.ema_momentum) * second_loss)
        return self.ema is not None and self.ema < self.reset_constant

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
            empty = not bool(still_reliable.any())
            loss2 = entropy2.sum() * 0 if empty else entropy2[still_reliable].mean()
            loss2.backward()
            self.sync_gradients()
            self.optimizer.second_step(zero_grad=True)

        if self.record(None if empty else loss2.item()):
            restore(self.params, self.initial)
            self.resets += 1
        self.log({"loss_total": loss.item()})
        return sims.detach()
