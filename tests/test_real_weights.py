"""Released weights, when local folders hold them (``BLIP_CKPT_DIR``, ``CLIP_CKPT_DIR``; nothing is downloaded,
each test is skipped without its folder).

- ``model_base.pth`` (BLIP's pre-trained file) loads into every BLIP variant with the exact load report: which
  model keys stay missing, which file keys are unexpected or ignored, and every other key loaded with its value.
- Bi-BLIP4CIR's released ``tuned_blip_*.pt`` (``{'BLIPTextEncoder': ...}``) and ``combiner*.pt``
  (``{'Combiner': ...}``), anywhere below the folder, load strictly into our modules.
- OpenAI's CLIP files (official names, e.g. ``ViT-B-32.pt``) in ``CLIP_CKPT_DIR`` pass their published SHA-256,
  build the model of the right size and hold the file's weights exactly.
"""
import os
from pathlib import Path

import pytest
import torch

from bi_blip4cir.models import TEXT_ENCODER_KEY, load_text_encoder
from common.blip import (BlipImageEncoder, BlipItc, BlipRetrieval, BlipTextEncoder, CirStage1, CirStage2,
                         load_blip_checkpoint, remap_twin)
from common.blip.config import MedConfig, ViTConfig
from common.cir.combiner import Combiner
from common.clip import CLIP_MODELS, load_clip, read_clip_state_dict
from common.training.checkpoint import load_model

CKPT_DIR = Path(os.environ["BLIP_CKPT_DIR"]) if os.environ.get("BLIP_CKPT_DIR") else None
CLIP_DIR = Path(os.environ["CLIP_CKPT_DIR"]) if os.environ.get("CLIP_CKPT_DIR") else None
needs_blip = pytest.mark.skipif(CKPT_DIR is None, reason="set BLIP_CKPT_DIR to a folder with released BLIP / "
                                                          "Bi-BLIP4CIR weights")
needs_clip = pytest.mark.skipif(CLIP_DIR is None, reason="set CLIP_CKPT_DIR to a folder with OpenAI CLIP files")
pytestmark = pytest.mark.slow
CLIP_SIZES = {"RN50": (224, 1024), "RN101": (224, 512), "RN50x4": (288, 640), "RN50x16": (384, 768),
              "RN50x64": (448, 1024), "ViT-B/32": (224, 512), "ViT-B/16": (224, 512), "ViT-L/14": (224, 768),
              "ViT-L/14@336px": (336, 768)}  # (input resolution, embedding width)
IMAGE = 384  # Bi-BLIP4CIR's input size: the 224-px position embeddings are interpolated to 24x24 patches
LAYERS = 12
MERGE_START = 6
ENC_TOKEN_ID = 30523  # [ENC] in BLIP's bert-base-uncased tokenizer


def released(pattern: str) -> list[Path]:
    return sorted(CKPT_DIR.rglob(pattern)) if CKPT_DIR is not None else []


@pytest.fixture(scope="module")
def model_base():
    if CKPT_DIR is None:
        pytest.skip("set BLIP_CKPT_DIR to a folder with released BLIP / Bi-BLIP4CIR weights")
    path = CKPT_DIR / "model_base.pth"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path, torch.load(path, map_location="cpu", weights_only=True)["model"]


def momentum_queue_decoder(state) -> tuple[str, ...]:
    """The file keys no inference variant has: momentum encoders, queues, the captioning decoder."""
    return tuple(sorted(k for k in state if k.split(".")[0].endswith("_m") or k.startswith("text_decoder.")
                        or k in ("image_queue", "text_queue", "queue_ptr")))


