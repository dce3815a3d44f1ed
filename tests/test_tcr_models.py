"""TCR's backbone registry: query-side LayerNorms per direction, CLIP and the IRRA-format ReID CLIP."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

from common.blip.config import MedConfig, ViTConfig
from common.blip.tiny import write_tiny_blip_checkpoint, write_tiny_vocab

from common.blip.vit import create_vit
from common.clip import tiny_clip_state_dict, tokenize, write_tiny_clip
from common.io import CheckpointError, atomic_torch_save, atomic_write_json
from common.transforms import reid_transform
from tcr.models import BackboneOptions, ReidClipBackbone, build_backbone, check_direction, load_reid_clip
from common.tta import layernorm_parameters

VIT = ViTConfig(patch_size=8, width=32, depth=1, heads=2)


def test_blip_vit_base_has_25_layernorms_with_38400_parameters():
    vit, _ = create_vit("base", 32)
    params, names = layernorm_parameters(vit)
    assert len(names) == 50 and sum(p.numel() for p in params) == 38_400
    assert names[:2] == ["blocks.0.norm1.weight", "blocks.0.norm1.bias"] and names[-1] == "norm.bias"


def test_clip_backbone_query_layernorms_and_features(tmp_path):
    path = write_tiny_clip(tmp_path / "clip.pt", kind="vit")
    config = {"backbone": "clip", "dataset": "coco"}
    backbone = build_backbone(config, torch.device("cpu"), BackboneOptions(clip_weights=str(path)))
    _, visual = backbone.query_norm_params("i2t")
    _, text = backbone.query_norm_params("t2i")
    assert visual[:2] == ["ln_pre.weight", "ln_pre.bias"] and visual[-1] == "ln_post.bias"
    assert len(visual) == 2 * (1 + 2 * 2 + 1) and len(text) == 2 * 2 * 2
    assert all(".ln_" in name for name in text)  # ln_final is outside the text transformer: it stays frozen
    with torch.no_grad():
        images = backbone.encode_query(torch.randn(3, 3, 32, 32), "i2t")
        texts = backbone.encode_gallery(["a red circle", "a blue square"], "i2t")
    assert images.shape == (3, 16) and texts.shape == (2, 16)
    torch.testing.assert_close(images.norm(dim=1), torch.ones(3))
    assert backbone.transform.transforms[1].size == (32, 32)  # squashed to the input size, no centre crop
    with pytest.raises(ValueError, match="valid: i2t, t2i"):
        check_direction("both")


def irra_checkpoint(path, size=(64, 32)):
    """A tiny IRRA-format file: CLIP keys under ``base_model.`` with a 8×4 position grid, plus an extra head."""
    state = tiny_clip_state_dict("vit")
    grid = state["visual.positional_embedding"]
    patches = grid[1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    resized = F.interpolate(patches, size=(size[0] // 8, size[1] // 8), mode="bilinear").permute(0, 2, 3, 1)
    state["visual.positional_embedding"] = torch.cat([grid[:1], resized.reshape(-1, grid.shape[1])])
    model = {f"base_model.{key}": value for key, value in state.items()}
    model["classifier.weight"] = torch.zeros(3, 16)
    atomic_torch_save({"model": model}, path)
    return state


def test_reid_clip_loads_irra_checkpoints_for_non_square_input(tmp_path):
    state = irra_checkpoint(tmp_path / "irra.pth")
    model, missing, unexpected = load_reid_clip(tmp_path / "irra.pth", (64, 32))
    assert missing == [] and unexpected == ["classifier.weight"]
    assert torch.equal(model.visual.positional_embedding, state["visual.positional_embedding"])
    assert model.visual.positional_embedding.shape[0] == 1 + 8 * 4
    with torch.no_grad():
        features = model.encode_image(torch.randn(2, 3, 64, 32))
        text = model.encode_text(tokenize(["a man in a red shirt"]))
    assert features.shape == (2, 16) and text.shape == (1, 16)
    backbone = ReidClipBackbone(model, reid_transform(64, 32))
    with torch.no_grad():
        queries = backbone.encode_query(tokenize(["a man in a red shirt", "a woman"]), "t2i")
    assert queries.dtype == torch.float32 and torch.allclose(queries.norm(dim=1), torch.ones(2))
    assert torch.allclose(queries[0], F.normalize(text[0], dim=0), atol=1e-6)
    with pytest.raises(CheckpointError, match="expects"):
        load_reid_clip(tmp_path / "irra.pth", (64, 64))


@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    """A tiny BLIP checkpoint in the released key layout, its MED/ViT configs, tokenizer and a TCR config."""
    root = tmp_path_factory.mktemp("tcr_blip")
    write_tiny_vocab(root / "tokenizer")
    vocab_size = len((root / "tokenizer" / "vocab.txt").read_text().splitlines()) + 2
    med = MedConfig(vocab_size=vocab_size, encoder_width=VIT.width, hidden_size=32, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=64, max_position_embeddings=64)
    atomic_write_json(dataclasses.asdict(med), root / "med_config.json")
    atomic_write_json(dataclasses.asdict(VIT), root / "vit_config.json")
    write_tiny_blip_checkpoint(root / "model_base.pth", image_size=32, vit=VIT, med=med, embed_dim=16, seed=0)
    config = {"backbone": "blip", "dataset": "coco", "vit": "base", "image_size": 32, "vit_grad_ckpt": False,
              "vit_ckpt_layer": 0, "pretrained": str(root / "model_base.pth")}
    options = BackboneOptions(vit_config=str(root / "vit_config.json"), med_config=root / "med_config.json",
                              tokenizer=root / "tokenizer")
    return root, config, options


def test_blip_backbone_loads_every_itc_key_and_ignores_the_rest(tiny_blip):
    root, config, options = tiny_blip
    backbone = build_backbone(config, torch.device("cpu"), options)
    assert backbone.missing_keys == [] and backbone.unexpected_keys == []
    assert backbone.source == str(root / "model_base.pth")
    state = torch.load(root / "model_base.pth", weights_only=True)["model"]
    loaded = backbone.model.state_dict()
    assert set(loaded) <= set(state)
    assert all(torch.equal(loaded[key], state[key]) for key in loaded)
    assert backbone.model.vision_proj.weight.shape == (16, VIT.width)  # projection width read from the file


def test_blip_checkpoint_errors_name_the_file_and_list_missing_and_unexpected_keys(tiny_blip, tmp_path):
    _, config, options = tiny_blip
    checkpoint = torch.load(config["pretrained"], weights_only=True)
    del checkpoint["model"]["vision_proj.weight"]
    checkpoint["model"]["visual_encoder.extra_head.weight"] = torch.zeros(2)
    broken = tmp_path / "no_vision_proj.pth"
    atomic_torch_save(checkpoint, broken)
    with pytest.raises(CheckpointError) as error:
        build_backbone({**config, "pretrained": str(broken)}, torch.device("cpu"), options)
    message = str(error.value)
    assert message.startswith(f"{broken}: ") and "<state dict>" not in message
    assert "missing keys (1): vision_proj.weight" in message
    assert "unexpected keys (1): visual_encoder.extra_head.weight" in message
    assert "shape mismatch" not in message


def test_blip_shape_mismatch_names_the_key_both_shapes_and_the_setting(tiny_blip, tmp_path):
    _, config, options = tiny_blip
    wider = tmp_path / "vit_config.json"
    atomic_write_json({**dataclasses.asdict(VIT), "width": 48, "heads": 2}, wider)
    with pytest.raises(CheckpointError) as error:
        build_backbone(config, torch.device("cpu"), dataclasses.replace(options, vit_config=str(wider)))
    message = str(error.value)
    assert message.startswith(f"{config['pretrained']}: ")
    assert f"visual_encoder.cls_token: checkpoint (1, 1, {VIT.width}), model (1, 1, 48)" in message
    assert "--vit_config" in message


def test_reid_checkpoint_errors_name_the_file_and_keys(tmp_path):
    atomic_torch_save({"model": {"visual.conv1.weight": torch.zeros(1), "head.bias": torch.zeros(1)}},
                      tmp_path / "plain.pth")
    with pytest.raises(CheckpointError) as error:
        load_reid_clip(tmp_path / "plain.pth", (64, 32))
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'plain.pth'}: ")
    assert ("missing keys (5): base_model.ln_final.weight, base_model.positional_embedding, "
            "base_model.text_projection, base_model.token_embedding.weight, base_model.visual.conv1.weight") in message
    assert "unexpected keys (2): head.bias, visual.conv1.weight" in message
