"""The 16 ImageNet-C corruptions of COCO-C / Flickr-C through ``imagecorruptions==1.1.2``
(the original's recipe: ``MM_Robustness: image_perturbation/perturb_COCO_IP.py``).

``imagecorruptions`` 1.1.2 predates NumPy 2 and scikit-image 0.19+: ``fog`` builds its plasma map with the removed
``np.float_``, and ``glass_blur`` (and the unused ``gaussian_blur``) call ``skimage.filters.gaussian`` with the
removed ``multichannel=True``; and ``impulse_noise`` draws from a fresh unseeded generator in
``skimage.util.random_noise``. :func:`patch_imagecorruptions` fixes all three inside the
``imagecorruptions.corruptions`` module only: it gives that module a NumPy namespace with ``float_ = float64``, a
``gaussian`` that turns ``multichannel`` into ``channel_axis``, and a scikit-image namespace whose ``random_noise``
takes its seed from NumPy's global generator. Nothing in site-packages, ``numpy`` or ``skimage`` changes.

Differences from the authors' COCO-C (so the images are "COCO-C-like", not the authors' files): RGB input where
upstream fed OpenCV's BGR arrays (changes ``brightness`` and ``snow``), Wand-free motion blur and snow, a fixed seed
per (corruption, severity, image), and the library's own fixes of upstream's ``pixelate`` and ``glass_blur``
size quirks.
"""
from __future__ import annotations

import types
import warnings
import zlib
from typing import Any

import numpy as np

from tcr.configs.tree import IMAGE_CORRUPTIONS, SEVERITIES


class _NumpyWithFloat_(types.ModuleType):
    """``numpy`` plus the ``float_`` alias that NumPy 2 removed."""

    float_ = np.float64

    def __getattr__(self, name: str) -> Any:
        return getattr(np, name)


def _gaussian_channel_axis(image: np.ndarray, *args: Any, multichannel: bool | None = None, **kwargs: Any) -> Any:
    from skimage.filters import gaussian

    if multichannel is not None and "channel_axis" not in kwargs:
        kwargs["channel_axis"] = -1 if multichannel else None
    return gaussian(image, *args, **kwargs)


def _seeded_random_noise(image: np.ndarray, **kwargs: Any) -> np.ndarray:
    from skimage.util import random_noise

    kwargs.setdefault("rng", np.random.randint(2**31))
    return random_noise(image, **kwargs)


class _SkimageSeeded(types.ModuleType):
    """``skimage`` whose ``util.random_noise`` is seeded from NumPy's global generator."""

    util = types.SimpleNamespace(random_noise=_seeded_random_noise)

    def __getattr__(self, name: str) -> Any:
        import skimage

        return getattr(skimage, name)


def patch_imagecorruptions() -> types.ModuleType:
    """Import ``imagecorruptions`` and apply the NumPy 2 / scikit-image shims (idempotent); returns the package."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*scipy.ndimage.interpolation", category=DeprecationWarning)
        import imagecorruptions
        from imagecorruptions import corruptions
    if not isinstance(corruptions.np, _NumpyWithFloat_):
        corruptions.np = _NumpyWithFloat_("numpy")
        corruptions.gaussian = _gaussian_channel_axis
        corruptions.sk = _SkimageSeeded("skimage")
    return imagecorruptions


def check_corruption(corruption: str, severity: int) -> None:
    """Raise ValueError listing the valid names (or severities) for an unknown corruption (or severity)."""
    if corruption not in IMAGE_CORRUPTIONS:
        raise ValueError(f"unknown image corruption {corruption!r}; valid corruptions: {', '.join(IMAGE_CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(map(str, SEVERITIES))}, got {severity!r}")


def corruption_seed(seed: int, corruption: str, severity: int, index: int) -> int:
    """The 32-bit NumPy seed of one (corruption, severity, image index), stable across runs and processes."""
    return zlib.crc32(f"{seed}:{corruption}:{severity}:{index}".encode())


def corrupt_image(image: np.ndarray, corruption: str, severity: int, seed: int) -> np.ndarray:
    """Corrupt an ``H×W×3`` uint8 RGB array (H, W ≥ 32); returns a uint8 array of the same shape.

    ``imagecorruptions`` draws from NumPy's global generator, which is seeded with ``seed`` first.
    """
    check_corruption(corruption, severity)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 uint8 RGB array, got shape {image.shape} and dtype {image.dtype}")
    if min(image.shape[:2]) < 32:
        height, width = image.shape[:2]
        raise ValueError(f"imagecorruptions needs images of at least 32×32 pixels, got {width}×{height}")
    library = patch_imagecorruptions()
    np.random.seed(seed)
    return library.corrupt(image, severity=severity, corruption_name=corruption)
