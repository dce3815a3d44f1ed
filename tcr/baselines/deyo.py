"""DeYO (Lee et al., ICLR 2024), written from the paper: the TCR code only calls it (``deyo_margin=0.50``,
``margin_e0=0.40``) and its source was never released.

Image queries only. Per step: keep queries with entropy below ``deyo_margin·ln N``; shuffle each image's 4×4 patch
grid; PLPD = p(ŷ|x) − p(ŷ|x̃) for the pseudo-label ŷ = argmax p(·|x); keep queries with PLPD > ``plpd_threshold``
(0.2); loss = mean of ``H · (1/exp(H − margin_e0·ln N) + 1/exp(−PLPD))``. A step that keeps no query makes no
update. The patch permutations are drawn per global batch from ``seed``, so they do not depend on the rank count.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tcr.adapter import Objective, OnlineAdapter, QueryBatch
from common.tta import softmax_entropy


def shuffle_patches(images: torch.Tensor, order: torch.Tensor, patch_len: int = 4) -> torch.Tensor:
    """Split each image [C, H, W] into a ``patch_len × patch_len`` grid and reorder the tiles by ``order`` [B, P²].

    Sizes not divisible by ``patch_len`` are resized to the next lower multiple and back, as DeYO does.
    """
    b, c, h, w = images.shape
    ph, pw = h // patch_len, w // patch_len
    resized = (h, w) != (ph * patch_len, pw * patch_len)
    x = F.interpolate(images, size=(ph * patch_len, pw * patch_len), mode="bilinear") if resized else images
    tiles = x.reshape(b, c, patch_len, ph, patch_len, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c, ph, pw)
    tiles = tiles[torch.arange(b, device=images.device)[:, None], order.to(images.device)]
    x = tiles.reshape(b, patch_len, patch_len, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h - h % patch_len,
                                                                                             w - w % patch_len)
    return F.interpolate(x, size=(h, w), mode="bilinear") if resized else x


class DeYO(OnlineAdapter):
    name = "deyo"

    def __init__(self, *args, direction: str = "i2t", deyo_margin: float = 0.5, margin_e0: float = 0.4,
                 plpd_threshold: float = 0.2, patch_len: int = 4, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        if direction != "i2t":
            raise ValueError("deyo shuffles image patches, so it needs image queries (--retrieval i2t)")
        log_n = math.log(len(self.gallery))
        self.entropy_margin = deyo_margin * log_n
        self.margin_e0 = margin_e0 * log_n
        self.plpd_threshold = plpd_threshold
        self.patch_len = patch_len
        self.seed = seed

    def patch_orders(self, batch: QueryBatch, step: int) -> torch.Tensor:
        """Tile permutations of this rank's rows, drawn for the whole global batch."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + batch.position * 101 + step)
        orders = torch.rand(batch.size, self.patch_len ** 2, generator=generator).argsort(dim=1)
        rows = batch.local_rows
        return orders[rows.start:rows.stop:rows.step]

    def objective(self, query: torch.Tensor, sims: torch.Tensor, batch: QueryBatch, step: int) -> Objective:
        logits = sims / self.temperature
        entropy = softmax_entropy(logits)
        confident = entropy.detach() < self.entropy_margin
        if not bool(confident.any()):
            return None, {"selected": 0.0}
        with torch.no_grad():
            shuffled = None
            if batch.inputs is not None:
                shuffled = shuffle_patches(batch.inputs, self.patch_orders(batch, step), self.patch_len)
            shuffled_logits = self.encode(batch, shuffled) @ self.gallery.t() / self.temperature
            probs = logits.detach().softmax(dim=1)
            pseudo = probs.argmax(dim=1, keepdim=True)
            plpd = (probs.gather(1, pseudo) - shuffled_logits.softmax(dim=1).gather(1, pseudo)).squeeze(1)
        selected = confident & (plpd > self.plpd_threshold)
        if not bool(selected.any()):
            return None, {"selected": 0.0}
        kept = entropy[selected]
        weight = 1 / torch.exp(kept.detach() - self.margin_e0) + 1 / torch.exp(-plpd[selected])
        loss = (kept * weight).mean()
        return loss, {"loss_total": loss.item(), "selected": float(selected.sum())}
