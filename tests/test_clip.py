"""CLIP through the `clip` module: tiny presets, offline loading of every file format, EOT pooling, errors."""
import hashlib
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from common.clip import (
    CLIP_MODELS,
    EOT_TOKEN,
    SOT_TOKEN,
    ClipRetrievalWrapper,
    build_model,
    clip,
    clip_url,
    load_clip,
    tiny_clip_state_dict,
    tokenize,
    write_tiny_clip,
)
from common.io import CheckpointError


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("clip")
    return {(kind, fmt): write_tiny_clip(root / f"{kind}_{fmt}.pt", kind, fmt=fmt, half=fmt == "torchscript")
            for kind in ("vit", "rn") for fmt in ("state_dict", "checkpoint", "torchscript")}


@pytest.fixture(scope="module")
def vit_wrapper(tiny_files):
    model, _, _ = load_clip(tiny_files["vit", "state_dict"], device="cpu")
    return ClipRetrievalWrapper(model)


def test_build_model_recovers_the_tiny_vit_sizes():
    model = build_model(tiny_clip_state_dict("vit"))
    assert model.visual.input_resolution == 32 and model.visual.conv1.kernel_size == (8, 8)
    assert model.visual.conv1.out_channels == 64 and len(model.visual.transformer.resblocks) == 2
    assert model.visual.transformer.resblocks[0].attn.num_heads == 1
    assert model.text_projection.shape == (64, 16) and model.context_length == 77 and model.vocab_size == 49408
    assert len(model.transformer.resblocks) == 2 and model.transformer.width == 64


def test_build_model_recovers_the_tiny_resnet_sizes():
    model = build_model(tiny_clip_state_dict("rn"))
    visual = model.visual
    assert visual.input_resolution == 64 and visual.attnpool.positional_embedding.shape == (5, 256)
    assert [len(getattr(visual, f"layer{i}")) for i in range(1, 5)] == [1, 1, 1, 1]
    assert visual.layer1[0].conv1.out_channels == 8 and visual.attnpool.num_heads == 4
    assert visual.conv1.weight.dtype == torch.float16  # build_model halves, like clip.load on GPU


def test_tiny_state_dict_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    first, again, other = tiny_clip_state_dict("vit", 0), tiny_clip_state_dict("vit", 0), tiny_clip_state_dict("vit", 1)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["visual.proj"], other["visual.proj"])
    assert tiny_clip_state_dict("rn", image_resolution=96)["visual.attnpool.positional_embedding"].shape[0] == 10


@pytest.mark.parametrize("kind", ["vit", "rn"])
@pytest.mark.parametrize("fmt", ["state_dict", "checkpoint", "torchscript"])
def test_load_clip_reads_every_format_exactly(tiny_files, kind, fmt):
    model, preprocess, info = load_clip(tiny_files[kind, fmt], device="cpu")
    resolution = 32 if kind == "vit" else 64
    assert info["input_resolution"] == resolution and info["embed_dim"] == 16 and info["context_length"] == 77
    assert info["vision"] == ("vit" if kind == "vit" else "resnet") and info["dtype"] == "float32"
    assert all(p.dtype == torch.float32 for p in model.parameters()) and not model.training
    source = tiny_clip_state_dict(kind)
    loaded = model.state_dict()
    halved = fmt == "torchscript"  # written with half=True: convert_weights' tensors were stored in fp16
    for key in ("visual.conv1.weight", "text_projection", "ln_final.weight", "token_embedding.weight"):
        expected = source[key].half().float() if halved and key in ("visual.conv1.weight", "text_projection") \
            else source[key]
        assert torch.equal(loaded[key], expected), key
    # fp16 rounding would change these values, so the equality above shows the fp32 file is not rounded
    assert not torch.equal(source["text_projection"], source["text_projection"].half().float())
    image = Image.new("RGB", (90, 50), (200, 30, 30))
    assert torch.equal(preprocess(image), clip.clip._transform(resolution)(image))


def test_tokenize_frames_and_truncates():
    tokens = tokenize(["a red circle", "make it blue"])
    assert tokens.shape == (2, 77)
    row = tokens[0].tolist()
    end = row.index(EOT_TOKEN)
    assert row[0] == SOT_TOKEN and end > 1 and all(t == 0 for t in row[end + 1:])
    long_text = " ".join(["circle"] * 100)
    truncated = tokenize(long_text, context_length=20)
    assert truncated.shape == (1, 20) and truncated[0, -1] == EOT_TOKEN and (truncated[0] != 0).all()
    with pytest.raises(RuntimeError, match="too long"):
        tokenize(long_text, truncate=False)


def test_encode_text_pools_the_eot_token(vit_wrapper):
    model = vit_wrapper.model
    tokens = tokenize(["a small red circle on the left", "a square"])
    features = vit_wrapper.encode_text(tokens)
    with torch.no_grad():
        x = model.token_embedding(tokens) + model.positional_embedding
        x = model.ln_final(model.transformer(x.permute(1, 0, 2)).permute(1, 0, 2))
        eot = (tokens == EOT_TOKEN).nonzero()[:, 1]
        expected = x[torch.arange(2), eot] @ model.text_projection
    assert torch.allclose(features, expected / expected.norm(dim=-1, keepdim=True), atol=1e-6)
    padded = tokens.clone()
    padded[1, eot[1] + 1:] = 1000  # anything after EOT is masked out by the causal mask
    assert torch.allclose(vit_wrapper.encode_text(padded), features, atol=1e-6)
    changed = tokens.clone()
    changed[1, 1] = 1000
    assert not torch.allclose(vit_wrapper.encode_text(changed)[1], features[1], atol=1e-3)


