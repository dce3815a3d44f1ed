"""RA-TTA's adaptation (RA-TTA:ratta_after_extract.py) on batches of samples: pure tensor functions, no I/O.

Per sample: zero-shot CLIP probabilities ``p_t``; a robust (quantile over views) score per description; the top
``K_D`` descriptions grouped by class, classes with at least ``min_desc`` of them kept as sets; a prototype per
set used as a text query into the image DB; an entropic-OT distance between the test views and each set's
retrieved images, both projected on the set prototype; relevance ``rho = softmax(s / (1 + d))``; and an
entropy-weighted mix of ``p_t`` and the retrieval distribution. Samples with no set keep ``p_t``.

Sets are padded to ``S_max = K_D // min_desc`` slots per sample, in upstream's order (first appearance in the
top-``K_D`` list); ``valid`` marks the real ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F

from ratta.transport import sinkhorn_plans

CHUNK_ELEMENTS = 1 << 24
"""Similarities per ``Z·Eᵀ`` chunk of ``top_descriptions`` (64 MB in fp32)."""


class Searcher(Protocol):
    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class RattaConfig:
    """Hyper-parameters; the defaults are upstream's (``qthres`` is 0.90 in the ImageNet script)."""

    top_k_d: int = 20
    top_k_s: int = 20
    qthres: float = 0.75
    min_desc: int = 5
    ot_reg: float = 0.1
    ot_iters: int = 100
    ot_stop: float = 1e-2
    ot_dtype: torch.dtype = torch.float32

    def __post_init__(self):
        if min(self.top_k_d, self.top_k_s, self.min_desc, self.ot_iters) < 1:
            raise ValueError(f"top_k_d, top_k_s, min_desc and ot_iters must be >= 1, got {self}")
        if not 0 <= self.qthres <= 1:
            raise ValueError(f"qthres must lie in [0, 1], got {self.qthres}")

    @property
    def max_sets(self) -> int:
        return self.top_k_d // self.min_desc


@dataclass
class TextBanks:
    """Zero-shot classifier ``W`` [D, C], description bank ``E`` [F, D] and each row's class ``name`` [F]."""

    W: torch.Tensor
    E: torch.Tensor
    name: torch.Tensor

    @property
    def num_classes(self) -> int:
        return self.W.shape[1]


@dataclass
class BatchOutput:
    """Per-sample results; set-indexed fields are padded to ``S_max`` (ids -1, distances nan, rho 0)."""

    p_t: torch.Tensor
    p: torch.Tensor
    topk_ids: torch.Tensor
    set_classes: torch.Tensor
    valid: torch.Tensor
    global_prototype: torch.Tensor
    set_prototypes: torch.Tensor
    retrieved_ids: torch.Tensor
    ot_dist: torch.Tensor
    rho: torch.Tensor
    lam: torch.Tensor

    @property
    def num_sets(self) -> torch.Tensor:
        return self.valid.sum(dim=1)


def quantile_rank(q: float, n: int) -> tuple[int, int, torch.Tensor]:
    """``torch.quantile``'s linear-interpolation rank for ``n`` values: (below, above, float32 weight).

    The rank is float32(q) * (n - 1) computed in double without rounding back to float32, as torch does, so
    q = 0.9 over 101 values interpolates between the 90th and 91st smallest with weight 0.9999976.
    """
    rank = float(torch.tensor(q, dtype=torch.float32)) * (n - 1)
    below, above = math.floor(rank), math.ceil(rank)
    return below, above, torch.tensor(rank - below, dtype=torch.float32)


def quantile(values: torch.Tensor, q: float, dim: int) -> torch.Tensor:
    """``torch.quantile(values.float(), q, dim)`` (linear) from the two order statistics around its rank, taken
    by ``topk`` of the largest values (cheaper than a sort for upper quantiles), with no input-size limit."""
    values = values.float()
    n = values.shape[dim]
    below, above, weight = quantile_rank(q, n)
    if below < n // 2:
        low = values.kthvalue(below + 1, dim=dim).values
        high = values.kthvalue(above + 1, dim=dim).values if above != below else low
    else:
        top = values.topk(n - below, dim=dim).values
        low = top.select(dim, n - below - 1)
        high = top.select(dim, n - above - 1)
    if above == below:
        return low
    return torch.lerp(low, high, weight.to(values.device))


