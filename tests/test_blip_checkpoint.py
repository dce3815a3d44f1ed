"""Loading BLIP-format checkpoints into every variant: exact load reports, remaps, interpolation and errors."""
import argparse

import pytest
import torch

from common.blip import (
    BLIP_URLS,
    BlipImageEncoder,
    BlipItc,
    BlipRetrieval,
    BlipTextEncoder,
    CirStage1,
    CirStage2,
    build_blip_tokenizer,
    load_blip_checkpoint,
    remap_twin,
    select_prefix,
)
from common.blip.tiny import tiny_med_config, tiny_vit_config, write_tiny_blip_checkpoint, write_tiny_vocab
from common.io import CheckpointError

IMAGE = 48  # the checkpoint is written at 32: every variant interpolates 4x4 -> 6x6 patches
LAYERS = 4
MERGE_START = 2
DECODER = ("text_decoder.bert.embeddings.word_embeddings.weight", "text_decoder.cls.predictions.bias")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("blip_ckpt")
    tokenizer = build_blip_tokenizer(write_tiny_vocab(root))
    vit = tiny_vit_config()
    med = tiny_med_config(len(tokenizer), vit.width, num_layers=LAYERS)
    path = write_tiny_blip_checkpoint(root / "model_base.pth", 32, med=med, layout="pretrain")
    state = torch.load(path, weights_only=True)["model"]
    return {"root": root, "tokenizer": tokenizer, "vit": vit, "med": med, "path": path, "state": state}


def _momentum_queue_decoder_keys(state):
    return tuple(sorted(k for k in state if k.split(".")[0].endswith("_m") or k.startswith("text_decoder.")
                        or k in ("image_queue", "text_queue", "queue_ptr")))


