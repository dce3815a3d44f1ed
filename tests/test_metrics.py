"""common.metrics: CIR recalls on hand-built rankings and TCR's itm_eval hand example."""
import math

import numpy as np
import pytest
import torch

from common.metrics.cir import (cirr_rankings, cirr_recalls, cirr_summary, fiq_recalls, fiq_summary, index_of,
                                rank_gallery, safe_means, shoes_recalls, subset_ranks, target_ranks)
from common.metrics.retrieval import itm_eval, permute_maps


def scores_from_orders(orders, n):
    """Score rows that rank the gallery exactly in each given order (first = best)."""
    scores = torch.zeros(len(orders), n)
    for row, order in enumerate(orders):
        scores[row, torch.tensor(order)] = torch.arange(n, 0, -1, dtype=torch.float)
    return scores


# ------------------------------------------------------------------------------------------------------ rankings
def test_stable_descending_ties_keep_gallery_order():
    scores = torch.tensor([[1.0, 2.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    assert rank_gallery(scores).tolist() == [[1, 2, 0, 3], [0, 1, 2, 3]]
    assert target_ranks(scores, [3, 2]).tolist() == [3, 2]
    assert target_ranks(scores, [3, 2], exclude_idx=[0, 1]).tolist() == [2, 1]
    assert target_ranks(np.asarray(scores), [0, 0], exclude_idx=[0, 1]).tolist() == [3, 0]  # excluded target: last


def test_fiq_recalls_hand_ranks():
    order = list(range(60))
    scores = scores_from_orders([order, order], 60)
    assert fiq_recalls(scores, [0, 11]) == {"recall_at10": 50.0, "recall_at50": 100.0}  # ranks 1 and 12
    assert fiq_recalls(scores.half(), torch.tensor([0, 11])) == {"recall_at10": 50.0, "recall_at50": 100.0}
    scores = scores_from_orders([order] * 3, 60)
    recalls = fiq_recalls(scores, [4, 19, 54])  # ranks 5, 20, 55
    assert recalls["recall_at10"] == pytest.approx(100 / 3) and recalls["recall_at50"] == pytest.approx(200 / 3)
    assert fiq_recalls(scores, [0, 1, 2], ks=(1,)) == {"recall_at1": pytest.approx(100 / 3)}


def test_fiq_summary_keys_and_unweighted_means():
    summary = fiq_summary({"dress": {"recall_at10": 50.0, "recall_at50": 100.0},
                           "toptee": {"recall_at10": 20.0, "recall_at50": 40.0},
                           "shirt": {"recall_at10": 0.0, "recall_at50": 60.0}})
    assert list(summary) == ["dress_recall_at10", "dress_recall_at50", "toptee_recall_at10", "toptee_recall_at50",
                             "shirt_recall_at10", "shirt_recall_at50", "average_recall_at10", "average_recall_at50",
                             "average_recall"]
    assert summary["average_recall_at10"] == pytest.approx(70 / 3)
    assert summary["average_recall_at50"] == pytest.approx(200 / 3)
    assert summary["average_recall"] == pytest.approx(45.0)


def test_shoes_excludes_reference():
    scores = scores_from_orders([[0, 1, 2, 3], [2, 3, 0, 1]], 4)  # reference nearest, target second
    assert fiq_recalls(scores, [1, 3], ks=(1,)) == {"recall_at1": 0.0}
    assert shoes_recalls(scores, [0, 2], [1, 3]) == {"recall_at1": 100.0, "recall_at10": 100.0,
                                                     "recall_at50": 100.0, "recall_mean": 100.0}


# ---------------------------------------------------------------------------------------------------------- CIRR
CIRR_ORDERS = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [4, 5, 2, 6, 7, 8, 9, 10, 11, 0, 1, 3]]
CIRR_REFERENCES, CIRR_TARGETS = [0, 2], [1, 10]
CIRR_MEMBERS = [[0, 1, 5, 6, 7, 8], [2, 10, 5, 11, 0, 1]]


def test_cirr_recalls_hand_ranking():
    """A: reference first, target second -> rank 1 after deletion. B: target at reference-free rank 7; its subset
    rank is 2 (member 5 comes first)."""
    scores = scores_from_orders(CIRR_ORDERS, 12)
    assert target_ranks(scores, CIRR_TARGETS, CIRR_REFERENCES).tolist() == [0, 6]
    assert subset_ranks(scores, CIRR_TARGETS, CIRR_MEMBERS, CIRR_REFERENCES).tolist() == [0, 1]
    metrics = cirr_recalls(scores, CIRR_REFERENCES, CIRR_TARGETS, CIRR_MEMBERS)
    assert list(metrics) == ["group_recall_at1", "group_recall_at2", "group_recall_at3", "recall_at1", "recall_at5",
                             "recall_at10", "recall_at50", "mean(R@5+R_s@1)", "arithmetic_mean", "harmonic_mean",
                             "geometric_mean"]
    assert [metrics[key] for key in list(metrics)[:8]] == [50.0, 100.0, 100.0, 50.0, 50.0, 100.0, 100.0, 50.0]
    assert metrics["arithmetic_mean"] == pytest.approx(550 / 7)
    assert metrics["harmonic_mean"] == pytest.approx(70.0)  # 7 / (3/50 + 4/100)
    assert metrics["geometric_mean"] == pytest.approx(100 * 2 ** (-3 / 7))


def test_zero_recall_means_do_not_crash():
    summary = cirr_summary({1: 0.0, 5: 20.0, 10: 40.0, 50: 80.0}, {1: 10.0, 2: 30.0, 3: 50.0})
    assert summary["geometric_mean"] == 0.0 and summary["harmonic_mean"] == 0.0
    assert summary["arithmetic_mean"] == pytest.approx(230 / 7)
    assert summary["mean(R@5+R_s@1)"] == 15.0
    assert safe_means([4.0, 1.0]) == (2.5, 1.6, 2.0)


def test_cirr_errors():
    scores = scores_from_orders(CIRR_ORDERS, 12)
    with pytest.raises(ValueError, match="query 1 has its reference as target"):
        cirr_recalls(scores, CIRR_REFERENCES, [1, 2], CIRR_MEMBERS)
    with pytest.raises(ValueError, match="target of query 0 is not among its non-reference members"):
        cirr_recalls(scores, CIRR_REFERENCES, [3, 10], CIRR_MEMBERS)
    with pytest.raises(ValueError, match=r"target_idx must have shape \[2\]"):
        cirr_recalls(scores, CIRR_REFERENCES, [1], CIRR_MEMBERS)
    with pytest.raises(ValueError, match=r"outside \[0, 12\)"):
        cirr_recalls(scores, CIRR_REFERENCES, [1, 12], CIRR_MEMBERS)


def test_index_of_requires_unique_gallery_names():
    gallery = ["a", "b", "c", "b"]
    assert index_of(["c", "a"], gallery).tolist() == [2, 0]
    assert index_of([["a", "c"], ["c", "a"]], gallery).tolist() == [[0, 2], [2, 0]]
    with pytest.raises(ValueError, match="'b' appears more than once"):
        index_of(["b"], gallery)
    with pytest.raises(ValueError, match="'z' is not in the gallery of 4 images"):
        index_of(["z"], gallery)


def test_cirr_rankings_for_submission():
    scores = scores_from_orders(CIRR_ORDERS, 12)
    names = [f"g{i}" for i in range(12)]
    recall, subset = cirr_rankings(scores, CIRR_REFERENCES, CIRR_MEMBERS, names, top_k=5)
    assert recall == [["g1", "g2", "g3", "g4", "g5"], ["g4", "g5", "g6", "g7", "g8"]]
    assert subset == [["g1", "g5", "g6"], ["g5", "g10", "g11"]]
    recall, subset = cirr_rankings(scores, CIRR_REFERENCES, CIRR_MEMBERS, names)
    assert [len(row) for row in recall] == [11, 11] and "g2" not in recall[1]


def test_cirr_matches_a_name_based_reference_on_random_scores():
    """Cross-check against the upstream string-array procedure, written out here: sort names, delete the reference,
    label the target, keep members for the subset (no ties on continuous random scores)."""
    generator = np.random.default_rng(0)
    n_queries, n_gallery = 40, 70
    names = np.array([f"img{i}" for i in range(n_gallery)])
    scores = generator.normal(size=(n_queries, n_gallery))
    references = generator.integers(0, n_gallery, n_queries)
    members, targets = [], []
    for reference in references:
        others = generator.choice(np.delete(np.arange(n_gallery), reference), 5, replace=False)
        members.append([reference, *others])
        targets.append(others[generator.integers(0, 5)])
    sorted_names = names[np.argsort(1 - scores, axis=1)]
    keep = sorted_names != names[references][:, None]
    sorted_names = sorted_names[keep].reshape(n_queries, n_gallery - 1)
    labels = sorted_names == names[targets][:, None]
    group_mask = np.stack([np.isin(row, names[m]) for row, m in zip(sorted_names, members)])
    group_labels = labels[group_mask].reshape(n_queries, -1)
    expected = {f"recall_at{k}": 100 * labels[:, :k].any(1).mean() for k in (1, 5, 10, 50)}
    expected.update({f"group_recall_at{k}": 100 * group_labels[:, :k].any(1).mean() for k in (1, 2, 3)})
    metrics = cirr_recalls(scores, references, targets, members)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value)
    recall, subset = cirr_rankings(scores, references, members, list(names))
    assert recall == sorted_names[:, :50].tolist()
    assert subset == [row[mask][:3].tolist() for row, mask in zip(sorted_names, group_mask)]


# ------------------------------------------------------------------------------------------------------ itm_eval
IMG2TXT = [[0, 1], [2, 3]]
TXT2IMG = [[0], [0], [1], [1]]
SCORES_I2T = np.array([[.9, .1, .8, .2], [.5, .6, .4, .3]])
SCORES_T2I = np.array([[.9, .5], [.1, .6], [.8, .4], [.2, .3]])


def test_itm_eval_hand_example():
    """TCR's mAP: img0 finds t0 first (AP (1/1 + 2/4)/2); img1's texts sit at positions 2 and 3 (AP (1/3 + 2/4)/2);
    texts t1 and t2 rank their image second."""
    expected = {"txt_r1": 50.0, "txt_r5": 100.0, "txt_r10": 100.0, "txt_r_mean": 83.33, "txt_map": 58.33,
                "img_r1": 50.0, "img_r5": 100.0, "img_r10": 100.0, "img_r_mean": 83.33, "img_map": 75.0,
                "r_mean": 83.33, "r_sum": 500.0}
    result = itm_eval(SCORES_I2T, SCORES_T2I, IMG2TXT, TXT2IMG)
    assert result == expected and list(result) == list(expected)
    assert itm_eval(torch.tensor(SCORES_I2T).half(), torch.tensor(SCORES_T2I), IMG2TXT, [0, 0, 1, 1]) == expected


def test_itm_eval_permuted_rows_and_many_to_many():
    order = [1, 0]  # a shuffled query stream: row r is image order[r]
    permuted = itm_eval(SCORES_I2T[order], SCORES_T2I, permute_maps(IMG2TXT, order), TXT2IMG)
    assert permuted == itm_eval(SCORES_I2T, SCORES_T2I, IMG2TXT, TXT2IMG)
    scores = np.array([[.1, .9, .5, .3, .7, .2]])  # relevant items 2 and 5 sit at positions 2 and 4
    result = itm_eval(scores, scores.T[:1], [[2, 5]], [[0]])
    assert (result["txt_r1"], result["txt_r5"]) == (0.0, 100.0)
    assert result["txt_map"] == round(100 * (1 / 3 + 2 / 5) / 2, 2)


def test_itm_eval_ties_are_stable():
    scores = np.zeros((1, 12))
    result = itm_eval(scores, np.zeros((1, 1)), [[10, 11]], [[0]])
    assert (result["txt_r5"], result["txt_r10"]) == (0.0, 0.0)  # ties keep gallery order: positions 10 and 11
    assert result["txt_map"] == round(100 * (1 / 11 + 2 / 12) / 2, 2)
    with pytest.raises(ValueError, match="1 relevance entries for 2 score rows"):
        itm_eval(np.zeros((2, 3)), np.zeros((3, 2)), [[0]], [[0], [0], [1]])
    assert math.isclose(itm_eval(scores, np.zeros((1, 1)), [[0]], [[0]])["r_sum"], 600.0)
