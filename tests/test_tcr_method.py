"""TCR's queue and online loop, and the baselines, on a toy encoder (Linear → LayerNorm → Linear)."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tcr.adapter import QueryBatch
from tcr.baselines.deyo import shuffle_patches
from tcr.method import METHODS, SourceLikeQueue, build_adapter, build_optimizer, method_temperature
from common.tta import layernorm_parameters, softmax_entropy, train_only


class Toy:
    """A query encoder whose only LayerNorm is the trainable part, a fixed gallery and a fixed query set."""

    def __init__(self, seed: int = 0, n_gallery: int = 12, n_queries: int = 20):
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.encoder = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 4))
        self.gallery = F.normalize(torch.randn(n_gallery, 4, generator=generator), dim=1)
        self.queries = torch.randn(n_queries, 6, generator=generator)
        self.params, _ = layernorm_parameters(self.encoder)
        train_only(self.encoder, self.params)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.encoder(x), dim=-1)

    def adapter(self, method: str = "tcr", lr: float = 1e-2, **options):
        optimizer = build_optimizer(method, self.params, lr=lr, weight_decay=1e-4)
        return build_adapter(method, self.encode, self.gallery, self.params, optimizer, **options)


def batch_of(x: torch.Tensor, position: int, start: int = 0) -> QueryBatch:
    return QueryBatch(inputs=x, indices=torch.arange(start, start + len(x)), rank_sizes=[len(x)],
                      local_rows=range(len(x)), position=position)


def test_queue_keeps_the_smallest_indicators_up_to_capacity():
    queue = SourceLikeQueue(capacity=3)
    queries = torch.arange(8.0).reshape(4, 2)
    queue.push(torch.tensor([0.5, -1.0, 2.0, 0.25]), queries, -queries, torch.tensor([0.4, 0.3, 0.2, 0.1]), count=2)
    assert queue.indicators.tolist() == [-1.0, 0.25]
    assert queue.queries.tolist() == [[2.0, 3.0], [6.0, 7.0]]
    assert queue.entropies.tolist() == pytest.approx([0.3, 0.1])
    queue.push(torch.tensor([0.0, 3.0]), queries[:2], -queries[:2], torch.tensor([0.9, 0.8]), count=1)
    assert queue.indicators.tolist() == [-1.0, 0.0, 0.25]
    assert queue.queries.tolist() == [[2.0, 3.0], [0.0, 1.0], [6.0, 7.0]]
    assert queue.entropy_threshold().item() == pytest.approx(0.9)
    queue.push(torch.tensor([-5.0, -0.5]), queries[2:], -queries[2:], torch.tensor([0.05, 0.5]), count=2)
    assert queue.indicators.tolist() == [-5.0, -1.0, -0.5]
    assert queue.entropy_threshold().item() == pytest.approx(0.5)
    z, c = F.normalize(queue.queries, dim=1), F.normalize(queue.candidates, dim=1)
    assert queue.margin().item() == pytest.approx((z.mean(0) - c.mean(0)).norm().item())


def test_queue_updates_only_at_step_zero_of_the_first_batches():
    toy = Toy()
    tcr = toy.adapter("tcr", con_ratio=0.3, queue_size=8, queue_updates=2, steps=3)
    lengths = []
    for position in range(4):
        tcr.adapt(batch_of(toy.queries[5 * position:5 * position + 5] if position < 3 else toy.queries[:10], position))
        lengths.append(len(tcr.queue))
    # ⌊0.3·5⌋ = 1 pair per update, once per batch (step 0 only), for batches 0 and 1 only
    assert lengths == [1, 2, 2, 2]
    tcr = toy.adapter("tcr", con_ratio=0.3, queue_size=4, queue_updates=10, steps=2)
    lengths = []
    for position in range(3):
        tcr.adapt(batch_of(toy.queries[:10], position))
        lengths.append(len(tcr.queue))
    assert lengths == [3, 4, 4]
    assert torch.equal(tcr.queue.indicators, tcr.queue.indicators.sort().values)


def test_only_layernorm_parameters_change():
    toy = Toy()
    before = copy.deepcopy(toy.encoder.state_dict())
    for method in METHODS:
        if method == "deyo":
            continue
        adapter = toy.adapter(method, lr=1e-2, temperature=0.05)
        for position in range(2):
            scores = adapter.adapt(batch_of(toy.queries[:8], position))
            assert torch.isfinite(scores).all(), method
        after = toy.encoder.state_dict()
        assert torch.equal(after["0.weight"], before["0.weight"]) and torch.equal(after["2.bias"], before["2.bias"])
    assert not torch.equal(toy.encoder.state_dict()["1.weight"], before["1.weight"])


def test_tcr_with_zero_lr_scores_like_the_frozen_model():
    toy = Toy()
    tcr = toy.adapter("tcr", lr=0.0)
    scores = tcr.adapt(batch_of(toy.queries[:8], 0))
    with torch.no_grad():
        expected = toy.encode(toy.queries[:8]) @ toy.gallery.t()
    assert torch.equal(scores, expected)


def test_scores_come_from_the_forward_after_steps_minus_one_updates():
    toy = Toy()
    twin = copy.deepcopy(toy)
    scores = toy.adapter("tcr", steps=3).adapt(batch_of(toy.queries[:8], 0))
    twin.adapter("tcr", steps=2).adapt(batch_of(twin.queries[:8], 0))
    with torch.no_grad():
        expected = twin.encode(twin.queries[:8]) @ twin.gallery.t()
    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-6)
    with torch.no_grad():
        after_three = toy.encode(toy.queries[:8]) @ toy.gallery.t()
    assert not torch.allclose(after_three, scores, atol=1e-6)


def test_a_tcr_update_descends_the_joint_objective():
    toy = Toy(n_gallery=32, n_queries=16)
    tcr = toy.adapter("tcr", lr=1e-3, steps=1)
    batch = batch_of(toy.queries, 0)
    tcr.adapt(batch)
    before = tcr.averages()["loss_total"]
    assert len(tcr.queue) == int(0.3 * 16)
    frozen = batch_of(toy.queries, position=tcr.queue_updates)  # past the update window: the queue stays as is
    with torch.no_grad():
        query = toy.encode(toy.queries)
        after, logs = tcr.objective(query, query @ toy.gallery.t(), frozen, step=1)
    assert len(tcr.queue) == int(0.3 * 16)
    assert after.item() < before
    assert logs["loss_total"] == pytest.approx(logs["loss_REM"] + logs["loss_UNI"] + logs["loss_EMG"], abs=1e-6)
    assert set(tcr.averages()) == {"lr", "loss_total", "loss_REM", "loss_UNI", "loss_EMG"}


def test_baseline_temperature_comes_from_the_dataset_map():
    assert method_temperature("tcr", "coco", 0.02) == 0.02
    assert method_temperature("tent", "coco", 0.02) == 0.01
    assert method_temperature("sar", "fashion_gen_detail", 0.02) == 0.001
    assert method_temperature("read", "icfg_pedes", 0.02) == 1e-4
    assert method_temperature("shot", "somewhere_else", 0.5) == 0.01
    with pytest.raises(ValueError, match="valid methods: tcr, tent, eata, sar, read, shot, deyo"):
        method_temperature("nope", "coco", 0.02)


def test_tent_minimises_mean_entropy_of_the_full_gallery_prediction():
    toy = Toy()
    tent = toy.adapter("tent", temperature=0.1)
    batch = batch_of(toy.queries[:8], 0)
    with torch.no_grad():
        sims = toy.encode(toy.queries[:8]) @ toy.gallery.t()
    loss, logs = tent.objective(sims, sims, batch, 0)
    assert loss.item() == pytest.approx(softmax_entropy(sims / 0.1).mean().item())


def test_read_objective_by_hand():
    toy = Toy()
    read = toy.adapter("read", temperature=1.0)
    sims = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])  # p = (.75, .25) and (.5, .5)
    loss, _ = read.objective(None, sims, batch_of(torch.zeros(2, 6), 0), 0)
    p_sum = torch.tensor([1.25, 0.75])
    balance = softmax_entropy(p_sum).item()
    robust = -(0.75 * math.log(0.75) + 0.5 * math.log(0.5)) / 2
    assert loss.item() == pytest.approx(robust - balance, abs=1e-6)


def test_shot_adds_cross_entropy_only_above_the_confidence_threshold():
    toy = Toy()
    shot = toy.adapter("shot", temperature=1.0)
    batch = batch_of(torch.zeros(2, 6), 0)
    sims = torch.tensor([[5.0, 0.0, 0.0], [0.3, 0.0, 0.0]])  # max p ≈ .987 and ≈ .40
    probs = sims.softmax(1)
    mean_probs = probs.mean(0)
    info_max = softmax_entropy(sims).mean() + (mean_probs * torch.log(mean_probs + 1e-5)).sum()
    ce = F.cross_entropy(sims[:1], torch.tensor([0]))
    loss, _ = shot.objective(None, sims, batch, 0)
    assert loss.item() == pytest.approx((info_max + 0.1 * ce).item(), abs=1e-6)
    shot.threshold = 0.999
    loss, _ = shot.objective(None, sims, batch, 0)
    assert loss.item() == pytest.approx(info_max.item(), abs=1e-6)


def test_sar_keeps_the_low_ema_across_a_reset_as_the_original():
    sar = Toy().adapter("sar")
    decisions, emas = [], []
    for second_loss in (0.1, 0.5, 0.5, 0.5, 0.0):
        decisions.append(sar.record(second_loss))
        emas.append(sar.ema)
    # 0.1 → reset; 0.9·0.1 + 0.1·0.5 = 0.14 → reset; 0.176 → reset; 0.2084 → no; 0.9·0.2084 = 0.18756 → reset
    assert decisions == [True, True, True, False, True]
    assert emas == pytest.approx([0.1, 0.14, 0.176, 0.2084, 0.18756])


def test_sar_resets_to_the_initial_weights_when_the_ema_is_low():
    toy = Toy()
    initial = [p.detach().clone() for p in toy.params]
    sar = toy.adapter("sar", temperature=0.05, reset_constant=1e9)
    sar.adapt(batch_of(toy.queries[:8], 0))
    assert sar.resets == 3 and sar.ema is not None
    assert all(torch.equal(p, q) for p, q in zip(toy.params, initial))
    sar = toy.adapter("sar", temperature=0.05, reset_constant=0.0)
    sar.adapt(batch_of(toy.queries[:8], 0))
    assert sar.resets == 0 and sar.ema is not None
    assert not all(torch.equal(p, q) for p, q in zip(toy.params, initial))


def empty_second_selection(temperature: float = 0.05):
    """A toy and a batch whose SAR step keeps no query in the second SAM pass (B = 2 keeps k = 1 query; the SAM
    ascent raises its entropy above the threshold, checked here), and that step's ascent ρ·g/‖g‖ (ρ = 0.05)."""
    toy = Toy()
    batch = batch_of(toy.queries[:2], 0)

    def entropy() -> torch.Tensor:
        return softmax_entropy(toy.encode(batch.inputs) @ toy.gallery.t() / temperature)

    first = entropy()
    kept = first <= first.min()
    grads = torch.autograd.grad(first[kept].mean(), toy.params)
    norm = torch.stack([grad.norm() for grad in grads]).norm()
    ascent = [0.05 * grad / (norm + 1e-12) for grad in grads]
    start = [param.detach().clone() for param in toy.params]
    with torch.no_grad():
        for param, step in zip(toy.params, ascent):
            param.add_(step)
        assert not bool((entropy()[kept] < first[kept]).any())
        for param, value in zip(toy.params, start):
            param.copy_(value)
    return toy, batch, ascent


