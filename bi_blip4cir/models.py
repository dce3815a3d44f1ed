"""The Bi-BLIP4CIR models: the BLIP image and text encoders of ``--blip-pretrained-path``, the stage-I text-encoder
files, and the combining function that validate.py and cirr_test_submission.py evaluate."""
from __future__ import annotations

import argparse
from functools import partial
from typing import Any

import torch
from torch import nn

from bi_blip4cir.args import DEFAULT_MED_CONFIG
from bi_blip4cir.losses import sum_fusion
from common.args import vit_config_from_arg
from common.blip import BlipImageEncoder, BlipTextEncoder, build_blip_tokenizer, load_blip_checkpoint
from common.blip.checkpoint import read_blip_file
from common.blip.config import med_config_from_arg
from common.cir.combiner import Combiner
from common.cir.combiner import combining_function as choose_combining_function
from common.cir.evaluation import Combine
from common.io import PathLike, check_torch_file, is_url
from common.runtime import get_logger
from common.training.checkpoint import load_model

logger = get_logger(__name__)

TEXT_ENCODER_KEY = "BLIPTextEncoder"
TEXT_MAX_LENGTH = 77


COMBINER_FLAG_HINTS = {"text_projection_layer.*": "--projection-dim / --feature-dim",
                       "image_projection_layer.*": "--projection-dim / --feature-dim",
                       "combiner_layer.*": "--projection-dim / --hidden-dim",
                       "output_layer.*": "--hidden-dim / --feature-dim",
                       "dynamic_scalar.*": "--projection-dim / --hidden-dim"}
"""Which flags set the sizes of a Combiner's weights, for the shape-mismatch message of a --combiner-path file."""
TEXT_ENCODER_FLAG_HINTS = {"text_proj.*": "the projection width of --blip-pretrained-path",
                           "text_encoder.*": "--med-config-path"}


def check_checkpoint_flags(args: argparse.Namespace) -> None:
    """Cheap checks, before any model is built or image encoded, that every checkpoint flag names a readable torch
    file (URLs are checked when fetched); errors name the file and the flag."""
    expected = {"--blip-pretrained-path": ("model", "vision_proj.weight"), "--blip-model-path": (TEXT_ENCODER_KEY,),
                "--combiner-path": ()}
    for flag, keys in expected.items():
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value and not is_url(value):
            check_torch_file(value, flag, expect_any=keys)


def build_blip_encoders(args: argparse.Namespace, device: torch.device) -> tuple[BlipImageEncoder, BlipTextEncoder]:
    """The frozen image encoder (eval, no grad) and the text encoder, both loaded from ``--blip-pretrained-path``.

    The projection width (256 for BLIP) is read from the checkpoint's ``vision_proj``. A key missing from the
    checkpoint raises (the original dropped into pdb).
    """
    path, payload = read_blip_file(args.blip_pretrained_path, allow_download=args.allow_download,
                                   trusted=args.trust_checkpoints)
    embed_dim = payload.get("model", payload)["vision_proj.weight"].shape[0]
    vit = vit_config_from_arg(args.vit_config)
    med = med_config_from_arg(args.med_config_path, DEFAULT_MED_CONFIG)
    tokenizer = build_blip_tokenizer(args.tokenizer, allow_download=args.allow_download)
    if len(tokenizer) > med.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but {args.med_config_path} sets vocab_size "
                         f"{med.vocab_size}")
    image_encoder = BlipImageEncoder(vit, args.input_dim, embed_dim=embed_dim)
    text_encoder = BlipTextEncoder(med, tokenizer, embed_dim=embed_dim, encoder_width=vit.width,
                                   max_length=TEXT_MAX_LENGTH)
    for module, prefixes in ((image_encoder, ("visual_encoder.", "vision_proj.")),
                             (text_encoder, ("text_encoder.", "text_proj."))):
        load_blip_checkpoint(module, payload, select_prefix=prefixes, source_name=path,
                             flag_hints={"visual_encoder.*": "--vit-config / --input-dim",
                                         "text_encoder.*": "--med-config-path"})
    image_encoder.requires_grad_(False)
    return image_encoder.to(device).eval(), text_encoder.to(device)


def load_text_encoder(path: PathLike, text_encoder: nn.Module, trusted: bool) -> Any:
    """Load a stage-I file (``{'epoch', 'BLIPTextEncoder', ...}``, released or ours) strictly; returns its epoch."""
    return load_model(path, text_encoder, key=TEXT_ENCODER_KEY, trusted=trusted,
                      flag_hints=TEXT_ENCODER_FLAG_HINTS).get("epoch")


def check_feature_dim(args: argparse.Namespace, text_encoder: BlipTextEncoder) -> None:
    """``--feature-dim`` must equal the BLIP projection width of the checkpoint."""
    width = text_encoder.text_proj.out_features
    if args.feature_dim != width:
        raise ValueError(f"--feature-dim {args.feature_dim} differs from the projection width {width} of "
                         f"{args.blip_pretrained_path}")


def load_combiner(args: argparse.Namespace, device: torch.device) -> Combiner:
    """The Combiner of ``--combiner-path``, loaded strictly, in eval mode."""
    combiner = Combiner(args.feature_dim, args.projection_dim, args.hidden_dim).to(device)
    load_model(args.combiner_path, combiner, trusted=args.trust_checkpoints, flag_hints=COMBINER_FLAG_HINTS)
    return combiner.eval()


def combining_function(args: argparse.Namespace, device: torch.device) -> Combine:
    """``--combining-function``: the normalised sum, or the Combiner loaded strictly from ``--combiner-path``."""
    return choose_combining_function(args, sum_fusion, partial(load_combiner, args, device))


def load_evaluation_models(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, nn.Module, Combine]:
    """The image encoder, the text encoder (``--blip-model-path`` loaded on top when given) and the combining
    function that validate.py and cirr_test_submission.py evaluate, all in eval mode."""
    image_encoder, text_encoder = build_blip_encoders(args, device)
    if args.combining_function == "combiner":
        check_feature_dim(args, text_encoder)
    if args.blip_model_path:
        epoch = load_text_encoder(args.blip_model_path, text_encoder, args.trust_checkpoints)
        logger.info("BLIP text encoder loaded from %s (epoch %s)", args.blip_model_path, epoch)
    return image_encoder, text_encoder.eval(), combining_function(args, device)
