"""The CLIP4Cir validation loop that validate.py and the training scripts run (common.cir.evaluation), on synthetic
FashionIQ / CIRR files and hand-built features whose recalls are known.

The gallery features are one-hot, so a composed query ``n(reference + text)`` scores gallery item j by the j-th
entry of ``reference + text``. Each query's text feature is ``v - reference`` for a score vector v that puts the
query's target at a chosen rank; for CIRR the reference scores highest (it must be removed) and a chosen number of
the other set members rank above the target. The caption and split files are read here, not through the code
under test.
"""
import json
import statistics
from pathlib import Path

import pytest
import torch

from bi_blip4cir.data import relative_dataset
from bi_blip4cir.losses import sum_fusion
from common.cir.evaluation import build_query_sets, evaluate_composed, metrics_json_path
from common.synthetic.writers import write_cirr, write_fashioniq

FIQ_RANKS = [0, 5, 9, 10, 30, 49, 50, 57]  # of the target in the full gallery (60 images, reference last)
CIRR_RANKS = [(0, 0), (1, 1), (4, 2), (5, 0), (9, 3), (10, 4), (30, 1), (49, 2), (50, 4)]  # (rank, subset rank)


def score_vector(order: list[int], size: int) -> torch.Tensor:
    """Scores over ``size`` gallery rows, strictly decreasing along ``order`` (a permutation of the rows)."""
    scores = torch.empty(size)
    scores[torch.tensor(order)] = torch.linspace(1.0, 0.1, size)
    return scores


def fiq_query(names: list[str], reference: str, target: str, rank: int) -> torch.Tensor:
    """Text feature putting ``target`` at ``rank`` of the full gallery; the reference ranks last."""
    ref, tgt = names.index(reference), names.index(target)
    others = [row for row in range(len(names)) if row not in (ref, tgt)]
    v = score_vector(others[:rank] + [tgt] + others[rank:] + [ref], len(names))
    return v - torch.eye(len(names))[ref]


def cirr_query(names: list[str], reference: str, target: str, members: list[str], rank: int,
               subset_rank: int) -> torch.Tensor:
    """Text feature putting ``target`` at ``rank`` once the top-scored reference is removed, with ``subset_rank``
    of the other non-reference members above it."""
    ref, tgt = names.index(reference), names.index(target)
    rivals = [names.index(m) for m in members if m not in (reference, target)]
    outsiders = [row for row in range(len(names)) if row not in (ref, tgt, *rivals)]
    above = rivals[:subset_rank] + outsiders[:rank - subset_rank]
    below = rivals[subset_rank:] + outsiders[rank - subset_rank:]
    v = score_vector([ref, *above, tgt, *below], len(names))
    return v - torch.eye(len(names))[ref]


def recall(ranks: list[int], k: int) -> float:
    return 100.0 * sum(rank < k for rank in ranks) / len(ranks)


def one_hot_gallery(names_by_set: dict[tuple, list[str]]):
    """``encode_gallery`` of the query sets: one-hot features of the split's images, in split-file order."""
    def encode_gallery(dress_types):
        names = names_by_set[tuple(dress_types)]
        return torch.eye(len(names)), list(names)
    return encode_gallery


