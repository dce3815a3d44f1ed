"""Synthetic scenes and dataset writers: exact on-disk formats, captions that match the images, determinism."""
import hashlib
import json
import random
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.data.paths import dataset_dir
from common.synthetic import (
    Scene,
    Shape,
    corrupt_caption,
    describe,
    describe_change,
    diff_scenes,
    modify,
    read_scenes,
    render,
    sample_scene,
    vocabulary,
    write_all,
    write_cirr,
    write_fashioniq,
    write_karpathy,
    write_shoes_raw,
)
from common.synthetic.scenes import BACKGROUNDS, COLORS, POSITIONS, SHAPES, caption_words

ATTRIBUTE_WORDS = set(COLORS) | set(BACKGROUNDS) | set(SHAPES) | set(POSITIONS)
INNER_AND = re.compile(r"\b(?!and\b)\w*and\w*\b")


def scene_words(scene: Scene) -> set[str]:
    words = {scene.background}
    for obj in scene.objects:
        words |= {obj.shape, obj.color, obj.position}
    return words


def assert_caption_matches(caption: str, reference: Scene, target: Scene) -> None:
    """The caption names each change's new value and no attribute absent from both scenes."""
    words = set(caption_words(caption))
    assert words & ATTRIBUTE_WORDS <= scene_words(reference) | scene_words(target), caption
    changes = diff_scenes(reference, target)
    assert 1 <= len(changes) <= 2
    for change in changes:
        if change.kind in ("background", "color", "shape", "position"):
            assert change.new in words, (caption, change)
        elif change.kind == "size":
            assert words & ({"large", "larger"} if change.new == "large" else {"small", "smaller"}), caption
        elif change.kind == "add":
            assert change.new.shape in words and change.new.color in words, caption
        else:
            assert change.subject in words, caption


def shows(path: Path, scene: Scene) -> tuple[int, int]:
    """Open an image, check it is RGB and depicts ``scene`` (compared with a fresh rendering), return its size."""
    with Image.open(path) as image:
        image.load()
        assert image.mode == "RGB"
        pixels = np.asarray(image, dtype=float)
        size = image.size
    off = np.abs(pixels - np.asarray(render(scene, size), dtype=float)).max(axis=-1) > 60
    assert off.mean() < 0.005, path
    return size


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------------- scenes

ONE = Scene("white", (Shape("circle", "blue", "small", "left"),))
TWO = Scene("gray", (Shape("circle", "blue", "small", "left"), Shape("square", "red", "large", "right")))


@pytest.mark.parametrize("target, variant, expected", [
    (Scene("white", (Shape("circle", "red", "small", "left"),)), 0, "is red instead of blue"),
    (Scene("white", (Shape("circle", "red", "small", "left"),)), 1, "make it red"),
    (Scene("white", (Shape("triangle", "blue", "small", "left"),)), 0, "is a triangle instead of a circle"),
    (Scene("white", (Shape("circle", "blue", "large", "left"),)), 0, "is larger"),
    (Scene("white", (Shape("circle", "blue", "small", "top"),)), 0, "is at the top instead of on the left"),
    (Scene("white", (Shape("circle", "blue", "small", "top"),)), 1, "move it to the top"),
    (Scene("sand", ONE.objects), 0, "has a sand background instead of white"),
    (Scene("white", (ONE.objects[0], Shape("diamond", "pink", "large", "right"))), 0,
     "add a large pink diamond on the right"),
    (Scene("white", (Shape("circle", "red", "large", "left"),)), 1, "make it red and make it large"),
])
def test_describe_change_single_shape(target, variant, expected):
    assert describe_change(ONE, target, variant) == expected


def test_describe_change_two_shapes_names_the_shape():
    recoloured = Scene("gray", (Shape("circle", "green", "small", "left"), TWO.objects[1]))
    assert describe_change(TWO, recoloured) == "the circle is green instead of blue"
    assert describe_change(TWO, Scene("gray", (TWO.objects[1],))) == "remove the circle"
    assert describe_change(Scene("gray", (TWO.objects[1],)), TWO, 1) == "has another blue circle on the left"
    with pytest.raises(ValueError, match="identical"):
        describe_change(TWO, TWO)
    with pytest.raises(ValueError, match="only change"):
        diff_scenes(TWO, Scene("white", (TWO.objects[1],)))


def test_modify_gives_one_or_two_describable_changes():
    rng = random.Random(3)
    kinds = set()
    for _ in range(300):
        scene = sample_scene(rng)
        target = modify(scene, rng)
        changes = diff_scenes(scene, target)
        kinds |= {change.kind for change in changes}
        assert target != scene and 1 <= len(changes) <= 2
        assert len({obj.shape for obj in target.objects}) == len(target.objects)
        assert_caption_matches(describe_change(scene, target, 0), scene, target)
        assert_caption_matches(describe_change(target, scene, 1), target, scene)
    assert kinds == {"background", "color", "shape", "size", "position", "add", "remove"}


