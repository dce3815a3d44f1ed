"""TCR's objective on L2-normalised features: candidate selection and the three terms L_REM, L_UNI, L_EMG.

Notation (the original's ``losses.py``): ``query`` z is the gathered query batch [B, d], ``gallery`` G [N, d],
``candidates`` C the nearest gallery item of each query [B, d] (duplicates allowed). All inputs are L2-normalised.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from common.tta import softmax_entropy


def select_candidates(sims: torch.Tensor, gallery: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """From the cosine scores ``sims = z Gᵀ`` [B, N]: each query's nearest gallery index and those items
    ``(n [B], C = gallery[n] [B, d])``. The argmax carries no gradient."""
    nn_idx = sims.detach().argmax(dim=1)
    return nn_idx, gallery[nn_idx]


def candidate_logits(query: torch.Tensor, candidates: torch.Tensor, temperature: float) -> torch.Tensor:
    """Refined prediction logits ``z Cᵀ / τ`` [B, B]: each query scored against the batch's candidate set."""
    return query @ candidates.t() / temperature


def source_like_indicator(query: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``SI_i = 2‖z_i − c_i‖ − ‖z_i − z̄‖ − ‖c_i − c̄‖`` [B]; small values mark source-like query–candidate pairs."""
    pair_distance = (query - candidates).norm(dim=1)
    query_spread = (query - query.mean(dim=0)).norm(dim=1)
    candidate_spread = (candidates - candidates.mean(dim=0)).norm(dim=1)
    return 2 * pair_distance - query_spread - candidate_spread


def modality_gap(query: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """``‖mean(normalize z) − mean(normalize c)‖₂``, the distance between the two modality centroids."""
    return (F.normalize(query, dim=-1).mean(dim=0) - F.normalize(candidates, dim=-1).mean(dim=0)).norm()


def loss_rem(entropy: torch.Tensor, threshold: torch.Tensor | float, eps: float = 1e-3) -> torch.Tensor:
    """Noise-robust entropy: mean over ``K = {i : H_i ≤ H*}`` of ``w_i·H_i`` with ``w_i = max(0, 1 − H_i/(H* + eps))``
    (weights detached). An empty K gives 0 (upstream: NaN with the same zero gradient)."""
    keep = entropy <= threshold
    if not bool(keep.any()):
        return entropy.sum() * 0
    weight = (1 - entropy.detach() / (threshold + eps)).clamp_min(0)
    return (weight * entropy)[keep].mean()


def loss_uni(query: torch.Tensor, t: float = 0.1) -> torch.Tensor:
    """Intra-modality uniformity ``mean_i exp(−t·‖z_i − z̄‖₂)``; minimising it spreads queries from their centroid."""
    return torch.exp(-t * (query - query.mean(dim=0)).norm(dim=1)).mean()


def loss_emg(query: torch.Tensor, candidates: torch.Tensor, target_gap: torch.Tensor | float) -> torch.Tensor:
    """Inter-modality gap ``(gap(z, C) − Δ*)²``, pulling the batch's gap towards that of the source-like pairs."""
    return (modality_gap(query, candidates) - target_gap) ** 2


def refined_entropy(query: torch.Tensor, candidates: torch.Tensor, temperature: float) -> torch.Tensor:
    """Entropy of each query's B-way refined prediction [B]."""
    return softmax_entropy(candidate_logits(query, candidates, temperature))