def load(model, model_base, **options):
    path, state = model_base
    report = load_blip_checkpoint(model, state, source_name=path, **options)
    loaded = model.state_dict()
    for key in report.loaded:
        if key.endswith("pos_embed"):  # interpolated: the CLS position is kept as is
            assert loaded[key].shape == (1, (IMAGE // 16) ** 2 + 1, 768)
            assert torch.equal(loaded[key][:, 0], state[key][:, 0]), key
        else:
            assert torch.equal(loaded[key], state[report.remapped.get(key, key)]), key
    return report


def test_file_is_the_pretrain_layout(model_base):
    _, state = model_base
    assert "queue_ptr" in state and "idx_queue" not in state and "ptr_queue" not in state
    assert state["visual_encoder.pos_embed"].shape == (1, 197, 768)
    assert state["vision_proj.weight"].shape == (256, 768) and state["text_proj.weight"].shape == (256, 768)
    assert state["text_encoder.embeddings.word_embeddings.weight"].shape == (30524, 768)


def test_retrieval(model_base):
    model = BlipRetrieval(ViTConfig.base(), MedConfig.base(), IMAGE, embed_dim=256)
    report = load(model, model_base)
    decoder = tuple(sorted(k for k in model_base[1] if k.startswith("text_decoder.")))
    assert report.missing == ("idx_queue", "ptr_queue")
    assert report.unexpected == () and report.dropped_mismatch == () and report.remapped == {}
    assert report.ignored == ("queue_ptr",) + decoder
    assert set(report.loaded) == set(model.state_dict()) - {"idx_queue", "ptr_queue"}


def test_itc(model_base):
    model = BlipItc(ViTConfig.base(), MedConfig.base(), IMAGE, embed_dim=256)
    report = load(model, model_base)
    assert report.missing == () and report.unexpected == ("itm_head.bias", "itm_head.weight", "temp")
    assert report.ignored == momentum_queue_decoder(model_base[1])
    assert set(report.loaded) == set(model.state_dict())


def test_bi_blip4cir_encoders(model_base):
    image_encoder = BlipImageEncoder(ViTConfig.base(), IMAGE, embed_dim=256)
    report = load(image_encoder, model_base, select_prefix=("visual_encoder.", "vision_proj."))
    assert report.missing == () and report.unexpected == () and report.ignored == ()
    assert set(report.loaded) == set(image_encoder.state_dict())
    text_encoder = BlipTextEncoder(MedConfig.base(), embed_dim=256, encoder_width=768)
    report = load(text_encoder, model_base, select_prefix=("text_encoder.", "text_proj."))
    assert report.missing == () and report.unexpected == () and report.ignored == ()
    assert set(report.loaded) == set(text_encoder.state_dict())


def test_cr_stage1(model_base):
    model = CirStage1(ViTConfig.base(), MedConfig.base(), IMAGE, enc_token_id=ENC_TOKEN_ID, embed_dim=256)
    report = load(model, model_base)
    assert report.missing == () and report.unexpected == ("itm_head.bias", "itm_head.weight")
    assert report.ignored == momentum_queue_decoder(model_base[1])
    assert set(report.loaded) == set(model.state_dict())


def test_cr_stage2_twin_remap(model_base):
    model = CirStage2(ViTConfig.base(), MedConfig.base(), IMAGE, enc_token_id=ENC_TOKEN_ID,
                      merge_start_layer=MERGE_START)
    report = load(model, model_base, remap=remap_twin, expected_missing=("cls_head.*", "*.merge_layer.*"))
    merge = tuple(sorted(f"text_encoder.encoder.layer.{i}.crossattention.output.merge_layer.{p}"
                         for i in range(MERGE_START, LAYERS) for p in ("bias", "weight")))
    heads = tuple(f"cls_head.{i}.{p}" for i in (0, 2) for p in ("bias", "weight"))
    assert report.missing == tuple(sorted(heads + merge))
    assert report.unexpected == ("itm_head.bias", "itm_head.weight", "temp", "text_proj.bias", "text_proj.weight",
                                 "vision_proj.bias", "vision_proj.weight")
    assert report.ignored == momentum_queue_decoder(model_base[1])
    assert len(report.remapped) == LAYERS * 2 * 2 * 10  # layers x (self, cross) x twins x (q,k,v,dense,LN) w+b
    assert set(report.loaded) == set(model.state_dict()) - set(report.missing)


@needs_blip
@pytest.mark.parametrize("path", released("tuned_blip_*.pt") or [None], ids=str)
def test_released_stage1_text_encoder_loads_strictly(path):
    if path is None:
        pytest.skip("no tuned_blip_*.pt below BLIP_CKPT_DIR")
    encoder = BlipTextEncoder(MedConfig.base(), embed_dim=256, encoder_width=768)
    load_text_encoder(path, encoder, trusted=True)
    saved = torch.load(path, map_location="cpu", weights_only=False)[TEXT_ENCODER_KEY]
    assert set(saved) == set(encoder.state_dict())
    assert all(torch.equal(encoder.state_dict()[key], value) for key, value in saved.items())


@needs_blip
@pytest.mark.parametrize("path", released("combiner*.pt") or [None], ids=str)
def test_released_combiner_loads_strictly(path):
    if path is None:
        pytest.skip("no combiner*.pt below BLIP_CKPT_DIR")
    combiner = Combiner(256, 640 * 4, 640 * 8)
    load_model(path, combiner, trusted=True)
    saved = torch.load(path, map_location="cpu", weights_only=False)["Combiner"]
    assert set(saved) == set(combiner.state_dict())
    assert all(torch.equal(combiner.state_dict()[key], value) for key, value in saved.items())


@needs_clip
@pytest.mark.parametrize("name", list(CLIP_MODELS))
def test_official_clip_file_builds_the_right_model(name):
    if not (CLIP_DIR / CLIP_MODELS[name][0]).is_file():
        pytest.skip(f"{CLIP_MODELS[name][0]} not in CLIP_CKPT_DIR")
    model, _, info = load_clip(name, device="cpu", download_root=CLIP_DIR)  # checks the published SHA-256
    assert (info["input_resolution"], info["embed_dim"]) == CLIP_SIZES[name]
    assert info["vision"] == ("resnet" if name.startswith("RN") else "vit") and info["dtype"] == "float32"
    state = read_clip_state_dict(CLIP_DIR / CLIP_MODELS[name][0])
    assert set(model.state_dict()) == set(state)
    built = model.state_dict()
    assert all(torch.equal(built[key], value.to(built[key].dtype)) for key, value in state.items())