def test_fashioniq_recalls_score_the_target_not_the_reference(tmp_path):
    write_fashioniq(tmp_path, {"train": 2, "val": 60, "test": 2}, {"train": 1, "val": 10, "test": 1}, seed=0)
    base = tmp_path / "fashionIQ_dataset"
    names, texts, expected = {}, {}, {}
    for dress_type, shift in (("dress", 0), ("toptee", 3), ("shirt", 2)):
        names[(dress_type,)] = json.loads((base / "image_splits" / f"split.{dress_type}.val.json").read_text())
        entries = json.loads((base / "captions" / f"cap.{dress_type}.val.json").read_text())
        ranks = [FIQ_RANKS[(i + shift) % len(FIQ_RANKS)] for i in range(len(entries))]
        texts[dress_type] = torch.stack([fiq_query(names[(dress_type,)], e["candidate"], e["target"], rank)
                                         for e, rank in zip(entries, ranks)])
        expected[dress_type] = {10: recall(ranks, 10), 50: recall(ranks, 50)}

    query_sets = build_query_sets("fashioniq", "val", one_hot_gallery(names), lambda dress_types: relative_dataset(
        "fashioniq", base, "val", None, "upstream", dress_types))
    assert [s.name for s in query_sets] == ["dress", "toptee", "shirt"]
    assert [len(s.captions) for s in query_sets] == [10, 10, 10]
    metrics = evaluate_composed(query_sets, [texts[s.name] for s in query_sets], sum_fusion)

    wanted = {}
    for dress_type, recalls in expected.items():
        wanted.update({f"{dress_type}_recall_at10": recalls[10], f"{dress_type}_recall_at50": recalls[50]})
    wanted["average_recall_at10"] = statistics.mean(r[10] for r in expected.values())
    wanted["average_recall_at50"] = statistics.mean(r[50] for r in expected.values())
    wanted["average_recall"] = (wanted["average_recall_at10"] + wanted["average_recall_at50"]) / 2
    assert list(metrics) == list(wanted)
    assert metrics == pytest.approx(wanted, abs=1e-9)
    assert [wanted[f"{d}_recall_at10"] for d in ("dress", "toptee", "shirt")] == [50.0, 30.0, 40.0]
    assert 0 < wanted["average_recall_at10"] < wanted["average_recall_at50"] < 100


def test_cirr_recalls_remove_the_reference_and_rank_the_subset_among_members(tmp_path):
    write_cirr(tmp_path, {"train": 1, "val": 9, "test1": 9}, 3, seed=0)
    base = tmp_path / "cirr_dataset"
    names = list(json.loads((base / "cirr" / "image_splits" / "split.rc2.val.json").read_text()))
    entries = json.loads((base / "cirr" / "captions" / "cap.rc2.val.json").read_text())
    cases = [CIRR_RANKS[i % len(CIRR_RANKS)] for i in range(len(entries))]
    texts = torch.stack([cirr_query(names, e["reference"], e["target_hard"], e["img_set"]["members"], rank, sub)
                         for e, (rank, sub) in zip(entries, cases)])

    query_set, = build_query_sets("cirr", "val", one_hot_gallery({(): names}), lambda dress_types: relative_dataset(
        "cirr", base, "val", None, "upstream", dress_types))
    assert len(names) == 54 and len(query_set.captions) == len(entries) == 27
    metrics = evaluate_composed([query_set], [texts], sum_fusion)

    ranks, subset_ranks = [rank for rank, _ in cases], [sub for _, sub in cases]
    wanted = {f"group_recall_at{k}": recall(subset_ranks, k) for k in (1, 2, 3)}
    wanted.update({f"recall_at{k}": recall(ranks, k) for k in (1, 5, 10, 50)})
    seven = list(wanted.values())
    wanted["mean(R@5+R_s@1)"] = (wanted["recall_at5"] + wanted["group_recall_at1"]) / 2
    wanted.update(arithmetic_mean=statistics.mean(seven), harmonic_mean=statistics.harmonic_mean(seven),
                  geometric_mean=statistics.geometric_mean(seven))
    assert list(metrics) == list(wanted)
    assert metrics == pytest.approx(wanted, abs=1e-9)
    assert wanted["recall_at1"] == pytest.approx(100 / 9) and wanted["recall_at50"] == pytest.approx(800 / 9)


def test_metrics_json_path_sits_next_to_the_most_specific_checkpoint(tmp_path):
    combiner, text = tmp_path / "run" / "combiner.pt", tmp_path / "tuned.pt"
    expected = tmp_path / "run" / "combiner_val_cirr_combiner.json"
    assert metrics_json_path(None, (combiner, text), "val_cirr_combiner") == expected
    assert metrics_json_path(None, (None, text), "val_fiq_sum") == tmp_path / "tuned_val_fiq_sum.json"
    assert metrics_json_path(None, (None, "RN50x4"), "val_shoes_sum") == Path("RN50x4_val_shoes_sum.json")
    assert metrics_json_path(None, ("https://host/x/model_base.pth",), "v") == Path("model_base_v.json")
    assert metrics_json_path(tmp_path / "m.json", (combiner,), "v") == tmp_path / "m.json"
