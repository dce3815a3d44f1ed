"""mlcl.combiner: golden parity with the original multi-level Combiner, state-dict keys, gradient routing of the
five loss terms, the closed-form loss-weight gradient and the inference fusion weights."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from common.io import CheckpointError
from common.training.checkpoint import load_model, save_model
from mlcl.combiner import LOSS_TERMS, Combiner, learn_t_of, mlcl_loss

GOLDEN = Path(__file__).parent / "fixtures" / "golden" / "mlcl" / "mlcl.pt"
LINEAR_KEYS = {f"{layer}.{p}" for layer in ("text_projection_layer", "image_projection_layer", "combiner_layer",
                                            "output_layer", "dynamic_scalar.0", "dynamic_scalar.3", "combiner_proj")
               for p in ("weight", "bias")}


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN, weights_only=True)


def inputs(golden):
    i = golden["inputs"]
    return i["reference_features"], i["text_features"], i["target_features"], i["reference_features_aug"]


def golden_model(golden, learn_t: int) -> Combiner:
    dims = golden["dims"]
    model = Combiner(dims["feature_dim"], dims["projection_dim"], dims["hidden_dim"], learn_t)
    model.load_state_dict(golden[f"learn_t{learn_t}"]["combiner_checkpoint"]["Combiner"], strict=True)
    return model


@pytest.mark.parametrize("learn_t", [0, 1])
@pytest.mark.parametrize("mode", ["eval", "train_seeded"])
def test_golden_logits_losses_gradients(golden, learn_t, mode):
    expected = golden[f"learn_t{learn_t}"][mode]
    model = golden_model(golden, learn_t)
    if mode == "eval":
        model.eval()
    else:
        model.train()
        torch.manual_seed(golden[f"learn_t{learn_t}"]["train_seed"])
    logits = model(*inputs(golden))
    total, terms = mlcl_loss(logits, model.loss_weight)
    total.sum().backward()
    for name, matrix in zip(LOSS_TERMS, logits):
        torch.testing.assert_close(matrix, expected[f"logits_{name}"], rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(terms[name], expected[f"loss_{name}"], rtol=0, atol=1e-5)
    assert total.shape == (1,)
    torch.testing.assert_close(total, expected["loss_total"], rtol=0, atol=1e-5)
    torch.testing.assert_close(model.loss_weight.grad, expected["grad_loss_weight"], rtol=0, atol=1e-5)
    if learn_t:
        torch.testing.assert_close(model.logit_scale.grad, expected["grad_logit_scale"], rtol=0, atol=1e-5)
        torch.testing.assert_close(model.logit_scale_sl.grad, expected["grad_logit_scale_sl"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("learn_t", [0, 1])
def test_golden_scalars_and_fusion(golden, learn_t):
    entry = golden[f"learn_t{learn_t}"]
    model = golden_model(golden, learn_t).eval()
    with torch.no_grad():
        scale, scale_sl = model.scales()
    assert float(scale) == pytest.approx(entry["logit_scale_value"], rel=1e-6)
    assert float(scale_sl) == pytest.approx(entry["logit_scale_sl_value"], rel=1e-6)
    torch.testing.assert_close(model.alpha(), entry["alpha"])
    r, t, target, _ = inputs(golden)
    high, mid, low = model.combine_features_weighted(r, t)
    fusion = entry["fusion"]
    for value, key in ((high, "weighted_high"), (mid, "weighted_mid"), (low, "sum_low")):
        torch.testing.assert_close(value, fusion[key], rtol=0, atol=1e-5)
    query = model.fused_query(r, t)
    torch.testing.assert_close(query, fusion["fused_query"], rtol=0, atol=1e-5)
    torch.testing.assert_close(query @ F.normalize(target, dim=-1).T, fusion["fused_vs_targets"], rtol=0, atol=1e-5)


def test_seeded_init_matches_the_original(golden):
    """torch.manual_seed(3) then Combiner(16, 32, 64): the original's linear weights (same creation order)."""
    torch.manual_seed(3)
    state = Combiner(16, 32, 64, 1).state_dict()
    reference = golden["learn_t1"]["combiner_checkpoint"]["Combiner"]
    for key in LINEAR_KEYS:
        assert torch.equal(state[key], reference[key]), key


@pytest.mark.parametrize("learn_t", [0, 1])
def test_state_dict_keys(learn_t):
    keys = set(Combiner(16, 32, 64, learn_t).state_dict())
    expected = LINEAR_KEYS | {"loss_weight"} | ({"logit_scale", "logit_scale_sl"} if learn_t else set())
    assert keys == expected
    assert learn_t_of(Combiner(16, 32, 64, learn_t).state_dict()) == learn_t


def test_rn50x4_parameter_count_on_meta():
    with torch.device("meta"):
        for learn_t, count in ((0, 62_280_962), (1, 62_280_964)):
            model = Combiner(640, 2560, 5120, learn_t)
            assert sum(p.numel() for p in model.parameters()) == count
    d, p, h = 640, 2560, 5120
    assert 2 * (d * p + p) + (2 * p * h + h) + (h * d + d) + (2 * p * h + h) + (h + 1) + (h * d + d) == 62_280_961


