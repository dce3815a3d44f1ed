"""common.data.retrieval: pre_caption and Karpathy-format COCO/Flickr test sets."""
import json

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from common.data.images import ImageReadError
from common.data.retrieval import KarpathyRetrieval, build_retrieval_eval, pre_caption
from common.transforms import blip_eval_transform


def test_pre_caption():
    assert pre_caption('A Dog. Runs! "fast" (really)*#: ; ~ ok\n', 30) == "a dog runs fast really ok"
    assert pre_caption("  two   spaces\t\tand tabs  ", 30) == "two spaces and tabs"
    assert pre_caption("one two three four", 2) == "one two"
    assert pre_caption(["A man", "on a bike."], 30) == "a man on a bike"  # nlpaug list output is joined
    assert pre_caption("kept, commas-and/slashes?", 30) == "kept, commas-and/slashes?"
    assert pre_caption(None, 30) is None
    assert pre_caption(" ".join(f"w{i}" for i in range(60))) == " ".join(f"w{i}" for i in range(50))


def make_karpathy(root, name, n_images=3, n_captions=6, mode="RGB"):
    """ann_root/<name> with n_images entries of n_captions captions; images under image_root/val2014/."""
    image_root, ann_root = root / "images", root / "ann"
    (image_root / "val2014").mkdir(parents=True)
    ann_root.mkdir()
    entries = []
    for i in range(n_images):
        Image.new(mode, (20 + 4 * i, 16), 30 * i).save(image_root / "val2014" / f"im{i}.jpg")
        captions = [f"Image {i}, caption {k}." for k in range(n_captions)]
        entries.append({"image": f"val2014/im{i}.jpg", "caption": captions, "image_id": i})
    (ann_root / name).write_text(json.dumps(entries))
    return ann_root, image_root


def test_coco_keeps_five_captions_and_builds_maps(tmp_path):
    ann_root, image_root = make_karpathy(tmp_path, "coco_karpathy_test.json", mode="L")
    ds = build_retrieval_eval("coco", ann_root, image_root, blip_eval_transform(8))
    assert ds.ann.images == ["val2014/im0.jpg", "val2014/im1.jpg", "val2014/im2.jpg"]
    assert len(ds.ann.texts) == 15 and ds.ann.texts[6] == "image 1, caption 1"
    assert ds.ann.img2txt == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11, 12, 13, 14]]
    assert ds.ann.txt2img == [[i // 5] for i in range(15)]
    image, index = ds.images[2]
    assert image.shape == (3, 8, 8) and index == 2  # grayscale files become RGB
    assert ds.texts[7] == ("image 1, caption 2", 7)
    images, ids = next(iter(DataLoader(ds.images, batch_size=3)))
    assert images.shape == (3, 3, 8, 8) and torch.equal(ids, torch.tensor([0, 1, 2]))


def test_flickr_keeps_all_captions_and_max_words(tmp_path):
    ann_root, image_root = make_karpathy(tmp_path, "flickr30k_test.json", n_images=2, n_captions=6)
    ds = build_retrieval_eval("flickr", ann_root, image_root, blip_eval_transform(8), max_words=2)
    assert len(ds.texts) == 12 and ds.ann.img2txt[1] == [6, 7, 8, 9, 10, 11]
    assert ds.ann.texts[0] == "image 0,"
    assert len(KarpathyRetrieval(ann_root / "flickr30k_test.json", max_captions=1).texts) == 2


def test_retrieval_errors(tmp_path):
    ann_root, image_root = make_karpathy(tmp_path, "coco_karpathy_test.json")
    with pytest.raises(ValueError, match="unknown retrieval dataset 'nocaps'; valid names: coco, flickr"):
        build_retrieval_eval("nocaps", ann_root, image_root, blip_eval_transform(8))
    with pytest.raises(FileNotFoundError, match="flickr30k_test.json: not found"):
        build_retrieval_eval("flickr", ann_root, image_root, blip_eval_transform(8))
    with pytest.raises(FileNotFoundError, match="missing_images: image folder not found"):
        build_retrieval_eval("coco", ann_root, tmp_path / "missing_images", blip_eval_transform(8))
    ds = build_retrieval_eval("coco", ann_root, image_root, blip_eval_transform(8))
    (image_root / "val2014" / "im1.jpg").write_bytes(b"garbage")
    with pytest.raises(ImageReadError, match="im1.jpg: cannot read image"):
        ds.images[1]
    (ann_root / "coco_karpathy_test.json").write_text('[{"image": "a.jpg",\n "caption": "not a list"}]')
    with pytest.raises(ValueError, match="coco_karpathy_test.json: entry 0 is not of the form"):
        KarpathyRetrieval(ann_root / "coco_karpathy_test.json")
    (ann_root / "coco_karpathy_test.json").write_text('[{"image": "a.jpg",\n "caption": ["x"],,}]')
    with pytest.raises(ValueError, match="coco_karpathy_test.json: malformed JSON at line 2"):
        KarpathyRetrieval(ann_root / "coco_karpathy_test.json")
