"""Image–text retrieval metrics: TCR's ``itm_eval`` (R@1/5/10, mean recalls, mAP, several relevant items per row)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

RelevanceMap = Sequence[Sequence[int] | int]


def permute_maps(mapping: Sequence, order: Sequence[int]) -> list:
    """Re-index a relevance map so that row r belongs to item ``order[r]`` (TCR's ``idx_trans`` after a shuffled
    query stream)."""
    return [mapping[index] for index in order]


def _ranks_and_ap(scores: np.ndarray, relevant: RelevanceMap) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the best 0-based position of a relevant item, and the average precision over all relevant items."""
    if len(relevant) != scores.shape[0]:
        raise ValueError(f"{len(relevant)} relevance entries for {scores.shape[0]} score rows")
    columns = np.arange(scores.shape[1])
    ranks = np.empty(scores.shape[0], dtype=np.int64)
    average_precision = np.empty(scores.shape[0], dtype=np.float64)
    for row, (score, items) in enumerate(zip(scores, relevant)):
        items = np.atleast_1d(np.asarray(items, dtype=np.int64))
        if items.size == 0:
            raise ValueError(f"row {row} has no relevant item")
        item_scores = score[items][:, None]
        ahead = (score[None, :] > item_scores) | ((score[None, :] == item_scores) & (columns[None, :] < items[:, None]))
        positions = np.sort(ahead.sum(axis=1))
        ranks[row] = positions[0]
        average_precision[row] = np.mean((np.arange(len(positions)) + 1) / (positions + 1))
    return ranks, average_precision


def itm_eval(scores_i2t: np.ndarray | torch.Tensor, scores_t2i: np.ndarray | torch.Tensor,
             img2txt: RelevanceMap, txt2img: RelevanceMap) -> dict[str, float]:
    """TCR/BLIP retrieval metrics from [N_img, N_txt] and [N_txt, N_img] scores and the relevance maps.

    A row's rank is the best position of any relevant item; AP averages (k+1)/(p_k+1) over the sorted positions
    p_k of all relevant items. Returns ``txt_r1, txt_r5, txt_r10, txt_r_mean, txt_map, img_r1, img_r5, img_r10,
    img_r_mean, img_map, r_mean, r_sum`` with upstream rounding (means and mAP to 2 decimals, recalls and r_sum not).
    Positions come from a stable descending order (ties keep gallery order); upstream uses numpy's unstable
    ``argsort(score)[::-1]``, which orders ties arbitrarily, so tied scores can give different numbers there.
    """
    summary: dict[str, float] = {}
    for prefix, scores, relevant in (("txt", scores_i2t, img2txt), ("img", scores_t2i, txt2img)):
        scores = scores.float().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
        ranks, average_precision = _ranks_and_ap(scores, relevant)
        recalls = [100.0 * np.count_nonzero(ranks < k) / len(ranks) for k in (1, 5, 10)]
        summary.update({f"{prefix}_r1": recalls[0], f"{prefix}_r5": recalls[1], f"{prefix}_r10": recalls[2]})
        summary[f"{prefix}_r_mean"] = round(sum(recalls) / 3, 2)
        summary[f"{prefix}_map"] = round(100.0 * float(average_precision.mean()), 2)
    summary["r_mean"] = round((summary["txt_r_mean"] + summary["img_r_mean"]) / 2, 2)
    summary["r_sum"] = sum(summary[f"{p}_r{k}"] for p in ("txt", "img") for k in (1, 5, 10))
    return summary
