"""Building the two stages from BLIP's ``model_base.pth`` and loading their checkpoints, as every script needs them
(``build_models``: tokenizer, stage 1 and stage 2 from the flags).

Stage 1 (``CirStage1``, checkpoint key ``BLIP_Retrieval``) loads ``model_base.pth`` with BLIP's loader. Stage 2
(``CirStage2``, key ``BLIP_NLVR``) loads it through the key duplication of ``src/blip_stage2.py``: every single-stream
self/cross-attention, output projection and LayerNorm key of the text encoder is copied to both twins; only
``merge_layer`` (layers >= 6) and ``cls_head`` stay randomly initialised.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import BertTokenizer

from common.args import vit_config_from_arg
from common.blip import (CirStage1, CirStage2, LoadReport, MedConfig, ViTConfig, build_blip_tokenizer,
                         load_blip_checkpoint, remap_twin)
from common.blip.checkpoint import read_blip_file
from common.blip.config import med_config_from_arg
from common.io import CheckpointError, PathLike, load_torch_file
from common.runtime import get_logger
from reranking_cir.args import DEFAULT_MED_CONFIG
from reranking_cir.paths import get_model_path

logger = get_logger(__name__)

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


@dataclass
class Models:
    tokenizer: BertTokenizer
    stage1: CirStage1
    stage2: CirStage2 | None = None


def build_models(args: argparse.Namespace, device: torch.device, stage1_path: PathLike | None = None,
                 stage2: bool = False, stage2_path: PathLike | None = None) -> Models:
    """Stage 1 (and stage 2) from ``model_base.pth``, then the given checkpoints loaded strictly; eval mode."""
    tokenizer = build_blip_tokenizer(args.tokenizer, allow_download=args.allow_download)
    med = med_config_from_arg(args.med_config_path, DEFAULT_MED_CONFIG)
    if len(tokenizer) > med.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but {args.med_config_path} sets vocab_size "
                         f"{med.vocab_size}")
    vit = vit_config_from_arg(args.vit_config)
    path, payload = read_blip_file(args.blip_pretrained_path, allow_download=args.allow_download,
                                   trusted=args.trust_checkpoints)
    embed_dim = payload.get("model", payload)["vision_proj.weight"].shape[0]
    first = build_stage1(vit, med, args.input_dim, tokenizer.enc_token_id, embed_dim)
    _init(init_stage1, first, payload, path)
    if stage1_path is not None:
        epoch = load_stage(first, stage1_path, 1, args.trust_checkpoints)
        logger.info("stage 1 loaded from %s (epoch %s)", stage1_path, epoch)
    second = None
    if stage2:
        second = build_stage2(vit, med, args.input_dim, tokenizer.enc_token_id)
        report = _init(init_stage2, second, payload, path)
        logger.info("stage 2 initialised from %s: %d keys loaded, fresh: %s", path, len(report.loaded),
                    sorted({key.split(".weight")[0].split(".bias")[0] for key in report.missing}))
        if stage2_path is not None:
            epoch = load_stage(second, stage2_path, 2, args.trust_checkpoints)
            logger.info("stage 2 loaded from %s (epoch %s)", stage2_path, epoch)
        second = second.to(device).eval()
    return Models(tokenizer, first.to(device).eval(), second)


def _init(init, model: nn.Module, payload: dict, path: Path):
    try:
        return init(model, payload)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from error


def same_vit(first: nn.Module, second: nn.Module) -> bool:
    """Whether two ViTs hold the same weights (then their gallery tokens are shared)."""
    a, b = first.state_dict(), second.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def resolve_stage_path(path: PathLike | None, dataset: str, args: argparse.Namespace) -> Path | None:
    return None if path is None else get_model_path(path, dataset, args.models_root)