def zero_shot(x: torch.Tensor, W: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP zero-shot probabilities [B, C] and their entropy [B] (through log_softmax, as upstream)."""
    logits = scale * x @ W
    log_p = logits.log_softmax(dim=-1)
    p_t = log_p.exp()
    return p_t, -(p_t * log_p).sum(dim=-1)


def description_scores(Z: torch.Tensor, E: torch.Tensor, q: float) -> torch.Tensor:
    """Quantile-``q`` over the V views of the view-description cosines: Z [B, V, D], E [F, D] → [B, F]."""
    return quantile(Z @ E.T, q, dim=1)


def _top_in_chunk(sims: torch.Tensor, q: float, k: int, guesses: int) -> torch.Tensor:
    """Ids [b, k] of the ``k`` largest quantile-``q`` scores of ``sims`` [b, V, F], in ``topk`` order.

    Exact without scoring every column: the ``guesses`` columns with the largest view sum are scored, and the k-th
    best of them, ``t``, lower-bounds the k-th best score. A column whose score reaches ``t`` has at least ``V - above``
    values >= ``t`` (its score never exceeds its ``above``-th order statistic), so columns with fewer are dropped
    by one counting pass; the survivors are scored and ranked.
    """
    b, V, n = sims.shape
    if n <= guesses:
        return quantile(sims, q, dim=1).topk(k, dim=1).indices
    _, above, _ = quantile_rank(q, V)
    guessed = sims.sum(dim=1).topk(guesses, dim=1).indices
    guess_scores = quantile(sims.gather(2, guessed[:, None].expand(b, V, guesses)), q, dim=1)
    threshold = guess_scores.topk(k, dim=1).values[:, -1]
    reaching = (sims >= threshold[:, None, None]).view(torch.uint8)
    counts = reaching.sum(dim=1, dtype=torch.uint8 if V < 256 else torch.int32)
    survives = counts >= V - above
    width = int(survives.sum(dim=1).max())
    columns = survives.to(torch.uint8).sort(dim=1, descending=True, stable=True).indices[:, :width]
    scores = quantile(sims.gather(2, columns[:, None].expand(b, V, width)), q, dim=1)
    return columns.gather(1, scores.topk(k, dim=1).indices)


def top_descriptions(Z: torch.Tensor, E: torch.Tensor, q: float, k: int, chunk_elements: int = CHUNK_ELEMENTS,
                     guesses: int | None = None) -> torch.Tensor:
    """Ids [B, k] of the ``k`` best descriptions by ``description_scores`` (descending), for Z [B, V, D] and E [F, D].

    Samples go through in chunks of about ``chunk_elements`` similarities; only the columns that can reach the top
    ``k`` get their quantile computed (``guesses``: columns scored to bound the k-th best, default 4k).
    """
    B, V, _ = Z.shape
    guesses = max(k, guesses or 4 * k)
    step = max(1, chunk_elements // max(1, V * E.shape[0]))
    return torch.cat([_top_in_chunk(Z[i:i + step] @ E.T, q, k, guesses) for i in range(0, B, step)])


def select_sets(topk_ids: torch.Tensor, name: torch.Tensor, num_classes: int, cfg: RattaConfig
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Group the top-``K_D`` descriptions ``topk_ids`` [B, K_D] (descending score) by class and keep the classes
    owning at least ``min_desc`` of them.

    Returns ``set_classes`` [B, S_max] (first-appearance order, -1 pad), ``valid`` [B, S_max] and ``members``
    [B, S_max, K_D] (which top-K_D positions belong to each set).
    """
    cls = name[topk_ids]
    counts = torch.zeros(cls.shape[0], num_classes, dtype=torch.long, device=cls.device)
    counts.scatter_add_(1, cls, torch.ones_like(cls))
    kept = counts.gather(1, cls) >= cfg.min_desc
    same = cls[:, :, None] == cls[:, None, :]
    earlier = torch.ones_like(same[0]).tril(-1)
    first = ~(same & earlier).any(dim=2)
    starts = first & kept
    slot = starts.long().cumsum(dim=1) - 1
    S = cfg.max_sets
    set_classes = torch.full((cls.shape[0], S + 1), -1, dtype=torch.long, device=cls.device)
    set_classes.scatter_(1, torch.where(starts, slot, S), torch.where(starts, cls, -1))
    set_classes = set_classes[:, :S]
    valid = set_classes >= 0
    members = (cls[:, None, :] == set_classes[:, :, None]) & valid[:, :, None]
    return set_classes, valid, members


def prototypes(E: torch.Tensor, topk_ids: torch.Tensor, members: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Global prototype [B, D] over all kept descriptions and one per set [B, S_max, D] (unit; zero when empty)."""
    rows = E[topk_ids]
    weights = members.to(rows.dtype)
    per_set = weights @ rows / weights.sum(dim=2, keepdim=True).clamp_min(1)
    kept = weights.amax(dim=1)
    overall = (kept[:, None, :] @ rows)[:, 0] / kept.sum(dim=1, keepdim=True).clamp_min(1)
    return F.normalize(overall, dim=-1), F.normalize(per_set, dim=-1)


def ot_relevance(Z: torch.Tensor, g: torch.Tensor, P: torch.Tensor, R: torch.Tensor, valid: torch.Tensor,
                 scale: torch.Tensor, cfg: RattaConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """OT distances [B, S_max] (nan on padding) and relevances ``softmax(s / (1 + d))`` over the valid sets.

    Z [B, V, D] test views, g [B, D], P [B, S_max, D], R [B, S_max, K_S, D] retrieved rows.
    """
    B, S = valid.shape
    dist = torch.full((B, S), float("nan"), dtype=Z.dtype, device=Z.device)
    rows, slots = valid.nonzero(as_tuple=True)
    if rows.numel():
        source = (scale * (Z @ g[:, :, None])[..., 0]).softmax(dim=-1)[rows]
        proto = P[rows, slots]
        retrieved = R[rows, slots]
        z_proj = (Z[rows] @ proto[:, :, None])[..., 0]
        r_proj = (retrieved @ proto[:, :, None])[..., 0]
        target = (scale * r_proj).softmax(dim=-1)
        cost = (z_proj[:, :, None] - r_proj[:, None, :]).abs()
        dtype = cfg.ot_dtype
        plans = sinkhorn_plans(source.to(dtype), target.to(dtype), cost.to(dtype), cfg.ot_reg, cfg.ot_iters,
                               cfg.ot_stop)
        dist[rows, slots] = (plans * cost.to(dtype)).sum(dim=(1, 2)).to(Z.dtype)
    logits = torch.where(valid, scale / (1 + dist), torch.tensor(float("-inf"), device=Z.device))
    rho = torch.where(valid.any(dim=1, keepdim=True), logits.softmax(dim=1), torch.zeros_like(logits))
    return dist, rho


def ensemble(p_t: torch.Tensor, H_t: torch.Tensor, rho: torch.Tensor, set_classes: torch.Tensor,
             valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Final probabilities [B, C] and λ [B] (nan where a sample has no set and keeps ``p_t``)."""
    p_r = torch.zeros_like(p_t).scatter_add_(1, set_classes.clamp_min(0), rho * valid)
    H_r = -(p_r * torch.log(p_r + 1e-7)).sum(dim=-1)
    w_t, w_r = torch.exp(1 / (1 + H_t)), torch.exp(1 / (1 + H_r))
    lam = w_t / (w_t + w_r)
    mixed = lam[:, None] * p_t + (1 - lam[:, None]) * p_r
    has_set = valid.any(dim=1)
    p = torch.where(has_set[:, None], mixed, p_t)
    return p, torch.where(has_set, lam, torch.full_like(lam, float("nan")))


def adapt_batch(x: torch.Tensor, views: torch.Tensor, banks: TextBanks, index: Searcher, db: torch.Tensor,
                scale: torch.Tensor, cfg: RattaConfig) -> BatchOutput:
    """RA-TTA on a batch: x [B, D] test embeddings, views [B, AS, D], db [N, D] the rows ``index`` searches."""
    x, views = x.float(), views.float()
    Z = torch.cat([x[:, None], views], dim=1)
    p_t, H_t = zero_shot(x, banks.W, scale)
    topk_ids = top_descriptions(Z, banks.E, cfg.qthres, cfg.top_k_d)
    set_classes, valid, members = select_sets(topk_ids, banks.name, banks.num_classes, cfg)
    g, P = prototypes(banks.E, topk_ids, members)
    B, S = valid.shape
    retrieved_ids = torch.full((B, S, cfg.top_k_s), -1, dtype=torch.long, device=x.device)
    R = torch.zeros(B, S, cfg.top_k_s, x.shape[1], dtype=x.dtype, device=x.device)
    if valid.any():
        _, ids = index.search(P[valid], cfg.top_k_s)
        ids = ids.to(x.device)
        retrieved_ids[valid] = ids
        R[valid] = db[ids.to(db.device)].to(x.device, x.dtype)
    dist, rho = ot_relevance(Z, g, P, R, valid, scale, cfg)
    p, lam = ensemble(p_t, H_t, rho, set_classes, valid)
    return BatchOutput(p_t=p_t, p=p, topk_ids=topk_ids, set_classes=set_classes, valid=valid, global_prototype=g,
                       set_prototypes=P, retrieved_ids=retrieved_ids, ot_dist=dist, rho=rho, lam=lam)