def _assert_loaded_values(model, state, keys):
    model_state = model.state_dict()
    for key in keys:
        if key.endswith("pos_embed"):
            assert torch.equal(model_state[key][:, 0], state[key][:, 0]), key
            assert model_state[key].shape[1] == (IMAGE // 8) ** 2 + 1
        else:
            assert torch.equal(model_state[key], state[key]), key


def test_pretrain_file_layout(setup):
    state = setup["state"]
    assert "queue_ptr" in state and "idx_queue" not in state and "ptr_queue" not in state
    assert state["visual_encoder.pos_embed"].shape == (1, 17, 32)
    assert state["text_encoder.embeddings.position_ids"].shape == (1, 64)
    assert state["text_encoder.encoder.layer.0.crossattention.self.key.weight"].shape == (32, 32)
    assert all(key in state for key in DECODER)
    assert state["text_encoder_m.embeddings.word_embeddings.weight"].shape[0] == len(setup["tokenizer"])


def test_retrieval_report(setup):
    model = BlipRetrieval(setup["vit"], setup["med"], IMAGE, embed_dim=16, queue_size=8)
    report = load_blip_checkpoint(model, setup["path"])
    assert report.source == str(setup["path"])
    assert report.missing == ("idx_queue", "ptr_queue")
    assert report.unexpected == () and report.dropped_mismatch == () and report.remapped == {}
    assert report.ignored == ("queue_ptr",) + DECODER
    assert set(report.loaded) == set(model.state_dict()) - {"idx_queue", "ptr_queue"}
    _assert_loaded_values(model, setup["state"], report.loaded)
    assert model.visual_encoder_m.pos_embed.shape == (1, 37, 32)


def test_itc_report(setup):
    model = BlipItc(setup["vit"], setup["med"], IMAGE, embed_dim=16)
    report = load_blip_checkpoint(model, setup["path"])
    assert report.missing == ()
    assert report.unexpected == ("itm_head.bias", "itm_head.weight", "temp")
    assert report.ignored == _momentum_queue_decoder_keys(setup["state"])
    assert set(report.loaded) == set(model.state_dict())
    _assert_loaded_values(model, setup["state"], report.loaded)


def test_cr_stage1_report(setup):
    model = CirStage1(setup["vit"], setup["med"], IMAGE, enc_token_id=setup["tokenizer"].enc_token_id, embed_dim=16)
    report = load_blip_checkpoint(model, setup["path"])
    assert report.missing == () and report.unexpected == ("itm_head.bias", "itm_head.weight")
    assert report.ignored == _momentum_queue_decoder_keys(setup["state"])
    assert set(report.loaded) == set(model.state_dict()) and model.temp.item() == setup["state"]["temp"].item()
    _assert_loaded_values(model, setup["state"], report.loaded)


def test_bi_blip_prefix_selection(setup):
    image_encoder = BlipImageEncoder(setup["vit"], IMAGE, embed_dim=16)
    report = load_blip_checkpoint(image_encoder, setup["path"], select_prefix=("visual_encoder.", "vision_proj."))
    assert report.missing == () and report.unexpected == () and report.ignored == ()
    assert set(report.loaded) == set(image_encoder.state_dict())
    _assert_loaded_values(image_encoder, setup["state"], report.loaded)

    text_encoder = BlipTextEncoder(setup["med"], setup["tokenizer"], embed_dim=16)
    report = load_blip_checkpoint(text_encoder, setup["path"], select_prefix=("text_encoder.", "text_proj."))
    assert report.missing == () and report.unexpected == () and report.ignored == ()
    assert set(report.loaded) == set(text_encoder.state_dict())
    _assert_loaded_values(text_encoder, setup["state"], report.loaded)

    fresh = BlipTextEncoder(setup["med"], setup["tokenizer"], embed_dim=640)
    before = fresh.text_proj.weight.clone()
    report = load_blip_checkpoint(fresh, setup["path"], select_prefix="text_encoder.",
                                  expected_missing=("text_proj.*",))
    assert report.missing == ("text_proj.bias", "text_proj.weight") and report.unexpected == ()
    assert report.ignored == () and set(report.loaded) == set(fresh.state_dict()) - set(report.missing)
    assert torch.equal(fresh.text_proj.weight, before) and fresh(["make it red"]).shape == (1, 640)
    assert set(select_prefix(setup["state"], "vision_proj.")) == {"vision_proj.weight", "vision_proj.bias"}


def test_cr_stage2_twin_remap_report(setup):
    model = CirStage2(setup["vit"], setup["med"], IMAGE, enc_token_id=setup["tokenizer"].enc_token_id,
                      merge_start_layer=MERGE_START)
    with pytest.raises(CheckpointError, match=r"model_base\.pth.*cls_head\.0\.bias"):
        load_blip_checkpoint(model, setup["path"], remap=remap_twin)
    report = load_blip_checkpoint(model, setup["path"], remap=remap_twin,
                                  expected_missing=("cls_head.*", "*.merge_layer.*"))
    merge = tuple(f"text_encoder.encoder.layer.{i}.crossattention.output.merge_layer.{p}"
                  for i in range(MERGE_START, LAYERS) for p in ("bias", "weight"))
    heads = tuple(f"cls_head.{i}.{p}" for i in (0, 2) for p in ("bias", "weight"))
    assert report.missing == heads + merge
    assert report.unexpected == ("itm_head.bias", "itm_head.weight", "temp", "text_proj.bias", "text_proj.weight",
                                 "vision_proj.bias", "vision_proj.weight")
    assert report.ignored == _momentum_queue_decoder_keys(setup["state"])
    assert len(report.remapped) == LAYERS * 2 * 2 * 10  # layers x (self, cross) x twins x (q,k,v,dense,LN) w+b
    assert set(report.loaded) == set(model.state_dict()) - set(report.missing)
    assert set(report.remapped) <= set(report.loaded)
    state, loaded = setup["state"], model.state_dict()
    for i in range(LAYERS):
        src = f"text_encoder.encoder.layer.{i}."
        for block in ("attention", "crossattention"):
            for param in ("query.weight", "key.bias", "value.weight"):
                for twin in ("self0", "self1"):
                    key = f"{src}{block}.{twin}.{param}"
                    assert torch.equal(loaded[key], state[f"{src}{block}.self.{param}"])
                    assert report.remapped[key] == f"{src}{block}.self.{param}"
            for new, old in (("dense0", "dense"), ("dense1", "dense"), ("LayerNormA", "LayerNorm"),
                             ("LayerNormB", "LayerNorm")):
                assert torch.equal(loaded[f"{src}{block}.output.{new}.weight"],
                                   state[f"{src}{block}.output.{old}.weight"])
        assert torch.equal(loaded[f"{src}output.dense.weight"], state[f"{src}output.dense.weight"])


def test_remap_twin_is_anchored():
    state = {
        "text_encoder.encoder.layer.0.attention.self.query.weight": torch.ones(1),
        "text_encoder.encoder.layer.0.output.dense.weight": torch.full((1,), 2.0),
        "text_encoder.encoder.layer.0.output.LayerNorm.bias": torch.full((1,), 3.0),
        "text_encoder_m.encoder.layer.0.attention.self.query.weight": torch.full((1,), 4.0),
        "visual_encoder.blocks.0.attn.proj.weight": torch.full((1,), 5.0),
    }
    result, remapped = remap_twin(state)
    assert set(result) == {
        "text_encoder.encoder.layer.0.attention.self0.query.weight",
        "text_encoder.encoder.layer.0.attention.self1.query.weight",
        "text_encoder.encoder.layer.0.output.dense.weight",
        "text_encoder.encoder.layer.0.output.LayerNorm.bias",
        "text_encoder_m.encoder.layer.0.attention.self.query.weight",
        "visual_encoder.blocks.0.attn.proj.weight",
    }
    assert set(remapped.values()) == {"text_encoder.encoder.layer.0.attention.self.query.weight"}


def _variants(setup):
    vit, med, enc = setup["vit"], setup["med"], setup["tokenizer"].enc_token_id
    return [
        BlipItc(vit, med, IMAGE, embed_dim=16),
        BlipRetrieval(vit, med, IMAGE, embed_dim=16, queue_size=8),
        BlipImageEncoder(vit, IMAGE, embed_dim=16),
        BlipTextEncoder(med, embed_dim=640),
        CirStage1(vit, med, IMAGE, enc_token_id=enc, embed_dim=16),
        CirStage2(vit, med, IMAGE, enc_token_id=enc, merge_start_layer=MERGE_START),
    ]


def test_own_state_dict_round_trips(setup, tmp_path):
    for index, (model, fresh) in enumerate(zip(_variants(setup), _variants(setup))):
        saved = model.state_dict()
        path = tmp_path / f"{type(model).__name__}.pt"
        optimizer = torch.optim.AdamW(model.parameters())
        torch.save({"epoch": 1, type(model).__name__: saved, "optimizer_state_dict": optimizer.state_dict()}, path)
        report = load_blip_checkpoint(fresh, path)
        assert report.missing == () and report.unexpected == () and report.ignored == (), type(model).__name__
        assert set(report.loaded) == set(saved)
        for key, value in fresh.state_dict().items():
            assert torch.equal(value, saved[key]), key
        fresh.load_state_dict(saved, strict=True)


def test_state_key_and_raw_state_dicts(setup, tmp_path):
    model = BlipImageEncoder(setup["vit"], IMAGE, embed_dim=16)
    saved = model.state_dict()
    report = load_blip_checkpoint(BlipImageEncoder(setup["vit"], IMAGE, embed_dim=16), dict(saved))
    assert report.source == "<state dict>" and report.missing == () and set(report.loaded) == set(saved)
    path = tmp_path / "two.pt"
    torch.save({"BLIPTextEncoder": {"x": torch.ones(1)}, "Image": saved}, path)
    with pytest.raises(CheckpointError, match="two.pt.*state_key"):
        load_blip_checkpoint(model, path)
    assert load_blip_checkpoint(model, path, state_key="Image").missing == ()


def test_missing_position_ids_is_tolerated(setup, tmp_path):
    state = {k: v for k, v in setup["state"].items() if not k.endswith("position_ids")}
    path = tmp_path / "no_position_ids.pth"
    torch.save({"model": state}, path)
    model = BlipItc(setup["vit"], setup["med"], IMAGE, embed_dim=16)
    report = load_blip_checkpoint(model, path)
    assert report.missing == ("text_encoder.embeddings.position_ids",)
    assert set(report.loaded) == set(model.state_dict()) - set(report.missing)
    assert torch.equal(model.text_encoder.embeddings.position_ids, torch.arange(64)[None])


def test_shape_mismatch_raises_or_drops(setup):
    model = BlipItc(setup["vit"], setup["med"], IMAGE, embed_dim=8)
    with pytest.raises(CheckpointError, match=r"model_base\.pth.*(text|vision)_proj\.(weight|bias).*\((16|8)"):
        load_blip_checkpoint(model, setup["path"])
    with pytest.raises(CheckpointError, match=r"vision_proj\.weight: checkpoint \(16, 32\), model \(8, 32\)"):
        load_blip_checkpoint(model, setup["path"], select_prefix=("visual_encoder.", "vision_proj.", "text_"))
    report = load_blip_checkpoint(model, setup["path"], on_shape_mismatch="drop")
    assert report.dropped_mismatch == ("text_proj.bias", "text_proj.weight", "vision_proj.bias", "vision_proj.weight")
    assert report.missing == () and set(report.loaded) == set(model.state_dict()) - set(report.dropped_mismatch)


def test_missing_keys_raise_with_file_name(setup, tmp_path):
    state = {k: v for k, v in setup["state"].items() if not k.startswith("text_encoder.encoder.layer.3.")}
    path = tmp_path / "truncated.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match=r"truncated\.pth.*text_encoder\.encoder\.layer\.3\."):
        load_blip_checkpoint(BlipItc(setup["vit"], setup["med"], IMAGE, embed_dim=16), path)


def test_url_needs_allow_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model_base\.pth"):
        load_blip_checkpoint(torch.nn.Linear(1, 1), BLIP_URLS["model_base.pth"], cache_dir=tmp_path)


def test_pickled_objects_need_trust(setup, tmp_path):
    path = tmp_path / "with_args.pt"
    torch.save({"model": setup["state"], "args": argparse.Namespace(lr=1.0)}, path)
    model = BlipImageEncoder(setup["vit"], IMAGE, embed_dim=16)
    with pytest.raises(CheckpointError, match="trusted=True"):
        load_blip_checkpoint(model, path, select_prefix=("visual_encoder.", "vision_proj."))
    report = load_blip_checkpoint(model, path, select_prefix=("visual_encoder.", "vision_proj."), trusted=True)
    assert report.missing == () and set(report.loaded) == set(model.state_dict())
