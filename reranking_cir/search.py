"""Candidate Re-ranking in the search demo (``search_demo.py --paper reranking_cir``): stage 1 ranks the val
gallery as validate.py does; with ``--stage2-path`` the page offers stage 2, which re-scores stage 1's first
``--k`` candidates as validate_stage2.py does.

Gallery rows are the ViT tokens of each image (stage 1's, and stage 2's when its ViT differs), computed once into
``--cache-dir``, keyed by a hash of the ViT weights, the preprocessing and the split.
"""
from __future__ import annotations

import argparse
import hashlib
from typing import Callable

import torch
from PIL import Image
from torch import nn

from common.cir.args import preprocess_from_args
from common.cir.data import dataset_root
from common.features import extract_features
from common.search.composed import cir_gallery
from common.search.engine import GalleryImage
from reranking_cir.args import (STAGE_PATH_HELP, add_image_args, add_port_args, add_stage2_eval_args,
                                dataset_name)
from reranking_cir.data import EXTRACT_BATCH_SIZE
from reranking_cir.models import Models, build_models, resolve_stage_path, same_vit
from reranking_cir.scoring import encode_queries, stage2_scores

SPLIT = "val"


def add_args(parser: argparse.ArgumentParser) -> None:
    """validate.py's and validate_stage2.py's flags (``--stage2-path`` optional: without it, stage 1 only)."""
    parser.add_argument("--dataset", type=dataset_name, required=True, help="'CIRR' or 'FashionIQ'")
    parser.add_argument("--stage1-path", default=None,
                        help=f"{STAGE_PATH_HELP[1]}; relative paths are under --models-root (default: the "
                             "pre-trained BLIP, not fine-tuned)")
    parser.add_argument("--stage2-path", default=None,
                        help=f"{STAGE_PATH_HELP[2]}; adds the stage-2 toggle to the page (default: stage 1 only)")
    parser.add_argument("--k", type=int, default=50, help="stage-1 candidates stage 2 re-scores per query (default 50)")
    add_image_args(parser)
    add_stage2_eval_args(parser)
    add_port_args(parser)


def vit_fingerprint(vit: nn.Module) -> str:
    """SHA-1 of a ViT's weights: the cache key of its gallery tokens (whatever file they came from)."""
    digest = hashlib.sha1()
    for name, tensor in sorted(vit.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


class RerankingModel:
    """Stage-1 cosine ranking and (with a stage-2 model) stage-2 re-scoring over gallery rows ``[N, S, T, W]``:
    ``S`` = 1 (one ViT serves both stages) or 2 (stage 1's tokens, then stage 2's)."""

    def __init__(self, models: Models, images: list[GalleryImage], gallery: torch.Tensor,
                 preprocess: Callable[[Image.Image], torch.Tensor], args: argparse.Namespace):
        self.models, self.images, self.gallery, self.preprocess, self.args = models, images, gallery, preprocess, args
        self.stages = ("stage1", "stage2") if models.stage2 is not None else ("stage1",)
        self.targets = models.stage1.target_features(gallery[:, 0])
        self.vits = [models.stage1.visual_encoder]
        if gallery.shape[1] == 2:
            self.vits.append(models.stage2.visual_encoder)

    @torch.no_grad()
    def encode_image(self, image: Image.Image) -> torch.Tensor:
        pixels = self.preprocess(image).unsqueeze(0).to(self.gallery.device)
        return torch.stack([vit(pixels).float() for vit in self.vits], dim=1)

    def _queries(self, reference: torch.Tensor, caption: str, with_z_t: bool, tokens: int):
        return encode_queries(self.models.stage1, self.models.tokenizer, lambda rows: reference[rows, tokens],
                              torch.zeros(1, dtype=torch.long), [caption], batch_size=1, with_z_t=with_z_t)

    @torch.no_grad()
    def scores(self, reference: torch.Tensor, caption: str) -> torch.Tensor:
        return (self._queries(reference, caption, False, 0).features @ self.targets.T)[0]

    @torch.no_grad()
    def rescore(self, reference: torch.Tensor, caption: str, candidates: torch.Tensor) -> torch.Tensor:
        queries = self._queries(reference, caption, True, -1)
        device = self.gallery.device
        return stage2_scores(self.models.stage2, queries, candidates.unsqueeze(0),
                             lambda rows: self.gallery[rows.to(device), -1], kv_reuse=self.args.kv_reuse,
                             pair_batch=self.args.pair_batch, image_chunk=self.args.image_chunk,
                             dtype=self.args.dtype)[0]


def build_model(args: argparse.Namespace, device: torch.device) -> RerankingModel:
    """Both stages from their flags and the val gallery's tokens (read from ``--cache-dir`` when there)."""
    stage2_path = resolve_stage_path(args.stage2_path, args.dataset, args)
    models = build_models(args, device, resolve_stage_path(args.stage1_path, args.dataset, args),
                          stage2=stage2_path is not None, stage2_path=stage2_path)
    vits = [models.stage1.visual_encoder]
    if models.stage2 is not None and not same_vit(models.stage1.visual_encoder, models.stage2.visual_encoder):
        vits.append(models.stage2.visual_encoder)
    fingerprints = [vit_fingerprint(vit) for vit in vits]
    root, preprocess = dataset_root(args.dataset, args.data_root), preprocess_from_args(args)

    def encode(dataset, dress_types: tuple[str, ...]):
        tables = []
        for vit, fingerprint in zip(vits, fingerprints):
            key = {"what": "reranking search tokens", "vit": fingerprint, "transform": args.transform,
                   "target_ratio": args.target_ratio, "input_dim": args.input_dim, "root": str(root),
                   "split": SPLIT, "dress_types": list(dress_types)}
            tokens, names = extract_features(dataset, vit, device=device, batch_size=EXTRACT_BATCH_SIZE,
                                             num_workers=args.num_workers, key_index=0, amp=False,
                                             cache_dir=args.cache_dir, cache_key=key, desc="gallery tokens")
            tables.append(tokens)
        return torch.stack(tables, dim=1), names

    images, gallery = cir_gallery(args.dataset, root, SPLIT, preprocess, encode)
    return RerankingModel(models, images, gallery, preprocess, args)
