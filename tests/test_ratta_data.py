"""The RA-TTA dataset registry: class counts, one reader per layout family on tiny trees, missing files."""
import json
from pathlib import Path

import pytest
from PIL import Image

from ratta.classnames import RESISC45_CLASSES
from ratta.data import DATASETS, IMAGENET_KEYS, STANDARD_KEYS, get_spec, read_test_set
from ratta.templates import IMAGENET_TEMPLATES, PRE_TEMPLATES, TEMPLATES

CLASS_COUNTS = {"caltech101": 100, "caltech256": 256, "dtd": 47, "fgvc_aircraft": 100, "flowers102": 102,
                "food101": 101, "oxford_pets": 37, "stanford_cars": 196, "sun397": 397, "ucf101": 101,
                "resisc45": 45, "cub200": 200, "imagenet_1k": 1000, "imagenet_adversarial": 200,
                "imagenet_rendition": 200, "imagenet_v2": 1000, "imagenet_sketch": 1000}


def test_registry_keys_counts_and_prompts():
    assert {key: spec.num_classes for key, spec in DATASETS.items()} == CLASS_COUNTS
    assert len(STANDARD_KEYS) == 12 and len(IMAGENET_KEYS) == 5
    assert set(TEMPLATES) == set(PRE_TEMPLATES) == set(DATASETS)
    assert all(pre.endswith(". ") for pre in PRE_TEMPLATES.values())
    assert len(IMAGENET_TEMPLATES) == 80 and len(set(IMAGENET_TEMPLATES)) == 80
    assert len(TEMPLATES["caltech101"]) == 7 and TEMPLATES["dtd"] == (
        "a photo of a {}, a type of texture.", "a photo of the {}, a type of texture.")
    assert len(RESISC45_CLASSES) == 45


def test_unknown_key_lists_valid_ones():
    with pytest.raises(ValueError, match="unknown --dataset 'cars'; valid keys: stanford_cars, flowers102"):
        get_spec("cars")
    with pytest.raises(ValueError, match="valid keys: imagenet_1k, imagenet_rendition"):
        get_spec("dtd", imagenet=True)


def read_files(key: str, root: Path):
    """The test items and the class names in the dataset's own files (``read_test_set`` returns the original's)."""
    return get_spec(key).reader(root)


def touch_image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8)).save(path)


def coop_split(path: Path, names: list[str], test: list[tuple[str, int]]) -> None:
    train = [[f"{name}/train_{i}.jpg", i, name] for i, name in enumerate(names)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"train": train, "val": train[:1],
                                "test": [[rel, label, names[label]] for rel, label in test]}))


def test_coop_reader_joins_paths_and_derives_names(tmp_path):
    names = [f"dish_{i}" for i in range(101)]
    coop_split(tmp_path / "food-101" / "split_zhou_Food101.json", names, [("dish_3/a.jpg", 3), ("dish_0/b.jpg", 0)])
    items, classnames = read_files("food101", tmp_path)
    assert items == [(str(tmp_path / "food-101" / "images" / "dish_3/a.jpg"), 3),
                     (str(tmp_path / "food-101" / "images" / "dish_0/b.jpg"), 0)]
    assert classnames[:2] == ["dish 0", "dish 1"]
    coop_split(tmp_path / "stanford_cars" / "split_zhou_StanfordCars.json", [f"car{i}" for i in range(196)],
               [("cars_test/00001.jpg", 5)])
    items, _ = read_files("stanford_cars", tmp_path)
    assert items == [(str(tmp_path / "stanford_cars" / "cars_test/00001.jpg"), 5)]


def test_coop_split_needs_all_keys_and_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="split_zhou_OxfordPets.json: not found"):
        read_test_set("oxford_pets", tmp_path)
    path = tmp_path / "oxford_pets" / "split_zhou_OxfordPets.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"train": [], "test": []}))
    with pytest.raises(ValueError, match=r"lacks the keys \['val'\]"):
        read_test_set("oxford_pets", tmp_path)


def test_fgvc_reader(tmp_path):
    base = tmp_path / "fgvc_aircraft"
    base.mkdir()
    variants = [f"7{i:02d}-200" for i in range(100)]
    (base / "variants.txt").write_text("\n".join(variants) + "\n")
    (base / "images_variant_test.txt").write_text("1514522 707-200\n0056978 799-200\n")
    items, names = read_files("fgvc_aircraft", tmp_path)
    assert items == [(str(base / "images" / "1514522.jpg"), 7), (str(base / "images" / "0056978.jpg"), 99)]
    assert names == variants
    (base / "images_variant_test.txt").write_text("1 A380\n")
    with pytest.raises(ValueError, match="images_variant_test.txt:1: variant 'A380'"):
        read_test_set("fgvc_aircraft", tmp_path)


