"""common.data.{paths,cir,shoes}: CIR dataset readers on tiny on-disk layouts, and every bad-input error."""
import json
import logging

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from common.data.cir import (CIRRDataset, FashionIQDataset, collate_drop_none, fiq_compositions, fiq_train_caption,
                             fiq_val_caption)
from common.data.images import ImageReadError, open_image
from common.data.paths import resolve_dataset_root
from common.data.shoes import ShoesDataset, prepare_shoes
from common.transforms import targetpad_transform

DIM = 8
PREPROCESS = targetpad_transform(1.25, DIM)
SIZES = [(20, 32), (32, 20), (24, 24), (40, 16)]


def write_image(path, index, fmt="JPEG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", SIZES[index % len(SIZES)], (40 * index % 256, 90, 200)).save(path, fmt)


def write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_fashioniq(root):
    """fashionIQ_dataset/ with 4 images and 2 triplets per dress type and split (test triplets have no target)."""
    base = root / "fashionIQ_dataset"
    for t, dress_type in enumerate(("dress", "shirt", "toptee")):
        for s, split in enumerate(("train", "val", "test")):
            names = [f"{dress_type[0]}{split[:2]}{i}" for i in range(4)]
            for i, name in enumerate(names):
                write_image(base / "images" / f"{name}.jpg", t + s + i)
            write_json(base / "image_splits" / f"split.{dress_type}.{split}.json", names)
            triplets = [{"candidate": names[0], "target": names[1], "captions": ["is red.", "Has A Logo "]},
                        {"candidate": names[2], "target": names[3], "captions": ["is standing", "and blue"]}]
            if split == "test":
                triplets = [{k: v for k, v in triplet.items() if k != "target"} for triplet in triplets]
            write_json(base / "captions" / f"cap.{dress_type}.{split}.json", triplets)
    return base


def make_cirr(root):
    """cirr_dataset/ with train (4 images in train/0), val (7 in dev) and test1 (7) splits, 2 queries each."""
    base = root / "cirr_dataset"
    for split, folder in (("train", "train/0"), ("val", "dev"), ("test1", "test1")):
        prefix = "dev" if split == "val" else split
        count = 4 if split == "train" else 7
        names = [f"{prefix}-{i}-0-img0" for i in range(count)]
        mapping = {}
        for i, name in enumerate(names):
            write_image(base / folder / f"{name}.png", i, "PNG")
            mapping[name] = f"./{folder}/{name}.png"
        write_json(base / "cirr" / "image_splits" / f"split.rc2.{split}.json", mapping)
        members = names[:6]
        triplets = []
        for pairid, (ref, tgt) in enumerate(((0, 1), (2, 3))):
            triplet = {"pairid": 100 + pairid, "reference": names[ref], "target_hard": names[tgt],
                       "target_soft": {names[tgt]: 1.0}, "caption": f"make it standing {pairid}",
                       "img_set": {"id": pairid, "members": members, "reference_rank": 0, "target_rank": 1}}
            if split == "test1":
                for key in ("target_hard", "target_soft"):
                    del triplet[key]
                del triplet["img_set"]["target_rank"]
            triplets.append(triplet)
        write_json(base / "cirr" / "captions" / f"cap.rc2.{split}.json", triplets)
    return base


def marker(text, forward):
    return f"{'[F]' if forward else '[B]'} {text}"


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


# ---------------------------------------------------------------------------------------------------- FashionIQ
def test_fiq_train_items(tmp_path):
    make_fashioniq(tmp_path)
    plain = FashionIQDataset(tmp_path, "train", ["dress", "toptee", "shirt"], "relative", PREPROCESS)
    assert len(plain) == 6
    ref, tgt, captions = plain[0]
    assert ref.shape == tgt.shape == (3, DIM, DIM)
    assert captions == ["is red.", "Has A Logo "]

    bi = FashionIQDataset(tmp_path / "fashionIQ_dataset", "train", ["dress"], "relative", PREPROCESS,
                          caption_hook=marker, return_reverse=True, ref_aug=lambda image: image.size)
    ref, tgt, forward, backward, aug = bi[1]
    assert forward == ["[F] is standing", "[F] and blue"]
    assert backward == ["[B] is standing", "[B] and blue"]
    assert aug == SIZES[2]  # the raw reference image (dress/train image 2 has size SIZES[0 + 0 + 2])
    assert torch.equal(ref, PREPROCESS(open_image(tmp_path / "fashionIQ_dataset/images/dtr2.jpg")))


