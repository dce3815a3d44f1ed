"""Behaviour of our BLIP modules at tiny sizes: ViT, MED, twin MED, heads and configs."""
import dataclasses
import json

import pytest
import torch
from torch import nn

from common.blip import (
    BlipItc,
    BlipRetrieval,
    CirStage1,
    MedConfig,
    MedModel,
    TwinMedModel,
    ViTConfig,
    VisionTransformer,
    create_vit,
    interpolate_pos_embed,
    remap_twin,
    with_first_token,
)
from common.blip.config import MED_CONFIG_PATH
from common.blip.tiny import tiny_med_config, tiny_vit_config

VOCAB = 60
ENC = VOCAB - 1


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def random_ids(batch: int, length: int) -> torch.Tensor:
    ids = torch.randint(5, VOCAB - 2, (batch, length))
    ids[:, 0] = 2
    return ids


# ---------------------------------------------------------------- ViT

def test_vit_shapes_and_keys():
    vit = VisionTransformer(tiny_vit_config(), image_size=32).eval()
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, 17, 32)
    keys = set(vit.state_dict())
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.1.attn.qkv.weight", "blocks.1.mlp.fc2.bias",
            "blocks.0.norm1.weight", "blocks.0.norm2.bias", "norm.weight"} <= keys
    assert vit.state_dict()["blocks.0.attn.qkv.weight"].shape == (96, 32)
    with pytest.raises(ValueError, match="32x32"):
        vit(torch.randn(1, 3, 48, 48))


def test_interpolate_pos_embed_keeps_cls_and_identity():
    pos = torch.randn(1, 17, 8)
    assert interpolate_pos_embed(pos, 16) is pos
    resized = interpolate_pos_embed(pos, 36)
    assert resized.shape == (1, 37, 8)
    assert torch.equal(resized[:, 0], pos[:, 0])
    assert not torch.allclose(resized[:, 1:17], pos[:, 1:])
    constant = torch.cat([torch.zeros(1, 1, 8), torch.full((1, 16, 8), 3.0)], dim=1)
    torch.testing.assert_close(interpolate_pos_embed(constant, 36)[:, 1:], torch.full((1, 36, 8), 3.0))


def _block_calls(vit: VisionTransformer) -> list[int]:
    calls = [0] * len(vit.blocks)
    for i, block in enumerate(vit.blocks):
        block.attn.register_forward_hook(lambda *_, i=i: calls.__setitem__(i, calls[i] + 1))
    return calls


def test_grad_checkpointing_same_outputs_and_grads():
    cfg = tiny_vit_config()
    plain = VisionTransformer(cfg, 32).train()
    ckpt = VisionTransformer(cfg, 32, grad_ckpt_last_k=1).train()
    assert set(ckpt.state_dict()) == set(plain.state_dict())
    ckpt.load_state_dict(plain.state_dict())
    assert [b.grad_checkpointing for b in ckpt.blocks] == [False, True]
    calls = _block_calls(ckpt)
    images = torch.randn(2, 3, 32, 32)
    out_plain, out_ckpt = plain(images), ckpt(images)
    torch.testing.assert_close(out_ckpt, out_plain, atol=0, rtol=0)
    out_plain.square().sum().backward()
    out_ckpt.square().sum().backward()
    assert calls == [1, 2]  # the last block ran again in the backward pass
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, atol=1e-6, rtol=1e-5, msg=name)
    ckpt.eval()
    calls[:] = [0, 0]
    ckpt(images).sum().backward()
    assert calls == [1, 1]  # not checkpointed in eval mode


def test_drop_path_rates():
    assert ViTConfig.large().drop_path_rate == 0.1 and ViTConfig.base().drop_path_rate == 0.0
    large_like = dataclasses.replace(tiny_vit_config(), drop_path_rate=0.1)
    vit, width = create_vit(large_like, 32)
    assert width == 32 and [b.drop_path.drop_prob for b in vit.blocks] == pytest.approx([0.0, 0.1])
    vit, _ = create_vit(large_like, 32, drop_path_rate=0.0)
    assert [b.drop_path.drop_prob for b in vit.blocks] == [0.0, 0.0]


# ---------------------------------------------------------------- MED

