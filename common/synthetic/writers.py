"""Write synthetic datasets in the exact on-disk formats the original loaders read.

Each writer draws its scenes from :mod:`common.synthetic.scenes`, saves the rendered images, writes the JSON and
text files of the real dataset, and returns a small JSON-serialisable dict describing what it wrote. Each dataset
folder also gets ``synthetic_scenes.json`` (image name → scene), which no original loader reads; tests use it to
check that captions describe the images. One seed fixes every file byte for byte.

Layout under a data root (the parent folder every loader and ``common.data.paths`` take)::

    fashionIQ_dataset/{images,captions,image_splits}/
    cirr_dataset/{train/<k>,dev,test1}/, cirr_dataset/cirr/{captions,image_splits}/
    shoes/images/womens/<category>/<0|1>/img_*.jpg, shoes/annotations/   (raw, before prepare_shoes_data.py)
    coco/{coco_annotations,coco_image}/, coco-IP/COCO_IP_<c>_<s>/, coco-TP/annotation_<Aug>/<level>/
    flickr/{flickr_annotations,flickr_image}/, flickr-IP/Flickr30K_IP_<c>_<s>/, flickr-TP/annotation_<Aug>/<level>/
"""
from __future__ import annotations

import itertools
import json
import random
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from common.io import PathLike, atomic_write_json, atomic_write_text
from common.synthetic.scenes import Scene, describe, describe_change, modify, render, sample_scene

FIQ_CATEGORIES = ("dress", "shirt", "toptee")
FIQ_SPLITS = ("train", "val", "test")
CIRR_SPLITS = ("train", "val", "test1")
SHOES_CATEGORIES = ("boots", "clogs", "flats", "high_heels", "pumps", "sandals", "sneakers")
SCENES_FILE = "synthetic_scenes.json"

_FIQ_SIZES = ((48, 64), (64, 64), (40, 64))
_CIRR_SIZES = ((64, 48), (64, 64), (64, 40))
_SHOES_SIZES = ((64, 48), (64, 64))
_KARPATHY_SIZES = ((64, 48), (48, 64), (64, 64))

IntPerSplit = int | Mapping[str, int]


def _rng(seed: int, *parts: object) -> random.Random:
    """A generator for one part of one dataset; string seeds are hashed with SHA-512, so they are stable."""
    return random.Random(":".join(str(part) for part in (seed, *parts)))


def _per_split(value: IntPerSplit, split: str) -> int:
    return value[split] if isinstance(value, Mapping) else value


def _unique(draw: Callable[[], Scene], used: set[Scene], attempts: int = 1000) -> Scene:
    for _ in range(attempts):
        scene = draw()
        if scene not in used:
            used.add(scene)
            return scene
    raise RuntimeError(f"no new distinct scene after {attempts} draws; ask for fewer images")


