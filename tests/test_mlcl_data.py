"""MLCL data side: prepare_shoes_data.py on the synthetic raw Shoes layout, the datasets with the augmented view, the
feature-table rows, caption tokenisation, CLIP files, the warm-restart schedule and the run-folder names."""
from __future__ import annotations

import argparse
import glob
import json
import math
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from common.cir.data import relative_dataset
from common.cir.data import NamedImages
from common.clip import write_tiny_clip
from common.io import CheckpointError
from common.runtime import seed_everything
from common.synthetic.writers import write_shoes_raw
from common.transforms import build_preprocess
from mlcl import prepare_shoes_data
from mlcl.args import dataset_name, short_model_name
from mlcl.augment import DIHEDRAL_OPS, image_aug_transform
from mlcl.combiner import Combiner
from mlcl.combiner_train import WarmRestarts, build_optimizer, run_prefix
from mlcl.data import AugmentedRows, train_image_table
from mlcl.models import build_clip, tokenize_captions
from mlcl.training import warm_restart_lr

DIM = 32


def upstream_prepare(image_dir: Path, annotation_dir: Path) -> dict[str, list]:
    """The original conversion, re-stated: glob, basenames by list.index, same-split triplets only."""
    paths = [os.path.relpath(p, image_dir) for p in glob.glob(str(image_dir / "womens/*/*/*.jpg"))]
    basenames = [os.path.basename(p) for p in paths]
    triplets = json.loads((annotation_dir / "relative_captions_shoes.json").read_text())
    out = {}
    for split, source in (("train", "train_im_names.txt"), ("val", "eval_im_names.txt")):
        names = [line.strip() for line in (annotation_dir / source).read_text().splitlines() if line.strip()]
        out[f"split.{split}.json"] = [paths[basenames.index(name)] for name in names]
        out[f"triplet.{split}.json"] = [
            {**t, "ImageName": paths[basenames.index(t["ImageName"])],
             "ReferenceImageName": paths[basenames.index(t["ReferenceImageName"])]}
            for t in triplets if t["ImageName"] in names and t["ReferenceImageName"] in names]
    return out


@pytest.fixture()
def raw_shoes(tmp_path):
    info = write_shoes_raw(tmp_path, {"train": 10, "eval": 6}, {"train": 8, "eval": 4}, n_cross_split=2, seed=1)
    return tmp_path, Path(info["image_dir"]), Path(info["annotation_dir"])


def test_prepare_shoes_cli_matches_the_original(raw_shoes, capsys):
    root, image_dir, annotation_dir = raw_shoes
    expected = upstream_prepare(image_dir, annotation_dir)
    counts = prepare_shoes_data.main(["--image-dir", str(image_dir), "--annotation-dir", str(annotation_dir)])
    assert counts["dropped_triplets"] == 2 and counts["train_triplets"] == 8 and counts["val_triplets"] == 4
    for file, content in expected.items():
        assert json.loads((annotation_dir / file).read_text()) == content, file
    assert json.loads(capsys.readouterr().out)["val_images"] == 8
    prepare_shoes_data.main(["--data-root", str(root)])  # the folders from the root give the same files
    for file, content in expected.items():
        assert json.loads((annotation_dir / file).read_text()) == content


def test_prepare_shoes_cli_errors(raw_shoes):
    _, image_dir, annotation_dir = raw_shoes
    flags = ["--image-dir", str(image_dir), "--annotation-dir", str(annotation_dir)]
    names = (annotation_dir / "eval_im_names.txt").read_text()
    (annotation_dir / "eval_im_names.txt").write_text(names + "img_missing.jpg\n")
    with pytest.raises(FileNotFoundError, match=r"eval_im_names.txt: 1 image\(s\) not found.*img_missing.jpg"):
        prepare_shoes_data.main(flags)
    (annotation_dir / "relative_captions_shoes.json").unlink()
    with pytest.raises(FileNotFoundError, match="relative_captions_shoes.json: not found"):
        prepare_shoes_data.main(flags)


def test_train_items_carry_the_augmented_view(raw_shoes):
    root, image_dir, annotation_dir = raw_shoes
    prepare_shoes_data.main(["--image-dir", str(image_dir), "--annotation-dir", str(annotation_dir)])
    preprocess = build_preprocess("targetpad", DIM)
    train = relative_dataset("shoes", root, "train", preprocess, ref_aug=image_aug_transform(1.25, DIM))
    reference, target, caption, reference_aug = train[0]
    assert reference.shape == target.shape == reference_aug.shape == (3, DIM, DIM)
    assert caption == train.triplets[0]["RelativeCaption"]
    assert not torch.equal(reference, reference_aug)
    assert len(relative_dataset("shoes", root, "val", preprocess)[0]) == 3