def test_fiq_val_test_and_classic_items(tmp_path):
    make_fashioniq(tmp_path)
    val = FashionIQDataset(tmp_path, "val", ["shirt"], "relative", PREPROCESS, caption_hook=marker)
    assert val[0] == ("sva0", "sva1", ["[F] is red.", "[F] Has A Logo "])
    test = FashionIQDataset(tmp_path, "test", ["toptee"], "relative", PREPROCESS)
    name, image, captions = test[1]
    assert name == "tte2" and image.shape == (3, DIM, DIM) and captions == ["is standing", "and blue"]
    classic = FashionIQDataset(tmp_path, "val", ["toptee", "dress"], "classic", PREPROCESS)
    assert classic.image_names == ["tva0", "tva1", "tva2", "tva3", "dva0", "dva1", "dva2", "dva3"]
    assert len(classic) == 8 and classic.triplets == []
    name, image = classic[4]
    assert name == "dva0" and image.shape == (3, DIM, DIM)


def test_fiq_captions():
    class Draws:
        def __init__(self, values):
            self.values = list(values)

        def random(self):
            return self.values.pop(0)

    captions = ["is red.", "Has A Logo "]
    rng = Draws([0.1, 0.3, 0.6, 0.9, 0.25, 0.5, 0.75])
    got = [fiq_train_caption(captions, rng) for _ in range(7)]
    assert got == ["Is red and Has A Logo", "Has a logo and is red", "Is red", "Has a logo",
                   "Has a logo", "Has a logo", "Has a logo"]  # exact .25/.5/.75 fall through to "C2"
    assert fiq_compositions(captions) == ("Is red and Has A Logo", "Has a logo and is red", "Is red", "Has a logo")
    assert fiq_val_caption(captions) == "Is red and Has A Logo"
    assert fiq_val_caption(["?shiny, ", ". Longer"]) == "Shiny and Longer"


def test_fiq_errors(tmp_path):
    base = make_fashioniq(tmp_path)
    with pytest.raises(ValueError, match="FashionIQ split 'dev'.*train, val, test"):
        FashionIQDataset(tmp_path, "dev", ["dress"], "relative", PREPROCESS)
    with pytest.raises(ValueError, match="dress type 'shoe'.*dress, shirt, toptee"):
        FashionIQDataset(tmp_path, "val", ["shoe"], "relative", PREPROCESS)
    with pytest.raises(ValueError, match="non-empty list"):
        FashionIQDataset(tmp_path, "val", "dress", "relative", PREPROCESS)
    with pytest.raises(ValueError, match="mode 'pairs'.*relative, classic"):
        FashionIQDataset(tmp_path, "val", ["dress"], "pairs", PREPROCESS)
    with pytest.raises(ValueError, match="on_error policy 'ignore'.*raise, skip"):
        FashionIQDataset(tmp_path, "val", ["dress"], "relative", PREPROCESS, on_error="ignore")
    with pytest.raises(FileNotFoundError, match="fashionIQ_dataset.*no such folder"):
        FashionIQDataset(tmp_path / "nowhere", "val", ["dress"], "relative", PREPROCESS)

    (base / "captions" / "cap.shirt.val.json").unlink()
    with pytest.raises(FileNotFoundError, match="cap.shirt.val.json: not found"):
        FashionIQDataset(tmp_path, "val", ["dress", "shirt"], "relative", PREPROCESS)
    (base / "image_splits" / "split.dress.val.json").write_text('["dva0",\n "dva1"\n oops]')
    with pytest.raises(ValueError, match="split.dress.val.json: malformed JSON at line 3"):
        FashionIQDataset(tmp_path, "val", ["dress"], "classic", PREPROCESS)
    write_json(base / "image_splits" / "split.dress.val.json", ["dva0", "dva2", "dva3"])
    with pytest.raises(ValueError, match=r"cap.dress.val.json: entry 0 names target 'dva1'.*split.dress.val.json"):
        FashionIQDataset(tmp_path, "val", ["dress"], "relative", PREPROCESS)
    write_json(base / "captions" / "cap.toptee.val.json", [{"candidate": "tva0", "target": "tva1", "captions": ["a"]}])
    with pytest.raises(ValueError, match="cap.toptee.val.json: entry 0 has captions.*two strings"):
        FashionIQDataset(tmp_path, "val", ["toptee"], "relative", PREPROCESS)
    write_json(base / "captions" / "cap.toptee.val.json", [{"candidate": "tva0", "captions": ["a", "b"]}])
    with pytest.raises(ValueError, match="cap.toptee.val.json: entry 0 lacks target"):
        FashionIQDataset(tmp_path, "val", ["toptee"], "relative", PREPROCESS)


