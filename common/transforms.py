"""Image transforms shared by the five papers.

Every pipeline normalises with CLIP's statistics, which BLIP and the CIR code use too. The CIR pads (``SquarePad``,
``TargetPad``) run on the raw PIL image *before* the RGB conversion, as upstream does: for a palette image the pad
fill 0 is palette entry 0.
"""
from __future__ import annotations

from typing import Callable

from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

PREPROCESS_KINDS = ("targetpad", "squarepad", "clip", "blip")


def _to_rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


def _normalize() -> T.Normalize:
    return T.Normalize(CLIP_MEAN, CLIP_STD)


class SquarePad:
    """Zero-pad to a square: ⌊(m−w)/2⌋ left and right, ⌊(m−h)/2⌋ top and bottom, where m = max(w, h).

    An odd difference leaves the result 1 px short of square; the CenterCrop that follows absorbs it.
    """

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        side = max(w, h)
        horizontal, vertical = (side - w) // 2, (side - h) // 2
        return F.pad(image, [horizontal, vertical, horizontal, vertical], fill=0, padding_mode="constant")


class TargetPad:
    """Zero-pad the short side so that long/short drops to about ``target_ratio``; smaller ratios stay as is.

    With s = max(w, h) / ratio each side gets max(⌊(s−w)/2⌋, 0) horizontally and max(⌊(s−h)/2⌋, 0) vertically,
    e.g. 1000×400 at 1.25 becomes 1000×800.
    """

    def __init__(self, target_ratio: float):
        self.target_ratio = target_ratio

    def __call__(self, image: Image.Image) -> Image.Image:
        w, h = image.size
        if max(w, h) / min(w, h) < self.target_ratio:
            return image
        scaled = max(w, h) / self.target_ratio
        horizontal = max(int((scaled - w) / 2), 0)
        vertical = max(int((scaled - h) / 2), 0)
        return F.pad(image, [horizontal, vertical, horizontal, vertical], fill=0, padding_mode="constant")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(target_ratio={self.target_ratio})"


def _pad_resize_crop(pad: Callable[[Image.Image], Image.Image], dim: int) -> T.Compose:
    return T.Compose([
        pad,
        T.Resize(dim, interpolation=InterpolationMode.BICUBIC),
        T.CenterCrop(dim),
        _to_rgb,
        T.ToTensor(),
        _normalize(),
    ])


def squarepad_transform(dim: int) -> T.Compose:
    """SquarePad → Resize(short side dim, bicubic) → CenterCrop(dim) → RGB → ToTensor → Normalize."""
    return _pad_resize_crop(SquarePad(), dim)


def targetpad_transform(target_ratio: float, dim: int) -> T.Compose:
    """TargetPad(ratio) → Resize(short side dim, bicubic) → CenterCrop(dim) → RGB → ToTensor → Normalize.

    The default CIR pipeline of CLIP4Cir, Bi-BLIP4CIR, Candidate-Reranking and MLCL (train and eval alike).
    """
    return _pad_resize_crop(TargetPad(target_ratio), dim)


def clip_preprocess(n_px: int) -> T.Compose:
    """CLIP's own preprocessing: Resize(short side n, bicubic) → CenterCrop(n) → RGB → ToTensor → Normalize."""
    return T.Compose([
        T.Resize(n_px, interpolation=InterpolationMode.BICUBIC),
        T.CenterCrop(n_px),
        _to_rgb,
        T.ToTensor(),
        _normalize(),
    ])


def blip_eval_transform(size: int) -> T.Compose:
    """BLIP eval: RGB → Resize to (size, size) (a squash, no crop; bicubic) → ToTensor → Normalize.

    TCR uses it for BLIP at 384 and, unlike CLIP's own pipeline, for CLIP at 224. The RGB conversion comes first,
    where the upstream datasets do it on load.
    """
    return T.Compose([
        _to_rgb,
        T.Resize((size, size), interpolation=InterpolationMode.BICUBIC),
        T.ToTensor(),
        _normalize(),
    ])


def reid_transform(height: int = 384, width: int = 128) -> T.Compose:
    """TCR's person-ReID eval: RGB → Resize to (height, width) (bilinear) → ToTensor → Normalize."""
    return T.Compose([
        _to_rgb,
        T.Resize((height, width)),
        T.ToTensor(),
        _normalize(),
    ])


def random_crop_views(size: int) -> T.Compose:
    """One RA-TTA view: RGB → RandomResizedCrop(size; scale (0.08, 1), bilinear) → HFlip → ToTensor → Normalize.

    Call it ``--augmentation_size`` times on the same PIL image to build the views. Use the model's input size for
    ``size`` (upstream hard-codes 224 in pre-extraction, which breaks 336-px models).
    """
    return T.Compose([
        _to_rgb,
        T.RandomResizedCrop(size),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        _normalize(),
    ])


def build_preprocess(kind: str, dim: int, ratio: float = 1.25) -> T.Compose:
    """The ``--transform`` choice of the CIR scripts: 'targetpad', 'squarepad', 'clip' or 'blip' at ``dim`` pixels."""
    if kind == "targetpad":
        return targetpad_transform(ratio, dim)
    if kind == "squarepad":
        return squarepad_transform(dim)
    if kind == "clip":
        return clip_preprocess(dim)
    if kind == "blip":
        return blip_eval_transform(dim)
    raise ValueError(f"unknown preprocess kind {kind!r}; valid kinds: {', '.join(PREPROCESS_KINDS)}")
