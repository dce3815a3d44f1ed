"""Stage-2 pair batches formed by caption length: the same scores and rankings as image-major batches, each score
scattered back to its own (query, candidate), and little padding."""
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

from common.blip import CirStage2
from common.blip.tiny import tiny_med_config, tiny_vit_config
from reranking_cir.rerank import rerank_order
from reranking_cir.scoring import Queries, length_batches, stage2_scores

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real_annotations"
LENGTHS = [3, 60, 4, 41, 7, 25, 3, 52, 12, 5, 33, 9]


def _queries(lengths, width):
    return Queries([torch.randint(5, 58, (n,)) for n in lengths], z_t=[torch.randn(n, width) for n in lengths])


def _random_stage2(seed=0):
    torch.manual_seed(seed)
    model = CirStage2(tiny_vit_config(), tiny_med_config(60, 32, num_layers=2, max_positions=64), 32,
                      enc_token_id=59, merge_start_layer=1)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model.eval()


class PairIdentity(nn.Module):
    """A stand-in stage 2 whose score names its pair exactly: 1000 x query id + gallery row; records batch shapes."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.shapes: list[tuple[int, int]] = []

    def candidate_kv(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens

    def score_pairs(self, z_t, input_ids, attention_mask, kv, rows):
        self.shapes.append(tuple(input_ids.shape))
        assert torch.equal(rows, rows.sort().values), "pairs of one image must be consecutive"
        return 1000 * z_t[:, 0, 0] + kv[rows]


def _identity_inputs(n_gallery=11, k=6, seed=0):
    torch.manual_seed(seed)
    queries = Queries([torch.randint(5, 58, (n,)) for n in LENGTHS],
                      z_t=[torch.full((n, 1), float(q)) for q, n in enumerate(LENGTHS)])
    candidates = torch.stack([torch.randperm(n_gallery)[:k] for _ in LENGTHS])
    return queries, candidates, torch.arange(n_gallery, dtype=torch.float32)


def test_length_batches_cover_every_pair_once_in_length_ranges():
    torch.manual_seed(0)
    lengths, images = torch.randint(3, 70, (200,)), torch.randint(0, 9, (200,))
    batches = length_batches(lengths, images, 32)
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(200))
    assert all(len(b) <= 32 for b in batches)
    assert all(torch.equal(images[b], images[b].sort().values) for b in batches)
    assert all(lengths[a].max() <= lengths[b].min() for a, b in zip(batches, batches[1:]))
    image_major = length_batches(lengths, images, 32, by_length=False)
    assert torch.equal(images[torch.cat(image_major)], images.sort().values)


def test_scores_scatter_back_to_their_pairs():
    queries, candidates, gallery = _identity_inputs()
    candidates[2, 5] = candidates[2, 1]  # a repeated candidate, scored once
    expected = 1000 * torch.arange(len(LENGTHS)).unsqueeze(1).float() + candidates.float()
    for by_length in (True, False):
        scores = stage2_scores(PairIdentity(), queries, candidates, lambda rows: gallery[rows], pair_batch=5,
                               image_chunk=4, by_length=by_length)
        assert torch.equal(scores, expected)


def test_permuted_queries_and_candidates_permute_the_scores():
    model = _random_stage2()
    torch.manual_seed(1)
    tokens = model.image_embeds(torch.randn(11, 3, 32, 32)).detach()
    queries = _queries(LENGTHS, 32)
    candidates = torch.stack([torch.randperm(11)[:6] for _ in LENGTHS])
    scores = stage2_scores(model, queries, candidates, lambda rows: tokens[rows], pair_batch=7, image_chunk=3)
    perm, columns = torch.randperm(len(LENGTHS)), torch.randperm(candidates.shape[1])
    permuted = Queries([queries.input_ids[i] for i in perm], z_t=[queries.z_t[i] for i in perm])
    shuffled = stage2_scores(model, permuted, candidates[perm][:, columns], lambda rows: tokens[rows],
                             pair_batch=7, image_chunk=3)
    torch.testing.assert_close(shuffled, scores[perm][:, columns], atol=1e-6, rtol=0)


def test_batches_pad_only_to_their_own_lengths():
    queries, candidates, gallery = _identity_inputs(n_gallery=6, k=6)  # every query has every image
    model = PairIdentity()
    stage2_scores(model, queries, candidates, lambda rows: gallery[rows], pair_batch=6, image_chunk=6)
    padded = sum(rows * width for rows, width in model.shapes)
    assert padded == 6 * sum(LENGTHS)  # six pairs of each query: one batch each, no padding at all
    unbucketed = PairIdentity()
    stage2_scores(unbucketed, queries, candidates, lambda rows: gallery[rows], pair_batch=6, image_chunk=6,
                  by_length=False)
    assert sum(rows * width for rows, width in unbucketed.shapes) > 2 * padded


def test_bucketed_scores_and_rankings_equal_image_major_batches():
    model = _random_stage2()
    torch.manual_seed(3)
    tokens = model.image_embeds(torch.randn(10, 3, 32, 32)).detach()
    queries = _queries(LENGTHS, 32)
    candidates = torch.stack([torch.randperm(10)[:8] for _ in LENGTHS])
    kwargs = dict(pair_batch=9, image_chunk=4)
    bucketed = stage2_scores(model, queries, candidates, lambda rows: tokens[rows], **kwargs)
    image_major = stage2_scores(model, queries, candidates, lambda rows: tokens[rows], by_length=False, **kwargs)
    per_query = stage2_scores(model, queries, candidates, lambda rows: tokens[rows], kv_reuse=False)
    # padded positions are masked out exactly (exp(-10000) is 0 in fp32), but a batch's width and row count can
    # change the reduction order of the matmuls, so equality is asserted to float rounding
    torch.testing.assert_close(bucketed, image_major, atol=1e-6, rtol=0)
    torch.testing.assert_close(bucketed, per_query, atol=1e-5, rtol=0)
    assert torch.equal(rerank_order(bucketed), rerank_order(image_major))
    assert bucketed.std() > 1e-3  # the check is not vacuous


def _bench_module():
    spec = importlib.util.spec_from_file_location("reranking_cir_bench", ROOT / "bench" / "reranking_cir_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_times_real_caption_lengths_and_skips_absent_files(tmp_path):
    bench = _bench_module()
    small = ["--sizes", "tiny", "--queries", "4", "--reference-queries", "1", "--gallery", "4", "--k", "4",
             "--rounds", "1", "--warmup", "0", "--threads", str(torch.get_num_threads())]
    result = bench.main(small + ["--captions", "fixed", "cirr", "--annotations", str(tmp_path / "absent"),
                                 "--json", str(tmp_path / "absent.json")])
    assert [case["captions"] for case in result["cases"]] == ["fixed"]
    if not (REAL / "cirr").is_dir():
        pytest.skip(f"no real annotations in {REAL}")
    result = bench.main(small + ["--captions", "cirr", "--annotations", str(REAL), "--json", str(tmp_path / "r.json")])
    case = result["cases"][0]
    assert set(case["paths"]) == {"original", "ours", "unbucketed"} and "unbucketed/ours" in case["ratios"]
    assert case["max_abs_unbucketed_diff"] < 1e-5 and case["length_max"] > case["length_mean"] > 4
    tokens = case["val_tokens_per_pair"]
    assert tokens["unpadded"] <= tokens["ours"] <= tokens["unbucketed"]
