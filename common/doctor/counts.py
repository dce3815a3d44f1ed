"""The published sizes a dataset copy is compared with, each with its source: ``Published``, and the sizes of the
datasets whose readers live in ``common.data`` (the papers' own are in ``<paper>/doctor.py``).

Keys are the count names the surveys report (``common.doctor.layouts``). A count with no published figure here is
reported but not compared.
"""
from __future__ import annotations

from typing import NamedTuple


class Published(NamedTuple):
    value: int
    source: str
    at_least: bool = False
    """The copy matches when its count is ``value`` or more (e.g. five or more captions per image)."""

    def matches(self, found: int) -> bool:
        return found >= self.value if self.at_least else found == self.value


FIQ = "XiaoxiaoGuo/fashion-iq release, counted in"
CIRR = "Cuberick-Orion/CIRR (cirr_dataset branch) release, counted in"
SHOES = "XiaoxiaoGuo/fashion-retrieval dataset/relative_captions_shoes.json after MLCL's prepare_shoes_data.py: the"

PUBLISHED: dict[str, dict[str, Published]] = {
    "fashioniq": {
        "val queries": Published(6016, f"{FIQ} captions/cap.*.val.json (CLIP4Cir validates on all of them)"),
        "val queries dress": Published(2017, f"{FIQ} captions/cap.dress.val.json"),
        "val queries shirt": Published(2038, f"{FIQ} captions/cap.shirt.val.json"),
        "val queries toptee": Published(1961, f"{FIQ} captions/cap.toptee.val.json"),
        "val images dress": Published(3817, f"{FIQ} image_splits/split.dress.val.json (the dress gallery)"),
        "val images shirt": Published(6346, f"{FIQ} image_splits/split.shirt.val.json (the shirt gallery)"),
        "val images toptee": Published(5373, f"{FIQ} image_splits/split.toptee.val.json (the toptee gallery)"),
        "train triplets": Published(18000, f"{FIQ} captions/cap.*.train.json"),
    },
    "cirr": {
        "val queries": Published(4181, f"{CIRR} cirr/captions/cap.rc2.val.json"),
        "val images": Published(2297, f"{CIRR} cirr/image_splits/split.rc2.val.json"),
        "test1 queries": Published(4148, f"{CIRR} cirr/captions/cap.rc2.test1.json"),
        "test1 images": Published(2315, f"{CIRR} cirr/image_splits/split.rc2.test1.json"),
        "train triplets": Published(28225, "CIRR paper (Liu et al., ICCV 2021): 36,554 triplets, 28,225 of them "
                                           "train (cirr/captions/cap.rc2.train.json)"),
        "train images": Published(16939, f"{CIRR} cirr/image_splits/split.rc2.train.json"),
    },
    "shoes": {
        "train triplets": Published(8990, f"{SHOES} triplets with both images in train_im_names.txt"),
        "val triplets": Published(1761, f"{SHOES} triplets with both images in eval_im_names.txt"),
        "train images": Published(10000, "XiaoxiaoGuo/fashion-retrieval dataset/train_im_names.txt"),
        "val images": Published(4658, "XiaoxiaoGuo/fashion-retrieval dataset/eval_im_names.txt"),
    },
    "coco": {
        "test images": Published(5000, "Karpathy split as BLIP's coco_karpathy_test.json (5,000 test images)"),
        "fewest captions per image": Published(5, "Karpathy split: five or more captions per COCO image", True),
    },
    "flickr": {
        "test images": Published(1000, "Karpathy split as BLIP's flickr30k_test.json (1,000 test images)"),
        "fewest captions per image": Published(5, "Karpathy split: five captions per Flickr30k image", True),
    },
}
