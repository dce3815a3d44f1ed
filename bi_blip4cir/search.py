"""Bi-BLIP4CIR in the search demo (``search_demo.py --paper bi_blip4cir``): the models of validate.py, the val
gallery through validate.py's feature cache (same ``--cache-dir`` entries), and the typed text marked
``[FORWARD]`` as the validation captions are."""
from __future__ import annotations

import argparse

import torch

from bi_blip4cir.args import add_evaluation_args, add_port_args, dataset_name
from bi_blip4cir.features import encode_image_table
from bi_blip4cir.models import check_checkpoint_flags, load_evaluation_models
from bi_blip4cir.prompts import marker_hook
from common.cir.args import preprocess_from_args
from common.cir.data import dataset_root
from common.search.composed import ComposedModel, cir_gallery

SPLIT = "val"


def add_args(parser: argparse.ArgumentParser) -> None:
    """validate.py's flags: ``--dataset`` (CIRR or FashionIQ), the models, preprocessing, data and runtime."""
    parser.add_argument("--dataset", type=dataset_name, required=True, help="'CIRR' or 'FashionIQ'")
    add_evaluation_args(parser)
    add_port_args(parser, num_workers=8)


def build_model(args: argparse.Namespace, device: torch.device) -> ComposedModel:
    """The encoders and combining function of validate.py and the val gallery's image features."""
    check_checkpoint_flags(args)
    image_encoder, text_encoder, combine = load_evaluation_models(args, device)
    root, preprocess = dataset_root(args.dataset, args.data_root), preprocess_from_args(args)

    def encode(dataset, dress_types: tuple[str, ...]):
        return encode_image_table(image_encoder, dataset, device, args, root=str(root), split=SPLIT,
                                  dress_types=dress_types)

    images, gallery = cir_gallery(args.dataset, root, SPLIT, preprocess, encode)
    hook = marker_hook(args.prompt_mode)
    return ComposedModel(images, gallery, image_encoder, preprocess, text_encoder, combine,
                         caption=lambda text: hook(text, True))