def test_sar_enters_a_zero_loss_into_the_ema_when_the_second_selection_is_empty():
    """The TCR code sets the second-pass loss of such a step to 0.0 and folds it into the EMA (momentum 0.9)."""
    toy, batch, _ = empty_second_selection()
    sar = toy.adapter("sar", temperature=0.05, reset_constant=0.0)
    sar.ema = 0.5
    sar.update(batch, 0)
    assert sar.ema == pytest.approx(0.9 * 0.5 + 0.1 * 0.0) and sar.resets == 0
    assert math.isfinite(sar.averages()["loss_total"])
    toy, batch, _ = empty_second_selection()
    initial = [p.detach().clone() for p in toy.params]
    sar = toy.adapter("sar", temperature=0.05)  # no EMA yet: it becomes 0.0 < 0.2, so the model is reset
    sar.update(batch, 0)
    assert sar.ema == 0.0 and sar.resets == 1
    assert all(torch.equal(p, q) for p, q in zip(toy.params, initial))


def test_sar_weights_stay_at_the_sam_ascent_point_when_the_second_selection_is_empty():
    """What the TCR code does under torch 2: there is no second backward; ``first_step(zero_grad=True)`` left every
    gradient None (``zero_grad`` sets them to None since torch 2.0); the SAM ``second_step`` (davda54/sam, as SAR's
    ``sam.py``) moves back only parameters that have a gradient, and AdamW skips parameters without one. So the
    weights end the step at w + ρ·g/‖g‖ (ρ = 0.05, g the first pass's gradient) and AdamW keeps no state."""
    toy, batch, ascent = empty_second_selection()
    before = [p.detach().clone() for p in toy.params]
    sar = toy.adapter("sar", temperature=0.05, reset_constant=0.0)
    sar.update(batch, 0)
    for param, start, step in zip(toy.params, before, ascent):
        torch.testing.assert_close(param.detach(), start + step)
        assert param.grad is None
    assert not sar.optimizer.base_optimizer.state


