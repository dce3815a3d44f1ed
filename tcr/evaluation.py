"""Retrieval metrics with upstream's ``itm_eval`` keys, and the no-TTA feature diagnostics (the original's
``evaluation.py``)."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from common.metrics.retrieval import itm_eval
from tcr.losses import modality_gap
from tcr.models import check_direction

UPSTREAM_KEYS = ("txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "txt_map",
                 "img_r1", "img_r5", "img_r10", "img_r_mean", "img_map", "r_mean", "r_sum")
DIRECTION_PREFIX = {"i2t": "txt", "t2i": "img"}


def evaluate(direction: str | None, scores: torch.Tensor, img2txt: Sequence, txt2img: Sequence) -> dict[str, Any]:
    """Upstream's ``itm_eval`` keys. ``direction=None``: ``scores`` is [N_img, N_txt] and both directions count;
    ``'i2t'`` ([N_img, N_txt]) or ``'t2i'`` ([N_txt, N_img]): the other direction's keys, ``r_mean`` and ``r_sum``
    are None."""
    if direction is None:
        return {key: float(value) for key, value in itm_eval(scores, scores.t(), img2txt, txt2img).items()}
    i2t = scores if check_direction(direction) == "i2t" else scores.t()
    result = itm_eval(i2t, i2t.t(), img2txt, txt2img)
    keep = DIRECTION_PREFIX[direction]
    return {key: (float(value) if key.startswith(keep) else None) for key, value in result.items()}


def distribution_stats(image_features: torch.Tensor, text_features: torch.Tensor) -> dict[str, float]:
    """Upstream's no-TTA diagnostics: modality gap, mean distance to the centroid per modality, mean cosine."""
    image_features, text_features = image_features.float(), text_features.float()
    return {
        "modality_gap": modality_gap(image_features, text_features).item(),
        "image_intra": (image_features - image_features.mean(0)).norm(dim=1).mean().item(),
        "text_intra": (text_features - text_features.mean(0)).norm(dim=1).mean().item(),
        "inter_sim": (image_features @ text_features.t()).mean().item(),
    }