def test_wrapper_normalises_and_accepts_strings(vit_wrapper):
    images = torch.randn(3, 3, 32, 32)
    image_features = vit_wrapper.encode_image(images)
    assert image_features.shape == (3, 16) and image_features.dtype == torch.float32 and vit_wrapper.dim == 16
    assert torch.allclose(image_features.norm(dim=-1), torch.ones(3), atol=1e-6)
    texts = ["a red circle", "a blue square"]
    assert torch.allclose(vit_wrapper.encode_text(texts), vit_wrapper.encode_text(tokenize(texts)))
    assert vit_wrapper.encode_text(" ".join(["circle"] * 100)).shape == (1, 16)
    with pytest.raises(RuntimeError, match="too long"):
        vit_wrapper.encode_text(" ".join(["circle"] * 100), truncate=False)


def test_official_names_match_the_clip_package():
    assert set(CLIP_MODELS) == set(clip.available_models())
    for name in CLIP_MODELS:
        assert clip_url(name) == clip.clip._MODELS[name]


def test_official_name_resolves_offline_and_checks_the_hash(tmp_path, tiny_files, monkeypatch):
    source = tiny_files["rn", "torchscript"]
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    monkeypatch.setitem(CLIP_MODELS, "Tiny-RN", ("tiny-rn.pt", digest))
    with pytest.raises(FileNotFoundError, match=r"tiny-rn\.pt.*not found locally.*allow-download"):
        load_clip("Tiny-RN", device="cpu", download_root=tmp_path)
    (tmp_path / "tiny-rn.pt").write_bytes(source.read_bytes())
    _, _, info = load_clip("Tiny-RN", device="cpu", download_root=tmp_path)
    assert info["source"] == str(tmp_path / "tiny-rn.pt") and info["input_resolution"] == 64
    (tmp_path / "tiny-rn.pt").write_bytes(source.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(CheckpointError, match=f"sha256 is .* expected {digest}"):
        load_clip("Tiny-RN", device="cpu", download_root=tmp_path)


def test_load_clip_errors(tmp_path):
    with pytest.raises(ValueError, match=r"known CLIP model name; known names: RN50, .*RN50x4.*ViT-B/16"):
        load_clip("ViT-B/99", device="cpu")
    with pytest.raises(FileNotFoundError, match=r"ViT-B-32\.pt"):
        load_clip("ViT-B/32", device="cpu", download_root=tmp_path)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_clip(garbage, device="cpu")
    torch.save({"model": {"visual_encoder.pos_embed": torch.zeros(1)}}, tmp_path / "blip.pth")
    with pytest.raises(CheckpointError, match="not a CLIP state dict"):
        load_clip(tmp_path / "blip.pth", device="cpu")
    broken = tiny_clip_state_dict("vit")
    del broken["ln_final.bias"]
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="consistent model"):
        load_clip(tmp_path / "broken.pt", device="cpu")
    with pytest.raises(ValueError, match="float32 or torch.float16"):
        load_clip(tmp_path / "broken.pt", device="cpu", dtype=torch.bfloat16)


def test_fp16_request_on_cpu_gives_fp32(tiny_files):
    with pytest.warns(UserWarning, match="fp32"):
        model, _, info = load_clip(tiny_files["vit", "state_dict"], device="cpu", dtype=torch.float16)
    assert info["dtype"] == "float32" and model.visual.conv1.weight.dtype == torch.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_on_cuda_keeps_clips_mixed_layout(tiny_files):
    model, _, info = load_clip(tiny_files["vit", "checkpoint"], device="cuda", dtype=torch.float16)
    assert info["dtype"] == "float16" and model.visual.conv1.weight.is_cuda
    assert model.ln_final.weight.dtype == torch.float32 and model.text_projection.dtype == torch.float16
    wrapper = ClipRetrievalWrapper(model)
    features = wrapper.encode_text(["a red circle"])
    assert features.dtype == torch.float16 and features.is_cuda
    fp32 = ClipRetrievalWrapper(load_clip(tiny_files["vit", "checkpoint"], device="cuda")[0])
    images = torch.randn(2, 3, 32, 32)
    assert fp32.encode_image(images).dtype == torch.float32
    assert torch.allclose(wrapper.encode_image(images).float(), fp32.encode_image(images), atol=1e-2)


PUBLISHED_SIZES = {"RN50x4": (288, 640), "ViT-B/32": (224, 512), "ViT-B/16": (224, 512), "ViT-L/14": (224, 768),
                   "ViT-L/14@336px": (336, 768)}


@pytest.mark.skipif(not os.environ.get("CLIP_CKPT_DIR"), reason="set CLIP_CKPT_DIR to a folder of real CLIP files")
@pytest.mark.parametrize("name", sorted(PUBLISHED_SIZES))
def test_real_clip_files(name):
    folder = Path(os.environ["CLIP_CKPT_DIR"])
    if not (folder / CLIP_MODELS[name][0]).is_file():
        pytest.skip(f"{CLIP_MODELS[name][0]} not in {folder}")
    _, _, info = load_clip(name, device="cpu", download_root=folder)
    assert (info["input_resolution"], info["embed_dim"]) == PUBLISHED_SIZES[name]