def test_render_draws_the_scene():
    scene = Scene("black", (Shape("square", "yellow", "large", "left"), Shape("circle", "green", "small", "right")))
    image = np.asarray(render(scene, (64, 40)))
    assert image.shape == (40, 64, 3)
    assert tuple(image[20, 16]) == COLORS["yellow"]
    assert tuple(image[20, 48]) == COLORS["green"]
    assert tuple(image[2, 2]) == BACKGROUNDS["black"]
    assert tuple(image[20, 32]) == BACKGROUNDS["black"]


def test_vocabulary_covers_every_caption():
    vocab, rng, seen = set(vocabulary()), random.Random(0), set()
    for _ in range(300):
        scene = sample_scene(rng)
        target = modify(scene, rng)
        for text in [describe(scene, v) for v in range(6)] + [describe_change(scene, target, v) for v in (0, 1)]:
            seen |= set(caption_words(text))
    assert seen <= vocab
    assert {"sand", "sandglass", "instead", "larger", "center"} <= seen


def test_corrupt_caption_typos():
    rng = random.Random(0)
    text = "a large red circle on the left on a white background."
    swapped = corrupt_caption(text, "RandomCharAug_swap", 5, rng)
    changed = [(a, b) for a, b in zip(text.split(" "), swapped.split(" ")) if a != b]
    assert len(changed) == round(0.25 * 11)
    assert all(sorted(a) == sorted(b) for a, b in changed)
    deleted = corrupt_caption(text, "RandomCharAug_delete", 1, rng)
    assert len(deleted) == len(text) - 1
    with pytest.raises(ValueError, match="RandomCharAug_insert"):
        corrupt_caption(text, "KeyboardAug", 1, rng)


# ---------------------------------------------------------------------------------------------------- writers

def test_fashioniq_format(tmp_path):
    info = write_fashioniq(tmp_path, n_images_per_category=9, n_triplets={"train": 10, "val": 6, "test": 4}, seed=1)
    base = tmp_path / "fashionIQ_dataset"
    scenes = read_scenes(base)
    all_captions, sizes, names = [], set(), set()
    for category in ("dress", "shirt", "toptee"):
        for split, n_triplets in (("train", 10), ("val", 6), ("test", 4)):
            split_names = json.loads((base / "image_splits" / f"split.{category}.{split}.json").read_text())
            triplets = json.loads((base / "captions" / f"cap.{category}.{split}.json").read_text())
            assert len(split_names) == 9 and len(set(split_names)) == 9
            assert all(re.fullmatch(r"B[0-9A-Z]{9}", name) for name in split_names)
            assert len(triplets) == n_triplets == info["triplets"][category][split]
            assert not names & set(split_names)
            names |= set(split_names)
            for name in split_names:
                sizes.add(shows(base / "images" / f"{name}.jpg", scenes[name]))
            for entry in triplets:
                assert set(entry) == {"candidate", "target", "captions"}
                assert entry["candidate"] in split_names and entry["target"] in split_names
                assert len(entry["captions"]) == 2
                for caption in entry["captions"]:
                    assert_caption_matches(caption, scenes[entry["candidate"]], scenes[entry["target"]])
                all_captions += entry["captions"]
            assert INNER_AND.search(" ".join(triplets[0]["captions"]))
    assert sum(caption.endswith(".") for caption in all_captions) == len(all_captions) // 2
    assert any(max(w, h) / min(w, h) >= 1.25 for w, h in sizes)
    assert len(sizes) > 1