def test_med_config_json_and_presets():
    base = MedConfig.base()
    assert (base.hidden_size, base.num_hidden_layers, base.num_attention_heads, base.intermediate_size) == (
        768, 12, 12, 3072)
    assert (base.vocab_size, base.encoder_width, base.max_position_embeddings) == (30524, 768, 512)
    assert base.add_cross_attention and base.layer_norm_eps == 1e-12
    assert json.loads(MED_CONFIG_PATH.read_text())["vocab_size"] == 30524
    assert ViTConfig.preset("large").width == 1024 and ViTConfig.preset("base").depth == 12


def test_med_config_rejects_unsupported(tmp_path):
    path = tmp_path / "med.json"
    path.write_text(json.dumps({"hidden_size": 32, "num_attention_heads": 2,
                                "position_embedding_type": "relative_key"}))
    with pytest.raises(ValueError, match="absolute"):
        MedConfig.from_json(path)


def test_text_mode_ignores_images_multimodal_uses_them():
    med = MedModel(tiny_med_config(VOCAB, encoder_width=32)).eval()
    ids, mask = random_ids(2, 7), torch.ones(2, 7, dtype=torch.long)
    images_a, images_b = torch.randn(2, 17, 32), torch.randn(2, 17, 32)
    text = med(ids, mask, mode="text").last_hidden_state
    torch.testing.assert_close(med(ids, mask, encoder_hidden_states=images_a, mode="text").last_hidden_state, text,
                               atol=0, rtol=0)
    multi_a = med(ids, mask, encoder_hidden_states=images_a).last_hidden_state
    multi_b = med(ids, mask, encoder_hidden_states=images_b).last_hidden_state
    assert multi_a.shape == (2, 7, 32)
    assert not torch.allclose(multi_a, text, atol=1e-3) and not torch.allclose(multi_a, multi_b, atol=1e-3)
    with pytest.raises(ValueError, match="mode"):
        med(ids, mask, mode="fusion")
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        med(ids, mask, mode="multimodal")


def test_wide_image_memory_like_vit_large():
    med = MedModel(tiny_med_config(VOCAB, encoder_width=48)).eval()
    assert med.state_dict()["encoder.layer.0.crossattention.self.key.weight"].shape == (32, 48)
    assert med.state_dict()["encoder.layer.0.crossattention.self.query.weight"].shape == (32, 32)
    out = med(random_ids(2, 5), encoder_hidden_states=torch.randn(2, 10, 48)).last_hidden_state
    assert out.shape == (2, 5, 32)


@pytest.mark.parametrize("mode", ["text", "multimodal"])
def test_padding_leaves_real_tokens_unchanged(mode):
    med = MedModel(tiny_med_config(VOCAB, encoder_width=32)).eval()
    ids = random_ids(1, 5)
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 5), torch.zeros(1, 4)], dim=1).long()
    images = torch.randn(1, 17, 32)
    short = med(ids, torch.ones(1, 5, dtype=torch.long), encoder_hidden_states=images, mode=mode).last_hidden_state
    long = med(padded, mask, encoder_hidden_states=images, mode=mode).last_hidden_state
    torch.testing.assert_close(long[:, :5], short, atol=1e-6, rtol=1e-6)
    unmasked = med(padded, torch.ones(1, 9, dtype=torch.long), encoder_hidden_states=images,
                   mode=mode).last_hidden_state
    assert not torch.allclose(unmasked[:, :5], short, atol=1e-4)


def test_enc_token_overwrite():
    ids = random_ids(2, 6)
    replaced = with_first_token(ids, ENC)
    assert (replaced[:, 0] == ENC).all() and torch.equal(replaced[:, 1:], ids[:, 1:]) and (ids[:, 0] == 2).all()
    model = CirStage1(tiny_vit_config(), tiny_med_config(VOCAB, 32), 32, enc_token_id=ENC, embed_dim=16).eval()
    reference, mask = torch.randn(2, 17, 32), torch.ones(2, 6, dtype=torch.long)
    query = model(reference, ids, mask)
    torch.testing.assert_close(model(reference, replaced, mask), query, atol=0, rtol=0)
    cls_first = model.text_encoder(ids, mask, encoder_hidden_states=reference).last_hidden_state[:, 0]
    plain = nn.functional.normalize(model.text_proj(cls_first), dim=-1)
    assert not torch.allclose(plain, query, atol=1e-4)
    torch.testing.assert_close(query.norm(dim=-1), torch.ones(2))


