"""Building the two stages from BLIP's ``model_base.pth`` and loading their checkpoints.

Stage 1 (``CirStage1``, checkpoint key ``BLIP_Retrieval``) loads ``model_base.pth`` with BLIP's loader. Stage 2
(``CirStage2``, key ``BLIP_NLVR``) loads it through the key duplication of ``src/blip_stage2.py``: every single-stream
self/cross-attention, output projection and LayerNorm key of the text encoder is copied to both twins; only
``merge_layer`` (layers >= 6) and ``cls_head`` stay randomly initialised.
"""
from __future__ import annotations

import torch

from common.blip import CirStage1, CirStage2, LoadReport, MedConfig, ViTConfig, load_blip_checkpoint, remap_twin
from common.io import CheckpointError, PathLike, load_torch_file

STAGE_KEYS = {1: "BLIP_Retrieval", 2: "BLIP_NLVR"}
STAGE1_VIT_CKPT_LAYERS = 4
STAGE2_FRESH = ("text_encoder.encoder.layer.*.crossattention.output.merge_layer.*", "cls_head.*")


def build_stage1(vit: ViTConfig, med: MedConfig, image_size: int, enc_token_id: int, embed_dim: int) -> CirStage1:
    """Stage 1 as upstream (``configs/retrieval_coco.yaml``): no drop-path, gradient checkpointing of the last 4
    ViT blocks (it saves memory only while the ViT trains, ``--blip-img-tune``; the values are the same)."""
    return CirStage1(vit, med, image_size, enc_token_id=enc_token_id, embed_dim=embed_dim, drop_path_rate=0.0,
                     vit_grad_ckpt=True, vit_ckpt_layer=STAGE1_VIT_CKPT_LAYERS)


def build_stage2(vit: ViTConfig, med: MedConfig, image_size: int, enc_token_id: int) -> CirStage2:
    """Stage 2 as upstream: drop-path rising to 0.1 in its ViT, ``merge_layer`` from layer 6 (of 12)."""
    merge_start = med.num_hidden_layers // 2
    return CirStage2(vit, med, image_size, enc_token_id=enc_token_id, merge_start_layer=merge_start,
                     drop_path_rate=0.1)


def init_stage1(model: CirStage1, blip: PathLike | dict) -> LoadReport:
    """``model_base.pth`` into stage 1 (position embeddings interpolated; momentum, queues, decoder ignored)."""
    return load_blip_checkpoint(model, blip, on_shape_mismatch="drop", expected_missing=("temp",))


def init_stage2(model: CirStage2, blip: PathLike | dict) -> LoadReport:
    """``model_base.pth`` into stage 2 with the twin key duplication; raises if anything but ``merge_layer`` and
    ``cls_head`` is missing. Shape mismatches raise (the original stage-2 loader does not drop them)."""
    return load_blip_checkpoint(model, blip, remap=remap_twin, expected_missing=STAGE2_FRESH)


def checkpoint_state(path: PathLike, stage: int, trusted: bool = False) -> dict:
    """The file dict of a stage-``stage`` checkpoint, refusing the other stage's file with a clear message."""
    payload = load_torch_file(path, trusted=trusted)
    key, other = STAGE_KEYS[stage], STAGE_KEYS[3 - stage]
    if not isinstance(payload, dict) or key not in payload:
        if isinstance(payload, dict) and other in payload:
            raise CheckpointError(f"{path}: is a stage-{3 - stage} checkpoint ('{other}'); a stage-{stage} "
                                  f"checkpoint ('{key}') is expected here")
        held = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: no '{key}' entry (holds {held}); expected a stage-{stage} checkpoint "
                              f"{{'epoch', '{key}', 'optimizer_state_dict'}}")
    return payload


def load_stage(model: torch.nn.Module, path: PathLike, stage: int, trusted: bool = False) -> int | None:
    """Load a released or our stage-``stage`` checkpoint strictly (``position_ids`` aside); returns its epoch."""
    payload = checkpoint_state(path, stage, trusted)
    try:
        report = load_blip_checkpoint(model, payload, state_key=STAGE_KEYS[stage], interpolate=False)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from error
    if report.unexpected:
        raise CheckpointError(f"{path}: keys that {type(model).__name__} lacks: {list(report.unexpected)[:10]}")
    return payload.get("epoch")


def freeze(module: torch.nn.Module) -> torch.nn.Module:
    """No gradients for ``module``'s parameters."""
    module.requires_grad_(False)
    return module

