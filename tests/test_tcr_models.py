"""TCR's backbone registry: query-side LayerNorms per direction, CLIP and the IRRA-format ReID CLIP."""
import pytest
import torch
import torch.nn.functional as F

from common.blip.vit import create_vit
from common.clip import tiny_clip_state_dict, tokenize, write_tiny_clip
from common.io import CheckpointError, atomic_torch_save
from common.transforms import reid_transform
from tcr.models import BackboneOptions, ReidClipBackbone, build_backbone, check_direction, load_reid_clip
from common.tta import layernorm_parameters


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
    model, missing = load_reid_clip(tmp_path / "irra.pth", (64, 32))
    assert missing == []
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
