"""Candidate Re-ranking in the search demo: stage 1 and stage 2 over HTTP give validate.py's and
validate_stage2.py's rankings (tiny BLIP, synthetic CIRR), and the stage-2 choice is offered only with a stage-2
checkpoint."""
import json
import threading
import urllib.request

import pytest
import torch

from common.blip.config import ViTConfig
from common.blip.vit import VisionTransformer
from common.blip.tiny import write_tiny_blip_files
from search_demo import build_server, parse_args
from common.synthetic.scenes import vocabulary
from common.synthetic.writers import write_cirr
from reranking_cir import validate, validate_stage2
from reranking_cir.data import build_query_sets, gallery_tokens_for_stage2
from reranking_cir.models import STAGE_KEYS, build_models
from reranking_cir.rerank import rerank_topk
from reranking_cir.stage1_ranking import stage1_ranking, stage1_scores, stage1_topk
from reranking_cir.stage2_reranking import rerank

VIT = ViTConfig(patch_size=8, width=32, depth=1, heads=2)
TOP_K, DEPTH = 5, 8


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict:
    """Synthetic CIRR, a tiny BLIP and a stage-2 checkpoint made from it (random ``cls_head``)."""
    root = tmp_path_factory.mktemp("search_reranking")
    write_cirr(root / "data", {"train": 2, "val": 3, "test1": 9}, 3, seed=0)
    blip = write_tiny_blip_files(root / "weights", VIT, extra_words=vocabulary())
    flags = ["--dataset", "CIRR", "--data-root", str(root / "data"), *blip.flags(), "--num-workers", "0",
             "--device", "cpu"]
    torch.manual_seed(0)
    models = build_models(validate.build_parser().parse_args(flags), torch.device("cpu"), stage2=True)
    stage2_file, own_vit_file = root / "stage2.pt", root / "stage2_own_vit.pt"
    torch.save({"epoch": 0, STAGE_KEYS[2]: models.stage2.state_dict()}, stage2_file)
    state = {key: value + 0.05 * torch.randn_like(value) if key.startswith("visual_encoder.") else value
             for key, value in models.stage2.state_dict().items()}
    torch.save({"epoch": 0, STAGE_KEYS[2]: state}, own_vit_file)
    return {"root": root, "flags": flags, "stage2": stage2_file, "stage2_own_vit": own_vit_file}


def serve(argv: list[str]):
    server = build_server(parse_args(["--paper", "reranking_cir", "--port", "0", *argv]))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def search(server, reference: int, caption: str, stage: str) -> list[str]:
    body = json.dumps({"reference": reference, "caption": caption, "stage": stage}).encode()
    req = urllib.request.Request(server.url + "api/search", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as answer:
        return [result["name"] for result in json.load(answer)["results"]]


@pytest.mark.parametrize("stage2", ["stage2", "stage2_own_vit"])
def test_both_stages_equal_the_validation_scripts(tiny, stage2):
    """Stage 1 and stage 2 as validate.py and validate_stage2.py rank, also when stage 2's ViT differs from stage
    1's (its own gallery tokens then serve the candidates and the references of ``z_t``)."""
    server = serve([*tiny["flags"], "--stage2-path", str(tiny[stage2]), "--k", str(DEPTH), "--top-k", str(TOP_K),
                    "--cache-dir", str(tiny["root"] / "cache")])
    try:
        assert server.engine.model.stages == ("stage1", "stage2")
        assert server.engine.model.gallery.shape[1] == (2 if stage2 == "stage2_own_vit" else 1)
        args = validate_stage2.build_parser().parse_args([*tiny["flags"], "--stage1-path", "unused",
                                                          "--stage2-path", str(tiny[stage2]),
                                                          "--top-k-path", "unused", "--k", str(DEPTH)])
        device = torch.device("cpu")
        models = build_models(args, device, None, stage2=True, stage2_path=tiny[stage2])
        (query_set,) = build_query_sets(args, "cirr", "val", models.stage1.visual_encoder, device)
        scores = stage1_scores(models, query_set, args)
        order, _ = stage1_ranking(query_set, scores)
        topk = stage1_topk(query_set, scores, "val", DEPTH)
        candidates = gallery_tokens_for_stage2(models, query_set, "cirr", "val", args, device)
        assert (candidates is None) == (stage2 == "stage2")
        result = rerank(models, query_set, topk, DEPTH, args, candidates)
        reranked = rerank_topk(topk.index_rows(DEPTH), result.scores)
        names = query_set.gallery_names
        ids = {image.name: i for i, image in enumerate(server.engine.model.images)}
        assert not torch.equal(reranked[:, :TOP_K], order[:, :TOP_K])  # stage 2 changes some rankings
        for i, caption in enumerate(query_set.captions):
            reference = ids[names[query_set.reference_idx[i]]]
            assert search(server, reference, caption, "stage1") == [names[j] for j in order[i, :TOP_K]]
            assert search(server, reference, caption, "stage2") == [names[j] for j in reranked[i, :TOP_K]]
    finally:
        server.shutdown()
        server.server_close()


def test_stage1_only_without_a_stage2_checkpoint_and_cached_tokens(tiny, tmp_path, monkeypatch):
    """Without --stage2-path the page offers stage 1 only; a second start reads the gallery tokens from --cache-dir
    (no image through the ViT)."""
    encoded = []
    forward = VisionTransformer.forward
    monkeypatch.setattr(VisionTransformer, "forward", lambda self, images, *args, **kwargs: encoded.append(
        len(images)) or forward(self, images, *args, **kwargs))
    for expected in (18, 0):
        encoded.clear()
        server = serve([*tiny["flags"], "--cache-dir", str(tmp_path / "cache")])
        try:
            assert server.engine.model.stages == ("stage1",) and sum(encoded) == expected
            with urllib.request.urlopen(server.url + "api/info", timeout=30) as answer:
                assert json.load(answer)["stages"] == ["stage1"]
        finally:
            server.shutdown()
            server.server_close()
