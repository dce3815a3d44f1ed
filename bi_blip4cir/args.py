"""The flags of the four Bi-BLIP4CIR scripts: the original ones with Bi-BLIP4CIR's defaults (the shared CLIP4Cir
builders are ``common.cir.args``'s) and the additions of this port, plus the hyper-parameter dict of a run."""
from __future__ import annotations

import argparse
from typing import Any

from bi_blip4cir.prompts import PROMPT_MODES
from common.args import add_blip_args, add_runtime_args
from common.cir import args as cir_args
from common.cir.data import dataset_choice
from common.runtime import available_cpus, default_workers

DEFAULT_MED_CONFIG = "src/blip_modules/med_config.json"
TRANSFORMS = ("targetpad", "squarepad")

dataset_name = dataset_choice("cirr", "fashioniq")
"""``--dataset``: CIRR or FashionIQ, case-insensitive -> ``'cirr'`` / ``'fashioniq'``."""


def add_blip_path_args(parser: argparse.ArgumentParser) -> None:
    """The original ``--blip-pretrained-path`` and ``--med-config-path``."""
    parser.add_argument("--blip-pretrained-path", default="models/model_base.pth",
                        help="BLIP pre-trained checkpoint ({'model': state_dict}, e.g. model_base.pth) "
                             "(default models/model_base.pth, relative to the current folder)")
    parser.add_argument("--med-config-path", default=DEFAULT_MED_CONFIG,
                        help=f"BLIP text-encoder config JSON (default {DEFAULT_MED_CONFIG}; when that file does not "
                             "exist, BLIP's med_config.json shipped with common/blip is used)")


def add_image_args(parser: argparse.ArgumentParser) -> None:
    """The original ``--target-ratio``, ``--transform`` and ``--input-dim``."""
    cir_args.add_image_args(parser, "image preprocessing: targetpad or squarepad (default targetpad)", TRANSFORMS,
                            input_dim=384)


def add_saving_args(parser: argparse.ArgumentParser, validation_frequency: int) -> None:
    """The original ``--validation-frequency``, ``--save-training`` and ``--save-best`` of the training scripts."""
    cir_args.add_saving_args(parser, validation_frequency, "with --save-training keep the best (and last) checkpoint "
                                                           "instead of one per validation")


def training_hyperparameters(args: argparse.Namespace, keys: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    """The original parameter dict of a training script (``keys`` of ``args``, the FashionIQ dress types), then the
    settings this port adds (``extra`` and the shared ones)."""
    return cir_args.original_hyperparameters(args, keys, seed=args.seed, prompt_mode=args.prompt_mode,
                                             vit_config=args.vit_config, feature_cache=not args.no_feature_cache,
                                             **extra)


def add_port_args(parser: argparse.ArgumentParser, num_workers: int, underscore_first: bool = False) -> None:
    """Our additions shared by every script (all default to the original behaviour)."""
    group = cir_args.add_port_group(parser)
    cir_args.add_num_workers(group, default_workers(num_workers), underscore_first=underscore_first,
                             help=f"DataLoader worker processes (default {num_workers} as the original, capped at "
                                  f"the {available_cpus()} cores of this machine; 4 for CIRR, 1-2 for FashionIQ when "
                                  "RAM-bound, 8 for speed)")
    cir_args.add_data_root(group)
    group.add_argument("--prompt-mode", default="upstream", choices=PROMPT_MODES,
                       help="where the [FORWARD]/[BACKWARD] markers go: 'upstream' (before every piece of the "
                            "caption split at the substring 'and', as the original) or 'prefix' (once at the start) "
                            "(default upstream)")
    group.add_argument("--cache-dir", default=None,
                       help="folder for on-disk caches of frozen-encoder features, keyed by checkpoint hash, "
                            "split and preprocessing (default: keep them in memory only)")
    add_blip_args(parser)
    add_runtime_args(parser)


def add_skip_args(parser: argparse.ArgumentParser) -> None:
    """``--skip-bad-images`` of the training scripts."""
    parser.add_argument("--skip-bad-images", action="store_true",
                        help="leave out the train triplets whose reference or target image cannot be read, as the "
                             "original training did, naming each such file once and the count (default: stop at "
                             "the first unreadable image)")


def add_combiner_dims(parser: argparse.ArgumentParser) -> None:
    """The original ``--feature-dim``, ``--projection-dim`` and ``--hidden-dim`` of the Combiner."""
    cir_args.add_combiner_dims(parser, "Combiner input/output width = the BLIP projection width (default 256)")


def add_evaluation_args(parser: argparse.ArgumentParser) -> None:
    """Model flags of validate.py and cirr_test_submission.py."""
    cir_args.add_combining_function(parser, "image and text", " or the normalised sum")
    add_blip_path_args(parser)
    parser.add_argument("--combiner-path", default=None,
                        help="stage-II Combiner checkpoint ({'epoch', 'Combiner', ...}); required with combiner "
                             "(default: none)")
    add_combiner_dims(parser)
    parser.add_argument("--blip-model-path", default=None,
                        help="stage-I text-encoder checkpoint ({'epoch', 'BLIPTextEncoder', ...}) "
                             "(default: the pre-trained BLIP text encoder)")
    add_image_args(parser)