def test_cirr_format(tmp_path):
    write_cirr(tmp_path, n_sets={"train": 3, "val": 2, "test1": 9}, queries_per_set=2, seed=0)
    base = tmp_path / "cirr_dataset"
    scenes = read_scenes(base)
    pairids = []
    for split, folder in (("train", "train"), ("val", "dev"), ("test1", "test1")):
        paths = json.loads((base / "cirr" / "image_splits" / f"split.rc2.{split}.json").read_text())
        entries = json.loads((base / "cirr" / "captions" / f"cap.rc2.{split}.json").read_text())
        for name, rel in paths.items():
            pattern = r"\./train/\d+/" if split == "train" else rf"\./{folder}/"
            assert re.fullmatch(pattern + re.escape(name) + r"\.png", rel)
            assert name.startswith(f"{folder}-")
            shows(base / rel, scenes[name])
        assert len(entries) == 2 * len(paths) // 6
        for entry in entries:
            members = entry["img_set"]["members"]
            assert isinstance(entry["pairid"], int)
            assert len(members) == 6 and set(members) <= set(paths)
            assert members[entry["img_set"]["reference_rank"]] == entry["reference"]
            pairids.append(entry["pairid"])
            if split == "test1":
                assert set(entry) == {"pairid", "reference", "caption", "img_set"}
                assert set(entry["img_set"]) == {"id", "members", "reference_rank"}
                continue
            assert set(entry) == {"pairid", "reference", "target_hard", "target_soft", "caption", "img_set"}
            assert members[entry["img_set"]["target_rank"]] == entry["target_hard"]
            assert entry["target_soft"][entry["target_hard"]] == 1.0
            assert set(entry["target_soft"]) <= set(members) and set(entry["target_soft"].values()) <= {1.0, -1.0}
            assert_caption_matches(entry["caption"], scenes[entry["reference"]], scenes[entry["target_hard"]])
        if split == "test1":
            assert len(paths) >= 51
    assert len(set(pairids)) == len(pairids)
    with pytest.raises(ValueError, match="51 images"):
        write_cirr(tmp_path / "small", n_sets={"train": 1, "val": 1, "test1": 8})


def test_shoes_raw_format(tmp_path):
    info = write_shoes_raw(tmp_path, n_images={"train": 8, "eval": 6}, n_triplets={"train": 7, "eval": 4},
                           n_cross_split=2, seed=0)
    image_dir, annotations = tmp_path / "shoes" / "images", tmp_path / "shoes" / "annotations"
    train = (annotations / "train_im_names.txt").read_text().splitlines()
    evaluation = (annotations / "eval_im_names.txt").read_text().splitlines()
    assert (len(train), len(evaluation)) == (8, 6 + 2) and not set(train) & set(evaluation)
    globbed = sorted(image_dir.glob("womens/*/*/*.jpg"))
    assert sorted(p.name for p in globbed) == sorted(train + evaluation)
    scenes = read_scenes(tmp_path / "shoes")
    for path in globbed:
        assert path.parent.name in ("0", "1") and path.name.startswith("img_womens_")
        shows(path, scenes[path.name])
    triplets = json.loads((annotations / "relative_captions_shoes.json").read_text())
    split_of = {**{name: "train" for name in train}, **{name: "eval" for name in evaluation}}
    kinds = [(split_of[t["ReferenceImageName"]], split_of[t["ImageName"]]) for t in triplets]
    assert kinds.count(("train", "train")) == 7 and kinds.count(("eval", "eval")) == 4
    assert kinds.count(("train", "eval")) == 2 == info["triplets_cross_split"]
    for triplet in triplets:
        assert set(triplet) == {"ImageName", "ReferenceImageName", "RelativeCaption"}
        assert_caption_matches(triplet["RelativeCaption"], scenes[triplet["ReferenceImageName"]],
                               scenes[triplet["ImageName"]])
    captions = json.loads((annotations / "captions_shoes.json").read_text())
    assert {c["ImageName"] for c in captions} == set(train + evaluation)


@pytest.mark.parametrize("dataset, pattern, file", [
    ("coco", r"val2014/COCO_val2014_\d{12}\.jpg", "coco_karpathy_test.json"),
    ("flickr", r"flickr30k-images/\d+\.jpg", "flickr30k_test.json"),
])
def test_karpathy_format_and_shifts(tmp_path, dataset, pattern, file):
    info = write_karpathy(tmp_path, dataset, n_images=8, seed=0, caption_shift=("RandomCharAug_swap", 4),
                          image_shift=("gaussian_noise", 3))
    annotation = json.loads((tmp_path / dataset / f"{dataset}_annotations" / file).read_text())
    assert info["images"] == len(annotation) == 8 == len({entry["image"] for entry in annotation})
    scenes = read_scenes(tmp_path / dataset)
    n_captions = [len(entry["caption"]) for entry in annotation]
    # the writer's rule: every seventh COCO image from the fourth on has a sixth caption, Flickr images have five
    assert n_captions == [6 if dataset == "coco" and index % 7 == 3 else 5 for index in range(8)]
    shifted_root = Path(info["shifted_image_root"])
    assert shifted_root.name == ("COCO_IP" if dataset == "coco" else "Flickr30K_IP") + "_gaussian_noise_3"
    for entry in annotation:
        assert set(entry) == {"image", "caption", "image_id"} and re.fullmatch(pattern, entry["image"])
        assert str(entry["image_id"]) in entry["image"]
        for caption in entry["caption"]:
            assert caption.endswith(".") and set(caption_words(caption)) & ATTRIBUTE_WORDS <= scene_words(
                scenes[entry["image"]])
        shows(tmp_path / dataset / f"{dataset}_image" / entry["image"], scenes[entry["image"]])
        clean = np.asarray(Image.open(tmp_path / dataset / f"{dataset}_image" / entry["image"]), dtype=float)
        noisy = np.asarray(Image.open(shifted_root / entry["image"]), dtype=float)
        assert clean.shape == noisy.shape and 10 < np.abs(clean - noisy).mean() < 80
    shifted = json.loads((Path(info["shifted_ann_root"]) / file).read_text())
    assert Path(info["shifted_ann_root"]).relative_to(tmp_path).as_posix() == \
        f"{dataset}-TP/annotation_RandomCharAug_swap/4"
    for clean_entry, typo_entry in zip(annotation, shifted):
        assert typo_entry["image"] == clean_entry["image"]
        for k, (clean_caption, typo) in enumerate(zip(clean_entry["caption"], typo_entry["caption"])):
            assert (typo != clean_caption) == (k < 5)
            assert sorted(typo) == sorted(clean_caption)


