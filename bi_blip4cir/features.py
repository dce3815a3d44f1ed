"""Frozen BLIP features of Bi-BLIP4CIR: image and text feature tables, sharded over processes, with their
``--cache-dir`` keys.

The image encoder never trains, and in stage II the text encoder is frozen too, so their outputs are computed once
(``FrozenImages`` / ``FrozenTexts`` with a table) instead of at every step as the original does. Both are in eval
mode and preprocessing is deterministic, so the losses equal re-encoding up to float rounding (padding lengths differ
between batches); ``--no-feature-cache`` restores the original per-step encoding.
"""
from __future__ import annotations

import argparse
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from common.features import cached_fingerprint, extract_features

EXTRACT_BATCH_SIZE = 32


def feature_cache_key(args: argparse.Namespace, **parts: Any) -> dict[str, Any] | None:
    """The on-disk cache key of frozen features (None without ``--cache-dir``): checkpoint hashes, model files,
    preprocessing and ``parts`` (what was encoded: dataset root, split, ...)."""
    if args.cache_dir is None:
        return None
    key = {"blip": cached_fingerprint(args.blip_pretrained_path), "vit": args.vit_config, "med": args.med_config_path,
           "tokenizer": args.tokenizer, "transform": args.transform, "target_ratio": args.target_ratio,
           "input_dim": args.input_dim, **parts}
    if parts.get("what") == "texts" and getattr(args, "blip_model_path", None):
        key["text_encoder"] = cached_fingerprint(args.blip_model_path)
    return key


def encode_image_table(image_encoder: nn.Module, image_set: Dataset, device: torch.device,
                       args: argparse.Namespace, batch_size: int = EXTRACT_BATCH_SIZE,
                       **key_parts: Any) -> tuple[torch.Tensor, list[str]]:
    """Raw image features [N, D] and names of a classic dataset, sharded over processes, fp32 (collective).
    ``key_parts`` (dataset, split, ...) name what was encoded in the ``--cache-dir`` key."""
    return extract_features(image_set, image_encoder, device=device, batch_size=batch_size,
                            num_workers=args.num_workers, key_index=0, amp=False, cache_dir=args.cache_dir,
                            cache_key=feature_cache_key(args, what="images", **key_parts), desc="image features")


def encode_text_table(text_encoder: nn.Module, texts: Sequence[str], device: torch.device, args: argparse.Namespace,
                      batch_size: int = EXTRACT_BATCH_SIZE, **key_parts: Any) -> torch.Tensor:
    """Raw text features [S, D] of ``texts``, sharded over processes, fp32 (collective)."""
    pairs = [(text, text) for text in texts]
    features, _ = extract_features(pairs, text_encoder, device=device, batch_size=batch_size, amp=False,
                                   cache_dir=args.cache_dir, desc="text features",
                                   cache_key=feature_cache_key(args, what="texts", **key_parts))
    return features
