"""RA-TTA's algorithm: both implementations against the original per-sample values, the OT recipe against
``ot.sinkhorn``, the quantile helper against ``torch.quantile``, hand-built cases and the DB search."""
import warnings
from pathlib import Path

import numpy as np
import ot
import pytest
import torch
import torch.nn.functional as F

from ratta.core import RattaConfig, TextBanks, adapt_batch, quantile, select_sets
from ratta.loop import adapt_sample, class_blocks
from ratta.retrieval import VectorIndex
from ratta.transport import sinkhorn_plans
from ratta.vector_db import subsample_rows

GOLDEN = Path(__file__).parent / "fixtures" / "golden" / "ratta" / "ratta.pt"


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN, weights_only=True)


def golden_setup(golden):
    inputs, h = golden["inputs"], golden["hparams"]
    cfg = RattaConfig(top_k_d=h["K_D"], top_k_s=h["K_S"], qthres=h["q"], min_desc=h["min_desc"], ot_reg=h["ot_reg"],
                      ot_iters=h["ot_numItermax"], ot_stop=h["ot_stopThr"])
    banks = TextBanks(inputs["W"], inputs["E"], inputs["NAME"])
    return inputs, cfg, banks, torch.tensor(h["logit_scale"])


def close(actual, expected, atol=1e-5):
    torch.testing.assert_close(torch.as_tensor(actual).double(), torch.as_tensor(expected).double(), atol=atol,
                               rtol=0)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_loop_reproduces_golden(golden, backend):
    inputs, cfg, banks, scale = golden_setup(golden)
    index = VectorIndex(inputs["DB"], backend)
    blocks = class_blocks(inputs["NAME"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outs = [adapt_sample(inputs["x"][i:i + 1], inputs["views"][i], banks, blocks, index, inputs["DB"], scale, cfg)
                for i in range(len(inputs["x"]))]
    for out, ref in zip(outs, golden["per_sample"]):
        assert out["S"] == ref["S"]
        close(out["p_t"], ref["p_t"])
        close(out["quantile_scores"], ref["quantile_scores"])
        assert out["topk_ids"].tolist() == ref["topk_desc_ids"].tolist()
        assert out["set_classes"].tolist() == ref["set_classes"].tolist()
        assert [ids.tolist() for ids in out["set_desc_ids"]] == [ids.tolist() for ids in ref["set_desc_ids"]]
        if ref["S"]:
            close(out["global_prototype"], ref["global_prototype"])
            close(out["set_prototypes"], ref["set_prototypes"])
            assert out["retrieved_ids"].tolist() == ref["retrieved_ids"].tolist()
            close(out["ot_source"], ref["ot_source"])
            close(out["ot_targets"], ref["ot_targets"])
            close(out["ot_costs"], ref["ot_costs"])
            close(out["ot_plans"], ref["ot_plans"], atol=2e-5)
            close(out["ot_dist"], ref["ot_dist"])
            close(out["rho"], ref["rho"])
            close(out["lam"], ref["lam"])
        close(out["p"], ref["p"])
    top1 = np.mean([int(out["p"].argmax()) == ref["label"] for out, ref in zip(outs, golden["per_sample"])])
    assert top1 * 100 == pytest.approx(golden["summary"]["ratta_top1"], abs=1e-4)


@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_batched_reproduces_golden(golden, batch_size):
    inputs, cfg, banks, scale = golden_setup(golden)
    index = VectorIndex(inputs["DB"], "faiss")
    n = len(inputs["x"])
    outs = [adapt_batch(inputs["x"][i:i + batch_size], inputs["views"][i:i + batch_size], banks, index, inputs["DB"],
                        scale, cfg) for i in range(0, n, batch_size)]
    field = {name: torch.cat([getattr(out, name) for out in outs]) for name in
             ("p_t", "p", "topk_ids", "set_classes", "valid", "global_prototype", "set_prototypes", "retrieved_ids",
              "ot_dist", "rho", "lam")}
    summary = golden["summary"]
    assert field["valid"].sum(1).tolist() == summary["S"].tolist()
    close(field["p_t"], summary["p_t"])
    close(field["p"], summary["p"])
    assert field["p"].argmax(1).tolist() == summary["pred_ratta"].tolist()
    assert field["p_t"].argmax(1).tolist() == summary["pred_cupl"].tolist()
    for i, ref in enumerate(golden["per_sample"]):
        S = ref["S"]
        assert field["topk_ids"][i].tolist() == ref["topk_desc_ids"].tolist()
        assert field["set_classes"][i, :S].tolist() == ref["set_classes"].tolist()
        assert (field["set_classes"][i, S:] == -1).all()
        if S:
            close(field["global_prototype"][i], ref["global_prototype"])
            close(field["set_prototypes"][i, :S], ref["set_prototypes"])
            assert field["retrieved_ids"][i, :S].tolist() == ref["retrieved_ids"].tolist()
            close(field["ot_dist"][i, :S], ref["ot_dist"])
            close(field["rho"][i, :S], ref["rho"])
            close(field["lam"][i], ref["lam"])
        else:
            assert torch.isnan(field["lam"][i])
            assert torch.equal(field["p"][i], field["p_t"][i])


def ot_problems(num: int, seed: int, dtype=torch.float64):
    """CLIP-like problems: 101 views, 20 retrieved rows, projections on a prototype; some slow, some zero mass."""
    g = torch.Generator().manual_seed(seed)
    z = F.normalize(torch.randn(num, 101, 8, generator=g, dtype=dtype), dim=-1)
    r = F.normalize(torch.randn(num, 20, 8, generator=g, dtype=dtype), dim=-1)
    proto = F.normalize(torch.randn(num, 8, generator=g, dtype=dtype), dim=-1)
    z_proj, r_proj = (z @ proto[:, :, None])[..., 0], (r @ proto[:, :, None])[..., 0]
    sharp = torch.rand(num, 1, generator=g, dtype=dtype) * 3
    a = (100 * sharp * z_proj).softmax(dim=1)
    a[: num // 4, :10] = 0
    a = a / a.sum(dim=1, keepdim=True)
    b = (30 * r_proj).softmax(dim=1)
    cost = (z_proj[:, :, None] - r_proj[:, None, :]).abs()
    cost[num // 2:] *= 0.2
    return a, b, cost


def test_batched_sinkhorn_equals_pot_per_problem():
    a, b, cost = ot_problems(120, seed=0)
    plans = sinkhorn_plans(a, b, cost, reg=0.1, num_iter_max=100, stop_thr=1e-2)
    stops = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(len(a)):
            ref, log = ot.sinkhorn(a[i].numpy(), b[i].numpy(), cost[i].numpy(), 0.1, numItermax=100, stopThr=1e-2,
                                   log=True)
            stops.add(log["niter"])
            assert np.abs(plans[i].numpy() - ref).max() < 1e-12
            assert abs(float((plans[i] * cost[i]).sum()) - float((ref * cost[i].numpy()).sum())) < 1e-12
    assert len(stops) >= 2, "the batch must mix problems that stop at different checks"
    assert (plans[: 30, :10] == 0).all()


def test_batched_sinkhorn_stops_per_problem_not_per_batch():
    a, b, cost = ot_problems(40, seed=1)
    fast = sinkhorn_plans(a[:1], b[:1], cost[:1])
    mixed = sinkhorn_plans(a, b, cost)
    assert torch.allclose(mixed[:1], fast, atol=1e-15, rtol=0)


@pytest.mark.parametrize("views", [4, 7, 9, 100, 101])
@pytest.mark.parametrize("q", [0.5, 0.75, 0.9])
def test_quantile_equals_torch_quantile(views, q):
    values = torch.randn(3, views, 50, generator=torch.Generator().manual_seed(views))
    assert torch.equal(quantile(values, q, dim=1), torch.quantile(values, q, dim=1))


def orthonormal_case():
    """D = 8 orthonormal basis, C = 3 classes with 6 descriptions each (description i of class c = e_{c} mixed
    with e_{3+i%5})."""
    basis = torch.eye(8)
    rows, name = [], []
    for c in range(3):
        for i in range(6):
            rows.append(F.normalize(basis[c] + 0.3 * basis[3 + i % 5], dim=0))
            name.append(c)
    return torch.stack(rows), torch.tensor(name)


def test_no_set_keeps_zero_shot():
    basis = torch.eye(10)
    E = torch.stack([F.normalize(basis[c] + 0.3 * basis[3 + i], dim=0) for c in range(3) for i in range(6)])
    name = torch.arange(3).repeat_interleave(6)
    W = F.normalize(basis[:, :3] + 0.1, dim=0)
    x = F.normalize(basis[0] + basis[1] + basis[2] + 0.5 * basis[3] + 0.5 * basis[4], dim=0)[None]
    db = F.normalize(torch.randn(10, 10, generator=torch.Generator().manual_seed(0)), dim=1)
    out = adapt_batch(x, x.repeat(4, 1)[None], TextBanks(W, E, name), VectorIndex(db, "torch"), db, torch.tensor(100.0),
                      RattaConfig(top_k_d=6, top_k_s=2, min_desc=5))
    assert sorted(name[out.topk_ids[0]].tolist()) == [0, 0, 1, 1, 2, 2]
    assert out.num_sets.tolist() == [0]
    assert torch.equal(out.p, out.p_t)
    assert (out.retrieved_ids == -1).all()


def test_one_set_wins_against_zero_shot():
    E, name = orthonormal_case()
    W = torch.eye(8)[:, :3].clone()
    x = F.normalize(torch.eye(8)[1] * 0.6 + torch.eye(8)[0] * 0.4, dim=0)[None]   # zero-shot says class 1
    views = F.normalize(torch.eye(8)[0] + 0.05 * torch.randn(5, 8, generator=torch.Generator().manual_seed(1)),
                        dim=1)                                                    # the views say class 0
    db = F.normalize(torch.randn(30, 8, generator=torch.Generator().manual_seed(2)), dim=1)
    cfg = RattaConfig(top_k_d=5, top_k_s=3, min_desc=5, qthres=0.75)
    out = adapt_batch(x, views[None], TextBanks(W, E, name), VectorIndex(db, "torch"), db, torch.tensor(100.0), cfg)
    assert out.p_t.argmax().item() == 1
    assert out.num_sets.tolist() == [1] and out.set_classes[0, 0].item() == 0
    assert out.p.argmax().item() == 0
    assert out.lam.item() <= 0.5


def test_two_sets_ordered_by_ot_distance():
    basis = torch.eye(8)
    E = torch.stack([F.normalize(basis[c] + 0.01 * k * basis[6], dim=0) for c in (0, 1) for k in range(5)])
    name = torch.tensor([0] * 5 + [1] * 5)
    W = F.normalize(basis[:, :2] + 0.5, dim=0)
    Z = F.normalize(basis[0] + basis[1] + 0.02 * torch.randn(6, 8, generator=torch.Generator().manual_seed(3)), dim=1)
    # Set A (class 0) retrieves rows whose projection on pi_A matches the views' (about 0.71); set B's rows
    # project at 1.0 on pi_B, far from the views' 0.71.
    rows_a = F.normalize(basis[0] + basis[1] + 0.01 * torch.randn(4, 8, generator=torch.Generator().manual_seed(4)),
                         dim=1) * 0.999
    rows_b = basis[1].repeat(4, 1)
    db = torch.cat([rows_a, rows_b, -basis[:2]])
    cfg = RattaConfig(top_k_d=10, top_k_s=4, min_desc=5)
    out = adapt_batch(Z[:1], Z[None, 1:], TextBanks(W, E, name), VectorIndex(db, "torch"), db, torch.tensor(100.0), cfg)
    assert out.num_sets.tolist() == [2]
    slot_a = out.set_classes[0].tolist().index(0)
    slot_b = 1 - slot_a
    d = out.ot_dist[0]
    assert d[slot_a] < d[slot_b]
    assert out.rho[0, slot_a] > out.rho[0, slot_b]
    expected_rho = torch.softmax(100.0 / (1 + d), dim=0)
    torch.testing.assert_close(out.rho[0], expected_rho)
    p_r = torch.zeros(2)
    p_r[out.set_classes[0]] = out.rho[0]
    H_t = -(out.p_t[0] * out.p_t[0].log()).sum()
    H_r = -(p_r * torch.log(p_r + 1e-7)).sum()
    lam = torch.exp(1 / (1 + H_t)) / (torch.exp(1 / (1 + H_t)) + torch.exp(1 / (1 + H_r)))
    torch.testing.assert_close(out.lam[0], lam)
    torch.testing.assert_close(out.p[0], lam * out.p_t[0] + (1 - lam) * p_r)


def brute_force_sets(scores, name, k_d, min_desc):
    order = sorted(range(len(scores)), key=lambda i: -scores[i])[:k_d]
    classes, counts = [], {}
    for i in order:
        counts[int(name[i])] = counts.get(int(name[i]), 0) + 1
        if int(name[i]) not in classes:
            classes.append(int(name[i]))
    return [c for c in classes if counts[c] >= min_desc]


def test_grouping_matches_brute_force():
    g = torch.Generator().manual_seed(5)
    name = torch.randint(0, 6, (60,), generator=g)
    scores = torch.rand(200, 60, generator=g) + 0.5 * torch.rand(200, 6, generator=g)[:, name]
    cfg = RattaConfig(top_k_d=15, min_desc=4)
    set_classes, valid, _ = select_sets(scores.topk(15, dim=1).indices, name, 6, cfg)
    seen_sets = set()
    for b in range(len(scores)):
        expected = brute_force_sets(scores[b].tolist(), name, 15, 4)
        assert set_classes[b][valid[b]].tolist() == expected
        seen_sets.add(len(expected))
    assert seen_sets >= {0, 1, 2}


def test_faiss_and_torch_search_agree():
    g = torch.Generator().manual_seed(6)
    db = F.normalize(torch.randn(3000, 32, generator=g), dim=1)
    queries = F.normalize(torch.randn(17, 32, generator=g), dim=1)
    dist_f, ids_f = VectorIndex(db, "faiss").search(queries, 20)
    dist_t, ids_t = VectorIndex(db, "torch", chunk_rows=700).search(queries, 20)
    assert torch.equal(ids_f, ids_t)
    torch.testing.assert_close(dist_f, dist_t, atol=1e-5, rtol=0)
    brute = torch.cdist(queries, db).pow(2).topk(20, largest=False).indices
    assert torch.equal(ids_t, brute)


@pytest.mark.parametrize("backend", ["faiss", "torch"])
def test_k_larger_than_db_raises(backend):
    index = VectorIndex(torch.eye(5), backend)
    with pytest.raises(ValueError, match="only 5 rows"):
        index.search(torch.eye(5)[:1], 6)


def test_imagenet_subsample_reproduces_randint():
    rows = np.arange(1000, dtype=np.float16)[:, None].repeat(4, axis=1)
    np.random.seed(7)
    got = subsample_rows(rows, 0.75, "randint")
    np.random.seed(7)
    expected = rows[np.random.randint(1000, size=750)]
    assert np.array_equal(got, expected)
    assert len(np.unique(got[:, 0])) < 750
    np.random.seed(7)
    assert len(np.unique(subsample_rows(rows, 0.75, "permutation")[:, 0])) == 750


def test_text_banks_match_the_upstream_construction():
    from ratta.text import build_text_banks

    table: dict[str, torch.Tensor] = {}

    def encode(texts):
        for text in texts:
            table.setdefault(text, torch.randn(6, generator=torch.Generator().manual_seed(len(table))) * 3)
        return torch.stack([table[text] for text in texts])

    classnames = ["cat", "sea lion"]
    descriptions = {"cat": ["Small.", "Furry."], "sea lion": ["Swims."]}
    banks = build_text_banks(encode, classnames, descriptions, ("a {}.", "the {}."), "a photo of a {}. ",
                             batch_size=2)
    unit = {text: F.normalize(vector, dim=0) for text, vector in table.items()}
    expected_w = [F.normalize((unit["a cat."] + unit["the cat."] + unit["Small."] + unit["Furry."]) / 4, dim=0),
                  F.normalize((unit["a sea lion."] + unit["the sea lion."] + unit["Swims."]) / 3, dim=0)]
    torch.testing.assert_close(banks.W, torch.stack(expected_w, dim=1))
    rows = ["a photo of a cat. Small.", "a photo of a cat. Furry.", "a photo of a cat.",
            "a photo of a sea lion. Swims.", "a photo of a sea lion."]
    torch.testing.assert_close(banks.E, torch.stack([unit[text] for text in rows]))
    assert banks.name.tolist() == [0, 0, 0, 1, 1]