def test_writers_are_deterministic(tmp_path):
    for name in ("a", "b", "c"):
        seed = 1 if name == "c" else 0
        write_fashioniq(tmp_path / name, 5, 4, seed=seed)
        write_cirr(tmp_path / name, n_sets={"train": 1, "val": 1, "test1": 9}, queries_per_set=1, seed=seed)
        write_karpathy(tmp_path / name, "coco", 4, seed=seed, image_shift=("shot_noise", 2))
    first, second, other = (tree_digest(tmp_path / name) for name in ("a", "b", "c"))
    assert first == second and len(first) > 100
    assert first.keys() != other.keys()


def test_write_all_matches_the_loader_layout(tmp_path):
    info = write_all(tmp_path, seed=0)
    for name in ("fashioniq", "cirr", "shoes", "coco", "flickr"):
        assert dataset_dir(name, tmp_path).is_dir()
    assert info["cirr"]["splits"]["test1"]["images"] >= 51
    assert Path(info["coco"]["shifted_image_root"]).is_dir() and Path(info["flickr"]["shifted_ann_root"]).is_dir()
    json.dumps(info)
    # validation splits large enough that recall differences of a few points are not noise
    assert info["cirr"]["splits"]["val"] == {"images": 300, "queries": 300}
    assert info["fashioniq"]["triplets"] == {c: {"train": 64, "val": 100, "test": 8} for c in ("dress", "shirt",
                                                                                              "toptee")}
    assert all(counts["val"] == 80 for counts in info["fashioniq"]["images"].values())
    val = json.loads((tmp_path / "cirr_dataset/cirr/captions/cap.rc2.val.json").read_text())
    assert len({entry["caption"] for entry in val}) > 150 and len({entry["img_set"]["id"] for entry in val}) == 50


def test_cirr_queries_per_split(tmp_path):
    info = write_cirr(tmp_path, n_sets={"train": 2, "val": 3, "test1": 9}, queries_per_set={"train": 1, "val": 4,
                                                                                            "test1": 2})
    assert [info["splits"][split]["queries"] for split in ("train", "val", "test1")] == [2, 12, 18]
    with pytest.raises(ValueError, match="got 11 for val"):
        write_cirr(tmp_path, queries_per_set={"train": 1, "val": 11, "test1": 1})


def test_cirr_extra_train_sets_grow_only_the_train_split(tmp_path):
    sizes = {"n_sets": {"train": 2, "val": 2, "test1": 9}, "queries_per_set": 2, "seed": 0}
    write_cirr(tmp_path / "base", **sizes)
    info = write_cirr(tmp_path / "large", **sizes, extra_train_sets=3)
    assert info["splits"]["train"] == {"images": 30, "queries": 10}
    base, large = tree_digest(tmp_path / "base"), tree_digest(tmp_path / "large")
    changed = {"cirr_dataset/cirr/captions/cap.rc2.train.json", "cirr_dataset/cirr/image_splits/split.rc2.train.json",
               "cirr_dataset/synthetic_scenes.json"}
    assert {path for path in base if base[path] != large[path]} == changed
    assert all(path.startswith("cirr_dataset/train/") for path in set(large) - set(base))
    train = json.loads((tmp_path / "large/cirr_dataset/cirr/captions/cap.rc2.train.json").read_text())
    assert [entry["img_set"]["id"] for entry in train] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    pairids = [entry["pairid"] for split in ("train", "val", "test1") for entry in json.loads(
        (tmp_path / f"large/cirr_dataset/cirr/captions/cap.rc2.{split}.json").read_text())]
    assert len(set(pairids)) == len(pairids)
    scenes = read_scenes(tmp_path / "large/cirr_dataset")
    assert len(set(scenes.values())) == len(scenes)
