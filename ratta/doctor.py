"""RA-TTA's test sets for the data doctor (python doctor.py, which imports this module): each read by RA-TTA's own
reader (``ratta.data.read_test_set``) under ``<data-root>/<folder>``, its size compared with the published one.

Left out of ``PUBLISHED``, for want of a public source we could read: the sizes of the SuS-X Caltech-256 split and of
RA-TTA's RESISC45 ``test_splits.txt``.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from common.doctor import READ_ERRORS, DatasetReport, Published, Survey, read_failed, register_dataset
from ratta.data import DATASETS, read_test_set

FOLDERS = {
    "stanford_cars": "stanford_cars", "flowers102": "oxford_flowers", "food101": "food-101",
    "oxford_pets": "oxford_pets", "dtd": "dtd", "cub200": "CUB_200_2011", "fgvc_aircraft": "fgvc_aircraft",
    "resisc45": "resisc45", "sun397": "sun397", "ucf101": "ucf101", "caltech101": "caltech-101",
    "caltech256": "caltech-256", "imagenet_1k": "imagenet", "imagenet_rendition": "imagenet-rendition",
    "imagenet_adversarial": "imagenet-adversarial", "imagenet_v2": "imagenetv2", "imagenet_sketch": "imagenet-sketch",
}
"""The folder of each RA-TTA dataset under RA-TTA's ``--root`` (the readers of ``ratta.readers`` join them)."""
FIX = "put {key} in {folder}/ as ratta/README.md lays it out (CoOp's DATASETS.md for the split files)"
COOP = "CoOp (Zhou et al., IJCV 2022) dataset statistics, test size of the split_zhou_*.json RA-TTA reads"

PUBLISHED: dict[str, dict[str, Published]] = {
    "caltech101": {"test images": Published(2465, COOP)},
    "dtd": {"test images": Published(1692, COOP)},
    "fgvc_aircraft": {"test images": Published(3333, "FGVC-Aircraft images_variant_test.txt, CoOp's figure too; "
                                                      "kaist-dmlab/RA-TTA logs/ratta/ViT-B_16/fgvc_aircraft_log.txt "
                                                      "ends after 3,333 images")},
    "food101": {"test images": Published(30300, COOP)},
    "flowers102": {"test images": Published(2463, COOP)},
    "oxford_pets": {"test images": Published(3669, COOP)},
    "stanford_cars": {"test images": Published(8041, COOP)},
    "sun397": {"test images": Published(19850, COOP)},
    "ucf101": {"test images": Published(3783, COOP)},
    "cub200": {"test images": Published(5794, "CUB-200-2011 train_test_split.txt (is_training_img == 0)")},
    "imagenet_1k": {"test images": Published(50000, "ILSVRC-2012 validation set, as CoOp and RA-TTA evaluate")},
    "imagenet_adversarial": {"test images": Published(7500, "ImageNet-A (Hendrycks et al., CVPR 2021); kaist-dmlab/"
                                                            "RA-TTA logs/ratta/ViT-B_16/imagenet_adversarial_log.txt "
                                                            "ends after 7,500 images")},
    "imagenet_rendition": {"test images": Published(30000, "ImageNet-R (Hendrycks et al., ICCV 2021) release")},
    "imagenet_v2": {"test images": Published(10000, "ImageNetV2 matched-frequency (Recht et al., ICML 2019)")},
    "imagenet_sketch": {"test images": Published(50889, "ImageNet-Sketch (Wang et al., NeurIPS 2019) release")},
}


def survey_test_set(key: str) -> Survey:
    """The test set of ``key`` as RA-TTA reads it; the reader's warnings (class-name mismatches) become facts."""

    def survey(report: DatasetReport, folder: Path) -> list[Path]:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                items, _ = read_test_set(key, folder.parent)
        except READ_ERRORS as error:
            read_failed(report, "test split", error, FIX.format(key=key, folder=folder))
            return []
        report.facts += [str(warning.message) for warning in caught]
        report.counts["test images"] = len(items)
        if not items:
            report.add("test split", False, "one or more images", 0, FIX.format(key=key, folder=folder))
        return [Path(path) for path, _ in items]

    return survey


for _key in DATASETS:
    register_dataset(_key, survey_test_set(_key), (FOLDERS[_key],), published=PUBLISHED.get(_key))
