"""Synthetic scenes: a background colour plus one or two coloured shapes, their captions and relative captions.

A scene is small enough that a tiny model can learn it: every caption word names something visible, and a relative
caption names exactly the attributes that differ between the reference and the target scene. All randomness comes
from a caller-supplied ``random.Random``, so a seed fixes every scene, image and caption.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, replace
from typing import Any

from PIL import Image, ImageDraw

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (140, 60, 170),
    "orange": (245, 140, 30),
    "pink": (240, 130, 180),
}
"""Shape colours; disjoint from the background colours, so a shape never vanishes into its background."""

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "black": (20, 20, 20),
    "gray": (128, 128, 128),
    "sand": (194, 178, 128),
}

SHAPES = ("circle", "square", "triangle", "diamond", "sandglass")
SIZES = ("small", "large")
POSITIONS = ("left", "right", "top", "bottom", "center")
OPPOSITE = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}
PAIRS = (("left", "right"), ("top", "bottom"))
"""Positions of the two shapes in a two-shape scene (either order); the shapes never overlap."""

_CENTERS = {"left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25), "bottom": (0.5, 0.75),
            "center": (0.5, 0.5)}
_RADIUS = {"small": 0.12, "large": 0.2}
_WHERE = {"left": "on the left", "right": "on the right", "top": "at the top", "bottom": "at the bottom",
          "center": "in the center"}


@dataclass(frozen=True)
class Shape:
    """One shape of a scene."""

    shape: str
    color: str
    size: str
    position: str


@dataclass(frozen=True)
class Scene:
    """A background colour and one or two shapes (two shapes always differ in kind and sit at opposite positions)."""

    background: str
    objects: tuple[Shape, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"background": self.background, "objects": [vars(obj).copy() for obj in self.objects]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Scene":
        return cls(data["background"], tuple(Shape(**obj) for obj in data["objects"]))


@dataclass(frozen=True)
class Change:
    """One difference between a reference and a target scene.

    ``kind`` is background, color, shape, size, position, add or remove. ``subject`` is the kind of the reference
    shape the change applies to (None for background and add). ``old``/``new`` are attribute values, or the removed
    and added :class:`Shape`.
    """

    kind: str
    subject: str | None
    old: Any
    new: Any


def sample_scene(rng: random.Random, n_objects: int | None = None) -> Scene:
    """Draw a scene with ``n_objects`` (1 or 2; random when None) shapes."""
    n_objects = n_objects or rng.choice((1, 2))
    background = rng.choice(sorted(BACKGROUNDS))
    if n_objects == 1:
        positions: tuple[str, ...] = (rng.choice(POSITIONS),)
    elif n_objects == 2:
        positions = tuple(rng.sample(rng.choice(PAIRS), 2))
    else:
        raise ValueError(f"a scene has 1 or 2 shapes, not {n_objects}")
    kinds = rng.sample(SHAPES, n_objects)
    objects = tuple(Shape(kind, rng.choice(sorted(COLORS)), rng.choice(SIZES), position)
                    for kind, position in zip(kinds, positions))
    return Scene(background, objects)


def render(scene: Scene, size: tuple[int, int] = (64, 64)) -> Image.Image:
    """Draw ``scene`` as an RGB image of ``size`` = (width, height)."""
    width, height = size
    image = Image.new("RGB", size, BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        fx, fy = _CENTERS[obj.position]
        cx, cy, r = fx * width, fy * height, _RADIUS[obj.size] * min(width, height)
        fill = COLORS[obj.color]
        if obj.shape == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        elif obj.shape == "square":
            draw.rectangle([cx - 0.85 * r, cy - 0.85 * r, cx + 0.85 * r, cy + 0.85 * r], fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
        elif obj.shape == "diamond":
            draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
        elif obj.shape == "sandglass":
            draw.polygon([(cx - r, cy - r), (cx + r, cy - r), (cx, cy)], fill=fill)
            draw.polygon([(cx, cy), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
        else:
            raise ValueError(f"unknown shape {obj.shape!r}; known: {', '.join(SHAPES)}")
    return image


# ----------------------------------------------------------------------------------------------------- captions

N_CAPTION_VARIANTS = 6


def _phrase(obj: Shape, with_size: bool, with_position: bool) -> str:
    """E.g. "a large red circle on the left" ("an orange ..." before a vowel)."""
    words = [obj.size if with_size else "", obj.color, obj.shape, _WHERE[obj.position] if with_position else ""]
    text = " ".join(word for word in words if word)
    return f"{'an' if text[0] in 'aeiou' else 'a'} {text}"


def describe(scene: Scene, variant: int = 0) -> str:
    """A caption of the whole scene; ``variant`` (any int, taken modulo 6) picks one of six true phrasings."""
    variant %= N_CAPTION_VARIANTS
    objects = scene.objects[::-1] if variant in (1, 5) else scene.objects
    with_size, with_position = variant != 2, variant != 3
    shapes = " and ".join(_phrase(obj, with_size, with_position) for obj in objects)
    background = f"a {scene.background} background"
    if variant == 1:
        return f"{background} with {shapes}"
    if variant == 2:
        return shapes
    if variant == 4:
        return f"a picture of {shapes} on {background}"
    if variant == 5:
        return f"there is {shapes} on {background}"
    return f"{shapes} on {background}"


def diff_scenes(reference: Scene, target: Scene) -> list[Change]:
    """The changes that turn ``reference`` into ``target``.

    Shapes are matched by index when both scenes have as many shapes; otherwise exactly one shape must have been
    added or removed and nothing else changed (the only edits :func:`modify` makes). Raises ValueError otherwise.
    """
    n_ref, n_tgt = len(reference.objects), len(target.objects)
    if n_ref != n_tgt:
        if reference.background != target.background or abs(n_ref - n_tgt) != 1:
            raise ValueError(f"cannot describe {reference} -> {target}: "
                             "an added or removed shape must be the only change")
        larger, smaller = (target, reference) if n_tgt > n_ref else (reference, target)
        for index, extra in enumerate(larger.objects):
            if larger.objects[:index] + larger.objects[index + 1:] == smaller.objects:
                if larger is target:
                    return [Change("add", None, None, extra)]
                return [Change("remove", extra.shape, extra, None)]
        raise ValueError(f"cannot describe {reference} -> {target}: the kept shape changed too")
    changes = []
    if reference.background != target.background:
        changes.append(Change("background", None, reference.background, target.background))
    for old, new in zip(reference.objects, target.objects):
        for kind in ("color", "shape", "size", "position"):
            if getattr(old, kind) != getattr(new, kind):
                changes.append(Change(kind, old.shape, getattr(old, kind), getattr(new, kind)))
    return changes


def _change_phrase(change: Change, single: bool, variant: int) -> str:
    """One change in words; ``single`` scenes say "it", two-shape scenes name the reference shape."""
    it = "it" if single else f"the {change.subject}"
    subject = "" if single else f"the {change.subject} "
    second = variant % 2 == 1
    if change.kind == "background":
        return (f"make the background {change.new}" if second
                else f"has a {change.new} background instead of {change.old}")
    if change.kind == "color":
        return f"make {it} {change.new}" if second else f"{subject}is {change.new} instead of {change.old}"
    if change.kind == "shape":
        return f"make {it} a {change.new}" if second else f"{subject}is a {change.new} instead of a {change.old}"
    if change.kind == "size":
        comparative = "larger" if change.new == "large" else "smaller"
        return f"make {it} {change.new}" if second else f"{subject}is {comparative}"
    if change.kind == "position":
        return (f"move {it} to the {change.new}" if second
                else f"{subject}is {_WHERE[change.new]} instead of {_WHERE[change.old]}")
    if change.kind == "add":
        obj = change.new
        return (f"has another {obj.color} {obj.shape} {_WHERE[obj.position]}" if second
                else f"add {_phrase(obj, True, True)}")
    if change.kind == "remove":
        return f"is without the {change.subject}" if second else f"remove the {change.subject}"
    raise ValueError(f"unknown change kind {change.kind!r}")


def describe_change(reference: Scene, target: Scene, variant: int = 0) -> str:
    """A relative caption naming every difference from ``reference`` to ``target`` (e.g. "is red instead of blue").

    ``variant`` 0 and 1 give two different phrasings; changes are joined with " and ".
    """
    changes = diff_scenes(reference, target)
    if not changes:
        raise ValueError(f"the scenes are identical: {reference}")
    single = len(reference.objects) == 1
    return " and ".join(_change_phrase(change, single, variant) for change in changes)


def modify(scene: Scene, rng: random.Random, n_changes: int | None = None) -> Scene:
    """Apply 1 or 2 (random when None) edits to ``scene``; adding or removing a shape is always a single edit.

    Edits: background, and per shape colour, kind, size; position (one-shape scenes only); add a shape at the
    opposite side of a non-centred single shape; remove one of two shapes.
    """
    n_changes = n_changes or rng.choice((1, 1, 2))
    single = len(scene.objects) == 1
    options = [("background", None)] + [(kind, index) for index in range(len(scene.objects))
                                         for kind in ("color", "shape", "size")]
    if single:
        options.append(("position", 0))
    structural = []
    if single and scene.objects[0].position != "center":
        structural.append(("add", None))
    if not single:
        structural += [("remove", 0), ("remove", 1)]
    if n_changes == 1 and structural and rng.random() < 0.25:
        return _apply(scene, rng.choice(structural), rng)
    for edit in rng.sample(options, n_changes):
        scene = _apply(scene, edit, rng)
    return scene


def _apply(scene: Scene, edit: tuple[str, int | None], rng: random.Random) -> Scene:
    kind, index = edit
    objects = list(scene.objects)
    if kind == "background":
        return replace(scene, background=rng.choice([c for c in sorted(BACKGROUNDS) if c != scene.background]))
    if kind == "add":
        taken = {obj.shape for obj in objects}
        new = Shape(rng.choice([s for s in SHAPES if s not in taken]), rng.choice(sorted(COLORS)),
                    rng.choice(SIZES), OPPOSITE[objects[0].position])
        return replace(scene, objects=(objects[0], new))
    if kind == "remove":
        return replace(scene, objects=tuple(objects[:index] + objects[index + 1:]))
    obj = objects[index]
    if kind == "color":
        objects[index] = replace(obj, color=rng.choice([c for c in sorted(COLORS) if c != obj.color]))
    elif kind == "shape":
        taken = {other.shape for other in objects}
        objects[index] = replace(obj, shape=rng.choice([s for s in SHAPES if s not in taken]))
    elif kind == "size":
        objects[index] = replace(obj, size="small" if obj.size == "large" else "large")
    elif kind == "position":
        objects[index] = replace(obj, position=rng.choice([p for p in POSITIONS if p != obj.position]))
    else:
        raise ValueError(f"unknown edit {kind!r}")
    return replace(scene, objects=tuple(objects))


# ----------------------------------------------------------------------------------------------------- vocabulary

_TEMPLATE_WORDS = (
    "a an the and on at in with of is instead has make move to add remove without another there picture background "
    "it larger smaller"
)


def vocabulary() -> list[str]:
    """Every word a clean caption or relative caption can contain (sorted, lower case, no punctuation).

    Pass it as ``extra_words`` to ``common.blip.tiny.write_tiny_vocab`` for a BERT vocabulary without ``[UNK]``
    on clean captions (the corrupted TCR captions fall back to word pieces).
    """
    words = set(_TEMPLATE_WORDS.split())
    words.update(COLORS, BACKGROUNDS, SHAPES, SIZES, POSITIONS)
    for phrase in _WHERE.values():
        words.update(phrase.split())
    return sorted(words)


def caption_words(text: str) -> list[str]:
    """Split a caption into lower-case words, dropping punctuation (the split :func:`vocabulary` is built for)."""
    return re.findall(r"[a-z0-9]+", text.lower())

