"""Parity with the original salesforce/BLIP and Candidate-Reranking-CIR code on tiny random weights.

The fixtures in ``tests/fixtures/golden/blip_tiny`` were produced by the original implementations (see its README);
our modules load the same checkpoints and must reproduce every stored output.
"""
from pathlib import Path

import pytest
import torch

from common.blip import (
    BlipImageEncoder,
    BlipItc,
    BlipRetrieval,
    BlipTextEncoder,
    CirStage1,
    CirStage2,
    MedConfig,
    build_blip_tokenizer,
    load_blip_checkpoint,
    remap_twin,
    tokenize,
    with_first_token,
)
from common.blip.tiny import tiny_vit_config
from common.io import read_json

GOLDEN = Path(__file__).parent / "fixtures" / "golden" / "blip_tiny"
ATOL = 1e-5


def assert_matches(actual: torch.Tensor, expected: torch.Tensor, atol: float = ATOL) -> None:
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, atol=atol, rtol=0)


@pytest.fixture(scope="module")
def golden():
    meta = read_json(GOLDEN / "meta.json")
    inputs = torch.load(GOLDEN / "inputs.pt", weights_only=True)
    outputs = torch.load(GOLDEN / "outputs.pt", weights_only=True)
    tokenizer = build_blip_tokenizer(GOLDEN / "vocab.txt")
    med = MedConfig.from_json(GOLDEN / "med_config.json")
    vit = tiny_vit_config(width=meta["vit_width"], depth=meta["vit_depth"], heads=meta["vit_heads"],
                          patch_size=meta["patch_size"])
    return meta, inputs, outputs, tokenizer, med, vit


@pytest.fixture(scope="module")
def retrieval(golden):
    meta, _, _, tokenizer, med, vit = golden
    model = BlipRetrieval(vit, med, meta["image_size"], embed_dim=meta["embed_dim"], queue_size=meta["queue_size"],
                          enc_token_id=tokenizer.enc_token_id).eval()
    report = load_blip_checkpoint(model, GOLDEN / "blip_tiny.pth")
    return model, report


def test_tokenizer_matches_upstream(golden):
    _, inputs, outputs, tokenizer, med, _ = golden
    assert len(tokenizer) == med.vocab_size
    ids, mask = tokenize(tokenizer, inputs["texts"], padding="max_length", truncation=True, max_length=35)
    assert torch.equal(ids, outputs["ids35"]) and torch.equal(mask, outputs["mask35"])
    ids, mask = tokenize(tokenizer, inputs["texts"], padding="longest", truncation=True, max_length=77)
    assert torch.equal(ids, outputs["ids_longest"]) and torch.equal(mask, outputs["mask_longest"])
    assert torch.equal(with_first_token(ids[:3], tokenizer.enc_token_id), outputs["ids_enc"])


def test_released_layout_loads_completely(retrieval):
    model, report = retrieval
    assert report.missing == () and report.unexpected == () and report.ignored == ()
    assert report.dropped_mismatch == ()
    assert set(report.loaded) == set(model.state_dict())


@torch.no_grad()
def test_retrieval_outputs(golden, retrieval):
    _, inputs, outputs, _, _, _ = golden
    model, _ = retrieval
    image_embeds = model.image_embeds(inputs["images"])
    assert_matches(image_embeds, outputs["vit_embeds"])
    assert_matches(model.encode_image(inputs["images"]), outputs["image_feat"])
    assert_matches(model.encode_text(outputs["ids35"], outputs["mask35"]), outputs["text_feat"])
    hidden = model.text_encoder(outputs["ids_enc"], outputs["mask_longest"][:3], encoder_hidden_states=image_embeds,
                                mode="multimodal").last_hidden_state
    assert_matches(hidden, outputs["multimodal_hidden"])
    ids_cls = outputs["ids_longest"][:3]
    assert_matches(model.itm_logits(image_embeds, ids_cls, outputs["mask_longest"][:3]), outputs["itm_logits"])


