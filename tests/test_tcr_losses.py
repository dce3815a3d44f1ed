"""TCR's loss terms: parity with the original code (golden file) and hand-built cases."""
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tcr.losses import (candidate_logits, loss_emg, loss_rem, loss_uni, modality_gap, refined_entropy,
                        select_candidates, source_like_indicator)
from tcr.method import SourceLikeQueue
from common.tta import softmax_entropy

GOLDEN = Path(__file__).parent / "fixtures" / "golden" / "losses" / "tcr.pt"


def test_golden_two_batches_match_original_code():
    golden = torch.load(GOLDEN)
    settings, outputs = golden["settings"], golden["outputs"]
    query, gallery = golden["inputs"]["query_features"], golden["inputs"]["gallery_features"]
    queue = SourceLikeQueue(settings["max_queue_size"])
    count = int(settings["con_ratio"] * len(query))
    for batch in ("b0", "b1"):
        z = query.clone().requires_grad_(True)
        nn_idx, candidates = select_candidates(z @ gallery.t(), gallery)
        entropy = refined_entropy(z, candidates, settings["temperature"])
        queue.push(source_like_indicator(z, candidates), z, candidates, entropy, count)
        rem = loss_rem(entropy, queue.entropy_threshold())
        uni = loss_uni(z, settings["uniformity_t"])
        emg = loss_emg(z, candidates, queue.margin())
        (rem + uni + emg).backward()

        assert torch.equal(nn_idx, outputs[f"{batch}_nn_idx"])
        torch.testing.assert_close(queue.indicators, outputs[f"{batch}_queue_indicators"], rtol=0, atol=1e-6)
        torch.testing.assert_close(queue.entropies, outputs[f"{batch}_queue_entropies"], rtol=0, atol=1e-7)
        torch.testing.assert_close(queue.margin(), outputs[f"{batch}_margin"], rtol=0, atol=1e-6)
        torch.testing.assert_close(rem, outputs[f"{batch}_loss_rem"], rtol=0, atol=1e-7)
        torch.testing.assert_close(uni, outputs[f"{batch}_loss_uni"], rtol=0, atol=1e-6)
        torch.testing.assert_close(emg, outputs[f"{batch}_loss_emg"], rtol=0, atol=1e-6)
        torch.testing.assert_close(z.grad, outputs[f"{batch}_grad"], rtol=0, atol=1e-5)
    assert len(queue) == settings["max_queue_size"]


def test_softmax_entropy_of_uniform_and_peaked_logits():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(softmax_entropy(logits), torch.tensor([math.log(4), 0.0]), atol=1e-6, rtol=0)


def test_candidates_are_argmax_neighbours_and_prediction_is_batch_wide():
    gallery = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.6, 0.8], [0.8, -0.6]])
    query = F.normalize(torch.tensor([[0.5, 1.0], [1.0, -0.9]]), dim=1)
    nn_idx, candidates = select_candidates(query @ gallery.t(), gallery)
    assert nn_idx.tolist() == [3, 4]
    assert torch.equal(candidates, gallery[[3, 4]])

    logits = candidate_logits(query, candidates, temperature=0.5)
    assert logits.shape == (2, 2)
    sim = [[float(q @ c) for c in candidates] for q in query]
    for i in range(2):
        e = [math.exp(s / 0.5) for s in sim[i]]
        p = [v / sum(e) for v in e]
        expected = -sum(v * math.log(v) for v in p)
        assert refined_entropy(query, candidates, 0.5)[i].item() == pytest.approx(expected, abs=1e-6)


def test_source_like_indicator_by_hand():
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    # z̄ = (.5, .5), c̄ = (1, 0); pair distances 0 and √2; spreads √.5 each and 0 each.
    expected = torch.tensor([2 * 0 - math.sqrt(0.5) - 0, 2 * math.sqrt(2) - math.sqrt(0.5) - 0])
    torch.testing.assert_close(source_like_indicator(query, candidates), expected)


def test_uniformity_equals_mean_exp_of_centroid_distances():
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # centroid (0, 1/3): distances √10/3, 2/3, √10/3
    expected = (2 * math.exp(-0.1 * math.sqrt(10) / 3) + math.exp(-0.1 * 2 / 3)) / 3
    assert loss_uni(query, t=0.1).item() == pytest.approx(expected, abs=1e-7)
    assert loss_uni(query, t=1.0).item() == pytest.approx(
        (2 * math.exp(-math.sqrt(10) / 3) + math.exp(-2 / 3)) / 3, abs=1e-7)


def test_gap_loss_is_zero_at_the_target_gap_and_squared_otherwise():
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    candidates = torch.tensor([[0.0, 1.0], [0.0, -1.0]])
    # centroids (.5, .5) and (0, 0): gap √.5
    assert modality_gap(query, candidates).item() == pytest.approx(math.sqrt(0.5))
    assert loss_emg(query, candidates, modality_gap(query, candidates)).item() == 0.0
    assert loss_emg(query, candidates, 0.2).item() == pytest.approx((math.sqrt(0.5) - 0.2) ** 2, abs=1e-7)


def test_rem_keeps_low_entropy_queries_with_clipped_weights():
    entropy = torch.tensor([0.1, 0.5, 0.9], requires_grad=True)
    threshold = torch.tensor(0.5)
    loss = loss_rem(entropy, threshold)
    weights = [1 - 0.1 / 0.501, 1 - 0.5 / 0.501]
    assert all(0 <= w <= 1 for w in weights)
    assert loss.item() == pytest.approx((weights[0] * 0.1 + weights[1] * 0.5) / 2, abs=1e-7)
    loss.backward()
    # the weights are detached, so dL/dH_i = w_i / |K|, and the excluded query gets no gradient
    torch.testing.assert_close(entropy.grad, torch.tensor([weights[0] / 2, weights[1] / 2, 0.0]))


def test_rem_with_no_kept_query_is_zero_with_zero_gradient():
    entropy = torch.tensor([0.7, 0.9], requires_grad=True)
    loss = loss_rem(entropy, torch.tensor(0.5))
    loss.backward()
    assert loss.item() == 0.0
    assert torch.equal(entropy.grad, torch.zeros(2))