# ---------------------------------------------------------------- twin MED

def _twin_from_med(med_model: MedModel, merge_start_layer: int) -> TwinMedModel:
    holder = nn.Module()
    holder.text_encoder = TwinMedModel(med_model.config, merge_start_layer=merge_start_layer)
    state, _ = remap_twin({f"text_encoder.{k}": v for k, v in med_model.state_dict().items()})
    missing, unexpected = holder.load_state_dict(state, strict=False)
    assert unexpected == [] and all(".merge_layer." in key for key in missing)
    return holder.text_encoder.eval()


def test_twin_equals_plain_med_without_merge_layers():
    cfg = tiny_med_config(VOCAB, encoder_width=32, num_layers=4)
    med = MedModel(cfg).eval()
    twin = _twin_from_med(med, merge_start_layer=4)
    ids, mask = random_ids(3, 6), torch.ones(3, 6, dtype=torch.long)
    mask[0, 4:] = 0
    images = torch.randn(3, 17, 32)
    plain_cls = med(ids, mask, encoder_hidden_states=images).last_hidden_state[:, 0]
    pair = twin(ids, mask, med.embeddings(ids), encoder_hidden_states=[images, images])
    assert pair.shape == (3, 64)
    torch.testing.assert_close(pair[:, :32], plain_cls, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pair[:, 32:], plain_cls, atol=1e-5, rtol=1e-5)


def test_twin_merge_layers_and_streams():
    cfg = tiny_med_config(VOCAB, encoder_width=32, num_layers=4)
    med = MedModel(cfg).eval()
    twin = _twin_from_med(med, merge_start_layer=2)
    assert [layer.crossattention.output.merge_layer is not None for layer in twin.encoder.layer] == [
        False, False, True, True]
    assert twin.state_dict()["encoder.layer.3.crossattention.output.merge_layer.weight"].shape == (32, 64)
    ids, mask, images = random_ids(2, 6), torch.ones(2, 6, dtype=torch.long), torch.randn(2, 17, 32)
    z_t = torch.randn(2, 6, 32)
    pair = twin(ids, mask, z_t, encoder_hidden_states=images)
    with torch.no_grad():
        twin.encoder.layer[3].crossattention.output.merge_layer.weight.mul_(2)
    assert not torch.allclose(twin(ids, mask, z_t, encoder_hidden_states=images), pair, atol=1e-5)
    other_z = twin(ids, mask, torch.randn(2, 6, 32), encoder_hidden_states=images)
    assert not torch.allclose(other_z[:, :32], pair[:, :32], atol=1e-4)
    with pytest.raises(ValueError, match="z_t"):
        twin(ids, mask, torch.randn(2, 5, 32), encoder_hidden_states=images)


# ---------------------------------------------------------------- heads

def test_itc_features_and_itm_head():
    med = tiny_med_config(VOCAB, encoder_width=0)
    model = BlipRetrieval(tiny_vit_config(), med, 32, embed_dim=16, queue_size=8, enc_token_id=ENC).eval()
    assert model.med_config.encoder_width == 32
    images, ids, mask = torch.randn(3, 3, 32, 32), random_ids(3, 6), torch.ones(3, 6, dtype=torch.long)
    image_feat, text_feat = model.encode_image(images), model.encode_text(ids, mask)
    assert image_feat.shape == text_feat.shape == (3, 16)
    torch.testing.assert_close(image_feat.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(text_feat.norm(dim=-1), torch.ones(3))
    assert model.itm_logits(model.image_embeds(images), ids, mask).shape == (3, 2)
    assert model.image_queue.shape == model.text_queue.shape == (16, 8)
    assert model.idx_queue.shape == (1, 8) and model.ptr_queue.shape == (1,)
    assert torch.equal(model.text_encoder_m.embeddings.word_embeddings.weight,
                       model.text_encoder.embeddings.word_embeddings.weight)
    assert not any(p.requires_grad for p in model.visual_encoder_m.parameters())
    assert model.temp.item() == pytest.approx(0.07)
    small = BlipItc(tiny_vit_config(), med, 32, embed_dim=16)
    assert not hasattr(small, "itm_head") and not hasattr(small, "temp")
