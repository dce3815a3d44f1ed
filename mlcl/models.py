"""The MLCL models: CLIP of ``--clip-model-name`` in the original's precision, its stage-1 files, the frozen image
and text encoders, and the models validate.py and cirr_test_submission.py evaluate."""
from __future__ import annotations

import argparse
import functools
import warnings
from typing import Any, Sequence

import torch

from common.cir.combiner import combining_function
from common.cir.evaluation import Combine
from common.clip import CLIP, CONTEXT_LENGTH, convert_weights, load_clip, tokenize
from common.io import PathLike
from common.runtime import amp_enabled, autocast, get_logger
from common.training.checkpoint import load_model
from mlcl.combiner import load_combiner

logger = get_logger(__name__)

CLIP_KEY = "CLIP"


def clip_precision(device: torch.device, clip_fp32: bool = False) -> str:
    """The CLIP precision of a run: 'fp16' on CUDA unless ``--clip-fp32`` (the original: ``clip.load`` gives fp16
    weights on CUDA), 'fp32' on every other device (``clip.load`` casts to fp32 there)."""
    return "fp16" if torch.device(device).type == "cuda" and not clip_fp32 else "fp32"


def round_weights_to_fp16(model: CLIP) -> CLIP:
    """Round the weights ``convert_weights`` halves (conv, linear, attention, projections) to fp16 values, kept as
    fp32 tensors: what the original's model holds after loading files into its fp16 CLIP and casting with
    ``.float()``. LayerNorm, BatchNorm, embeddings and ``logit_scale`` stay exact."""
    convert_weights(model)
    return model.float()


def frozen_training_clip(model: CLIP, precision: str) -> CLIP:
    """The frozen CLIP that encodes stage-2 training batches: in the 'fp16' precision the fp16 model, as the original
    (``convert_weights`` at every epoch, undone by ``.float()`` only for validation); else ``model`` unchanged."""
    if precision == "fp16":
        convert_weights(model)
    return model


def build_clip(args: argparse.Namespace, device: torch.device,
               checkpoint: PathLike | None = None) -> tuple[CLIP, dict[str, Any]]:
    """The fp32 CLIP of ``--clip-model-name`` in eval mode with ``checkpoint`` (``{'CLIP': state_dict}``) loaded
    on top, and its sizes (``common.clip.clip_info``) plus ``precision`` (:func:`clip_precision`). In the 'fp16'
    precision its weights are rounded through fp16 after loading (:func:`round_weights_to_fp16`), as the original."""
    precision = clip_precision(device, args.clip_fp32)
    model, _, info = load_clip(args.clip_model_name, device=device, allow_download=args.allow_download,
                               download_root=args.clip_download_root)
    if checkpoint:
        load_clip_checkpoint(model, checkpoint, args)
    if precision == "fp16":
        round_weights_to_fp16(model)
    logger.info("CLIP precision %s%s", precision, " (weights rounded to fp16 values)" if precision == "fp16" else "")
    return model, {**info, "precision": precision}


def load_clip_checkpoint(model: CLIP, path: PathLike, args: argparse.Namespace) -> Any:
    """Load ``{'CLIP': state_dict, ...}`` strictly into the fp32 ``model`` (exact); returns the file's epoch."""
    payload = load_model(path, model, key=CLIP_KEY, trusted=args.trust_checkpoints)
    logger.info("CLIP weights loaded from %s (epoch %s)", path, payload.get("epoch"))
    return payload.get("epoch")


def tokenize_captions(texts: Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """CLIP token ids; a caption over ``context_length`` tokens is truncated with a warning (the original raised)."""
    try:
        return tokenize(texts, context_length, truncate=False)
    except RuntimeError:
        for text in texts:
            try:
                tokenize([text], context_length, truncate=False)
            except RuntimeError:
                warnings.warn(f"caption longer than {context_length} tokens, truncated: {text[:80]!r}...",
                              stacklevel=2)
        return tokenize(texts, context_length, truncate=True)


class ImageEncoder:
    """Raw fp32 CLIP image features of preprocessed images (autocast on CUDA when ``amp``)."""

    def __init__(self, model: CLIP, device: torch.device, amp: bool = False):
        self.model, self.device, self.amp = model, device, amp

    @property
    def compute(self) -> str:
        """How features are computed: 'fp16' (fp16 weights), 'autocast' (CUDA autocast) or 'fp32'."""
        if self.model.dtype == torch.float16:
            return "fp16"
        return "autocast" if amp_enabled(self.device, self.amp) else "fp32"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.amp):
            return self.model.encode_image(images.to(self.device)).float()


class TextEncoder:
    """Raw fp32 CLIP text features of caption strings."""

    def __init__(self, model: CLIP, device: torch.device):
        self.model, self.device = model, device

    @property
    def compute(self) -> str:
        """How features are computed: 'fp16' (fp16 weights) or 'fp32'."""
        return "fp16" if self.model.dtype == torch.float16 else "fp32"

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = tokenize_captions(list(texts), int(self.model.context_length))
        return self.model.encode_text(tokens.to(self.device)).float()


def sum_fusion(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of CLIP4Cir (normalised by the scoring)."""
    return image_features + text_features


def evaluation_models(args: argparse.Namespace, device: torch.device) -> tuple[CLIP, dict[str, Any], Combine]:
    """CLIP (``--clip-model-path`` loaded on top; fp32 computation, weights as :func:`build_clip`), its sizes and the
    combining function, all in eval mode."""
    model, info = build_clip(args, device, args.clip_model_path)
    model.requires_grad_(False).eval()

    def fused_query() -> Combine:
        combiner = load_combiner(args.combiner_path, info["embed_dim"], args, device)
        return functools.partial(combiner.fused_query, fusion_weights=args.fusion_weights)

    return model, info, combining_function(args, sum_fusion, fused_query)
