"""Synthetic scenes and datasets in the original on-disk formats, for offline tests and the demo."""
from common.synthetic.scenes import (
    Change,
    Scene,
    Shape,
    describe,
    describe_change,
    diff_scenes,
    modify,
    render,
    sample_scene,
    vocabulary,
)
from common.synthetic.writers import (
    corrupt_caption,
    corrupt_image,
    read_scenes,
    write_all,
    write_cirr,
    write_fashioniq,
    write_karpathy,
    write_shoes_raw,
)

__all__ = [
    "Change", "Scene", "Shape", "corrupt_caption", "corrupt_image", "describe", "describe_change", "diff_scenes",
    "modify", "read_scenes", "render", "sample_scene", "vocabulary", "write_all", "write_cirr",
    "write_fashioniq", "write_karpathy", "write_shoes_raw",
]