def test_corrupt_image_raises_or_is_skipped_with_a_named_warning(tmp_path):
    base = make_fashioniq(tmp_path)
    bad = base / "images" / "dtr1.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    (base / "images" / "dtr2.jpg").unlink()
    strict = FashionIQDataset(tmp_path, "train", ["dress"], "relative", PREPROCESS)
    with pytest.raises(ImageReadError, match="dtr1.jpg: cannot read image"):
        strict[0]
    with pytest.raises(FileNotFoundError, match="dtr2.jpg: image file not found"):
        strict[1]
    truncated = base / "images" / "dtr3.jpg"
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(ImageReadError, match="dtr3.jpg: cannot read image"):
        open_image(truncated)

    handler = ListHandler()
    logging.getLogger("common.data.cir").addHandler(handler)
    try:
        lenient = FashionIQDataset(tmp_path, "train", ["dress", "shirt"], "relative", PREPROCESS, on_error="skip")
        assert lenient[0] is None
        batches = list(DataLoader(lenient, batch_size=4, collate_fn=lenient.collate_fn))
    finally:
        logging.getLogger("common.data.cir").removeHandler(handler)
    refs, targets, captions = batches[0]
    assert refs.shape == (2, 3, DIM, DIM)  # dress items 0 and 1 dropped, shirt items 0 and 1 kept
    assert any("dtr1.jpg" in message for message in handler.messages)
    assert any("dtr2.jpg" in message for message in handler.messages)
    assert any("dropped 2 of 4 items" in message for message in handler.messages)
    assert collate_drop_none([None, None]) is None
    assert strict.collate_fn is not collate_drop_none and lenient.collate_fn is collate_drop_none


# ---------------------------------------------------------------------------------------------------------- CIRR
def test_cirr_items(tmp_path):
    make_cirr(tmp_path)
    train = CIRRDataset(tmp_path, "train", "relative", PREPROCESS, caption_hook=marker, return_reverse=True)
    ref, tgt, forward, backward = train[1]
    assert ref.shape == tgt.shape == (3, DIM, DIM)
    assert (forward, backward) == ("[F] make it standing 1", "[B] make it standing 1")
    assert len(CIRRDataset(tmp_path, "train", "relative", PREPROCESS, ref_aug=lambda image: 0)[0]) == 4

    val = CIRRDataset(tmp_path, "val", "relative", PREPROCESS)
    members = [f"dev-{i}-0-img0" for i in range(6)]
    assert val[0] == ("dev-0-0-img0", "dev-1-0-img0", "make it standing 0", members)
    test = CIRRDataset(tmp_path / "cirr_dataset", "test1", "relative", PREPROCESS)
    assert test[1] == (101, "test1-2-0-img0", "make it standing 1", [f"test1-{i}-0-img0" for i in range(6)])

    classic = CIRRDataset(tmp_path, "val", "classic", PREPROCESS)
    assert len(classic) == 7 and classic.image_names == [f"dev-{i}-0-img0" for i in range(7)]
    name, image = classic[6]
    assert name == "dev-6-0-img0" and image.shape == (3, DIM, DIM)
    assert classic.image_path(name) == tmp_path / "cirr_dataset" / "dev" / "dev-6-0-img0.png"


