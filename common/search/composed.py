"""Search models of the CLIP4Cir family (Bi-BLIP4CIR, MLCL): the gallery of a CIR split as ``GalleryImage`` rows
with their features, and the composition ``combine(reference feature, caption feature)`` ranked by cosine, as
``common.cir.evaluation.query_scores`` ranks a validation query."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from common.cir.data import FIQ_DRESS_TYPES, classic_dataset
from common.cir.evaluation import Combine
from common.search.engine import GalleryImage

GalleryEncoder = Callable[[Dataset, tuple[str, ...]], tuple[torch.Tensor, list[str]]]
"""``encode(classic dataset, dress types)`` -> (rows [N, ...], names), through the paper's feature cache."""


def cir_gallery(name: str, root: Path, split: str, preprocess: Callable[[Image.Image], torch.Tensor],
                encode: GalleryEncoder) -> tuple[list[GalleryImage], torch.Tensor]:
    """The images of a split and their rows: FashionIQ one group per category (dress, toptee, shirt, as the
    validation), CIRR and Shoes one group. ``encode`` gets each group's classic dataset (images preprocessed by
    ``preprocess``) and its dress types (empty for CIRR and Shoes)."""
    groups = [(dress_type,) for dress_type in FIQ_DRESS_TYPES] if name == "fashioniq" else [()]
    images, rows = [], []
    for dress_types in groups:
        dataset = classic_dataset(name, root, split, preprocess, list(dress_types) or FIQ_DRESS_TYPES)
        group_rows, names = encode(dataset, dress_types)
        group = dress_types[0] if dress_types else name
        images.extend(GalleryImage(image, group, dataset.image_path(image)) for image in names)
        rows.append(group_rows)
    return images, torch.cat(rows)


class ComposedModel:
    """A CLIP4Cir-style search model: raw image features as gallery rows, a text encoder, the combining function.

    ``caption`` rewrites the typed text as the paper's validation queries read (e.g. Bi-BLIP4CIR's direction
    markers); ``preprocess`` turns an uploaded image into the image encoder's input.
    """

    stages = ("composed",)

    def __init__(self, images: list[GalleryImage], gallery: torch.Tensor,
                 image_encoder: Callable[[torch.Tensor], torch.Tensor],
                 preprocess: Callable[[Image.Image], torch.Tensor],
                 text_encoder: Callable[[list[str]], torch.Tensor], combine: Combine,
                 caption: Callable[[str], str] = str):
        self.images, self.gallery = images, gallery
        self.image_encoder, self.preprocess = image_encoder, preprocess
        self.text_encoder, self.combine, self.caption = text_encoder, combine, caption
        self.targets = F.normalize(gallery.float(), dim=-1)

    @torch.no_grad()
    def encode_image(self, image: Image.Image) -> torch.Tensor:
        return self.image_encoder(self.preprocess(image).unsqueeze(0).to(self.gallery.device)).float()

    @torch.no_grad()
    def scores(self, reference: torch.Tensor, caption: str) -> torch.Tensor:
        text = self.text_encoder([self.caption(caption)]).float()
        predicted = F.normalize(self.combine(reference, text.to(reference.device)).float(), dim=-1)
        return (predicted @ self.targets.T)[0]

    def rescore(self, reference: torch.Tensor, caption: str, candidates: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("a CLIP4Cir model has one stage")
