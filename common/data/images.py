"""Opening image files with errors that name the file."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from common.errors import InputError
from common.io import PathLike


class ImageReadError(InputError, OSError):
    """An image file that exists but cannot be decoded."""


def open_image(path: PathLike) -> Image.Image:
    """Open and decode an image (mode unchanged), raising an error that names the file when missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image file not found")
    try:
        image = Image.open(path)
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(f"{path}: cannot read image ({type(error).__name__}: {error})") from error
    return image