def test_augmented_rows_give_the_dataset_rows_and_the_same_view(raw_shoes):
    root, image_dir, annotation_dir = raw_shoes
    prepare_shoes_data.main(["--image-dir", str(image_dir), "--annotation-dir", str(annotation_dir)])
    preprocess, augment = build_preprocess("targetpad", DIM), image_aug_transform(1.25, DIM)
    train = relative_dataset("shoes", root, "train", preprocess, ref_aug=augment)
    encode = lambda images: images.flatten(1)[:, :5]  # noqa: E731 - a stand-in encoder
    args = argparse.Namespace(num_workers=0, cache_dir=None)
    table, rows = train_image_table(train, encode, torch.device("cpu"), args, preprocess, 4)
    data = AugmentedRows(train, rows, augment)
    for index in (0, 3):
        seed_everything(index)
        reference, target, caption, reference_aug = train[index]
        seed_everything(index)
        ref_row, target_row, row_caption, row_aug = data[index]
        assert torch.equal(table[ref_row], encode(reference[None])[0])
        assert torch.equal(table[target_row], encode(target[None])[0])
        assert row_caption == caption and torch.equal(row_aug, reference_aug)
    names = NamedImages(train, ["womens/x.jpg"], preprocess)
    with pytest.raises(FileNotFoundError, match="womens/x.jpg: image file not found"):
        names[0]


def test_aug_transform_resolution_and_ops():
    image = Image.new("RGB", (40, 70), (200, 30, 30))
    for dim in (32, 64):
        assert image_aug_transform(1.25, dim)(image).shape == (3, dim, dim)
    square = Image.new("RGB", (4, 2))
    square.putpixel((0, 0), (255, 0, 0))
    sizes = {op(square).size for op in DIHEDRAL_OPS}
    assert sizes == {(4, 2), (2, 4)} and len(DIHEDRAL_OPS) == 8
    corners = {op(square).getpixel((0, 0)) for op in DIHEDRAL_OPS}
    assert (255, 0, 0) in corners and (0, 0, 0) in corners


def test_long_caption_is_truncated_with_a_warning():
    long_caption = " ".join(["red"] * 100)
    with pytest.warns(UserWarning, match="longer than 77 tokens, truncated"):
        tokens = tokenize_captions(["short one", long_caption])
    assert tokens.shape == (2, 77) and tokens[1, -1] == 49407


def test_clip_file_errors(tmp_path):
    args = argparse.Namespace(clip_model_name=str(tmp_path / "bad.pt"), allow_download=False, clip_download_root=None,
                              clip_fp32=False)
    (tmp_path / "bad.pt").write_text("not a model")
    with pytest.raises(CheckpointError, match="bad.pt"):
        build_clip(args, torch.device("cpu"))
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    args.clip_model_name = str(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt: not a CLIP state dict"):
        build_clip(args, torch.device("cpu"))
    args.clip_model_name = str(write_tiny_clip(tmp_path / "tiny.pt", kind="rn"))
    model, info = build_clip(args, torch.device("cpu"))
    assert info["input_resolution"] == 64 and info["embed_dim"] == 16 and not model.training


def test_flags_and_names():
    assert [dataset_name(v) for v in ("FashionIQ", "shoes", "CIRR")] == ["fashioniq", "shoes", "cirr"]
    with pytest.raises(argparse.ArgumentTypeError, match="'FashionIQ', 'Shoes' or 'CIRR'"):
        dataset_name("fashion200k")
    assert short_model_name("RN50x4") == "RN50x4" and short_model_name("ViT-B/16") == "ViT-B-16"
    assert short_model_name("/weights/clip_rn.pt") == "clip_rn"
    args = argparse.Namespace(dataset="shoes", learn_t=1, batch_size=2048, clip_model_name="RN50x4")
    assert run_prefix(args) == "shoes_learnT_1_2048_RN50x4"
    args.dataset = "fashioniq"
    assert run_prefix(args) == "fiq_learnT_1_RN50x4"


def test_warm_restarts_match_torch():
    combiner = Combiner(4, 8, 16, 1)
    optimizer = build_optimizer(combiner, 2e-5, 1e-3)
    assert [g["lr"] for g in optimizer.param_groups] == [2e-5, 1e-3]
    assert optimizer.param_groups[1]["params"] == [combiner.loss_weight]
    reference = torch.optim.Adam([torch.zeros(1, requires_grad=True), torch.zeros(1, requires_grad=True)])
    reference.param_groups[0]["lr"] = 2e-5
    reference.add_param_group({"params": [torch.zeros(1, requires_grad=True)], "lr": 1e-3})
    scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(reference, T_0=10, T_mult=1, eta_min=1e-6)
    schedule, iters = WarmRestarts(optimizer, [2e-5, 1e-3], 7, 0), 7
    for epoch in range(23):
        for index in range(iters):
            schedule()
            assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(
                [g["lr"] for g in reference.param_groups[-2:]], rel=1e-9)
            reference.step()
            scheduler.step(epoch + index / iters)
    assert warm_restart_lr(5, 1.0, 10, 0.0) == pytest.approx(0.5) and warm_restart_lr(10, 1.0, 10, 0.0) == 1.0
    assert math.isclose(warm_restart_lr(12.5, 2e-5), warm_restart_lr(2.5, 2e-5))
