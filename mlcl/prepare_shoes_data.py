"""Prepare Shoes for MLCL (MLCL:src/prepare_shoes_data.py, from ARTEMIS): write the FashionIQ-like split and triplet
files the Shoes dataset reads.

    python mlcl/prepare_shoes_data.py --image-dir <shoes>/shoes/images --annotation-dir <shoes>/shoes/annotations

Reads ``train_im_names.txt``, ``eval_im_names.txt`` and ``relative_captions_shoes.json`` from the annotation folder
and finds the images under the image folder with ``--image-glob``; writes ``split.{train,val}.json`` (image paths
relative to the image folder, in the order of the txt files) and ``triplet.{train,val}.json`` (the caption entries
with relative paths) into the annotation folder, with the original's JSON content. Triplets whose two images lie in
different splits are dropped, as the original does, and counted here. A listed image that is not found is an error
naming the list file.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.data.paths import resolve_dataset_root
from common.data.shoes import prepare_shoes
from common.io import check_writable_root
from common.runtime import run_main

DEFAULT_GLOB = "womens/*/*/*.jpg"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-dir", default=None,
                        help="the Shoes image folder (default <shoes root>/shoes/images, the root from --data-root "
                             "or $SHOES_ROOT / $CIR_DATA_ROOT / $DATA_ROOT)")
    parser.add_argument("--annotation-dir", default=None,
                        help="the folder with the name lists and relative_captions_shoes.json, which also receives "
                             "the outputs (default <shoes root>/shoes/annotations)")
    parser.add_argument("--image-glob", default=DEFAULT_GLOB,
                        help=f"pattern of the images under --image-dir (default {DEFAULT_GLOB}, the layout of the "
                             "download; use 'womens_*/*/*.jpg' for a flat womens_<category>/ copy)")
    parser.add_argument("--data-root", default=None,
                        help="folder holding shoes/ (or shoes/ itself), used when a folder flag is not given")
    return parser


def main(argv: list[str] | None = None) -> dict[str, int]:
    args = build_parser().parse_args(argv)
    image_dir, annotation_dir = args.image_dir, args.annotation_dir
    if image_dir is None or annotation_dir is None:
        root = resolve_dataset_root("shoes", args.data_root)
        image_dir = image_dir or root / "images"
        annotation_dir = annotation_dir or root / "annotations"
    check_writable_root(annotation_dir, "--annotation-dir")
    counts = prepare_shoes(Path(image_dir), Path(annotation_dir), args.image_glob)
    print(json.dumps(counts, indent=2))
    return counts


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
