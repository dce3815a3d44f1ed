"""The reference implementation: a straight per-sample port of RA-TTA:ratta_after_extract.py (``--impl loop``).

One sample at a time: similarities by a Python loop over the classes' description blocks, ``torch.quantile``,
a Python dict for the grouping, one faiss search per sample, and one ``ot.sinkhorn`` call per set on numpy
arrays. Computed in float32 (upstream: fp16 on the GPU); ``ot_dtype`` sets the numpy dtype handed to POT.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ratta.core import RattaConfig, Searcher, TextBanks
from ratta.transport import sinkhorn_distance_reference

NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64, torch.float16: np.float16}


def class_blocks(name: torch.Tensor) -> list[tuple[int, int]]:
    """(start, stop) rows of each class in a description bank whose rows are in class order."""
    counts = torch.bincount(name).tolist()
    starts = np.cumsum([0, *counts]).tolist()
    return list(zip(starts[:-1], starts[1:]))


def adapt_sample(x: torch.Tensor, views: torch.Tensor, banks: TextBanks, blocks: list[tuple[int, int]],
                 index: Searcher, db: torch.Tensor, scale: torch.Tensor, cfg: RattaConfig) -> dict:
    """RA-TTA on one sample: x [1, D], views [AS, D]. Returns the intermediate values by name."""
    x, views = x.float(), views.float()
    logits = scale * x @ banks.W
    p_t = logits.softmax(dim=-1)[0]
    H_t = -(p_t * logits.log_softmax(dim=-1)[0]).sum()
    out = {"zs_logits": logits[0], "p_t": p_t, "H_t": H_t}

    x_sims, view_sims = [], []
    for start, stop in blocks:
        block = banks.E[start:stop]
        x_sims.append(x @ block.T)
        view_sims.append(views @ block.T)
    sims = torch.cat([torch.cat(x_sims, dim=1), torch.cat(view_sims, dim=1)], dim=0)
    scores = torch.quantile(sims.float(), cfg.qthres, dim=0)
    topk_ids = scores.topk(cfg.top_k_d).indices
    out.update(quantile_scores=scores, topk_ids=topk_ids)

    groups: dict[int, list[int]] = {}
    for desc_id in topk_ids.tolist():
        groups.setdefault(int(banks.name[desc_id]), []).append(desc_id)
    sets = {cls: sorted(ids) for cls, ids in groups.items() if len(set(ids)) >= cfg.min_desc}
    out["set_classes"] = torch.tensor(list(sets), dtype=torch.long)
    out["set_desc_ids"] = [torch.tensor(ids) for ids in sets.values()]
    if not sets:
        out.update(p=p_t, lam=None, S=0)
        return out

    kept = sorted(desc_id for ids in sets.values() for desc_id in ids)
    g = F.normalize(banks.E[kept].mean(dim=0), dim=0)
    protos = torch.stack([F.normalize(banks.E[ids].mean(dim=0), dim=0) for ids in sets.values()])
    pseudo = F.one_hot(out["set_classes"], banks.num_classes).float()
    sqdist, ids = index.search(protos, cfg.top_k_s)

    Z = torch.cat([x, views], dim=0)
    source = (scale * Z @ g).softmax(dim=0)
    np_dtype = NUMPY_DTYPES[cfg.ot_dtype]
    dists, targets, costs, plans = [], [], [], []
    for j in range(len(sets)):
        retrieved = db[ids[j]].float()
        r_proj = retrieved @ protos[j]
        target = (scale * r_proj).softmax(dim=0)
        cost = ((Z @ protos[j])[:, None] - r_proj[None, :]).abs()
        plan, dist = sinkhorn_distance_reference(source.cpu().numpy().astype(np_dtype),
                                                 target.cpu().numpy().astype(np_dtype),
                                                 cost.cpu().numpy().astype(np_dtype), cfg.ot_reg, cfg.ot_iters,
                                                 cfg.ot_stop)
        dists.append(float(dist))
        targets.append(target)
        costs.append(cost)
        plans.append(torch.from_numpy(np.asarray(plan, dtype=np.float64)))
    ot_dist = torch.tensor(dists, dtype=torch.float32, device=x.device)
    rho = (scale / (1 + ot_dist)).softmax(dim=0)
    p_r = rho @ pseudo
    H_r = -(p_r * torch.log(p_r + 1e-7)).sum()
    w_t, w_r = torch.exp(1 / (1 + H_t)), torch.exp(1 / (1 + H_r))
    lam = w_t / (w_t + w_r)
    out.update(global_prototype=g, set_prototypes=protos, pseudo_labels=pseudo, retrieved_ids=ids,
               retrieved_sqdist=sqdist, ot_source=source, ot_targets=torch.stack(targets),
               ot_costs=torch.stack(costs), ot_plans=torch.stack(plans), ot_dist=ot_dist, rho=rho, p_r=p_r,
               H_r=H_r, lam=lam, p=lam * p_t + (1 - lam) * p_r, S=len(sets))
    return out