def test_initial_values():
    model = Combiner(8, 16, 32, 1)
    assert model.alpha().item() == pytest.approx(2 / 3)
    assert model.logit_scale.shape == (1,) and model.logit_scale.exp().item() == pytest.approx(100)
    assert Combiner(8, 16, 32, 0).scales() == (100.0, 100.0)
    with pytest.raises(ValueError, match="learn_t must be 0 or 1"):
        Combiner(8, 16, 32, 2)


def test_learn_t_mismatch_names_the_keys(tmp_path):
    path = save_model("combiner", 0, Combiner(8, 16, 32, 1), tmp_path)
    with pytest.raises(CheckpointError, match="logit_scale"):
        load_model(path, Combiner(8, 16, 32, 0))
    load_model(path, Combiner(8, 16, 32, 1))


ROUTING = {
    "h": {"text_projection_layer", "image_projection_layer", "combiner_layer", "output_layer", "dynamic_scalar",
          "logit_scale"},
    "c": {"text_projection_layer", "image_projection_layer", "combiner_layer", "combiner_proj", "logit_scale"},
    "s": {"logit_scale"},
    "mid": {"text_projection_layer", "image_projection_layer", "logit_scale_sl"},
    "high": {"text_projection_layer", "image_projection_layer", "combiner_layer", "output_layer", "dynamic_scalar",
             "logit_scale_sl"},
}


@pytest.mark.parametrize("learn_t", [0, 1])
@pytest.mark.parametrize("term", LOSS_TERMS)
def test_gradient_routing(term, learn_t):
    torch.manual_seed(0)
    model = Combiner(16, 32, 64, learn_t).eval()
    r, t, g = torch.randn(3, 8, 16).unbind(0)
    _, terms = mlcl_loss(model(r, t, g, r + torch.randn(8, 16)), model.loss_weight)
    value = terms[term]
    if term == "s" and not learn_t:
        assert not value.requires_grad
        return
    value.backward()
    touched = {name.split(".")[0] for name, p in model.named_parameters()
               if p.grad is not None and p.grad.abs().sum() > 0}
    assert touched == {m for m in ROUTING[term] if learn_t or not m.startswith("logit_scale")}


def test_loss_weight_gradient_closed_form():
    torch.manual_seed(1)
    model = Combiner(16, 32, 64, 1).eval()
    with torch.no_grad():
        model.loss_weight.fill_(-1.3)
    r, t, g = torch.randn(3, 8, 16).unbind(0)
    total, terms = mlcl_loss(model(r, t, g, r + torch.randn(8, 16)), model.loss_weight)
    total.sum().backward()
    sigma = torch.sigmoid(torch.tensor(-1.3))
    expected = 2 * sigma * (1 - sigma) * (terms["h"] - terms["c"])
    torch.testing.assert_close(model.loss_weight.grad, expected.reshape(1).detach())


def test_sscl_diagonal_without_augmentation():
    """r_aug = r, dropout off, fixed 100: each two-view logit row peaks on its diagonal."""
    torch.manual_seed(2)
    model = Combiner(16, 32, 64, 0).eval()
    r, t, g = torch.randn(3, 8, 16).unbind(0)
    logits = model(r, t, g, r)
    for matrix in (logits.mid, logits.high):
        assert torch.equal(matrix.argmax(1), torch.arange(8))
        torch.testing.assert_close(matrix.diagonal(), torch.full((8,), 100.0))


def test_fusion_weights_and_ablation():
    torch.manual_seed(3)
    model = Combiner(16, 32, 64, 1).eval()
    with torch.no_grad():
        model.loss_weight.fill_(0.8)
    r, t = torch.randn(2, 5, 16).unbind(0)
    alpha = 2 * torch.sigmoid(torch.tensor(0.8))
    high, mid, low = model.combine_features_weighted(r, t)
    high2, mid2, low2 = model.combine_features_weighted(r, t, "train-consistent")
    torch.testing.assert_close(high * alpha / (2 - alpha), high2)
    torch.testing.assert_close(mid * (2 - alpha) / alpha, mid2)
    torch.testing.assert_close(low, F.normalize(r + t, dim=-1))
    assert torch.equal(low, low2)
    torch.testing.assert_close(high.norm(dim=-1), (2 - alpha).expand(5))
    assert torch.equal(model.fused_query(r, t), model.fused_query(r, t))
    with pytest.raises(ValueError, match="unknown fusion weights"):
        model.combine_features_weighted(r, t, "other")
    assert math.isclose(alpha.item(), model.alpha().item(), rel_tol=1e-6)


@pytest.mark.parametrize("term", LOSS_TERMS)
def test_only_the_two_view_terms_reach_the_augmented_view(term):
    """L_mid and L_high back-propagate through both views (neither side is detached); the target terms never see
    the augmented reference."""
    torch.manual_seed(4)
    model = Combiner(16, 32, 64, 1).eval()
    r, t, g = torch.randn(3, 8, 16).unbind(0)
    r_aug = (r + torch.randn(8, 16)).requires_grad_(True)
    _, terms = mlcl_loss(model(r, t, g, r_aug), model.loss_weight)
    terms[term].backward()
    reached = r_aug.grad is not None and r_aug.grad.abs().sum() > 0
    assert reached == (term in ("mid", "high"))
