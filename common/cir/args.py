"""The CLIP4Cir flags that Bi-BLIP4CIR, Candidate Re-ranking and MLCL share, defined once with the original names;
each paper passes its own defaults and help wording. Also the preprocessing those flags describe and the original
``training_hyperparameters.json`` dict."""
from __future__ import annotations

import argparse
from typing import Any, Callable, Sequence

from common.cir.data import FIQ_DRESS_TYPES
from common.transforms import build_preprocess

SHORT_NAMES = {"fashioniq": "fiq", "cirr": "cirr"}
"""The dataset part of the original run-folder names."""
DATA_FOLDERS = {"fashioniq": ("fashionIQ_dataset/", "$FASHIONIQ_ROOT"), "shoes": ("shoes/", "$SHOES_ROOT"),
                "cirr": ("cirr_dataset/", "$CIRR_ROOT")}

ArgumentTarget = argparse.ArgumentParser | argparse._ArgumentGroup


def _listing(items: Sequence[str]) -> str:
    return f"{', '.join(items[:-1])} and {items[-1]}" if len(items) > 1 else items[0]


def add_image_args(parser: argparse.ArgumentParser, transform_help: str,
                   transforms: Sequence[str] = ("targetpad", "squarepad"), input_dim: int | None = None) -> None:
    """The original ``--target-ratio`` and ``--transform`` (and ``--input-dim`` when ``input_dim`` is given)."""
    parser.add_argument("--target-ratio", type=float, default=1.25, help="TargetPad ratio (default 1.25)")
    parser.add_argument("--transform", default="targetpad", choices=tuple(transforms), help=transform_help)
    if input_dim is not None:
        parser.add_argument("--input-dim", type=int, default=input_dim,
                            help=f"image side in pixels, also the ViT input size (default {input_dim})")


def preprocess_from_args(args: argparse.Namespace, dim: int | None = None) -> Callable:
    """The image preprocessing of ``--transform`` and ``--target-ratio`` at side ``dim`` (default ``--input-dim``)."""
    return build_preprocess(args.transform, args.input_dim if dim is None else dim, args.target_ratio)


def add_validation_frequency(parser: argparse.ArgumentParser, default: int, note: str = "") -> None:
    """The original ``--validation-frequency``; ``note`` follows the rule in the help."""
    parser.add_argument("--validation-frequency", type=int, default=default,
                        help=f"validate when epoch %% frequency == 0{note} (default {default})")


def add_save_args(parser: argparse.ArgumentParser, best_help: str,
                  save_help: str = "write checkpoints at all") -> None:
    """The original ``--save-training`` and ``--save-best``."""
    parser.add_argument("--save-training", action="store_true", help=save_help)
    parser.add_argument("--save-best", action="store_true", help=best_help)


def add_saving_args(parser: argparse.ArgumentParser, validation_frequency: int, best_help: str,
                    save_help: str = "write checkpoints at all", frequency_note: str = "") -> None:
    """``--validation-frequency``, ``--save-training`` and ``--save-best``, in that order."""
    add_validation_frequency(parser, validation_frequency, frequency_note)
    add_save_args(parser, best_help, save_help)


def add_combiner_dims(parser: argparse.ArgumentParser, feature_dim_help: str | None = None) -> None:
    """The original ``--projection-dim`` and ``--hidden-dim`` (after ``--feature-dim`` when its help is given)."""
    if feature_dim_help is not None:
        parser.add_argument("--feature-dim", type=int, default=256, help=feature_dim_help)
    parser.add_argument("--projection-dim", type=int, default=640 * 4, help="Combiner projection width (default 2560)")
    parser.add_argument("--hidden-dim", type=int, default=640 * 8, help="Combiner hidden width (default 5120)")


def add_combining_function(parser: argparse.ArgumentParser, composed: str, alternative: str) -> None:
    """The original required ``--combining-function`` (combiner or sum) of validate.py and the submission script."""
    parser.add_argument("--combining-function", required=True, choices=("combiner", "sum"),
                        help=f"how {composed} features are composed: the trained Combiner{alternative}")


def add_port_group(parser: argparse.ArgumentParser, title: str = "additions of this port") -> argparse._ArgumentGroup:
    """The help group of the flags this port adds."""
    return parser.add_argument_group(title)


def add_num_workers(group: ArgumentTarget, default: int, help: str, underscore_first: bool = False) -> None:
    """``--num-workers`` / ``--num_workers`` (one destination; ``underscore_first`` lists the original spelling
    first where the original script had it)."""
    spellings = ["--num_workers", "--num-workers"] if underscore_first else ["--num-workers", "--num_workers"]
    group.add_argument(*spellings, dest="num_workers", type=int, default=default, help=help)


def add_data_root(group: ArgumentTarget, datasets: Sequence[str] = ("fashioniq", "cirr")) -> None:
    """``--data-root``: the folder holding the dataset folders of ``datasets``."""
    folders = [DATA_FOLDERS[name][0] for name in datasets]
    variables = " / ".join(DATA_FOLDERS[name][1] for name in datasets)
    group.add_argument("--data-root", default=None,
                       help=f"folder holding {_listing(folders)} (default: {variables}, then $CIR_DATA_ROOT, then "
                            "$DATA_ROOT, then the current folder)")



def add_metrics_json(parser: argparse.ArgumentParser, default: str) -> None:
    """``--metrics-json`` of the evaluation scripts; ``default`` says where the metrics go without it."""
    parser.add_argument("--metrics-json", default=None, help=f"where to write the metrics (default: {default})")


def original_hyperparameters(args: argparse.Namespace, keys: Sequence[str], dress_types: bool = True,
                             **extra: Any) -> dict[str, Any]:
    """The original parameter dict of a training script: ``keys`` of ``args``, the FashionIQ train and validation
    dress types (``dress_types``), then ``extra`` (the settings this port adds)."""
    params = {key: getattr(args, key) for key in keys}
    if dress_types and args.dataset == "fashioniq":
        params.update(train_dress_types=FIQ_DRESS_TYPES, val_dress_types=FIQ_DRESS_TYPES)
    params.update(extra)
    return params
