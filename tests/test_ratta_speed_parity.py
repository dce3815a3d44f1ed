"""RA-TTA's pruned description ranking (``top_descriptions``) against scoring every description: the same ids in
the same order, across chunkings, quantiles, view counts and banks with and without class structure; and the
batched path against the per-sample loop on a bank large enough to prune."""
import pytest
import torch
import torch.nn.functional as F

from ratta.core import RattaConfig, TextBanks, adapt_batch, description_scores, top_descriptions
from ratta.loop import adapt_sample, class_blocks
from ratta.retrieval import VectorIndex


def views_and_bank(views: int, rows: int, structured: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit views Z [6, views, 32] and bank E [rows, 32]; ``structured``: rows and views around 10 class directions
    (a few descriptions stand out, as with CLIP), else isotropic (many near-equal scores)."""
    g = torch.Generator().manual_seed(seed)
    if not structured:
        Z = F.normalize(torch.randn(6, views, 32, generator=g), dim=2)
        return Z, F.normalize(torch.randn(rows, 32, generator=g), dim=1)
    mu = F.normalize(torch.randn(10, 32, generator=g), dim=1)
    E = F.normalize(mu[torch.arange(rows) % 10] + 0.5 * torch.randn(rows, 32, generator=g), dim=1)
    x = mu[torch.randint(0, 10, (6,), generator=g)]
    return F.normalize(x[:, None] + 0.4 * torch.randn(6, views, 32, generator=g), dim=2), E


@pytest.mark.parametrize("structured", [True, False])
@pytest.mark.parametrize("q", [0.5, 0.75, 0.9])
@pytest.mark.parametrize("views", [11, 101, 300])
@pytest.mark.parametrize("chunk_elements", [1, 1 << 24])
def test_top_descriptions_equal_full_ranking(structured, q, views, chunk_elements):
    Z, E = views_and_bank(views, 700, structured)
    expected = description_scores(Z, E, q).topk(20, dim=1).indices
    assert torch.equal(top_descriptions(Z, E, q, 20, chunk_elements=chunk_elements), expected)


@pytest.mark.parametrize("guesses", [20, 21, 200])
def test_top_descriptions_any_number_of_guesses(guesses):
    Z, E = views_and_bank(101, 500, True, seed=1)
    expected = description_scores(Z, E, 0.75).topk(20, dim=1).indices
    assert torch.equal(top_descriptions(Z, E, 0.75, 20, guesses=guesses), expected)


def test_small_bank_scores_every_description():
    Z, E = views_and_bank(9, 30, True, seed=2)
    assert torch.equal(top_descriptions(Z, E, 0.75, 5), description_scores(Z, E, 0.75).topk(5, dim=1).indices)


def test_batched_equals_loop_on_a_bank_large_enough_to_prune():
    """End to end at F = 240 > 4 K_D (the golden fixture's bank is too small to take the pruned path)."""
    g = torch.Generator().manual_seed(3)
    C, n, D = 8, 30, 32
    mu = F.normalize(torch.randn(C, D, generator=g), dim=1)
    name = torch.arange(C).repeat_interleave(n)
    E = F.normalize(mu[name] + 0.6 * torch.randn(C * n, D, generator=g), dim=1)
    banks = TextBanks(F.normalize(mu + 0.2 * torch.randn(C, D, generator=g), dim=1).T.contiguous(), E, name)
    db = F.normalize(mu[torch.randint(0, C, (400,), generator=g)] + 0.5 * torch.randn(400, D, generator=g), dim=1)
    x = F.normalize(mu[torch.randint(0, C, (5,), generator=g)] + 0.3 * torch.randn(5, D, generator=g), dim=1)
    views = F.normalize(x[:, None] + 0.3 * torch.randn(5, 12, D, generator=g), dim=2)
    index, scale, cfg = VectorIndex(db, "torch"), torch.tensor(100.0), RattaConfig()
    batched = adapt_batch(x, views, banks, index, db, scale, cfg)
    assert E.shape[0] > 4 * cfg.top_k_d and int(batched.num_sets.sum()) > 0
    blocks = class_blocks(name)
    for i in range(5):
        loop = adapt_sample(x[i:i + 1], views[i], banks, blocks, index, db, scale, cfg)
        assert torch.equal(batched.topk_ids[i], loop["topk_ids"])
        torch.testing.assert_close(batched.p[i], loop["p"], atol=1e-6, rtol=0)
