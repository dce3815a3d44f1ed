"""The Candidate Re-ranking data: query sets whose gallery holds cached ViT tokens (FashionIQ per category, CIRR),
train triplets in the validation item layout, and the stage-2 gallery when its ViT differs from stage 1's.

ViT tokens of every gallery image are computed once per evaluation (fp32, as the original) and serve both the
stage-1 queries (reference tokens), the stage-1 target features (CLS) and the stage-2 candidates, when the two
stages' ViTs are equal (frozen ``model_base.pth`` in both, as upstream assumes). Otherwise stage 2's ViT encodes the
gallery again, and its tokens feed both the candidates and the references of ``z_t``, as in the original
``src/validate_stage2.py`` and in stage-2 training.
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

from common.cir import evaluation as cir_evaluation
from common.cir.args import preprocess_from_args
from common.cir.data import FIQ_DRESS_TYPES, classic_dataset, dataset_root, relative_dataset, triplet_fields
from common.cir.evaluation import QuerySet
from common.dist import shard_range
from common.features import extract_features
from common.runtime import get_logger
from reranking_cir.models import Models, same_vit

logger = get_logger(__name__)

EXTRACT_BATCH_SIZE = 16


@torch.no_grad()
def gallery_tokens(vit: nn.Module, dataset, device: torch.device, args: argparse.Namespace,
                   desc: str = "gallery tokens") -> tuple[torch.Tensor, list[str]]:
    """ViT tokens ``[M, T, W]`` (fp32) and names of a classic dataset, sharded over processes (collective)."""
    was_training = vit.training
    vit.eval()
    tokens, names = extract_features(dataset, vit, device=device, batch_size=EXTRACT_BATCH_SIZE,
                                     num_workers=args.num_workers, key_index=0, amp=False, desc=desc)
    vit.train(was_training)
    return tokens, names


def split_items(dataset, split: str) -> list[tuple]:
    """Val/test items of a relative dataset without images; train triplets in the val item layout."""
    if split != "train":
        return [dataset[index] for index in range(len(dataset))]
    items = []
    for index in range(len(dataset.triplets)):
        reference, target, captions, _ = triplet_fields(dataset, index)
        if isinstance(captions, str):
            items.append((reference, target, captions, dataset.triplets[index]["img_set"]["members"]))
        else:
            items.append((reference, target, captions))
    return items


def build_query_sets(args: argparse.Namespace, name: str, split: str, vit: nn.Module,
                     device: torch.device) -> list[QuerySet]:
    """One query set per FashionIQ category (dress, toptee, shirt) or one CIRR set; ``gallery`` holds ViT tokens."""
    root = dataset_root(name, args.data_root)
    preprocess = preprocess_from_args(args)

    def encode_gallery(dress_types: list[str]) -> tuple[torch.Tensor, list[str]]:
        dataset = classic_dataset(name, root, split, preprocess, dress_types or FIQ_DRESS_TYPES)
        return gallery_tokens(vit, dataset, device, args,
                              desc=f"{dress_types[0] if dress_types else name} {split} gallery")

    def queries(dress_types: list[str]):
        return relative_dataset(name, root, split, preprocess, dress_types=dress_types or FIQ_DRESS_TYPES)

    return cir_evaluation.build_query_sets(name, split, encode_gallery, queries, lambda data: split_items(data, split))


def gallery_tokens_for_stage2(models: Models, query_set: QuerySet, name: str, split: str, args: argparse.Namespace,
                              device: torch.device) -> torch.Tensor | None:
    """None when stage 2's ViT equals stage 1's (the gallery tokens are shared), else stage 2's own tokens."""
    if same_vit(models.stage1.visual_encoder, models.stage2.visual_encoder):
        return None
    logger.info("the stage-2 ViT differs from stage 1's: encoding the %s gallery again", query_set.name)
    types = [query_set.name] if name == "fashioniq" else FIQ_DRESS_TYPES
    dataset = classic_dataset(name, dataset_root(name, args.data_root), split, preprocess_from_args(args), types)
    return gallery_tokens(models.stage2.visual_encoder, dataset, device, args, desc="stage-2 gallery tokens")[0]


def shard(query_set: QuerySet) -> range:
    """The queries of this process."""
    return shard_range(len(query_set.captions))
