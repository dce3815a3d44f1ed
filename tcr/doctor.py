"""TCR's corruption benchmarks COCO-C and Flickr-C for the data doctor (python doctor.py, which imports this
module): every image-corruption folder holds each image of the clean Karpathy annotation, every text-corruption
annotation lists the clean images in order, and (``--expect published``) all 80 + 57 sets are there."""
from __future__ import annotations

from pathlib import Path

from common.data.paths import LAYOUTS
from common.data.retrieval import RETRIEVAL_FILES, KarpathyRetrieval
from common.doctor import DatasetReport, Published, Survey, read_karpathy, register_dataset
from common.doctor.layouts import FIXES
from tcr.configs.tree import IMAGE_CORRUPTIONS, SEVERITIES, TEXT_CORRUPTIONS
from tcr.make_corruptions import LAYOUT, image_folder, text_folder

SETS = {"coco-c": "coco", "flickr-c": "flickr"}
"""The corruption benchmarks and the clean Karpathy set each corrupts."""
FIX = ("use the authors' COCO-C/Flickr-C download (TCR README), or build a local copy: python "
       "tcr/make_corruptions.py --dataset {dataset} --ann_root {root}/{dataset}/{dataset}_annotations "
       "--image_root {root}/{dataset}/{dataset}_image --out {root}")
IMAGE_SETS = "TCR configs/QS/i2t/{coco,flickr}_image_c: 16 image corruptions x severities 1-5"
TEXT_SETS = ("TCR configs/QS/t2i/{coco,flickr}_text_c: 6 character types x levels 1-7, 5 word types x 6-7, "
             "5 sentence types")
PUBLISHED = {"image corruption folders": Published(80, IMAGE_SETS),
             "text corruption annotations": Published(57, TEXT_SETS)}


def corrupted_image_sets(report: DatasetReport, root: Path, base: str, ann: KarpathyRetrieval) -> list[Path]:
    """The images every present ``<base>-IP/<prefix>_<corruption>_<severity>/`` folder must hold."""
    folders = [image_folder(root, base, c, s) for c in IMAGE_CORRUPTIONS for s in SEVERITIES]
    present = [folder for folder in folders if folder.is_dir()]
    report.counts["image corruption folders"] = len(present)
    return [folder / image for folder in present for image in ann.images]


def corrupted_text_sets(report: DatasetReport, root: Path, base: str, ann: KarpathyRetrieval, fix: str) -> None:
    """A failed check for each present ``<base>-TP/annotation_<type>/<level>/`` file that does not read or does not
    list the clean images in order."""
    ann_name = RETRIEVAL_FILES[base][0]
    paths = [text_folder(root, base, t, level) / ann_name for t, levels in TEXT_CORRUPTIONS.items()
             for level in levels]
    found = [path for path in paths if path.is_file()]
    report.counts["text corruption annotations"] = len(found)
    matching = 0
    for path in found:
        what = f"text set {path.parent.parent.name}/{path.parent.name}"
        corrupted = read_karpathy(report, path, what, fix)
        if corrupted is not None and corrupted.images != ann.images:
            report.add(f"{what} images", False, f"the {len(ann.images):,} clean images in order",
                       f"{len(corrupted.images):,} images differing from the clean annotation", fix)
        matching += corrupted is not None and corrupted.images == ann.images
    if found and matching == len(found):
        report.add("text corruption annotations list the clean images", True, len(found), matching)


def clean_copies(report: DatasetReport, root: Path, base: str, fix: str) -> None:
    """Checks for the clean images and annotation that the clean TCR configs read beside the corrupted sets."""
    layout = LAYOUT[base]
    for path in (root / layout["ip"][0] / layout["clean_images"], root / base / LAYOUTS[base].expected[1]):
        report.add(f"clean images {path.relative_to(root)}/", path.is_dir(), "present",
                   "present" if path.is_dir() else "absent", fix)
    texts = root / layout["tp"] / layout["clean_annotations"] / RETRIEVAL_FILES[base][0]
    report.add(f"clean annotation {texts.relative_to(root)}", texts.is_file(), "present",
               "present" if texts.is_file() else "absent", fix)


def survey_corruptions(name: str) -> Survey:
    """COCO-C / Flickr-C: under ``--expect published`` all 80 + 57 sets (the published counts) and the clean copies
    the configs read must be there; under ``listed`` only what is present is checked."""
    base = SETS[name]
    annotations = LAYOUTS[base].expected[0]

    def survey(report: DatasetReport, root: Path) -> list[Path]:
        fix = FIX.format(dataset=base, root=root)
        ann = read_karpathy(report, root / base / annotations / RETRIEVAL_FILES[base][0], f"clean {base} annotations",
                            FIXES[base][annotations].format(folder=root / base))
        if ann is None:
            return []
        images = corrupted_image_sets(report, root, base, ann)
        corrupted_text_sets(report, root, base, ann, fix)
        if not images and not report.counts["text corruption annotations"]:
            layout = LAYOUT[base]
            report.add("corruption sets", False, f"folders in {layout['ip'][0]}/ or {layout['tp']}/", "none", fix)
        if report.expect == "published":
            clean_copies(report, root, base, fix)
        return images

    return survey


for _name, _base in SETS.items():
    register_dataset(_name, survey_corruptions(_name), ("",), (LAYOUT[_base]["ip"][0], LAYOUT[_base]["tp"]),
                     PUBLISHED)
