"""MLCL's multi-level Combiner (MLCL:src/combiner.py) with the original parameter names, its five-term loss and the
inference fusion, and its checkpoint files (``load_combiner``).

The CLIP4Cir layers (``common.cir.combiner.Combiner``) are kept; MLCL adds ``combiner_proj`` (the mid level),
two temperatures (learnable with ``learn_t=1``, else the constant 100) and the learnable ``loss_weight``. The class is
named ``Combiner`` so that checkpoints hold it under ``'Combiner'`` as the original's do.
"""
from __future__ import annotations

import argparse
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from common.cir.combiner import Combiner as CLIP4CirCombiner
from common.dist import all_gather_with_grad, concat_all_gather
from common.io import CheckpointError, PathLike, load_torch_file
from common.runtime import get_logger
from common.training.checkpoint import load_model

logger = get_logger(__name__)

FUSION_WEIGHTS = ("upstream", "train-consistent")
LOSS_TERMS = ("h", "c", "s", "mid", "high")
FIXED_SCALE = 100.0
LEARN_T_KEYS = ("logit_scale", "logit_scale_sl")
COMBINER_FLAG_HINTS = {"text_projection_layer.*": "--projection-dim", "image_projection_layer.*": "--projection-dim",
                       "combiner_layer.*": "--projection-dim and --hidden-dim", "dynamic_scalar.0.*":
                       "--projection-dim and --hidden-dim", "*": "--hidden-dim or the CLIP embedding width"}


class MLCLLogits(NamedTuple):
    """The five logit matrices of a training batch, rows = this process's queries.

    ``h``, ``c``, ``s``: the high (``f_h``), mid (``f_c``) and low (``f_s``) query levels against the targets
    (upstream ``logits1..3``); ``mid``, ``high``: the original against the augmented-reference view at the
    projected concatenation and at ``f_h`` (upstream ``mid_raw_cross_modal_logits`` and ``cross_modal_logits_1``).
    """

    h: torch.Tensor
    c: torch.Tensor
    s: torch.Tensor
    mid: torch.Tensor
    high: torch.Tensor