def test_eata_skips_the_update_when_no_query_is_confident():
    toy = Toy()
    before = [p.detach().clone() for p in toy.params]
    eata = toy.adapter("eata", temperature=100.0)  # nearly uniform predictions: entropy ≈ ln N > 0.4 ln N
    eata.adapt(batch_of(toy.queries[:8], 0))
    assert all(torch.equal(p, q) for p, q in zip(toy.params, before))
    assert eata.averages()["selected"] == 0.0


def test_eata_filters_by_entropy_then_redundancy_and_weights_by_hand():
    eata = Toy(n_gallery=4).adapter("eata", temperature=1.0)
    margin = 0.4 * math.log(4)
    assert eata.e_margin == pytest.approx(margin)

    def entropy(row):
        probs = torch.tensor(row).softmax(0)
        return -(probs * probs.log()).sum().item(), probs

    first = [[6.0, 0.0, 0.0, 0.0], [0.5, 0.4, 0.3, 0.2], [0.0, 0.0, 5.0, 0.0]]  # queries 0 and 2 are confident
    (h0, p0), (h1, _), (h2, p2) = (entropy(row) for row in first)
    assert h0 < margin < h1 and h2 < margin
    loss, logs = eata.objective(None, torch.tensor(first, requires_grad=True), batch_of(torch.zeros(3, 6), 0), 0)
    expected = (h0 / math.exp(h0 - margin) + h2 / math.exp(h2 - margin)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5) and logs["selected"] == 2.0
    torch.testing.assert_close(eata.mean_probs, (p0 + p2) / 2)

    # the mean prediction sits on classes 0 and 2: class-3 and class-1 queries are new (|cos| < 0.05), a class-0
    # one is redundant
    second = [[0.0, 0.0, 0.0, 8.0], [7.0, 0.0, 0.0, 0.0], [0.0, 9.0, 0.0, 0.0]]
    mean = eata.mean_probs.clone()
    (ha, pa), (hb, pb), (hc, pc) = (entropy(row) for row in second)
    cos = [F.cosine_similarity(mean, probs, dim=0).item() for probs in (pa, pb, pc)]
    novel = [abs(value) < 0.05 for value in cos]
    assert novel == [True, False, True]
    loss, logs = eata.objective(None, torch.tensor(second, requires_grad=True), batch_of(torch.zeros(3, 6), 1), 0)
    expected = (ha / math.exp(ha - margin) + hc / math.exp(hc - margin)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-5) and logs["selected"] == 2.0
    torch.testing.assert_close(eata.mean_probs, 0.9 * mean + 0.1 * (pa + pc) / 2)