def test_resisc45_reader(tmp_path):
    base = tmp_path / "resisc45"
    base.mkdir()
    (base / "test_splits.txt").write_text("sea_ice_012.jpg\nairplane_700.jpg\n")
    items, names = read_test_set("resisc45", tmp_path)
    assert items == [(str(base / "images" / "sea_ice" / "sea_ice_012.jpg"), RESISC45_CLASSES.index("sea_ice")),
                     (str(base / "images" / "airplane" / "airplane_700.jpg"), 0)]
    assert names[2] == "baseball diamond"
    (base / "test_splits.txt").write_text("{\"train\": []}\n")
    with pytest.raises(ValueError, match="test_splits.txt:1"):
        read_test_set("resisc45", tmp_path)


def test_cub_reader(tmp_path):
    base = tmp_path / "CUB_200_2011"
    base.mkdir()
    (base / "classes.txt").write_text("".join(f"{i} {i:03d}.Bird_{i}\n" for i in range(1, 201)))
    (base / "images.txt").write_text("1 001.Bird_1/a.jpg\n2 002.Bird_2/b.jpg\n3 200.Bird_200/c.jpg\n")
    (base / "image_class_labels.txt").write_text("1 1\n2 2\n3 200\n")
    (base / "train_test_split.txt").write_text("1 1\n2 0\n3 0\n")
    items, names = read_files("cub200", tmp_path)
    assert items == [(str(base / "images" / "002.Bird_2/b.jpg"), 1), (str(base / "images" / "200.Bird_200/c.jpg"), 199)]
    assert names[0] == "Bird 1" and len(names) == 200


def test_caltech256_reader_skips_faces_easy_and_shifts_labels(tmp_path):
    base = tmp_path / "caltech-256"
    base.mkdir()
    folders = [f"{i + 1:03d}.thing{i}" for i in range(252)] + ["253.faces-easy-101"] + \
        [f"{i + 1:03d}.thing{i}" for i in range(253, 256)] + ["257.clutter"]
    train = [[f"{folder}/x.jpg", label, folder] for label, folder in enumerate(folders)]
    train[0][0] = "001.ak47-101/x.jpg"
    test = [["253.faces-easy-101/y.jpg", 252, "faces"], ["257.clutter/z.jpg", 256, "clutter"],
            ["010.thing9/w.jpg", 9, "thing9"]]
    (base / "split_Caltech256.json").write_text(json.dumps({"train": train, "val": [], "test": test}))
    items, names = read_files("caltech256", tmp_path)
    root = base / "256_ObjectCategories"
    assert items == [(str(root / "257.clutter/z.jpg"), 255), (str(root / "010.thing9/w.jpg"), 9)]
    assert names[0] == "ak47" and names[255] == "clutter" and len(names) == 256


def imagenet_tree(root: Path, wnids: list[str]) -> None:
    (root / "imagenet").mkdir(parents=True)
    (root / "imagenet" / "classnames.txt").write_text("".join(f"{w} name {i}\n" for i, w in enumerate(wnids)))


def test_imagenet_family_readers(tmp_path):
    wnids = [f"n{i:08d}" for i in range(1000)]
    imagenet_tree(tmp_path, wnids)
    for wnid in wnids:
        (tmp_path / "imagenet" / "images" / "val" / wnid).mkdir(parents=True)
    touch_image(tmp_path / "imagenet" / "images" / "val" / wnids[5] / "a.JPEG")
    items, names = read_files("imagenet_1k", tmp_path)
    assert [label for _, label in items] == [5] and names[5] == "name 5"
    for wnid in wnids[::5]:
        touch_image(tmp_path / "imagenet-adversarial" / wnid / "x.jpg")
    items, names = read_files("imagenet_adversarial", tmp_path)
    assert len(names) == 200 and names[1] == "name 5" and items[1][1] == 1
    for i in range(1000):
        touch_image(tmp_path / "imagenetv2" / str(i) / "x.jpeg")
    items, names = read_files("imagenet_v2", tmp_path)
    order = sorted(map(str, range(1000)))
    assert names[:4] == [f"name {order[k]}" for k in range(4)] == ["name 0", "name 1", "name 10", "name 100"]
    assert [label for _, label in items][:3] == [0, 1, 2]
    with pytest.raises(FileNotFoundError, match="imagenet-sketch: not found"):
        read_test_set("imagenet_sketch", tmp_path)
    touch_image(tmp_path / "imagenet-rendition" / "imagenet-r" / "n99999999" / "x.jpg")
    with pytest.raises(ValueError, match="not wnids of imagenet/classnames.txt"):
        read_test_set("imagenet_rendition", tmp_path)
