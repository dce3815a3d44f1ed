"""The demo's synthetic data and tiny weights go through the real loading paths."""
import json

import pytest
import torch

import demo
from common.args import vit_config_from_arg
from common.blip.checkpoint import load_blip_checkpoint
from common.blip.config import MedConfig
from common.blip.models import BlipImageEncoder, BlipTextEncoder
from common.blip.tokenizer import build_blip_tokenizer
from common.clip import load_clip


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return demo.prepare_inputs(tmp_path_factory.mktemp("demo"), seed=0)


def test_tiny_vocab_covers_every_clean_caption(ctx):
    tokenizer = build_blip_tokenizer(ctx.weights / "tokenizer")
    captions = [c for entry in json.loads((ctx.data / "cirr_dataset/cirr/captions/cap.rc2.train.json").read_text())
                for c in [entry["caption"]]]
    for path in (ctx.data / "fashionIQ_dataset/captions").glob("cap.*.train.json"):
        captions += [c for entry in json.loads(path.read_text()) for c in entry["captions"]]
    assert len(captions) > 100
    ids = tokenizer(captions, padding="longest")["input_ids"]
    assert all(tokenizer.unk_token_id not in row for row in ids)
    assert len(tokenizer) == MedConfig.from_json(ctx.weights / "med_config.json").vocab_size


def test_tiny_blip_loads_through_the_shared_flags(ctx):
    vit = vit_config_from_arg(str(ctx.weights / "vit_config.json"))
    med = MedConfig.from_json(ctx.weights / "med_config.json")
    assert (vit.width, vit.patch_size) == (64, 8)
    image_encoder = BlipImageEncoder(vit, demo.DEMO_IMAGE_SIZE, embed_dim=demo.DEMO_EMBED_DIM)
    report = load_blip_checkpoint(image_encoder, ctx.weights / "model_base.pth",
                                  select_prefix=("visual_encoder.", "vision_proj."))
    file_state = torch.load(ctx.weights / "model_base.pth", weights_only=True)["model"]
    expected = {key for key in file_state if key.startswith(("visual_encoder.", "vision_proj."))}
    assert report.missing == () and set(report.loaded) == expected == set(image_encoder.state_dict())
    assert all(torch.equal(value, file_state[key]) for key, value in image_encoder.state_dict().items())
    text_encoder = BlipTextEncoder(med, build_blip_tokenizer(ctx.weights / "tokenizer"), embed_dim=demo.DEMO_EMBED_DIM)
    report = load_blip_checkpoint(text_encoder, ctx.weights / "model_base.pth",
                                  select_prefix=("text_encoder.", "text_proj."))
    assert report.missing == ()
    with torch.no_grad():
        features = text_encoder(["is red instead of blue", "make it a triangle"])
    assert features.shape == (2, demo.DEMO_EMBED_DIM)


def test_tiny_clip_files_load(ctx):
    for name in ("clip_vit.pt", "clip_rn.pt"):
        model, preprocess, info = load_clip(ctx.weights / name, device="cpu")
        assert next(model.parameters()).dtype == torch.float32 and info["embed_dim"] > 0


def test_large_cirr_adds_only_training_triplets(ctx):
    small, large = ctx.data / "cirr_dataset" / "cirr", ctx.data_large / "cirr_dataset" / "cirr"
    for split in ("val", "test1"):
        for kind in ("captions/cap", "image_splits/split"):
            name = f"{kind}.rc2.{split}.json"
            assert (large / name).read_bytes() == (small / name).read_bytes()
    train = json.loads((large / "captions" / "cap.rc2.train.json").read_text())
    small_train = json.loads((small / "captions" / "cap.rc2.train.json").read_text())
    assert len(train) == 1500 and train[:len(small_train)] == small_train
    assert sorted(path.name for path in ctx.data_large.iterdir()) == [".complete", "cirr_dataset"]
