"""The augmented reference view of MLCL's training items (MLCL:src/data_utils.py ``image_aug_transform``)."""
from __future__ import annotations

from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as F

from common.transforms import CLIP_MEAN, CLIP_STD, TargetPad

COLOR_JITTERS = (
    dict(brightness=0.5), dict(contrast=0.5), dict(saturation=0.5), dict(hue=0.5),
    dict(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1),
    dict(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.3),
    dict(brightness=0.5, contrast=0.5, saturation=0.5, hue=0.5),
)
"""The seven colour jitters, one drawn per image."""


class Dihedral:
    """A flip (optional, horizontal, first) followed by a counter-clockwise rotation by ``angle`` degrees."""

    def __init__(self, angle: int = 0, hflip: bool = False, vflip: bool = False):
        self.angle, self.hflip, self.vflip = angle, hflip, vflip

    def __call__(self, image: Image.Image) -> Image.Image:
        if self.hflip:
            image = F.hflip(image)
        if self.vflip:
            image = F.vflip(image)
        return F.rotate(image, self.angle, expand=True) if self.angle else image


DIHEDRAL_OPS = (Dihedral(), Dihedral(hflip=True), Dihedral(vflip=True), Dihedral(90), Dihedral(180), Dihedral(270),
                Dihedral(90, hflip=True), Dihedral(270, hflip=True))
"""The eight ops one of which is drawn per image: identity, hflip, vflip, rotations by 90/180/270 degrees, hflip
then rotation by 90 or 270 degrees."""


def to_rgb(image: Image.Image) -> Image.Image:
    return image.convert("RGB")


def image_aug_transform(target_ratio: float = 1.25, dim: int = 288) -> T.Compose:
    """TargetPad(ratio) → RandomResizedCrop(dim) → RGB → one of 7 colour jitters → one of 8 flips/rotations →
    RandomAutocontrast(.5) → RandomPerspective(.5, p=.5) → RandomGrayscale(.5) → ToTensor → CLIP Normalize.

    ``dim`` is the CLIP input resolution (the original hard-codes 288, RN50x4's).
    """
    return T.Compose([
        TargetPad(target_ratio),
        T.RandomResizedCrop(dim),
        to_rgb,
        T.RandomChoice([T.ColorJitter(**jitter) for jitter in COLOR_JITTERS]),
        T.RandomChoice(list(DIHEDRAL_OPS)),
        T.RandomAutocontrast(p=0.5),
        T.RandomPerspective(distortion_scale=0.5, p=0.5),
        T.RandomGrayscale(p=0.5),
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])
