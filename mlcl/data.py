"""The MLCL data: train triplets with an augmented reference view, frozen CLIP feature tables with their
``--cache-dir`` keys, and the validation query sets.

Frozen features. In stage 2 CLIP is frozen and in eval mode, and the clean preprocessing is deterministic, so the
reference, target and caption features of the train triplets are computed once per run (once per checkpoint with
``--cache-dir``); only the random augmented reference view is encoded at every step. ``--no-feature-cache`` encodes
reference, augmented reference, target and captions at every step as the original does (same losses for the same
augmentation draws, up to float rounding).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import Dataset

from common.cir.args import preprocess_from_args
from common.cir.data import (FIQ_DRESS_TYPES, NamedImages, TripletRows, classic_dataset, relative_dataset,
                             triplet_fields)
from common.cir.evaluation import QuerySet, build_query_sets
from common.data.images import open_image
from common.features import cached_fingerprint, extract_features
from common.io import PathLike
from mlcl.args import data_root
from mlcl.models import ImageEncoder, TextEncoder, clip_precision

EXTRACT_BATCH_SIZE = 32

ImageFn = Callable[[torch.Tensor], torch.Tensor]


class AugmentedRows(TripletRows):
    """Train triplets as (reference row, target row, captions, augmented reference image): only the random view
    is decoded and transformed per item; the clean reference and target are rows of a feature table."""

    def __init__(self, dataset: Dataset, rows: dict[str, int], augment: Callable):
        super().__init__(dataset, rows, backward=False)
        self.augment = augment

    def __getitem__(self, index: int) -> tuple:
        reference, target, captions = super().__getitem__(index)
        raw = open_image(self.dataset.image_path(triplet_fields(self.dataset, index)[0]))
        return reference, target, captions, self.augment(raw)


def clip_cache_key(args: argparse.Namespace, clip_ckpt: PathLike | None, dim: int,
                   encoder: ImageEncoder | TextEncoder, **parts: Any) -> dict | None:
    """The ``--cache-dir`` key of frozen CLIP features (None without it): the CLIP file and fine-tuned checkpoint
    hashes, the precision of the weights (:func:`clip_precision`) and of the ``encoder``'s computation, the
    preprocessing and ``parts`` (what was encoded)."""
    if args.cache_dir is None:
        return None
    name = args.clip_model_name
    clip_id = cached_fingerprint(name) if Path(name).is_file() else name
    return {"clip": clip_id, "clip_ckpt": cached_fingerprint(clip_ckpt) if clip_ckpt else None,
            "precision": clip_precision(encoder.device, args.clip_fp32), "compute": encoder.compute,
            "transform": args.transform, "target_ratio": args.target_ratio, "dim": dim, **parts}


def encode_images(dataset: Dataset, encode: ImageFn, device: torch.device, args: argparse.Namespace,
                  batch_size: int = EXTRACT_BATCH_SIZE, cache_key: dict | None = None,
                  desc: str = "image features") -> tuple[torch.Tensor, list[str]]:
    """Raw fp32 features [N, D] and names of a (name, image) dataset, sharded over processes (collective)."""
    return extract_features(dataset, encode, device=device, batch_size=batch_size, num_workers=args.num_workers,
                            key_index=0, amp=False, cache_dir=args.cache_dir if cache_key else None,
                            cache_key=cache_key, desc=desc)


def train_image_table(train_set: Dataset, encode: ImageEncoder, device: torch.device, args: argparse.Namespace,
                      preprocess: Callable, batch_size: int,
                      cache_key: dict | None = None) -> tuple[torch.Tensor, dict[str, int]]:
    """Features of every image the train triplets use (collective), and each image's row."""
    names = TripletRows(train_set, {}, backward=False).used_images()
    table, keys = encode_images(NamedImages(train_set, names, preprocess), encode, device, args, batch_size,
                                cache_key, desc="train image features")
    return table, {name: row for row, name in enumerate(keys)}


def query_sets(args: argparse.Namespace, name: str, split: str, encode: ImageEncoder, device: torch.device, dim: int,
               clip_ckpt: PathLike | None = None, cache: bool = True) -> list[QuerySet]:
    """Validation (or CIRR test1) query sets with gallery features (collective): one per FashionIQ dress type."""
    root, preprocess = data_root(args, name), preprocess_from_args(args, dim)

    def gallery(dress_types: list[str]) -> tuple[torch.Tensor, list[str]]:
        dataset = classic_dataset(name, root, split, preprocess, dress_types or FIQ_DRESS_TYPES)
        key = clip_cache_key(args, clip_ckpt, dim, encode, what="gallery", root=str(root), split=split,
                             dress_types=dress_types) if cache else None
        return encode_images(dataset, encode, device, args, cache_key=key, desc=f"{split} gallery features")

    def queries(dress_types: list[str]) -> Dataset:
        return relative_dataset(name, root, split, preprocess, dress_types=dress_types or FIQ_DRESS_TYPES)

    return build_query_sets(name, split, gallery, queries)
