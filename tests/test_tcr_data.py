"""tcr.data: the dataset registry on tiny files in the original formats (Karpathy, nocaps, Fashion-Gen, PEDES)."""
import json
import pickle

import pytest
import torch
from PIL import Image

from common.clip import tokenize
from common.synthetic import write_karpathy
from tcr.config import load_config
from tcr.data import build_tcr_datasets

SOT, EOT = 49406, 49407


def _image(path, size=(40, 36), color=(200, 30, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def _config(dataset, image_root, ann_root="", backbone="blip"):
    return {"dataset": dataset, "image_root": str(image_root), "ann_root": str(ann_root), "backbone": backbone}


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tcr_data")
    write_karpathy(root, "coco", n_images=5, seed=1)  # the writer gives image 3 (index % 7 == 3) a sixth caption
    return root


def test_coco_config_keeps_five_captions_and_squashes(coco_root):
    config = load_config("QS/t2i/coco_text_c/retrieval_coco", data_root=coco_root)
    config["ann_root"] = str(coco_root / "coco/coco_annotations")
    images, texts = build_tcr_datasets(config)
    raw = json.loads((coco_root / "coco/coco_annotations/coco_karpathy_test.json").read_text())
    assert len(raw[3]["caption"]) == 6
    assert (len(images), len(texts)) == (5, 25)
    assert images.img2txt == texts.img2txt == [[5 * i + k for k in range(5)] for i in range(5)]
    assert texts.txt2img == [[t // 5] for t in range(25)]
    assert images[2][0].shape == (3, 384, 384) and images[2][1] == 2
    caption, index = texts[16]
    assert index == 16 and caption == raw[3]["caption"][1].lower().rstrip(".")
    clip_images, _ = build_tcr_datasets({**config, "backbone": "clip"})
    assert clip_images[0][0].shape == (3, 224, 224)


def test_missing_image_folder_is_named(coco_root):
    config = load_config("QS/i2t/coco_image_c/COCO_IP_fog_3", data_root=coco_root)
    with pytest.raises(FileNotFoundError, match=rf"{coco_root}/coco-IP/COCO_IP_fog_3: image folder not found"):
        build_tcr_datasets(config)


def test_missing_annotation_is_named(tmp_path):
    config = load_config("QS/t2i/flickr_text_c/annotation_OcrAug_2", data_root=tmp_path)
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/flickr-TP/annotation_OcrAug/2/flickr30k_test.json"):
        build_tcr_datasets(config)


def test_unknown_dataset_lists_valid_ones(tmp_path):
    with pytest.raises(ValueError, match=r"unknown dataset 'mscoco'; valid datasets: coco, flickr, nocaps_in_domain"):
        build_tcr_datasets(_config("mscoco", tmp_path))


def test_nocaps_domains_filter_and_partition(tmp_path):
    entries = [{"image": f"val/{i}.jpg", "caption": [f"Photo {i}.", f"Picture number {i}"], "domain": domain}
               for i, domain in enumerate(["in-domain", "out-domain", "near-domain", "in-domain", "out-domain"])]
    (tmp_path / "annotations.json").write_text(json.dumps(entries))
    for i in range(5):
        _image(tmp_path / f"val/{i}.jpg")
    loaded = {}
    for domain in ("in", "near", "out", "entire"):
        images, texts = build_tcr_datasets(_config(f"nocaps_{domain}_domain", tmp_path, tmp_path))
        loaded[domain] = images.ann.images
        assert texts.txt2img == [[t // 2] for t in range(len(texts))]
        assert images.img2txt == [[2 * i, 2 * i + 1] for i in range(len(images))]
    assert loaded["in"] == ["val/0.jpg", "val/3.jpg"] and loaded["near"] == ["val/2.jpg"]
    assert loaded["out"] == ["val/1.jpg", "val/4.jpg"]
    assert sorted(loaded["in"] + loaded["near"] + loaded["out"]) == loaded["entire"]
    _, texts = build_tcr_datasets(_config("nocaps_out_domain", tmp_path, tmp_path))
    assert texts[1] == ("picture number 1", 1)


def _fashion_gen(root):
    records = {  # file name → record; sorted file names give the product order 100, 200, 300
        "a.pkl": {"img_name": "100_1.jpg", "captions": "A RED dress.", "super_cls_id": "21"},
        "b.pkl": {"img_name": "200_1.jpg", "captions": "Black boots", "super_cls_id": "5"},
        "c.pkl": {"img_name": "100_2.jpg", "captions": "A red dress, side view", "super_cls_id": "21"},
        "d.pkl": {"img_name": "300_1.jpg", "captions": ["Blue", "shirt"], "super_cls_id": "21"},
    }
    (root / "full_valid_info_PAI").mkdir(parents=True)
    for name, record in records.items():
        with open(root / "full_valid_info_PAI" / name, "wb") as handle:
            pickle.dump(record, handle)
        _image(root / "extracted_valid_images" / record["img_name"])


def test_fashion_gen_groups_by_product(tmp_path):
    _fashion_gen(tmp_path)
    images, texts = build_tcr_datasets(_config("fashion_gen", tmp_path))
    assert images.ann.images == ["100_1.jpg", "100_2.jpg", "200_1.jpg", "300_1.jpg"]
    # a list of captions gives one text per caption (the original extends the product's caption list)
    assert list(texts.ann.texts) == ["a red dress", "a red dress, side view", "black boots", "blue", "shirt"]
    assert images.img2txt == [[0, 1], [0, 1], [2], [3, 4]]
    assert texts.txt2img == [[0, 1], [0, 1], [2], [3], [3]]
    assert images[1][0].shape == (3, 384, 384)
    detail_images, detail_texts = build_tcr_datasets(_config("fashion_gen_detail", tmp_path, backbone="clip"))
    assert detail_images.ann.images == ["100_1.jpg", "100_2.jpg", "300_1.jpg"]
    assert detail_texts.txt2img == [[0, 1], [0, 1], [2], [2]]
    assert detail_images[2][0].shape == (3, 224, 224)


def test_fashion_gen_missing_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/full_valid_info_PAI: Fashion-Gen info folder"):
        build_tcr_datasets(_config("fashion_gen", tmp_path))
    _fashion_gen(tmp_path)
    for path in (tmp_path / "extracted_valid_images").iterdir():
        path.unlink()
    (tmp_path / "extracted_valid_images").rmdir()
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/extracted_valid_images: image folder not found"):
        build_tcr_datasets(_config("fashion_gen", tmp_path))


def _pedes(root, file_name):
    long_caption = " ".join(["walking"] * 100)
    records = [
        {"id": 7, "file_path": "test/7_a.jpg", "captions": ["A woman in a red coat.", long_caption], "split": "test"},
        {"id": 3, "file_path": "train/3_a.jpg", "captions": ["Training person."], "split": "train"},
        {"id": 9, "file_path": "test/9_a.jpg", "captions": ["A man with a blue bag."], "split": "test"},
        {"id": 7, "file_path": "test/7_b.jpg", "captions": ["The woman wears black shoes."], "split": "test"},
    ]
    (root / file_name).write_text(json.dumps(records))
    for record in records:
        _image(root / "imgs" / record["file_path"], size=(32, 80))


@pytest.mark.parametrize("dataset, file_name", [("cuhk_pedes", "reid_raw.json"), ("icfg_pedes", "ICFG-PEDES.json")])
def test_pedes_test_split_pretokenised_and_grouped_by_person(tmp_path, dataset, file_name):
    _pedes(tmp_path, file_name)
    images, texts = build_tcr_datasets(_config(dataset, tmp_path, backbone="clip_reid"))
    # persons in first-seen order (7, then 9), each person's records in file order, for images and texts alike
    assert images.ann.images == ["test/7_a.jpg", "test/7_b.jpg", "test/9_a.jpg"]
    assert images.img2txt == [[0, 1, 2], [0, 1, 2], [3]]
    assert texts.txt2img == [[0, 1], [0, 1], [0, 1], [2]]
    assert torch.equal(texts.ann.texts[3], tokenize(["A man with a blue bag."], context_length=77)[0].long())
    assert torch.equal(texts.ann.texts[2], tokenize(["The woman wears black shoes."], context_length=77)[0].long())
    tokens, index = texts[0]
    assert index == 0 and tokens.dtype == torch.long and tokens.shape == (77,)
    length = int((tokens != 0).sum())
    assert tokens[0] == SOT and tokens[length - 1] == EOT and int(tokens.argmax()) == length - 1
    long_tokens = texts[1][0]
    assert (long_tokens != 0).all() and long_tokens[0] == SOT and long_tokens[76] == EOT
    assert images[0][0].shape == (3, 384, 128)


def test_pedes_missing_annotation_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path}/ICFG-PEDES.json: not found"):
        build_tcr_datasets(_config("icfg_pedes", tmp_path, backbone="clip_reid"))