@torch.no_grad()
def test_itc_and_bi_blip_encoders(golden):
    meta, inputs, outputs, tokenizer, med, vit = golden
    itc = BlipItc(vit, med, meta["image_size"], embed_dim=meta["embed_dim"]).eval()
    report = load_blip_checkpoint(itc, GOLDEN / "blip_tiny.pth")
    assert report.missing == () and report.unexpected == ("itm_head.bias", "itm_head.weight", "temp")
    assert set(report.loaded) == set(itc.state_dict())
    assert_matches(itc.encode_image(inputs["images"]), outputs["image_feat"])
    assert_matches(itc.encode_text(outputs["ids35"], outputs["mask35"]), outputs["text_feat"])

    image_encoder = BlipImageEncoder(vit, meta["image_size"], embed_dim=meta["embed_dim"]).eval()
    report = load_blip_checkpoint(image_encoder, GOLDEN / "blip_tiny.pth",
                                  select_prefix=("visual_encoder.", "vision_proj."))
    assert report.missing == () and report.unexpected == () and report.ignored == ()
    assert set(report.loaded) == set(image_encoder.state_dict())
    features = image_encoder(inputs["images"])
    assert_matches(torch.nn.functional.normalize(features, dim=-1), outputs["image_feat"])
    assert not torch.allclose(features.norm(dim=-1), torch.ones(3))

    text_encoder = BlipTextEncoder(med, tokenizer, embed_dim=meta["embed_dim"], encoder_width=vit.width).eval()
    report = load_blip_checkpoint(text_encoder, GOLDEN / "blip_tiny.pth", select_prefix=("text_encoder.", "text_proj."))
    assert report.missing == () and report.unexpected == () and report.ignored == ()
    assert set(report.loaded) == set(text_encoder.state_dict())
    assert_matches(text_encoder(inputs["texts"]), outputs["text_proj_unnorm_longest"])
    tokens = {"input_ids": outputs["ids_longest"], "attention_mask": outputs["mask_longest"]}
    assert_matches(text_encoder(tokens), outputs["text_proj_unnorm_longest"])


@torch.no_grad()
def test_pos_embed_interpolation_matches_upstream(golden):
    meta, inputs, outputs, _, med, vit = golden
    model = BlipItc(vit, med, meta["image_size_2"], embed_dim=meta["embed_dim"]).eval()
    load_blip_checkpoint(model, GOLDEN / "blip_tiny.pth")
    assert model.visual_encoder.pos_embed.shape[1] == (meta["image_size_2"] // meta["patch_size"]) ** 2 + 1
    assert_matches(model.image_embeds(inputs["images_img2"]), outputs["vit_embeds_img2"])


def _stage1(golden):
    meta, inputs, _, tokenizer, med, vit = golden
    model = CirStage1(vit, med, meta["image_size"], enc_token_id=tokenizer.enc_token_id,
                      embed_dim=meta["embed_dim"]).eval()
    report = load_blip_checkpoint(model, GOLDEN / "cr_stage1.pt", state_key="BLIP_Retrieval")
    ids, mask = tokenize(tokenizer, [inputs["cr_caption"]], padding="longest")
    return model, report, ids, mask


@torch.no_grad()
def test_cr_stage1(golden):
    _, inputs, outputs, _, _, _ = golden
    model, report, ids, mask = _stage1(golden)
    assert report.missing == () and report.unexpected == () and report.ignored == ()
    assert set(report.loaded) == set(model.state_dict())
    reference = model.image_embeds(inputs["images"][[inputs["cr_reference_index"]]])
    assert_matches(model(reference, ids, mask), outputs["cr_stage1_query_feat"])
    assert_matches(model(reference, ids, mask, return_raw=True), outputs["cr_stage1_zt"])


@torch.no_grad()
def test_cr_stage2(golden):
    meta, inputs, outputs, tokenizer, med, vit = golden
    _, _, ids, mask = _stage1(golden)
    z_t = outputs["cr_stage1_zt"]
    candidates = inputs["cr_candidate_indices"]
    n = len(candidates)

    model = CirStage2(vit, med, meta["image_size"], enc_token_id=tokenizer.enc_token_id).eval()
    report = load_blip_checkpoint(model, GOLDEN / "cr_stage2.pt")
    assert report.missing == () and report.unexpected == () and report.ignored == ()
    assert set(report.loaded) == set(model.state_dict())
    scores = model(z_t.expand(n, -1, -1), ids.expand(n, -1), mask.expand(n, -1),
                   model.image_embeds(inputs["images"][candidates]))
    # The merge_layer contributes little at this size (a wrong concatenation order moves the scores by ~2e-6),
    # so the scores are compared more tightly than the other outputs.
    assert_matches(scores, outputs["cr_stage2_scores"], atol=5e-7)


def test_twin_remap_equals_upstream_remap():
    ours, remapped = remap_twin(torch.load(GOLDEN / "blip_tiny.pth", weights_only=True)["model"])
    upstream = torch.load(GOLDEN / "cr_stage2.pt", weights_only=True)["BLIP_NLVR"]
    fresh = {k for k in upstream if k.startswith("cls_head.") or ".merge_layer." in k}
    assert len(fresh) == 4 + 2 * 2  # cls_head.{0,2}; merge_layer of layers 6 and 7
    for key in set(upstream) - fresh:
        assert torch.equal(ours[key], upstream[key]), key
    assert set(remapped) <= set(upstream) and len(remapped) == 8 * 2 * 2 * 10  # layers x blocks x twins x params
