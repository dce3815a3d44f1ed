"""MLCL in the search demo (``search_demo.py --paper mlcl``): CLIP and the Combiner (or sum) of validate.py, and
the val gallery through validate.py's feature cache (same ``--cache-dir`` entries)."""
from __future__ import annotations

import argparse

import torch

from common.cir.args import preprocess_from_args
from common.search.composed import ComposedModel, cir_gallery
from mlcl.args import add_evaluation_args, add_port_args, dataset_name, data_root
from mlcl.data import clip_cache_key, encode_images
from mlcl.models import ImageEncoder, TextEncoder, evaluation_models

SPLIT = "val"


def add_args(parser: argparse.ArgumentParser) -> None:
    """validate.py's flags: ``--dataset`` (FashionIQ, Shoes or CIRR), the models, preprocessing, data, runtime."""
    parser.add_argument("--dataset", type=dataset_name, required=True, help="'FashionIQ', 'Shoes' or 'CIRR'")
    add_evaluation_args(parser)
    add_port_args(parser)


def build_model(args: argparse.Namespace, device: torch.device) -> ComposedModel:
    """CLIP, the combining function and the val gallery's image features, as validate.py computes them."""
    model, info, combine = evaluation_models(args, device)
    dim = info["input_resolution"]
    root, preprocess = data_root(args, args.dataset), preprocess_from_args(args, dim)
    image_encoder = ImageEncoder(model, device)

    def encode(dataset, dress_types: tuple[str, ...]):
        key = clip_cache_key(args, args.clip_model_path, dim, image_encoder, what="gallery", root=str(root),
                             split=SPLIT, dress_types=list(dress_types))
        return encode_images(dataset, image_encoder, device, args, cache_key=key, desc=f"{SPLIT} gallery features")

    images, gallery = cir_gallery(args.dataset, root, SPLIT, preprocess, encode)
    return ComposedModel(images, gallery, image_encoder, preprocess, TextEncoder(model, device), combine)
