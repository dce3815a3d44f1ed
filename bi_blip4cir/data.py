"""The Bi-BLIP4CIR data: the datasets with the direction markers, the train triplets with their frozen image
features (``--skip-bad-images`` applied), and the validation query sets (``common.cir``'s, with BLIP galleries)."""
from __future__ import annotations

import argparse
import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from bi_blip4cir.features import EXTRACT_BATCH_SIZE, encode_image_table
from bi_blip4cir.prompts import marker_hook
from common.cir import data as cir_data
from common.cir import evaluation as cir_evaluation
from common.cir.args import preprocess_from_args
from common.cir.data import FIQ_DRESS_TYPES, NamedImages, TripletRows, classic_dataset, triplet_fields
from common.cir.evaluation import QuerySet
from common.cir.frozen import FrozenImages
from common.data.images import open_image
from common.runtime import get_logger

logger = get_logger(__name__)


def relative_dataset(name: str, root: Path, split: str, preprocess: Callable, prompt_mode: str,
                     dress_types: Sequence[str] = FIQ_DRESS_TYPES) -> Dataset:
    """Triplets with the direction markers; train items carry the backward captions too."""
    return cir_data.relative_dataset(name, root, split, preprocess, marker_hook(prompt_mode), dress_types,
                                     return_reverse=True)


def unreadable_images(dataset: Dataset, names: Sequence[str], threads: int) -> dict[str, str]:
    """Name -> error message of each image in ``names`` that cannot be opened and decoded (read in threads)."""
    def problem(name: str) -> str | None:
        try:
            open_image(dataset.image_path(name))
        except OSError as error:
            return str(error)
        return None

    with ThreadPoolExecutor(max(1, threads)) as pool:
        return {name: error for name, error in zip(names, pool.map(problem, names)) if error is not None}


def skip_bad_triplets(train_set: Dataset, threads: int) -> list[str]:
    """``--skip-bad-images``: drop from ``train_set`` the triplets whose reference or target cannot be read.
    Each unreadable file is logged once, then the counts; returns the unreadable image names."""
    names = TripletRows(train_set, {}).used_images()
    bad = unreadable_images(train_set, names, threads)
    for error in bad.values():
        logger.warning("--skip-bad-images: skipping %s", error)
    if bad:
        kept = [triplet for index, triplet in enumerate(train_set.triplets)
                if not set(triplet_fields(train_set, index)[:2]) & set(bad)]
        logger.warning("--skip-bad-images: %d of %d train images are unreadable; %d of %d triplets left out",
                       len(bad), len(names), len(train_set.triplets) - len(kept), len(train_set.triplets))
        train_set.triplets = kept
    return list(bad)


class TrainData(NamedTuple):
    """What both training stages train on: the triplets, their image features, the dataset the loader reads, its
    worker count, and the images ``--skip-bad-images`` left out."""

    train_set: Dataset
    images: FrozenImages
    data: Dataset
    workers: int
    skipped: list[str]


def train_triplets(args: argparse.Namespace, root: Path, image_encoder: nn.Module, device: torch.device,
                   batch_size: int = EXTRACT_BATCH_SIZE) -> TrainData:
    """The train triplets and their image features, for both training stages.

    By default the images the train triplets use (not every image of the split) are encoded once (``batch_size``
    at a time) into a table and the loader yields table rows (``TripletRows``) without workers;
    ``--no-feature-cache`` loads the images and encodes them at every step in chunks of ``batch_size``, as the
    original. With ``--skip-bad-images`` triplets with an unreadable image are left out first.
    """
    preprocess = preprocess_from_args(args)
    train_set = relative_dataset(args.dataset, root, "train", preprocess, args.prompt_mode)
    skipped = skip_bad_triplets(train_set, max(1, args.num_workers)) if getattr(args, "skip_bad_images", False) \
        else []
    if args.no_feature_cache:
        return TrainData(train_set, FrozenImages(image_encoder, device, chunk_size=batch_size), train_set,
                         args.num_workers, skipped)
    names = TripletRows(train_set, {}).used_images()
    subset = hashlib.sha1("\n".join(names).encode()).hexdigest()
    table, encoded = encode_image_table(image_encoder, NamedImages(train_set, names, preprocess), device, args,
                                        batch_size=batch_size, root=str(root), split="train", images=subset)
    rows = TripletRows(train_set, {image: row for row, image in enumerate(encoded)})
    return TrainData(train_set, FrozenImages(image_encoder, device, table), rows, 0, skipped)


def build_query_sets(name: str, split: str, root: Path, image_encoder: nn.Module, device: torch.device,
                     args: argparse.Namespace) -> list[QuerySet]:
    """Gallery features (computed once, collective) and marked queries of a split (``common.cir``'s query sets)."""
    preprocess = preprocess_from_args(args)

    def encode_gallery(dress_types: Sequence[str]) -> tuple[torch.Tensor, list[str]]:
        gallery = classic_dataset(name, root, split, preprocess, dress_types or FIQ_DRESS_TYPES)
        return encode_image_table(image_encoder, gallery, device, args, root=str(root), split=split,
                                  dress_types=tuple(dress_types))

    return cir_evaluation.build_query_sets(name, split, encode_gallery, lambda dress_types: relative_dataset(
        name, root, split, preprocess, args.prompt_mode, dress_types or FIQ_DRESS_TYPES))