def _grow_pool(rng: random.Random, n_images: int, used: set[Scene],
               first_edit: Callable[[Scene], Scene] | None = None) -> tuple[list[Scene], list[tuple[int, int]]]:
    """``n_images`` distinct scenes: about a third drawn fresh, the rest edits of earlier ones.

    Returns the scenes and the edges (source index, edited index). ``first_edit``, a deterministic edit, makes the
    first edge from the first fresh scene whose edited version is new.
    """
    if n_images < 2:
        raise ValueError(f"need at least 2 images to form a triplet, got {n_images}")
    scenes = [_unique(lambda: sample_scene(rng), used) for _ in range(max(1, (n_images + 2) // 3))]
    edges: list[tuple[int, int]] = []
    if first_edit is not None:
        source = next((i for i, scene in enumerate(scenes) if first_edit(scene) not in used), None)
        if source is not None:
            scenes.append(_unique(lambda: first_edit(scenes[source]), used))
            edges.append((source, len(scenes) - 1))
    while len(scenes) < n_images:
        source = rng.randrange(len(scenes))
        scenes.append(_unique(lambda: modify(scenes[source], rng), used))
        edges.append((source, len(scenes) - 1))
    return scenes, edges


def _pick_pairs(rng: random.Random, edges: list[tuple[int, int]], n: int) -> list[tuple[int, int]]:
    """``n`` (reference, target) pairs: each edge in both directions, the first edge first, cycled when n is large."""
    rest = edges[1:] + [(b, a) for a, b in edges]
    rng.shuffle(rest)
    pairs = [edges[0], *rest]
    return [pairs[i % len(pairs)] for i in range(n)]


def _save(scene: Scene, rng: random.Random, sizes: tuple[tuple[int, int], ...], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = render(scene, rng.choice(sizes))
    if path.suffix == ".png":
        image.save(path)
    else:
        image.save(path, quality=95, subsampling=0)


def _write_json(obj: Any, path: Path) -> None:
    atomic_write_json(obj, path, indent=1)


def _sand_background(scene: Scene) -> Scene:
    """Switch the background to or from sand, so the relative caption holds a word with "and" inside it."""
    return Scene("white" if scene.background == "sand" else "sand", scene.objects)


# --------------------------------------------------------------------------------------------------- FashionIQ

def write_fashioniq(root: PathLike, n_images_per_category: IntPerSplit = 24, n_triplets: IntPerSplit = 32,
                    seed: int = 0) -> dict[str, Any]:
    """Write ``root/fashionIQ_dataset`` (images, ``captions/cap.<cat>.<split>.json``, ``image_splits/...``).

    Every category and split gets ``n_images_per_category`` images and ``n_triplets`` triplets (an int, or a dict
    split → int). Caption entries are ``{"candidate", "target", "captions": [c1, c2]}``; c1 and c2 describe the same
    change in two phrasings, one ending with ".". The first triplet of every file changes the background to or from
    "sand", a word with "and" inside (Bi-BLIP4CIR's split-on-"and" quirk).
    """
    base = Path(root) / "fashionIQ_dataset"
    used_names: set[str] = set()
    scenes_by_name: dict[str, dict] = {}
    images: dict[str, dict[str, int]] = {}
    triplets: dict[str, dict[str, int]] = {}
    for category in FIQ_CATEGORIES:
        used_scenes: set[Scene] = set()
        images[category], triplets[category] = {}, {}
        for split in FIQ_SPLITS:
            rng = _rng(seed, "fashioniq", category, split)
            scenes, edges = _grow_pool(rng, _per_split(n_images_per_category, split), used_scenes, _sand_background)
            names = [_asin(rng, used_names) for _ in scenes]
            for name, scene in zip(names, scenes):
                _save(scene, rng, _FIQ_SIZES, base / "images" / f"{name}.jpg")
                scenes_by_name[name] = scene.to_dict()
            entries = []
            for index, (ref, tgt) in enumerate(_pick_pairs(rng, edges, _per_split(n_triplets, split))):
                captions = [describe_change(scenes[ref], scenes[tgt], variant) for variant in (0, 1)]
                captions[index % 2] += "."
                entries.append({"candidate": names[ref], "target": names[tgt], "captions": captions})
            _write_json(entries, base / "captions" / f"cap.{category}.{split}.json")
            _write_json(names, base / "image_splits" / f"split.{category}.{split}.json")
            images[category][split], triplets[category][split] = len(names), len(entries)
    _write_json(scenes_by_name, base / SCENES_FILE)
    return {"root": str(root), "dataset_dir": str(base), "categories": list(FIQ_CATEGORIES), "images": images,
            "triplets": triplets}


def _asin(rng: random.Random, used: set[str]) -> str:
    """A fresh Amazon-style id: "B" and nine digits or capitals."""
    while True:
        name = "B" + "".join(rng.choice("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(9))
        if name not in used:
            used.add(name)
            return name


# -------------------------------------------------------------------------------------------------------- CIRR

def write_cirr(root: PathLike, n_sets: IntPerSplit | None = None, queries_per_set: IntPerSplit = 3,
               seed: int = 0, extra_train_sets: int = 0) -> dict[str, Any]:
    """Write ``root/cirr_dataset`` with ``train/<k>/``, ``dev/``, ``test1/`` PNGs and the rc2 caption/split JSONs.

    Each image set holds 6 images: a base scene and 5 edits of it, listed as ``img_set.members`` (reference
    included) in shuffled order; ``*_rank`` are positions in that list. Each set yields ``queries_per_set`` (an
    int, or a dict split → int) queries (base → edit or edit → base). ``n_sets`` defaults to train 16, val 6,
    test1 9; test1 needs ≥ 9 sets (≥ 51 images) so that 50-long submission lists exist. test1 entries have no
    ``target_hard``, ``target_soft`` or ``target_rank``. Split files map name → ``./<folder>/<name>.png``.

    ``extra_train_sets`` more train sets are drawn after test1 from a generator of their own, so that every other
    file is byte for byte what the same call without them writes (a larger train split, same val and test1).
    """
    n_sets = n_sets if n_sets is not None else {"train": 16, "val": 6, "test1": 9}
    if _per_split(n_sets, "test1") * 6 < 51:
        raise ValueError("test1 needs at least 9 image sets (51 images) for 50-long CIRR submission lists")
    for split in CIRR_SPLITS:
        if not 1 <= _per_split(queries_per_set, split) <= 10:
            raise ValueError(f"queries_per_set must be in 1..10 (a set has 10 base/edit pairs), got "
                             f"{_per_split(queries_per_set, split)} for {split}")
    base = Path(root) / "cirr_dataset"
    used_scenes: set[Scene] = set()
    scenes_by_name: dict[str, dict] = {}
    entries: dict[str, list[dict]] = {split: [] for split in CIRR_SPLITS}
    paths: dict[str, dict[str, str]] = {split: {} for split in CIRR_SPLITS}
    pairids = itertools.count()

    def write_sets(split: str, set_ids: range, rng: random.Random) -> None:
        prefix = {"train": "train", "val": "dev", "test1": "test1"}[split]
        for set_id in set_ids:
            folder = f"train/{set_id % 100}" if split == "train" else prefix
            first = _unique(lambda: sample_scene(rng), used_scenes)
            scenes = [first] + [_unique(lambda: modify(first, rng), used_scenes) for _ in range(5)]
            names = [f"{prefix}-{set_id}-{i}-img{i % 2}" for i in range(6)]
            for name, scene in zip(names, scenes):
                _save(scene, rng, _CIRR_SIZES, base / folder / f"{name}.png")
                paths[split][name] = f"./{folder}/{name}.png"
                scenes_by_name[name] = scene.to_dict()
            members = rng.sample(names, 6)
            pairs = [(0, i) for i in range(1, 6)] + [(i, 0) for i in range(1, 6)]
            for ref, tgt in rng.sample(pairs, _per_split(queries_per_set, split)):
                pairid = next(pairids)
                entry = {"pairid": pairid, "reference": names[ref], "target_hard": names[tgt],
                         "target_soft": {names[tgt]: 1.0},
                         "caption": describe_change(scenes[ref], scenes[tgt], rng.randrange(2)),
                         "img_set": {"id": set_id, "members": members, "reference_rank": members.index(names[ref]),
                                     "target_rank": members.index(names[tgt])}}
                if pairid % 2:
                    other = next(name for name in members if name not in (names[ref], names[tgt]))
                    entry["target_soft"][other] = -1.0
                if split == "test1":
                    for key in ("target_hard", "target_soft"):
                        del entry[key]
                    del entry["img_set"]["target_rank"]
                entries[split].append(entry)

    for split in CIRR_SPLITS:
        write_sets(split, range(_per_split(n_sets, split)), _rng(seed, "cirr", split))
    n_train = _per_split(n_sets, "train")
    write_sets("train", range(n_train, n_train + extra_train_sets), _rng(seed, "cirr", "train", "extra"))
    counts: dict[str, dict[str, int]] = {}
    for split in CIRR_SPLITS:
        _write_json(entries[split], base / "cirr" / "captions" / f"cap.rc2.{split}.json")
        _write_json(paths[split], base / "cirr" / "image_splits" / f"split.rc2.{split}.json")
        counts[split] = {"images": len(paths[split]), "queries": len(entries[split])}
    _write_json(scenes_by_name, base / SCENES_FILE)
    return {"root": str(root), "dataset_dir": str(base), "splits": counts}


# ------------------------------------------------------------------------------------------------------- Shoes

def write_shoes_raw(root: PathLike, n_images: IntPerSplit | None = None, n_triplets: IntPerSplit | None = None,
                    n_cross_split: int = 3, seed: int = 0) -> dict[str, Any]:
    """Write the raw Shoes download as MLCL's ``prepare_shoes_data.py`` reads it.

    Images go to ``root/shoes/images/womens/<category>/<0|1>/img_womens_<category>_<n>.jpg``; the annotations
    folder ``root/shoes/annotations`` gets ``train_im_names.txt``, ``eval_im_names.txt`` (one basename a line),
    ``relative_captions_shoes.json`` (``ImageName`` = target, ``ReferenceImageName``, ``RelativeCaption``) and
    ``captions_shoes.json`` (one ``{"ImageName", "Caption"}`` per image; never read upstream). ``n_images`` and
    ``n_triplets`` are per split "train"/"eval" (default 40/20 images, 48/24 triplets); ``n_cross_split`` more
    triplets go from a train reference to a new eval image, which the converter drops.
    """
    n_images = n_images if n_images is not None else {"train": 40, "eval": 20}
    n_triplets = n_triplets if n_triplets is not None else {"train": 48, "eval": 24}
    base = Path(root) / "shoes"
    image_dir, annotation_dir = base / "images", base / "annotations"
    used_scenes: set[Scene] = set()
    scenes_by_name: dict[str, dict] = {}
    names_by_split: dict[str, list[str]] = {}
    counter = iter(range(10**6))

    def save(scene: Scene, rng: random.Random) -> str:
        category = rng.choice(SHOES_CATEGORIES)
        name = f"img_womens_{category}_{next(counter)}.jpg"
        _save(scene, rng, _SHOES_SIZES, image_dir / "womens" / category / rng.choice("01") / name)
        scenes_by_name[name] = scene.to_dict()
        return name

    triplets, kept = [], {}
    scenes_by_split: dict[str, list[Scene]] = {}
    for split in ("train", "eval"):
        rng = _rng(seed, "shoes", split)
        scenes, edges = _grow_pool(rng, _per_split(n_images, split), used_scenes)
        names = [save(scene, rng) for scene in scenes]
        for ref, tgt in _pick_pairs(rng, edges, _per_split(n_triplets, split)):
            triplets.append({"ImageName": names[tgt], "ReferenceImageName": names[ref],
                             "RelativeCaption": describe_change(scenes[ref], scenes[tgt], rng.randrange(2))})
        scenes_by_split[split], names_by_split[split] = scenes, names
        kept[split] = _per_split(n_triplets, split)
    rng = _rng(seed, "shoes", "cross")
    train_scenes, train_names = scenes_by_split["train"], list(names_by_split["train"])
    for _ in range(n_cross_split):
        ref = rng.randrange(len(train_scenes))
        target = _unique(lambda: modify(train_scenes[ref], rng), used_scenes)
        target_name = save(target, rng)
        names_by_split["eval"].append(target_name)
        triplets.append({"ImageName": target_name, "ReferenceImageName": train_names[ref],
                         "RelativeCaption": describe_change(train_scenes[ref], target, 0)})
    rng.shuffle(triplets)
    for split, file in (("train", "train_im_names.txt"), ("eval", "eval_im_names.txt")):
        listed = rng.sample(names_by_split[split], len(names_by_split[split]))
        atomic_write_text("".join(f"{name}\n" for name in listed), annotation_dir / file)
    _write_json(triplets, annotation_dir / "relative_captions_shoes.json")
    captions = [{"ImageName": name, "Caption": describe(Scene.from_dict(scene))}
                for name, scene in scenes_by_name.items()]
    _write_json(captions, annotation_dir / "captions_shoes.json")
    _write_json(scenes_by_name, base / SCENES_FILE)
    return {"root": str(root), "image_dir": str(image_dir), "annotation_dir": str(annotation_dir),
            "images": {split: len(names) for split, names in names_by_split.items()},
            "triplets_kept": kept, "triplets_cross_split": n_cross_split}


# ------------------------------------------------------------------------------------- COCO / Flickr (Karpathy)

_KARPATHY = {
    "coco": {"folder": "coco", "ann_dir": "coco_annotations", "image_dir": "coco_image",
             "ann_file": "coco_karpathy_test.json", "ip": ("coco-IP", "COCO_IP"), "tp": "coco-TP"},
    "flickr": {"folder": "flickr", "ann_dir": "flickr_annotations", "image_dir": "flickr_image",
               "ann_file": "flickr30k_test.json", "ip": ("flickr-IP", "Flickr30K_IP"), "tp": "flickr-TP"},
}


def write_karpathy(root: PathLike, dataset: str = "coco", n_images: int = 40, seed: int = 0,
                   caption_shift: tuple[str, int] | None = None,
                   image_shift: tuple[str, int] | None = None) -> dict[str, Any]:
    """Write a BLIP/TCR Karpathy test split of COCO or Flickr30K in TCR's ``dataset/`` tree under ``root``.

    COCO: ``coco/coco_annotations/coco_karpathy_test.json`` (list of ``{"image": "val2014/COCO_val2014_<12
    digits>.jpg", "caption": [5 or 6 strings], "image_id"}``), images under ``coco/coco_image/``. Flickr:
    ``flickr/flickr_annotations/flickr30k_test.json`` with ``flickr30k-images/<id>.jpg`` and 5 captions.
    ``image_shift=(corruption, severity)`` also writes corrupted copies to ``coco-IP/COCO_IP_<c>_<s>/val2014/...``
    (``flickr-IP/Flickr30K_IP_<c>_<s>/...``); ``caption_shift=(augmentation, level)`` writes
    ``coco-TP/annotation_<Aug>/<level>/<same file>`` with character typos in captions 0-4.
    """
    if dataset not in _KARPATHY:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(_KARPATHY)}")
    layout = _KARPATHY[dataset]
    root = Path(root)
    rng = _rng(seed, "karpathy", dataset)
    image_root = root / layout["folder"] / layout["image_dir"]
    ann_root = root / layout["folder"] / layout["ann_dir"]
    used: set[Scene] = set()
    scenes = [_unique(lambda: sample_scene(rng), used) for _ in range(n_images)]
    if dataset == "coco":
        ids = rng.sample(range(1, 600000), n_images)
        relative = [f"val2014/COCO_val2014_{image_id:012d}.jpg" for image_id in ids]
    else:
        ids = rng.sample(range(1000000000, 1100000000), n_images)
        relative = [f"flickr30k-images/{image_id}.jpg" for image_id in ids]
    annotation = []
    for index, (scene, image_id, rel) in enumerate(zip(scenes, ids, relative)):
        _save(scene, rng, _KARPATHY_SIZES, image_root / rel)
        n_captions = 6 if dataset == "coco" and index % 7 == 3 else 5
        captions = [describe(scene, variant).capitalize() + "." for variant in range(n_captions)]
        annotation.append({"image": rel, "caption": captions, "image_id": image_id})
    _write_json(annotation, ann_root / layout["ann_file"])
    _write_json({rel: scene.to_dict() for rel, scene in zip(relative, scenes)}, root / layout["folder"] / SCENES_FILE)
    result = {"dataset": dataset, "root": str(root), "image_root": str(image_root), "ann_root": str(ann_root),
              "annotation": str(ann_root / layout["ann_file"]), "images": n_images,
              "texts": sum(len(entry["caption"]) for entry in annotation),
              "shifted_image_root": None, "shifted_ann_root": None}
    if image_shift is not None:
        corruption, severity = image_shift
        ip_folder, ip_prefix = layout["ip"]
        shifted_root = root / ip_folder / f"{ip_prefix}_{corruption}_{severity}"
        for index, rel in enumerate(relative):
            noise = np.random.default_rng([seed, index, severity, IMAGE_CORRUPTIONS.index(_check(corruption))])
            with Image.open(image_root / rel) as clean:
                image = corrupt_image(clean, corruption, severity, noise)
            (shifted_root / rel).parent.mkdir(parents=True, exist_ok=True)
            image.save(shifted_root / rel, quality=95, subsampling=0)
        result["shifted_image_root"] = str(shifted_root)
    if caption_shift is not None:
        augmentation, level = caption_shift
        shifted_ann = root / layout["tp"] / f"annotation_{augmentation}" / str(level)
        text_rng = _rng(seed, "karpathy-text", dataset, augmentation, level)
        shifted = [{**entry, "caption": [corrupt_caption(c, augmentation, level, text_rng) if k < 5 else c
                                         for k, c in enumerate(entry["caption"])]} for entry in annotation]
        _write_json(shifted, shifted_ann / layout["ann_file"])
        result["shifted_ann_root"] = str(shifted_ann)
    return result


# ------------------------------------------------------------------------------------------------- corruptions

IMAGE_CORRUPTIONS = ("gaussian_noise", "shot_noise", "impulse_noise", "contrast", "defocus_blur")
TEXT_CORRUPTIONS = ("RandomCharAug_insert", "RandomCharAug_substitute", "RandomCharAug_swap", "RandomCharAug_delete")


def _check(corruption: str) -> str:
    if corruption not in IMAGE_CORRUPTIONS:
        raise ValueError(f"unknown image corruption {corruption!r}; choose from {', '.join(IMAGE_CORRUPTIONS)}")
    return corruption


def corrupt_image(image: Image.Image, corruption: str, severity: int, rng: np.random.Generator) -> Image.Image:
    """A COCO-C-like corruption at severity 1-5: the ImageNet-C noise and contrast constants; ``defocus_blur`` is
    approximated by a Gaussian blur scaled to these small images."""
    _check(corruption)
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be 1..5, got {severity}")
    if corruption == "defocus_blur":
        return image.convert("RGB").filter(ImageFilter.GaussianBlur((0.6, 1.0, 1.5, 2.0, 3.0)[severity - 1]))
    x = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
    if corruption == "gaussian_noise":
        x = x + rng.normal(scale=(0.08, 0.12, 0.18, 0.26, 0.38)[severity - 1], size=x.shape)
    elif corruption == "shot_noise":
        scale = (60, 25, 12, 5, 3)[severity - 1]
        x = rng.poisson(x * scale) / scale
    elif corruption == "impulse_noise":
        hit = rng.random(x.shape[:2]) < (0.03, 0.06, 0.09, 0.17, 0.27)[severity - 1]
        x[hit] = rng.integers(0, 2, size=(int(hit.sum()), 1)).astype(np.float64)
    else:
        mean = x.mean(axis=(0, 1), keepdims=True)
        x = (x - mean) * (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1] + mean
    return Image.fromarray((np.clip(x, 0, 1) * 255).round().astype(np.uint8))


def corrupt_caption(text: str, augmentation: str, level: int, rng: random.Random) -> str:
    """Character typos like nlpaug's ``RandomCharAug`` (insert, substitute, swap or delete one letter) in
    max(1, round(0.05 * level * n_words)) of the purely alphabetic words with 3+ letters."""
    if augmentation not in TEXT_CORRUPTIONS:
        raise ValueError(f"unknown text corruption {augmentation!r}; choose from {', '.join(TEXT_CORRUPTIONS)}")
    action = augmentation.rsplit("_", 1)[1]
    words = text.split(" ")
    candidates = [i for i, word in enumerate(words) if word.isalpha() and len(word) >= 3]
    n_edit = min(len(candidates), max(1, round(0.05 * level * len(words))))
    letters = "abcdefghijklmnopqrstuvwxyz"
    for i in rng.sample(candidates, n_edit):
        word = words[i]
        if action == "insert":
            p = rng.randrange(len(word) + 1)
            words[i] = word[:p] + rng.choice(letters) + word[p:]
        elif action == "substitute":
            p = rng.randrange(len(word))
            words[i] = word[:p] + rng.choice(letters.replace(word[p].lower(), "")) + word[p + 1:]
        elif action == "swap":
            spots = [p for p in range(len(word) - 1) if word[p] != word[p + 1]] or [0]
            p = rng.choice(spots)
            words[i] = word[:p] + word[p + 1] + word[p] + word[p + 2:]
        else:
            p = rng.randrange(len(word))
            words[i] = word[:p] + word[p + 1:]
    return " ".join(words)


# ---------------------------------------------------------------------------------------------------------- all

DEMO_FIQ_IMAGES = {"train": 48, "val": 80, "test": 8}
DEMO_FIQ_TRIPLETS = {"train": 64, "val": 100, "test": 8}
DEMO_CIRR_SETS = {"train": 40, "val": 50, "test1": 9}
DEMO_CIRR_QUERIES = {"train": 6, "val": 6, "test1": 3}
"""The demo's FashionIQ (per category) and CIRR sizes: validation splits of 300 queries each (100 per FashionIQ
category), so that a few points of recall are more than noise."""
DEMO_CIRR_EXTRA_TRAIN_SETS = 210
"""Train sets that the demo's larger CIRR (``<out>/data_large``) adds: 250 sets, 1,500 training triplets. Re-ranking's
stage 2 learns its cross-branch layers from scratch; trained on the 240 triplets of ``data`` it fits them but does not
generalise, and on 1,500 it beats stage 1."""


def write_all(root: PathLike, seed: int = 0) -> dict[str, Any]:
    """Write every synthetic dataset small enough for the demo into the data root ``root`` (a few seconds).

    Returns the writers' dicts under ``fashioniq``, ``cirr``, ``shoes``, ``coco`` and ``flickr`` (COCO and Flickr
    with an impulse_noise-4 image shift and a RandomCharAug_swap-5 caption shift), plus ``data_root``. COCO has
    500 images: TCR adapts on the query stream, and a few dozen queries give it too few updates to show an effect.
    Of the image shifts tried with the demo's source model (four training seeds), impulse noise at severity 4 is
    the one where TCR beat no adaptation on i2t R@1, R@5 and R@10 for every seed.
    """
    root = Path(root)
    shifts = {"image_shift": ("impulse_noise", 4), "caption_shift": ("RandomCharAug_swap", 5)}
    return {
        "data_root": str(root),
        "fashioniq": write_fashioniq(root, DEMO_FIQ_IMAGES, DEMO_FIQ_TRIPLETS, seed),
        "cirr": write_cirr(root, DEMO_CIRR_SETS, DEMO_CIRR_QUERIES, seed),
        "shoes": write_shoes_raw(root, seed=seed),
        "coco": write_karpathy(root, "coco", 500, seed, **shifts),
        "flickr": write_karpathy(root, "flickr", 40, seed, **shifts),
    }


def read_scenes(dataset_dir: PathLike) -> dict[str, Scene]:
    """The ``synthetic_scenes.json`` a writer left in ``dataset_dir`` (image name or path → scene)."""
    with open(Path(dataset_dir) / SCENES_FILE, encoding="utf-8") as handle:
        return {name: Scene.from_dict(scene) for name, scene in json.load(handle).items()}