def test_cirr_errors(tmp_path):
    base = make_cirr(tmp_path)
    with pytest.raises(ValueError, match="CIRR split 'test'.*train, val, test1"):
        CIRRDataset(tmp_path, "test", "relative", PREPROCESS)
    captions = base / "cirr" / "captions" / "cap.rc2.val.json"
    entries = json.loads(captions.read_text())
    entries[1]["img_set"]["members"][5] = "dev-99-0-img0"
    write_json(captions, entries)
    with pytest.raises(ValueError, match="cap.rc2.val.json: entry 1 names img_set member 'dev-99-0-img0'"):
        CIRRDataset(tmp_path, "val", "relative", PREPROCESS)
    CIRRDataset(tmp_path, "val", "classic", PREPROCESS)  # classic mode does not read the captions
    entries[1]["pairid"] = "101"
    write_json(captions, entries)
    with pytest.raises(ValueError, match="entry 1 has pairid '101'; expected an integer"):
        CIRRDataset(tmp_path, "val", "relative", PREPROCESS)
    write_json(base / "cirr" / "captions" / "cap.rc2.train.json", [{"pairid": 1, "reference": "train-0-0-img0"}])
    with pytest.raises(ValueError, match="cap.rc2.train.json: entry 0 lacks caption, img_set, target_hard"):
        CIRRDataset(tmp_path, "train", "relative", PREPROCESS)
    (base / "cirr" / "image_splits" / "split.rc2.test1.json").unlink()
    with pytest.raises(FileNotFoundError, match="split.rc2.test1.json: not found"):
        CIRRDataset(tmp_path, "test1", "classic", PREPROCESS)
    write_json(base / "cirr" / "image_splits" / "split.rc2.test1.json", ["test1-0-0-img0"])
    with pytest.raises(ValueError, match="split.rc2.test1.json: expected a JSON object mapping"):
        CIRRDataset(tmp_path, "test1", "classic", PREPROCESS)


# ---------------------------------------------------------------------------------------------------------- paths
def test_resolve_dataset_root(tmp_path, monkeypatch):
    for variable in ("FASHIONIQ_ROOT", "CIRR_ROOT", "CIR_DATA_ROOT", "DATA_ROOT"):
        monkeypatch.delenv(variable, raising=False)
    fiq = make_fashioniq(tmp_path / "a")
    cirr = make_cirr(tmp_path / "b")
    assert resolve_dataset_root("fashioniq", tmp_path / "a") == fiq
    assert resolve_dataset_root("fashioniq", fiq) == fiq  # the dataset folder itself
    with pytest.raises(FileNotFoundError, match=r"\$FASHIONIQ_ROOT, \$CIR_DATA_ROOT, \$DATA_ROOT"):
        resolve_dataset_root("fashioniq")
    monkeypatch.setenv("DATA_ROOT", str(tmp_path / "b"))
    assert resolve_dataset_root("cirr") == cirr
    monkeypatch.setenv("CIR_DATA_ROOT", str(tmp_path / "a"))
    assert resolve_dataset_root("fashioniq") == fiq  # CIR_DATA_ROOT before DATA_ROOT
    monkeypatch.setenv("CIRR_ROOT", str(cirr))
    assert resolve_dataset_root("cirr") == cirr  # the dataset's own variable first
    assert resolve_dataset_root("cirr", tmp_path / "b") == cirr  # an explicit value wins
    with pytest.raises(FileNotFoundError, match=r"explicit root.*cirr_dataset/\{cirr/captions,cirr/image_splits\}"):
        resolve_dataset_root("cirr", tmp_path / "a")
    monkeypatch.delenv("CIRR_ROOT")
    monkeypatch.setenv("CIR_DATA_ROOT", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"nowhere \(\$CIR_DATA_ROOT\).*no such folder"):
        resolve_dataset_root("cirr")
    monkeypatch.setenv("CIR_DATA_ROOT", str(tmp_path / "a"))
    (fiq / "images").rename(fiq / "imgs")
    with pytest.raises(FileNotFoundError, match="fashionIQ_dataset lacks images"):
        resolve_dataset_root("fashioniq")
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'; valid names: fashioniq, cirr, shoes"):
        resolve_dataset_root("imagenet")


