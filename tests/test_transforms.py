"""common.transforms: pads, pipelines, normalisation constants."""
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, Resize

from common.transforms import (CLIP_MEAN, CLIP_STD, SquarePad, TargetPad, blip_eval_transform, build_preprocess,
                               clip_preprocess, random_crop_views, reid_transform, squarepad_transform,
                               targetpad_transform)


def normalized(rgb):
    """Expected tensor values of an RGB colour (0..255) after ToTensor + CLIP Normalize."""
    return torch.tensor([(c / 255 - m) / s for c, m, s in zip(rgb, CLIP_MEAN, CLIP_STD)])


def test_clip_constants_are_not_imagenet():
    assert CLIP_MEAN == (0.48145466, 0.4578275, 0.40821073)
    assert CLIP_STD == (0.26862954, 0.26130258, 0.27577711)


def test_targetpad_pads_wide_image_to_ratio():
    image = Image.new("RGB", (1000, 400), (255, 255, 255))
    padded = TargetPad(1.25)(image)
    assert padded.size == (1000, 800)  # s = 800: 200 px on top and on bottom
    assert padded.getpixel((500, 199)) == (0, 0, 0)
    assert padded.getpixel((500, 200)) == (255, 255, 255)
    assert padded.getpixel((500, 599)) == (255, 255, 255)
    assert padded.getpixel((500, 600)) == (0, 0, 0)


def test_targetpad_leaves_images_below_ratio_and_floors():
    image = Image.new("RGB", (100, 120))
    assert TargetPad(1.25)(image) is image  # 1:1.2 < 1.25
    assert TargetPad(1.25)(Image.new("RGB", (100, 125))).size == (100, 125)  # ratio hits r: pad of 0
    assert TargetPad(1.25)(Image.new("RGB", (1000, 401))).size == (1000, 799)  # floor(399/2) = 199 per side
    assert TargetPad(1.25)(Image.new("RGB", (400, 1000))).size == (800, 1000)  # tall images pad horizontally


def test_squarepad_floors_odd_differences():
    assert SquarePad()(Image.new("RGB", (10, 6))).size == (10, 10)
    assert SquarePad()(Image.new("RGB", (10, 7))).size == (10, 9)  # 1 px short, CenterCrop absorbs it
    assert SquarePad()(Image.new("RGB", (5, 8))).size == (7, 8)


def test_pad_happens_before_rgb_conversion():
    """A palette image pads with palette entry 0 (red here), not black, as upstream."""
    image = Image.new("P", (50, 20), 1)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    out = targetpad_transform(1.25, 20)(image)  # pad to 50x40 (10 rows each side), resize to 25x20, crop 20x20
    assert out.shape == (3, 20, 20)
    assert torch.allclose(out[:, 0, 10], normalized((255, 0, 0)), atol=1e-5)
    assert torch.allclose(out[:, 10, 10], normalized((0, 0, 255)), atol=1e-5)


def test_targetpad_transform_uses_bicubic_and_normalizes():
    transform = targetpad_transform(1.25, 16)
    resize = next(step for step in transform.transforms if isinstance(step, Resize))
    assert resize.interpolation == InterpolationMode.BICUBIC and resize.size == 16
    out = transform(Image.new("RGB", (40, 30), (255, 255, 255)))
    assert out.shape == (3, 16, 16)
    assert torch.allclose(out[:, 8, 8], normalized((255, 255, 255)), atol=1e-5)


def test_squarepad_transform_shape_and_pad_colour():
    out = squarepad_transform(12)(Image.new("RGB", (24, 12), (255, 255, 255)))
    assert out.shape == (3, 12, 12)
    assert torch.allclose(out[:, 0, 6], normalized((0, 0, 0)), atol=1e-5)  # the 6-px pad on top
    assert torch.allclose(out[:, 6, 6], normalized((255, 255, 255)), atol=1e-5)


def two_colour_image(width=40, height=20):
    image = Image.new("RGB", (width, height), (255, 0, 0))
    image.paste((0, 0, 255), (width // 2, 0, width, height))
    return image


def test_blip_eval_squashes_without_cropping():
    out = blip_eval_transform(16)(two_colour_image())
    assert out.shape == (3, 16, 16)
    assert torch.allclose(out[:, 8, 0], normalized((255, 0, 0)), atol=1e-5)
    assert torch.allclose(out[:, 8, 15], normalized((0, 0, 255)), atol=1e-5)


def test_clip_preprocess_center_crops():
    out = clip_preprocess(16)(two_colour_image(80, 20))  # 80x20 -> 64x16 -> columns 24..39, boundary at 32
    assert out.shape == (3, 16, 16)
    assert torch.allclose(out[:, 8, 0], normalized((255, 0, 0)), atol=1e-5)
    assert torch.allclose(out[:, 8, 15], normalized((0, 0, 255)), atol=1e-5)
    gray = clip_preprocess(16)(Image.new("L", (20, 20), 128))
    assert gray.shape == (3, 16, 16)
    assert torch.allclose(gray[:, 0, 0], normalized((128, 128, 128)), atol=1e-5)


def test_reid_and_views_shapes():
    assert reid_transform(12, 4)(two_colour_image()).shape == (3, 12, 4)
    views = random_crop_views(8)
    torch.manual_seed(0)
    first, second = views(two_colour_image()), views(two_colour_image())
    assert first.shape == second.shape == (3, 8, 8)
    assert not torch.equal(first, second)


def test_build_preprocess_kinds():
    image = Image.new("RGB", (30, 20))
    for kind in ("targetpad", "squarepad", "clip", "blip"):
        assert build_preprocess(kind, 8, 1.25)(image).shape == (3, 8, 8)
    with pytest.raises(ValueError, match="targetpad, squarepad, clip, blip"):
        build_preprocess("center", 8)
