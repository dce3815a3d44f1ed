"""The CLIP4Cir Combiner (v2) that fuses an image and a text feature, with the original parameter names, and the
``--combining-function`` choice between a trained combiner and the plain sum.

Checkpoints hold it under the key ``'Combiner'`` (``{'epoch', 'Combiner', 'optimizer_state_dict'}``), so released
``combiner*.pt`` files load strictly.
"""
from __future__ import annotations

import argparse
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from common.cir.evaluation import Combine
from common.runtime import get_logger

logger = get_logger(__name__)


class Combiner(nn.Module):
    """normalize(output_layer(h) + λ·text + (1 − λ)·image); h and the gate λ come from the projected pair.

    Both projections are Linear(F→P) + ReLU + Dropout(0.5); their concatenation [text, image] (2P) feeds
    ``combiner_layer`` Linear(2P→H) + ReLU + Dropout(0.5) → ``output_layer`` Linear(H→F), and ``dynamic_scalar``
    Linear(2P→H), ReLU, Dropout(0.5), Linear(H→1), Sigmoid. Inputs are the raw (unnormalised) features.
    """

    checkpoint_key = "Combiner"

    def __init__(self, feature_dim: int, projection_dim: int, hidden_dim: int):
        super().__init__()
        self.text_projection_layer = nn.Linear(feature_dim, projection_dim)
        self.image_projection_layer = nn.Linear(feature_dim, projection_dim)
        self.dropout1 = nn.Dropout(0.5)
        self.dropout2 = nn.Dropout(0.5)
        self.combiner_layer = nn.Linear(projection_dim * 2, hidden_dim)
        self.output_layer = nn.Linear(hidden_dim, feature_dim)
        self.dropout3 = nn.Dropout(0.5)
        self.dynamic_scalar = nn.Sequential(nn.Linear(projection_dim * 2, hidden_dim), nn.ReLU(), nn.Dropout(0.5),
                                            nn.Linear(hidden_dim, 1), nn.Sigmoid())

    def forward(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """The combined, L2-normalised query features [..., F] (upstream ``combine_features``)."""
        text_projected = self.dropout1(F.relu(self.text_projection_layer(text_features)))
        image_projected = self.dropout2(F.relu(self.image_projection_layer(image_features)))
        joint = torch.cat((text_projected, image_projected), dim=-1)
        hidden = self.dropout3(F.relu(self.combiner_layer(joint)))
        gate = self.dynamic_scalar(joint)
        output = self.output_layer(hidden) + gate * text_features + (1 - gate) * image_features
        return F.normalize(output, dim=-1)


def combining_function(args: argparse.Namespace, sum_fusion: Combine, load_combiner: Callable[[], Combine]) -> Combine:
    """``--combining-function``: ``sum_fusion``, or the combiner ``load_combiner()`` reads from ``--combiner-path``."""
    if args.combining_function == "sum":
        if args.combiner_path:
            logger.warning("--combiner-path is ignored with --combining-function sum")
        return sum_fusion
    if not args.combiner_path:
        raise ValueError("--combining-function combiner needs --combiner-path")
    return load_combiner()