class Combiner(CLIP4CirCombiner):
    """Query levels from raw CLIP features r (reference) and t (text):

    low ``f_s = normalize(r + t)``; mid ``f_c = normalize(combiner_proj(u))``; high ``f_h`` = the CLIP4Cir output
    ``normalize(output_layer(u) + λ·t + (1 − λ)·r)``, where u is the hidden layer of the projected pair.
    ``learn_t`` 1 makes ``logit_scale`` / ``logit_scale_sl`` parameters of shape (1,) initialised to log 100; 0 keeps
    both at the constant 100 (not in the state dict). ``loss_weight`` (shape (1,), log 0.5) gives α = 2σ(w).
    """

    def __init__(self, clip_feature_dim: int, projection_dim: int, hidden_dim: int, learn_t: int = 0):
        super().__init__(clip_feature_dim, projection_dim, hidden_dim)
        if learn_t not in (0, 1):
            raise ValueError(f"learn_t must be 0 or 1, got {learn_t!r}")
        self.learn_t = learn_t
        self.combiner_proj = nn.Linear(hidden_dim, clip_feature_dim)
        self.dropout4 = nn.Dropout(0.0)
        if learn_t:
            self.logit_scale = nn.Parameter(torch.full((1,), math.log(FIXED_SCALE)))
            self.logit_scale_sl = nn.Parameter(torch.full((1,), math.log(FIXED_SCALE)))
        else:
            self.logit_scale = self.logit_scale_sl = FIXED_SCALE
        self.loss_weight = nn.Parameter(torch.full((1,), math.log(0.5)))

    def scales(self) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """(s, s'): the temperatures of the target and of the two-view terms."""
        if self.learn_t:
            return self.logit_scale.exp(), self.logit_scale_sl.exp()
        return self.logit_scale, self.logit_scale_sl

    def alpha(self) -> torch.Tensor:
        """α = 2σ(loss_weight), shape (1,)."""
        return 2 * torch.sigmoid(self.loss_weight)

    def _joint(self, text_projected: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        """[t'; r'], the projected pair (text first)."""
        return torch.cat((text_projected, self.dropout2(F.relu(self.image_projection_layer(image_features)))), -1)

    def _hidden(self, joint: torch.Tensor) -> torch.Tensor:
        return self.dropout3(F.relu(self.combiner_layer(joint)))

    def _high(self, hidden: torch.Tensor, gate: torch.Tensor, image_features: torch.Tensor,
              text_features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.output_layer(hidden) + gate * text_features + (1 - gate) * image_features, dim=-1)

    def forward(self, reference_features: torch.Tensor, text_features: torch.Tensor,
                target_features: torch.Tensor, reference_features_aug: torch.Tensor) -> MLCLLogits:
        """The five logit matrices of a batch (all inputs raw CLIP features [B, F]).

        Dropout masks are drawn in the original's order, so a seeded run reproduces it: the text projection once
        (shared by both views), the image projection of each view, the hidden layer of each view, the gate of each
        view. Under torchrun the targets and the augmented view are gathered from every process (rows of this
        process start at ``rank · B`` in the columns; see ``label_offset``).
        """
        text_projected = self.dropout1(F.relu(self.text_projection_layer(text_features)))
        joint = self._joint(text_projected, reference_features)
        joint_aug = self._joint(text_projected, reference_features_aug)
        hidden, hidden_aug = self._hidden(joint), self._hidden(joint_aug)
        gate, gate_aug = self.dynamic_scalar(joint), self.dynamic_scalar(joint_aug)
        high = self._high(hidden, gate, reference_features, text_features)
        high_aug = self._high(hidden_aug, gate_aug, reference_features_aug, text_features)
        mid = F.normalize(self.combiner_proj(self.dropout4(F.relu(hidden))), dim=-1)
        low = F.normalize(reference_features + text_features, dim=-1)
        targets = F.normalize(concat_all_gather(target_features), dim=-1)
        scale, scale_sl = self.scales()
        joint_aug_all = all_gather_with_grad(F.normalize(joint_aug, dim=-1))
        return MLCLLogits(h=scale * high @ targets.T, c=scale * mid @ targets.T, s=scale * low @ targets.T,
                          mid=scale_sl * F.normalize(joint, dim=-1) @ joint_aug_all.T,
                          high=scale_sl * high @ all_gather_with_grad(high_aug).T)

    @torch.no_grad()
    def combine_features_weighted(self, reference_features: torch.Tensor, text_features: torch.Tensor,
                                  fusion_weights: str = "upstream") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The three weighted query levels of inference, ``((2 − α)·f_h, α·f_c, f_s)`` as the original (α swapped
        relative to training), or ``(α·f_h, (2 − α)·f_c, f_s)`` with ``fusion_weights='train-consistent'``."""
        if fusion_weights not in FUSION_WEIGHTS:
            raise ValueError(f"unknown fusion weights {fusion_weights!r}; valid: {', '.join(FUSION_WEIGHTS)}")
        text_projected = self.dropout1(F.relu(self.text_projection_layer(text_features)))
        joint = self._joint(text_projected, reference_features)
        hidden = self._hidden(joint)
        high = self._high(hidden, self.dynamic_scalar(joint), reference_features, text_features)
        mid = F.normalize(self.combiner_proj(self.dropout4(F.relu(hidden))), dim=-1)
        low = F.normalize(reference_features + text_features, dim=-1)
        alpha = self.alpha()
        high_weight, mid_weight = (2 - alpha, alpha) if fusion_weights == "upstream" else (alpha, 2 - alpha)
        return high_weight * high, mid_weight * mid, low

    def fused_query(self, reference_features: torch.Tensor, text_features: torch.Tensor,
                    fusion_weights: str = "upstream") -> torch.Tensor:
        """normalize(sum of ``combine_features_weighted``): the query that validation ranks with."""
        return F.normalize(sum(self.combine_features_weighted(reference_features, text_features, fusion_weights)),
                           dim=-1)


def label_offset(rank: int, rows: int) -> int:
    """Column of this process's first query in the gathered logits (0 in a single process)."""
    return rank * rows


def mlcl_loss(logits: MLCLLogits, loss_weight: torch.Tensor,
              offset: int = 0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The original's total ``α·L_h + (2 − α)·L_c + L_s + L_mid + L_high`` (shape (1,), as ``loss_weight``) and
    the five terms (0-d, mean cross-entropy with the query's own column as label)."""
    labels = torch.arange(logits.h.shape[0], device=logits.h.device) + offset
    terms = {name: F.cross_entropy(matrix, labels) for name, matrix in zip(LOSS_TERMS, logits)}
    alpha = 2 * torch.sigmoid(loss_weight)
    total = alpha * terms["h"] + (2 - alpha) * terms["c"] + terms["s"] + terms["mid"] + terms["high"]
    return total, terms


def learn_t_of(state_dict: dict) -> int:
    """learn_t of a saved Combiner state dict: 1 when it holds ``logit_scale`` and ``logit_scale_sl``, else 0."""
    return int(all(key in state_dict for key in LEARN_T_KEYS))


def load_combiner(path: PathLike, feature_dim: int, args: argparse.Namespace, device: torch.device) -> Combiner:
    """The Combiner of a ``{'epoch', 'Combiner'}`` file, loaded strictly in eval mode.

    ``args.learn_t`` None infers learn_t from the keys (``logit_scale``, ``logit_scale_sl`` present = 1); a given
    value that disagrees with the file raises an error naming those keys.
    """
    payload = load_torch_file(path, trusted=args.trust_checkpoints)
    if not isinstance(payload, dict) or not isinstance(payload.get("Combiner"), dict):
        found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: no 'Combiner' entry (found {found}); expected {{'epoch', 'Combiner'}}")
    detected = learn_t_of(payload["Combiner"])
    learn_t = detected if args.learn_t is None else args.learn_t
    if learn_t != detected:
        state = "holds" if detected else "lacks"
        raise CheckpointError(f"{path}: --learn_t {learn_t} but the checkpoint {state} the keys logit_scale and "
                              f"logit_scale_sl (it was trained with learn_t={detected}); pass --learn_t {detected} "
                              "or leave the flag out to infer it")
    combiner = Combiner(feature_dim, args.projection_dim, args.hidden_dim, learn_t).to(device)
    load_model(path, combiner, trusted=args.trust_checkpoints, flag_hints=COMBINER_FLAG_HINTS)
    logger.info("Combiner loaded from %s (learn_t=%d)", path, learn_t)
    return combiner.eval()