# ---------------------------------------------------------------------------------------------------------- Shoes
def make_raw_shoes(root):
    """Raw Shoes download: images under womens/<category>/<0|1>/, name lists and relative captions."""
    images, annotations = root / "shoes" / "images", root / "shoes" / "annotations"
    layout = {"img_a.jpg": "boots/0", "img_b.jpg": "boots/1", "img_c.jpg": "pumps/0",
              "img_d.jpg": "pumps/1", "img_e.jpg": "flats/0"}
    for i, (name, folder) in enumerate(layout.items()):
        write_image(images / "womens" / folder / name, i)
    annotations.mkdir(parents=True)
    (annotations / "train_im_names.txt").write_text("img_c.jpg\nimg_a.jpg\nimg_b.jpg\n")
    (annotations / "eval_im_names.txt").write_text("img_d.jpg\nimg_e.jpg\n")
    write_json(annotations / "relative_captions_shoes.json", [
        {"ImageName": "img_a.jpg", "ReferenceImageName": "img_c.jpg", "RelativeCaption": "is taller"},
        {"ImageName": "img_d.jpg", "ReferenceImageName": "img_a.jpg", "RelativeCaption": "crosses splits"},
        {"ImageName": "img_e.jpg", "ReferenceImageName": "img_d.jpg", "RelativeCaption": "is flat"},
        {"ImageName": "img_b.jpg", "ReferenceImageName": "img_a.jpg", "RelativeCaption": "is black"},
    ])
    return images, annotations


def test_prepare_shoes_outputs(tmp_path):
    images, annotations = make_raw_shoes(tmp_path)
    counts = prepare_shoes(images, annotations)
    assert counts == {"duplicate_basenames": 0, "train_images": 3, "train_triplets": 2, "val_images": 2,
                      "val_triplets": 1, "dropped_triplets": 1}
    assert (annotations / "split.train.json").read_text() == json.dumps(
        ["womens/pumps/0/img_c.jpg", "womens/boots/0/img_a.jpg", "womens/boots/1/img_b.jpg"])
    assert json.loads((annotations / "split.val.json").read_text()) == ["womens/pumps/1/img_d.jpg",
                                                                       "womens/flats/0/img_e.jpg"]
    assert (annotations / "triplet.train.json").read_text() == json.dumps([
        {"ImageName": "womens/boots/0/img_a.jpg", "ReferenceImageName": "womens/pumps/0/img_c.jpg",
         "RelativeCaption": "is taller"},
        {"ImageName": "womens/boots/1/img_b.jpg", "ReferenceImageName": "womens/boots/0/img_a.jpg",
         "RelativeCaption": "is black"}])
    assert json.loads((annotations / "triplet.val.json").read_text()) == [
        {"ImageName": "womens/flats/0/img_e.jpg", "ReferenceImageName": "womens/pumps/1/img_d.jpg",
         "RelativeCaption": "is flat"}]


def test_prepare_shoes_errors(tmp_path):
    images, annotations = make_raw_shoes(tmp_path)
    with pytest.raises(FileNotFoundError, match="no image matches 'womens_\\*/\\*/\\*.jpg'"):
        prepare_shoes(images, annotations, image_glob="womens_*/*/*.jpg")
    (annotations / "eval_im_names.txt").write_text("img_d.jpg\nimg_zz.jpg\n")
    with pytest.raises(FileNotFoundError, match="eval_im_names.txt: 1 image.*img_zz.jpg"):
        prepare_shoes(images, annotations)
    (annotations / "train_im_names.txt").unlink()
    with pytest.raises(FileNotFoundError, match="train_im_names.txt: not found"):
        prepare_shoes(images, annotations)


def test_shoes_dataset(tmp_path):
    images, annotations = make_raw_shoes(tmp_path)
    prepare_shoes(images, annotations)
    train = ShoesDataset(tmp_path, "train", "relative", PREPROCESS, ref_aug=lambda image: image.size)
    assert len(train) == 2
    ref, tgt, caption, aug = train[1]
    assert ref.shape == tgt.shape == (3, DIM, DIM) and caption == "is black" and aug == SIZES[0]
    val = ShoesDataset(tmp_path / "shoes", "val", "relative", PREPROCESS)
    assert val[0] == ("womens/pumps/1/img_d.jpg", "womens/flats/0/img_e.jpg", "is flat")
    classic = ShoesDataset(tmp_path, "train", "classic", PREPROCESS)
    name, image = classic[2]
    assert len(classic) == 3 and name == "womens/boots/1/img_b.jpg" and image.shape == (3, DIM, DIM)
    with pytest.raises(ValueError, match="Shoes split 'test'.*train, val"):
        ShoesDataset(tmp_path, "test", "classic", PREPROCESS)
    write_json(annotations / "split.val.json", ["womens/pumps/1/img_d.jpg"])
    with pytest.raises(ValueError, match="triplet.val.json: entry 0 names ImageName 'womens/flats/0/img_e.jpg'"):
        ShoesDataset(tmp_path, "val", "relative", PREPROCESS)