def test_patch_shuffle_moves_whole_tiles():
    image = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(2, 3, 1, 1)
    identity = torch.arange(16).repeat(2, 1)
    assert torch.equal(shuffle_patches(image, identity, patch_len=4), image)
    reverse = identity.flip(1)
    assert torch.equal(shuffle_patches(image, reverse, patch_len=4), image.flip(2).flip(3))
    big = torch.randn(1, 3, 8, 12)
    order = torch.randperm(4).unsqueeze(0)
    shuffled = shuffle_patches(big, order, patch_len=2)
    tiles = [big[..., r * 4:(r + 1) * 4, c * 6:(c + 1) * 6] for r in range(2) for c in range(2)]
    assert torch.equal(shuffled[..., :4, :6], tiles[order[0, 0]])
    assert torch.equal(shuffled[..., 4:, 6:], tiles[order[0, 3]])


def test_deyo_needs_image_queries_and_adapts_images():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 8), nn.LayerNorm(8), nn.Linear(8, 4))
    params, _ = layernorm_parameters(encoder)
    train_only(encoder, params)
    gallery = F.normalize(torch.randn(6, 4), dim=1)
    optimizer = build_optimizer("deyo", params, lr=1e-2, weight_decay=1e-4)
    with pytest.raises(ValueError, match="--retrieval i2t"):
        build_adapter("deyo", encoder, gallery, params, optimizer, direction="t2i")
    deyo = build_adapter("deyo", lambda x: F.normalize(encoder(x), dim=-1), gallery, params, optimizer,
                         temperature=0.01, direction="i2t", plpd_threshold=-1.0)
    before = [p.detach().clone() for p in params]
    deyo.adapt(batch_of(torch.randn(5, 3, 8, 8), 0))
    assert not all(torch.equal(p, q) for p, q in zip(params, before))


