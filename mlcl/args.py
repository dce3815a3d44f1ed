"""The flags of the MLCL scripts: the original ones with MLCL's defaults (the shared CLIP4Cir builders are
``common.cir.args``'s), the additions of this port, the dataset roots and the run-folder names they give."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from common.args import add_runtime_args
from common.cir import args as cir_args
from common.cir.data import dataset_choice, dataset_root
from common.io import check_writable_root
from mlcl.combiner import FUSION_WEIGHTS

DATASETS = ("fashioniq", "shoes", "cirr")
TRANSFORMS = ("targetpad", "squarepad", "clip")
ROOT_FLAGS = {"fashioniq": "fiq_root", "shoes": "shoes_root", "cirr": "cirr_root"}
NUM_WORKERS_ENV = "MLCL_NUM_WORKERS"
OUTPUT_ROOT_ENV = "MLCL_OUTPUT_ROOT"


dataset_name = dataset_choice("fashioniq", "shoes", "cirr")
"""``--dataset``: FashionIQ, Shoes or CIRR, case-insensitive."""


def add_clip_args(parser: argparse.ArgumentParser) -> None:
    """The original ``--clip-model-name``."""
    parser.add_argument("--clip-model-name", default="RN50x4",
                        help="CLIP backbone: an official name (RN50x4, RN50, ViT-B/32, ...; looked up in "
                             "--clip-download-root, fetched only with --allow-download) or a local file "
                             "(TorchScript, state dict or {'CLIP': state_dict}) (default RN50x4)")


def add_image_args(parser: argparse.ArgumentParser) -> None:
    """The original ``--target-ratio`` and ``--transform``."""
    cir_args.add_image_args(parser, "image preprocessing: targetpad, squarepad or clip (CLIP's own) (default "
                                    "targetpad)", TRANSFORMS)


def add_saving_args(parser: argparse.ArgumentParser, validation_frequency: int) -> None:
    """The original ``--validation-frequency``, ``--save-training`` and ``--save-best``."""
    cir_args.add_saving_args(parser, validation_frequency,
                             "with --save-training keep only the best checkpoint(s) (and <prefix>_last) instead of "
                             "one per validation (default off)", save_help="write checkpoints at all (default off)",
                             frequency_note=", so epoch 0 is validated")


def add_evaluation_args(parser: argparse.ArgumentParser) -> None:
    """Model flags of validate.py and cirr_test_submission.py (CLIP4Cir's, plus ``--learn_t`` and
    ``--fusion-weights``)."""
    cir_args.add_combining_function(parser, "reference and caption", ", or the element-wise sum")
    parser.add_argument("--combiner-path", default=None,
                        help="stage-2 Combiner checkpoint ({'epoch', 'Combiner'}); required with combiner")
    cir_args.add_combiner_dims(parser)
    add_clip_args(parser)
    parser.add_argument("--clip-model-path", default=None,
                        help="stage-1 checkpoint ({'epoch', 'CLIP'}) loaded into CLIP (default: the pre-trained CLIP)")
    add_image_args(parser)
    parser.add_argument("--learn_t", "--learn-t", dest="learn_t", type=int, default=None, choices=(0, 1),
                        help="learn_t of the Combiner checkpoint (default: inferred from its keys; the original "
                             "submission script defaulted to 0, which fails on its own learn_t=1 checkpoints)")
    parser.add_argument("--fusion-weights", default="upstream", choices=FUSION_WEIGHTS,
                        help="query of the Combiner: 'upstream' = (2-α)·f_h + α·f_c + f_s as the original, "
                             "'train-consistent' = α·f_h + (2-α)·f_c + f_s (default upstream)")


def add_port_args(parser: argparse.ArgumentParser, num_workers: int = 4) -> None:
    """Our additions shared by every script (all default to the original behaviour, except seeding)."""
    group = cir_args.add_port_group(parser)
    cir_args.add_num_workers(group, int(os.environ.get(NUM_WORKERS_ENV, num_workers)),
                             f"DataLoader worker processes (default ${NUM_WORKERS_ENV}, else {num_workers})")
    cir_args.add_data_root(group, DATASETS)
    group.add_argument("--fiq-root", default=None, help="FashionIQ root, overrides --data-root (default none)")
    group.add_argument("--shoes-root", default=None, help="Shoes root, overrides --data-root (default none)")
    group.add_argument("--cirr-root", default=None, help="CIRR root, overrides --data-root (default none)")
    group.add_argument("--clip-download-root", default=None,
                       help="folder of official CLIP files (default ~/.cache/clip, as clip.load)")
    group.add_argument("--clip-fp32", action="store_true",
                       help="on CUDA keep CLIP in full precision: weights exactly as in the files, frozen features "
                            "computed in fp32 (the stage-2 augmented view under autocast unless --no-amp) (default: "
                            "the original's precision on CUDA: CLIP weights rounded to fp16 after loading, stage-2 "
                            "training features from the fp16 model; on CPU CLIP always runs in fp32)")
    group.add_argument("--cache-dir", default=None,
                       help="folder for on-disk caches of frozen CLIP features, keyed by checkpoint hashes, "
                            "precision, split and preprocessing; checked for writing before any work (default: keep "
                            "them in memory only)")
    add_runtime_args(parser, tokenizer=False)


def output_root_from_env(parser: argparse.ArgumentParser) -> None:
    """``--output-root`` defaults to ``$MLCL_OUTPUT_ROOT`` when that is set (call after the flag is added)."""
    for action in parser._actions:
        if action.dest == "output_root":
            action.help = f"{action.help}; ${OUTPUT_ROOT_ENV} replaces that default when set"
            action.default = os.environ.get(OUTPUT_ROOT_ENV) or action.default


def adapt_output_args(parser: argparse.ArgumentParser, subdir: str) -> None:
    """The shared ``--output-root`` / ``--run-name`` with MLCL's run folder ``<output-root>/<subdir>/`` in their help,
    and ``$MLCL_OUTPUT_ROOT`` (call after ``common.args.add_output_args``)."""
    for action in parser._actions:
        if action.dest == "output_root":
            action.help = f"folder that receives {subdir}/ (default: the current folder, as the original's repo root)"
        elif action.dest == "run_name":
            action.help = (f"run folder name under <output-root>/{subdir} (default: the original's name, with a "
                           "colon-free timestamp and a _1, _2... suffix if it exists)")
    output_root_from_env(parser)


def check_cache_dir(args: argparse.Namespace) -> None:
    """Fail before any work when ``--cache-dir`` is given and cannot receive files (features are cached only after
    they are computed)."""
    if args.cache_dir:
        check_writable_root(args.cache_dir, "--cache-dir")


def data_root(args: argparse.Namespace, name: str) -> Path:
    """The dataset folder of ``name`` from its own root flag, else ``--data-root``, else the environment."""
    return dataset_root(name, getattr(args, ROOT_FLAGS[name]) or args.data_root)


def short_model_name(name: str) -> str:
    """``--clip-model-name`` for a folder name: the file stem of a path, no slashes."""
    return Path(name).stem if Path(name).suffix else name.replace("/", "-")
