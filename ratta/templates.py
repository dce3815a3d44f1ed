"""Prompt templates of RA-TTA:src/dataloader/templates.py and the per-dataset dispatch of the after scripts.

``templates`` build the zero-shot (CuPL + template) classifier; the ``pre_template`` prefixes every description
in the description bank and, with its trailing space stripped, forms one more bank row per class.
"""
from __future__ import annotations

IMAGENET_TEMPLATES = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.", "a photo of the hard to see {}.",
    "a low resolution photo of the {}.", "a rendering of a {}.", "graffiti of a {}.", "a bad photo of the {}.",
    "a cropped photo of the {}.", "a tattoo of a {}.", "the embroidered {}.", "a photo of a hard to see {}.",
    "a bright photo of a {}.", "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.",
    "a drawing of a {}.", "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.",
    "a close-up photo of a {}.", "a black and white photo of the {}.", "a painting of the {}.",
    "a painting of a {}.", "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.", "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.", "a photo of the {}.", "a good photo of the {}.", "a rendering of the {}.",
    "a {} in a video game.", "a photo of one {}.", "a doodle of a {}.", "a close-up photo of the {}.",
    "a photo of a {}.", "the origami {}.", "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.",
    "a origami {}.", "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.", "a photo of a nice {}.",
    "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.", "art of a {}.", "a sketch of the {}.",
    "a embroidered {}.", "a pixelated photo of a {}.", "itap of the {}.", "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.", "a plushie {}.", "a photo of the nice {}.", "a photo of the small {}.",
    "a photo of the weird {}.", "the cartoon {}.", "art of the {}.", "a drawing of the {}.",
    "a photo of the large {}.", "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.",
    "itap of a {}.", "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)
"""CLIP's 80 ImageNet prompt templates."""

SEVEN_TEMPLATES = ("itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
                   "a {} in a video game.", "art of the {}.", "a photo of the small {}.")


def _a_and_the(suffix: str) -> tuple[str, str]:
    return (f"a photo of a {{}}, {suffix}.", f"a photo of the {{}}, {suffix}.")


TEMPLATES: dict[str, tuple[str, ...]] = {
    "food101": _a_and_the("a type of food"),
    "fgvc_aircraft": _a_and_the("a type of aircraft"),
    "stanford_cars": _a_and_the("a type of car"),
    "caltech101": SEVEN_TEMPLATES,
    "caltech256": SEVEN_TEMPLATES,
    "sun397": SEVEN_TEMPLATES,
    "ucf101": ("a photo of a person doing {}.",),
    "resisc45": ("a satellite photo of {}.",),
    "cub200": _a_and_the("a type of bird"),
    "flowers102": _a_and_the("a type of flower"),
    "oxford_pets": _a_and_the("a type of pet"),
    "dtd": _a_and_the("a type of texture"),
    "imagenet_1k": IMAGENET_TEMPLATES,
    "imagenet_v2": IMAGENET_TEMPLATES,
    "imagenet_adversarial": IMAGENET_TEMPLATES,
    "imagenet_rendition": IMAGENET_TEMPLATES,
    "imagenet_sketch": IMAGENET_TEMPLATES,
}

PRE_TEMPLATES: dict[str, str] = {
    "food101": "a photo of a {}, a type of food. ",
    "fgvc_aircraft": "a photo of a {} from Fine-Grained Visual Classification of Aircraft. ",
    "stanford_cars": "a photo of a {}. ",
    "caltech101": "a photo of a {}. ",
    "caltech256": "a photo of a {}. ",
    "sun397": "a photo of a {}. ",
    "ucf101": "a photo of a person doing {}. ",
    "resisc45": "a satellite photo of the {}. ",
    "cub200": "a photo of a {}, a type of bird. ",
    "flowers102": "a photo of a {}, a type of flower. ",
    "oxford_pets": "a photo of a {}, a type of pet. ",
    "dtd": "a photo of a {}, which is a type of texture, or a type of pattern. ",
    "imagenet_1k": "a photo of the {}. ",
    "imagenet_v2": "a photo of the {}. ",
    "imagenet_adversarial": "a photo of the {}. ",
    "imagenet_rendition": "a rendition photo of the {}. ",
    "imagenet_sketch": "a sketch photo of a {}. ",
}
