"""Build COCO-C / Flickr-C locally from a clean Karpathy test split, in the layout TCR's configs read.

    python tcr/make_corruptions.py --dataset coco --ann_root dataset/coco/coco_annotations \\
        --image_root dataset/coco/coco_image --out dataset --workers 8

writes, under ``--out`` (the folder that plays upstream's ``./dataset``):

- ``coco-IP/COCO_IP_<corruption>_<severity>/<annotation image path>`` (Flickr: ``flickr-IP/Flickr30K_IP_...``) for
  the 16 image corruptions at severities 1-5 (``tcr.image_corruptions``), JPEG quality 95 by default;
  ``coco-IP/coco_image`` (``flickr-IP/flickr_image``), a link to the clean images that the clean i2t configs read;
- ``coco-TP/annotation_<type>/<level>/coco_karpathy_test.json`` (Flickr: ``flickr-TP/.../flickr30k_test.json``) for
  the character-level types at levels 1-7 and the word-level types at levels 6-7 (``tcr.text_corruptions``), with
  captions 0-4 of each image corrupted and any further captions copied; ``coco-TP/coco_annotations/`` gets the
  clean file, which the clean t2i configs read.

By default every text type that can run here is written: the character-level ones, ``rs``, ``rd``, ``ip``, plus
``sr``/``ri`` when WordNet 3.0 is found (``--wordnet_dir``, or Debian's ``apt-get install wordnet-base``) and the
sentence-level types (formal, casual, passive, active, back_trans) whose models are in ``--sentence_models``; the
types left out are named on stderr with what they need. The result is "COCO-C-like": paper numbers need the
authors' download.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from common.args import HelpFormatter
from common.data.images import open_image
from common.data.retrieval import RETRIEVAL_FILES
from common.io import PathLike, atomic_write_text, read_json
from common.runtime import progress, run_main
from tcr.configs.tree import (CHAR_CORRUPTIONS, IMAGE_CORRUPTIONS, SENTENCE_CORRUPTIONS, SEVERITIES,
                              TEXT_CORRUPTIONS, WORD_CORRUPTIONS)
from tcr.image_corruptions import check_corruption, corrupt_image, corruption_seed
from tcr.sentence_corruptions import SENTENCE_MODELS, model_folder
from tcr.text_corruptions import Accept, CaptionCorrupter, SentenceSimilarity, Synonyms, check_text_corruption, rate
from tcr.wordnet import find_wordnet

LAYOUT = {
    "coco": {"ip": ("coco-IP", "COCO_IP"), "tp": "coco-TP", "clean_images": "coco_image",
             "clean_annotations": "coco_annotations"},
    "flickr": {"ip": ("flickr-IP", "Flickr30K_IP"), "tp": "flickr-TP", "clean_images": "flickr_image",
               "clean_annotations": "flickr_annotations"},
}
CORRUPTED_CAPTIONS = 5
"""Captions 0-4 of each image are corrupted, as upstream."""
DEFAULT_TEXT_TYPES = CHAR_CORRUPTIONS + WORD_CORRUPTIONS


def read_annotation(dataset: str, ann_root: PathLike) -> tuple[Path, list[dict[str, Any]]]:
    """The clean Karpathy test annotation of ``dataset`` under ``ann_root`` and its path."""
    if dataset not in LAYOUT:
        raise ValueError(f"unknown dataset {dataset!r}; valid datasets: {', '.join(LAYOUT)}")
    ann_file = Path(ann_root) / RETRIEVAL_FILES[dataset][0]
    what = 'a JSON list of {"image": path, "caption": [str, ...]} objects (BLIP Karpathy format)'
    annotation = read_json(ann_file, what)
    if not isinstance(annotation, list) or not all(
            isinstance(entry, dict) and isinstance(entry.get("image"), str) and isinstance(entry.get("caption"), list)
            for entry in annotation):
        raise ValueError(f"{ann_file}: expected {what}")
    return ann_file, annotation


def image_folder(out: PathLike, dataset: str, corruption: str, severity: int) -> Path:
    """``<out>/coco-IP/COCO_IP_<corruption>_<severity>`` (Flickr: ``flickr-IP/Flickr30K_IP_...``)."""
    folder, prefix = LAYOUT[dataset]["ip"]
    return Path(out) / folder / f"{prefix}_{corruption}_{severity}"


def text_folder(out: PathLike, dataset: str, name: str, level: int) -> Path:
    """``<out>/coco-TP/annotation_<name>/<level>`` (Flickr: ``flickr-TP/...``)."""
    return Path(out) / LAYOUT[dataset]["tp"] / f"annotation_{name}" / str(level)


def _corrupt_one_image(job: tuple[int, Path, list[tuple[str, int, Path]], int, int]) -> int:
    """Write every requested corruption of one image; returns how many files were written."""
    index, source, targets, seed, quality = job
    clean = np.asarray(open_image(source).convert("RGB"))
    for corruption, severity, target in targets:
        output = corrupt_image(clean, corruption, severity, corruption_seed(seed, corruption, severity, index))
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(output).save(target, quality=quality)
    return len(targets)


def write_image_corruptions(dataset: str, ann_root: PathLike, image_root: PathLike, out: PathLike,
                            corruptions: tuple[str, ...] = IMAGE_CORRUPTIONS,
                            severities: tuple[int, ...] = SEVERITIES, seed: int = 0, workers: int = 1,
                            quality: int = 95, overwrite: bool = False, limit: int | None = None) -> int:
    """Write the corrupted copies of the split's images; existing files are kept unless ``overwrite``.

    Image ``i`` (annotation order) under corruption ``c`` at severity ``s`` is seeded with
    ``corruption_seed(seed, c, s, i)``, so a file does not depend on which others are generated. Returns the number
    of files written.
    """
    for corruption in corruptions:
        for severity in severities:
            check_corruption(corruption, severity)
    _, annotation = read_annotation(dataset, ann_root)
    image_root = Path(image_root)
    if not image_root.is_dir():
        raise FileNotFoundError(f"{image_root}: clean image folder not found")
    jobs = []
    for index, entry in enumerate(annotation[:limit]):
        targets = [(c, s, image_folder(out, dataset, c, s) / entry["image"]) for c in corruptions for s in severities]
        targets = [target for target in targets if overwrite or not target[2].exists()]
        if targets:
            jobs.append((index, image_root / entry["image"], targets, seed, quality))
    _link_clean_images(dataset, image_root, out)
    desc = f"{dataset} images × {len(corruptions) * len(severities)} corruptions"
    if workers <= 1:
        return sum(progress(map(_corrupt_one_image, jobs), desc=desc, total=len(jobs)))
    with ProcessPoolExecutor(workers) as pool:
        return sum(progress(pool.map(_corrupt_one_image, jobs, chunksize=4), desc=desc, total=len(jobs)))


def _link_clean_images(dataset: str, image_root: Path, out: PathLike) -> None:
    """Link ``<out>/coco-IP/coco_image`` to the clean images unless something is there already."""
    link = Path(out) / LAYOUT[dataset]["ip"][0] / LAYOUT[dataset]["clean_images"]
    if not link.exists() and not link.is_symlink():
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(image_root.resolve(), link, target_is_directory=True)


def corrupt_annotation(annotation: list[dict[str, Any]], corrupter: CaptionCorrupter) -> list[dict[str, Any]]:
    """A copy of the annotation with captions 0-4 of each entry passed through ``corrupter``."""
    return [{**entry, "caption": [corrupter(caption) if k < CORRUPTED_CAPTIONS else caption
                                  for k, caption in enumerate(entry["caption"])]} for entry in annotation]


def write_text_corruptions(dataset: str, ann_root: PathLike, out: PathLike,
                           types: tuple[str, ...] = DEFAULT_TEXT_TYPES, levels: tuple[int, ...] | None = None,
                           seed: int = 0, synonyms: Synonyms | None = None, accept: Accept | None = None,
                           sentence_models: PathLike | None = None, device: str = "cpu") -> list[Path]:
    """Write one corrupted annotation per (type, level) plus the clean copy; returns the written files.

    ``levels=None`` uses each type's upstream levels (character 1-7, word 6-7, sentence 1). Types ``sr``/``ri``
    read WordNet (``synonyms``, default :func:`tcr.wordnet.find_wordnet`); sentence-level types read their
    models from ``sentence_models`` on ``device``; ``accept`` is the optional similarity test.
    """
    for name in types:
        check_text_corruption(name, sentence_models)
    for level in levels or ():
        rate(level)
    ann_file, annotation = read_annotation(dataset, ann_root)
    if synonyms is None and {"sr", "ri"} & set(types):
        synonyms = find_wordnet()
    jobs = [(name, level) for name in types for level in (levels or TEXT_CORRUPTIONS[name])]
    clean = Path(out) / LAYOUT[dataset]["tp"] / LAYOUT[dataset]["clean_annotations"] / ann_file.name
    written = [atomic_write_text(json.dumps(annotation), clean)]
    for name, level in progress(jobs, desc=f"{dataset} caption corruptions"):
        corrupter = CaptionCorrupter(name, level, seed, synonyms=synonyms, accept=accept,
                                     sentence_models=sentence_models, device=device)
        target = text_folder(out, dataset, name, level) / ann_file.name
        written.append(atomic_write_text(json.dumps(corrupt_annotation(annotation, corrupter)), target))
    return written


def runnable_text_types(wordnet_dir: PathLike | None = None,
                        sentence_models: PathLike | None = None) -> tuple[tuple[str, ...], list[str]]:
    """The text types that can run with what is installed, and one note per type left out saying what it needs:
    ``sr``/``ri`` need WordNet (:func:`tcr.wordnet.find_wordnet`), each sentence-level type its models
    under ``sentence_models``."""
    types, notes = list(CHAR_CORRUPTIONS), []
    try:
        find_wordnet(wordnet_dir)
        types += ["sr", "ri"]
    except FileNotFoundError as error:
        notes.append(f"skipping sr, ri: {error}")
    types += [name for name in WORD_CORRUPTIONS if name not in ("sr", "ri")]
    for name in SENTENCE_CORRUPTIONS:
        if sentence_models is None:
            continue
        try:
            for repo in SENTENCE_MODELS[name]:
                model_folder(sentence_models, repo)
            types.append(name)
        except FileNotFoundError as error:
            notes.append(f"skipping {name}: {error}")
    if sentence_models is None:
        notes.append(f"skipping {', '.join(SENTENCE_CORRUPTIONS)}: they need --sentence_models DIR")
    return tuple(types), notes


def _names(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _ints(value: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in _names(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--dataset", required=True, choices=sorted(LAYOUT),
                        help="which split: coco reads coco_karpathy_test.json, flickr reads flickr30k_test.json")
    parser.add_argument("--ann_root", required=True,
                        help="folder holding the clean annotation JSON (upstream ./dataset/coco/coco_annotations)")
    parser.add_argument("--image_root",
                        help="folder the annotation's image paths are relative to (needed for image corruptions)")
    parser.add_argument("--out", required=True,
                        help="output root, the folder that plays upstream's ./dataset (gets coco-IP/, coco-TP/)")
    parser.add_argument("--what", choices=("all", "images", "texts"), default="all",
                        help="generate image corruptions, text corruptions or both (default)")
    parser.add_argument("--corruptions", type=_names, default=IMAGE_CORRUPTIONS,
                        help=f"comma-separated image corruptions (default: all 16: {', '.join(IMAGE_CORRUPTIONS)})")
    parser.add_argument("--severities", type=_ints, default=SEVERITIES,
                        help="comma-separated image severities in 1..5 (default: 1,2,3,4,5)")
    parser.add_argument("--text_types", type=_names, default=None,
                        help="comma-separated text corruptions out of " + ", ".join(TEXT_CORRUPTIONS) + " (default: "
                             "those that can run: the character-level ones, rs, rd, ip, sr/ri when WordNet is found, "
                             "and the sentence-level ones whose models are in --sentence_models)")
    parser.add_argument("--levels", type=_ints, default=None,
                        help="comma-separated text levels in 1..7, rate 0.05·level (default: 1-7 for character-level "
                             "types, 6,7 for word-level types, as the upstream configs)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    parser.add_argument("--workers", type=int, default=1, help="processes for the image corruptions (default 1)")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality of the corrupted images (default 95)")
    parser.add_argument("--overwrite", action="store_true",
                        help="rewrite corrupted images that exist already (default: keep them, so a run resumes)")
    parser.add_argument("--limit", type=int, default=None,
                        help="corrupt only the first N images (a quick look; text corruptions cover the whole split)")
    parser.add_argument("--wordnet_dir", default=None,
                        help="WordNet 3.0 dict folder for sr/ri (default: /usr/share/wordnet from Debian's "
                             "wordnet-base, or ~/nltk_data/corpora/wordnet)")
    parser.add_argument("--sentence_models", default=None,
                        help="folder holding local copies of the sentence-level models, one subfolder per Hugging "
                             "Face id: " + ", ".join(sorted({r for repos in SENTENCE_MODELS.values() for r in repos}))
                             + " (default: none; sentence-level types are skipped)")
    parser.add_argument("--sentence_device", default="cpu", help="device of the sentence-level models")
    parser.add_argument("--similarity_model", default=None,
                        help="sentence-transformers model; retry each word-level corruption up to 100 times until "
                             "its cosine to the clean caption is >= 0.9, as upstream (which used "
                             "paraphrase-mpnet-base-v2). Default: no retry")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    images, texts = args.what in ("all", "images"), args.what in ("all", "texts")
    if images and args.image_root is None:
        parser.error("--image_root is required for image corruptions (or pass --what texts)")
    try:
        for corruption in args.corruptions if images else ():
            for severity in args.severities:
                check_corruption(corruption, severity)
        text_types = args.text_types
        if texts and text_types is None:
            text_types, notes = runnable_text_types(args.wordnet_dir, args.sentence_models)
            for note in notes:
                print(f"{parser.prog}: {note}", file=sys.stderr)
        for name in text_types if texts else ():
            check_text_corruption(name, args.sentence_models)
        for level in (args.levels or ()) if texts else ():
            rate(level)
        synonyms = find_wordnet(args.wordnet_dir) if texts and {"sr", "ri"} & set(text_types) else None
        accept = SentenceSimilarity(args.similarity_model) if texts and args.similarity_model else None
        if images:
            count = write_image_corruptions(args.dataset, args.ann_root, args.image_root, args.out, args.corruptions,
                                            args.severities, args.seed, args.workers, args.quality, args.overwrite,
                                            args.limit)
            print(f"wrote {count} corrupted images under {Path(args.out) / LAYOUT[args.dataset]['ip'][0]}")
        if texts:
            written = write_text_corruptions(args.dataset, args.ann_root, args.out, text_types, args.levels,
                                             args.seed, synonyms, accept, args.sentence_models, args.sentence_device)
            tp_root = Path(args.out) / LAYOUT[args.dataset]["tp"]
            print(f"wrote {len(written)} annotation files under {tp_root}")
    except (ValueError, FileNotFoundError, ImportError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


if __name__ == "__main__":
    run_main(main)