def test_deyo_plpd_filter_and_weighted_loss_by_hand():
    """2×2 one-channel images with a 2×2 patch grid: the shuffle permutes the 4 pixels, so the shuffled images
    are the pixels gathered by the batch's tile orders."""
    weight = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, -0.5], [0.3, -0.2, 1.0], [-1.0, 0.4, 0.2]])
    scale = nn.Parameter(torch.ones(3))
    encode = lambda x: F.normalize(x.flatten(1) @ weight * scale, dim=-1)  # noqa: E731
    gallery = F.normalize(torch.tensor([[1.0, 0.2, 0.0], [0.0, 1.0, 0.3], [0.2, 0.0, 1.0]]), dim=1)
    images = torch.tensor([[3.0, 0.1, 0.2, 0.0], [0.1, 2.0, 0.0, 0.3], [0.2, 0.3, 3.0, 0.1],
                           [0.5, 0.4, 0.6, 0.5]]).reshape(4, 1, 2, 2)
    tau, n = 0.1, 3
    optimizer = build_optimizer("deyo", [scale], lr=1e-2, weight_decay=0.0)
    for threshold in (-1.0, 0.2):
        deyo = build_adapter("deyo", encode, gallery, [scale], optimizer, temperature=tau, direction="i2t",
                             patch_len=2, plpd_threshold=threshold, seed=3)
        batch = batch_of(images, 0)
        orders = deyo.patch_orders(batch, 0)
        shuffled = images.flatten(1).gather(1, orders).reshape(4, 1, 2, 2)
        with torch.no_grad():
            probs = (encode(images) @ gallery.t() / tau).softmax(1)
            shuffled_probs = (encode(shuffled) @ gallery.t() / tau).softmax(1)
        entropy = -(probs * probs.log()).sum(1)
        label = probs.argmax(1)
        plpd = probs[range(4), label] - shuffled_probs[range(4), label]
        keep = (entropy < 0.5 * math.log(n)) & (plpd > threshold)
        weights = torch.exp(-(entropy - 0.4 * math.log(n))) + torch.exp(plpd)
        expected = (entropy * weights)[keep].mean()

        query = encode(images)
        loss, logs = deyo.objective(query, query @ gallery.t(), batch, 0)
        assert logs["selected"] == float(keep.sum())
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
        if threshold == -1.0:
            assert 0 < keep.sum() < 4  # the entropy filter alone drops a query
            first_keep = int(keep.sum())
        else:
            assert keep.sum() < first_keep  # the PLPD filter drops more
