"""Bi-BLIP4CIR losses and Combiner: golden parity with the original code, hand-built values, loop equivalence."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from common.cir.combiner import Combiner
from bi_blip4cir.losses import (bidirectional_loss, contrastive_loss, reversed_loss_weight, stage1_logits,
                                stage2_logits, sum_fusion)
from common.training.checkpoint import load_model, save_model

GOLDEN = Path(__file__).parent / "fixtures" / "golden" / "losses" / "bi_blip4cir.pt"


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN, map_location="cpu", weights_only=True)


def golden_combiner(golden, tmp_path) -> Combiner:
    dims = golden["combiner_dims"]
    combiner = Combiner(dims["feature_dim"], dims["projection_dim"], dims["hidden_dim"])
    torch.save(golden["combiner_checkpoint"], tmp_path / "combiner.pt")
    payload = load_model(tmp_path / "combiner.pt", combiner)
    assert payload["epoch"] == 0
    return combiner.eval()


def test_stage1_matches_original(golden):
    x, out = golden["inputs"], golden["outputs"]
    logits_f, logits_r = stage1_logits(x["reference_features"], x["caption_features"],
                                       x["reversed_caption_features"], x["target_features"])
    torch.testing.assert_close(logits_f, out["s1_logits"], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(logits_r, out["s1_logits_r"], rtol=1e-5, atol=1e-4)
    for dataset, key in (("FashionIQ", "s1_loss_fiq"), ("CIRR", "s1_loss_cirr")):
        total, loss_f, loss_r = bidirectional_loss(logits_f, logits_r, reversed_loss_weight("stage1", dataset))
        torch.testing.assert_close(loss_f, out["s1_loss_f"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loss_r, out["s1_loss_r"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(total, out[key], rtol=1e-5, atol=1e-5)


def test_stage2_matches_original(golden, tmp_path):
    x, out = golden["inputs"], golden["outputs"]
    combiner = golden_combiner(golden, tmp_path)
    with torch.no_grad():
        predicted = combiner(x["reference_features"], x["caption_features"])
        logits_f, logits_r = stage2_logits(combiner, x["reference_features"], x["caption_features"],
                                           x["reversed_caption_features"], x["target_features"])
    torch.testing.assert_close(predicted, out["s2_predicted"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logits_f, out["s2_logits"], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(logits_r, out["s2_logits_r"], rtol=1e-5, atol=1e-4)
    for dataset, key in (("fashionIQ", "s2_loss_fiq"), ("cirr", "s2_loss_cirr")):
        total, loss_f, loss_r = bidirectional_loss(logits_f, logits_r, reversed_loss_weight("stage2", dataset))
        torch.testing.assert_close(loss_f, out["s2_loss_f"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(loss_r, out["s2_loss_r"], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(total, out[key], rtol=1e-5, atol=1e-5)


def test_reversed_weights_and_override():
    assert [reversed_loss_weight(s, d) for s in ("stage1", "stage2") for d in ("FashionIQ", "CIRR")] == [
        0.4, 0.1, 0.5, 0.1]
    assert reversed_loss_weight("stage1", "cirr", override=0.0) == 0.0


def test_stage1_hand_built_values():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    reference = torch.stack([2 * e1, 3 * e2])
    caption = torch.stack([e1, e2])
    target = torch.stack([5 * e1, 0.5 * e2])
    reversed_caption = torch.stack([e2, e1])
    logits_f, logits_r = stage1_logits(reference, caption, reversed_caption, target, scale=1.0)
    torch.testing.assert_close(logits_f, torch.eye(2))
    # p_00 = n(e1 + e2), p_01 = n(e2 + e2) = e2, against n(r_0) = e1; row 1 mirrors it.
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(logits_r, torch.tensor([[s, 0.0], [0.0, s]]))
    total, loss_f, loss_r = bidirectional_loss(logits_f, logits_r, 0.4)
    assert loss_f.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    assert loss_r.item() == pytest.approx(math.log(1 + math.exp(-s)), abs=1e-6)
    assert total.item() == pytest.approx(loss_f.item() + 0.4 * loss_r.item(), abs=1e-6)


def test_zero_combiner_is_a_normalised_sum():
    """With every weight 0 the gate is 0.5 and the output n(image + text): stage II logits by hand."""
    combiner = Combiner(3, 4, 5)
    for parameter in combiner.parameters():
        torch.nn.init.zeros_(parameter)
    combiner.eval()
    torch.manual_seed(1)
    reference, caption, reversed_caption, target = torch.randn(4, 3, 3).unbind(0)
    logits_f, logits_r = stage2_logits(combiner, reference, caption, reversed_caption, target)
    expected_f = 100 * sum_fusion(reference, caption) @ F.normalize(target, dim=-1).T
    torch.testing.assert_close(logits_f, expected_f)
    expected_r = torch.tensor([[100 * torch.dot(sum_fusion(target[j], reversed_caption[i]),
                                                F.normalize(reference[i], dim=0)).item() for j in range(3)]
                               for i in range(3)])
    torch.testing.assert_close(logits_r, expected_r, rtol=1e-5, atol=1e-4)


def _reversed_loops(combine, reference, reversed_caption, target):
    rows = []
    for i in range(reference.shape[0]):
        row = []
        for j in range(target.shape[0]):
            query = combine(target[j], reversed_caption[i])
            row.append(100 * torch.dot(query, F.normalize(reference[i], dim=0)))
        rows.append(torch.stack(row))
    return torch.stack(rows)


def test_vectorised_reversed_logits_equal_double_loop():
    torch.manual_seed(0)
    reference, caption, reversed_caption, target = torch.randn(4, 5, 8).unbind(0)
    _, logits_r = stage1_logits(reference, caption, reversed_caption, target)
    loops = _reversed_loops(lambda t, s: F.normalize(F.normalize(t, dim=0) + s, dim=0),
                            reference, reversed_caption, target)
    torch.testing.assert_close(logits_r, loops, rtol=1e-5, atol=1e-4)

    combiner = Combiner(8, 16, 32).eval()
    with torch.no_grad():
        _, logits_r = stage2_logits(combiner, reference, caption, reversed_caption, target)
        loops = _reversed_loops(combiner, reference, reversed_caption, target)
    torch.testing.assert_close(logits_r, loops, rtol=1e-5, atol=1e-4)
    assert logits_r.shape == (5, 5)


def test_rows_of_one_process_match_the_full_batch():
    """Under DDP each process scores its own rows against every target; the rows and labels must line up."""
    torch.manual_seed(2)
    reference, caption, reversed_caption, target = torch.randn(4, 6, 8).unbind(0)
    full_f, full_r = stage1_logits(reference, caption, reversed_caption, target)
    part_f, part_r = stage1_logits(reference[2:4], caption[2:4], reversed_caption[2:4], target, offset=2)
    torch.testing.assert_close(part_f, full_f[2:4])
    torch.testing.assert_close(part_r, full_r[2:4])
    full = F.cross_entropy(full_f, torch.arange(6), reduction="none")[2:4].mean()
    torch.testing.assert_close(contrastive_loss(part_f, offset=2), full)


def test_batch_of_one_raises():
    one = torch.randn(1, 8)
    with pytest.raises(ValueError, match="at least 2 triplets per batch, got 1"):
        stage1_logits(one, one, one, one)
    with pytest.raises(ValueError, match="at least 2 triplets"):
        stage2_logits(Combiner(8, 4, 4), one, one, one, one)


def test_stage2_step_lowers_loss_on_fixed_batch():
    torch.manual_seed(0)
    reference, caption, reversed_caption, target = torch.randn(4, 8, 16).unbind(0)
    combiner = Combiner(16, 32, 64)
    optimizer = torch.optim.Adam(combiner.parameters(), lr=1e-3)

    def eval_loss():
        combiner.eval()
        with torch.no_grad():
            loss = bidirectional_loss(*stage2_logits(combiner, reference, caption, reversed_caption, target), 0.5)[0]
        combiner.train()
        return loss.item()

    before = eval_loss()
    for _ in range(20):
        loss = bidirectional_loss(*stage2_logits(combiner, reference, caption, reversed_caption, target), 0.5)[0]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert eval_loss() < 0.75 * before


def test_combiner_keys_size_and_released_layout(tmp_path):
    combiner = Combiner(16, 32, 64)
    assert list(combiner.state_dict()) == [
        "text_projection_layer.weight", "text_projection_layer.bias", "image_projection_layer.weight",
        "image_projection_layer.bias", "combiner_layer.weight", "combiner_layer.bias", "output_layer.weight",
        "output_layer.bias", "dynamic_scalar.0.weight", "dynamic_scalar.0.bias", "dynamic_scalar.3.weight",
        "dynamic_scalar.3.bias"]
    with torch.device("meta"):
        blip_size = Combiner(256, 2560, 5120)
    assert sum(p.numel() for p in blip_size.parameters()) == 55_070_977

    optimizer = torch.optim.Adam(combiner.parameters())
    path = save_model("combiner", 3, combiner, tmp_path, optimizer)
    payload = torch.load(path, weights_only=True)
    assert sorted(payload) == ["Combiner", "epoch", "optimizer_state_dict"] and payload["epoch"] == 3
    fresh = Combiner(16, 32, 64)
    load_model(path, fresh)
    for name, tensor in combiner.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], tensor)
