"""What the MLCL scripts share: flags, the CLIP model and its frozen encoders, the FashionIQ / Shoes / CIRR data,
the feature tables, validation query sets, run names and the per-term loss log.

Frozen features. In stage 2 CLIP is frozen and in eval mode, and the clean preprocessing is deterministic, so the
reference, target and caption features of the train triplets are computed once per run (once per checkpoint with
``--cache-dir``); only the random augmented reference view is encoded at every step. ``--no-feature-cache`` encodes
reference, augmented reference, target and captions at every step as the original does (same losses for the same
augmentation draws, up to float rounding).
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import warnings
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import Dataset

from common.args import add_runtime_args
from common.cir.data import (FIQ_DRESS_TYPES, TripletRows, classic_dataset, dataset_choice, dataset_root,
                             relative_dataset, triplet_fields)
from common.cir.evaluation import Combine, QuerySet, build_query_sets
from common.cir.selection import best_checkpoint_names
from common.clip import CLIP, CONTEXT_LENGTH, convert_weights, load_clip, tokenize
from common.data.images import open_image
from common.dist import all_reduce_sum
from common.features import checkpoint_fingerprint, extract_features
from common.io import CheckpointError, PathLike, load_torch_file
from common.runtime import amp_enabled, autocast, get_logger
from common.training.checkpoint import load_model
from common.training.experiment import CSVLogger
from common.training.run import TrainingRun, check_writable_root
from common.transforms import build_preprocess
from mlcl.combiner import FUSION_WEIGHTS, Combiner, learn_t_of

logger = get_logger(__name__)

DATASETS = ("fashioniq", "shoes", "cirr")
TRANSFORMS = ("targetpad", "squarepad", "clip")
CLIP_KEY = "CLIP"
EXTRACT_BATCH_SIZE = 32
RUN_TIMESTAMP = "%Y-%m-%d_%H-%M-%S"
ROOT_FLAGS = {"fashioniq": "fiq_root", "shoes": "shoes_root", "cirr": "cirr_root"}
SELECTION_METRIC = {"fashioniq": "average_recall", "shoes": "recall_mean"}
CIRR_SELECTED = ("arithmetic_mean", "harmonic_mean", "geometric_mean")
NUM_WORKERS_ENV = "MLCL_NUM_WORKERS"
OUTPUT_ROOT_ENV = "MLCL_OUTPUT_ROOT"
TERMS_FILE = "loss_terms.csv"
COMBINER_FLAG_HINTS = {"text_projection_layer.*": "--projection-dim", "image_projection_layer.*": "--projection-dim",
                       "combiner_layer.*": "--projection-dim and --hidden-dim", "dynamic_scalar.0.*":
                       "--projection-dim and --hidden-dim", "*": "--hidden-dim or the CLIP embedding width"}

ImageFn = Callable[[torch.Tensor], torch.Tensor]

# ------------------------------------------------------------------------------------------------------------ flags


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
    parser.add_argument("--target-ratio", type=float, default=1.25, help="TargetPad ratio (default 1.25)")
    parser.add_argument("--transform", default="targetpad", choices=TRANSFORMS,
                        help="image preprocessing: targetpad, squarepad or clip (CLIP's own) (default targetpad)")


def add_saving_args(parser: argparse.ArgumentParser, validation_frequency: int) -> None:
    """The original ``--validation-frequency``, ``--save-training`` and ``--save-best``."""
    parser.add_argument("--validation-frequency", type=int, default=validation_frequency,
                        help=f"validate when epoch %% frequency == 0, so epoch 0 is validated "
                             f"(default {validation_frequency})")
    parser.add_argument("--save-training", action="store_true", help="write checkpoints at all (default off)")
    parser.add_argument("--save-best", action="store_true",
                        help="with --save-training keep only the best checkpoint(s) (and <prefix>_last) instead of "
                             "one per validation (default off)")


def add_combiner_dims(parser: argparse.ArgumentParser) -> None:
    """The original ``--projection-dim`` and ``--hidden-dim``."""
    parser.add_argument("--projection-dim", type=int, default=640 * 4, help="Combiner projection width (default 2560)")
    parser.add_argument("--hidden-dim", type=int, default=640 * 8, help="Combiner hidden width (default 5120)")


def add_evaluation_args(parser: argparse.ArgumentParser) -> None:
    """Model flags of validate.py and cirr_test_submission.py (CLIP4Cir's, plus ``--learn_t`` and
    ``--fusion-weights``)."""
    parser.add_argument("--combining-function", required=True, choices=("combiner", "sum"),
                        help="how reference and caption features are composed: the trained Combiner, or the "
                             "element-wise sum")
    parser.add_argument("--combiner-path", default=None,
                        help="stage-2 Combiner checkpoint ({'epoch', 'Combiner'}); required with combiner")
    add_combiner_dims(parser)
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
    group = parser.add_argument_group("additions of this port")
    default_workers = int(os.environ.get(NUM_WORKERS_ENV, num_workers))
    group.add_argument("--num-workers", "--num_workers", dest="num_workers", type=int, default=default_workers,
                       help=f"DataLoader worker processes (default ${NUM_WORKERS_ENV}, else {num_workers})")
    group.add_argument("--data-root", default=None,
                       help="folder holding fashionIQ_dataset/, shoes/ and cirr_dataset/ (default: $FASHIONIQ_ROOT / "
                            "$SHOES_ROOT / $CIRR_ROOT, then $CIR_DATA_ROOT, then $DATA_ROOT, then the current folder)")
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


# ------------------------------------------------------------------------------------------------------------- CLIP


def clip_precision(device: torch.device, clip_fp32: bool = False) -> str:
    """The CLIP precision of a run: 'fp16' on CUDA unless ``--clip-fp32`` (the original: ``clip.load`` gives fp16
    weights on CUDA), 'fp32' on every other device (``clip.load`` casts to fp32 there)."""
    return "fp16" if torch.device(device).type == "cuda" and not clip_fp32 else "fp32"


def round_weights_to_fp16(model: CLIP) -> CLIP:
    """Round the weights ``convert_weights`` halves (conv, linear, attention, projections) to fp16 values, kept as
    fp32 tensors: what the original's model holds after loading files into its fp16 CLIP and casting with
    ``.float()``. LayerNorm, BatchNorm, embeddings and ``logit_scale`` stay exact."""
    convert_weights(model)
    return model.float()


def frozen_training_clip(model: CLIP, precision: str) -> CLIP:
    """The frozen CLIP that encodes stage-2 training batches: in the 'fp16' precision the fp16 model, as the original
    (``convert_weights`` at every epoch, undone by ``.float()`` only for validation); else ``model`` unchanged."""
    if precision == "fp16":
        convert_weights(model)
    return model


def build_clip(args: argparse.Namespace, device: torch.device,
               checkpoint: PathLike | None = None) -> tuple[CLIP, dict[str, Any]]:
    """The fp32 CLIP of ``--clip-model-name`` in eval mode with ``checkpoint`` (``{'CLIP': state_dict}``) loaded
    on top, and its sizes (``common.clip.clip_info``) plus ``precision`` (:func:`clip_precision`). In the 'fp16'
    precision its weights are rounded through fp16 after loading (:func:`round_weights_to_fp16`), as the original."""
    precision = clip_precision(device, args.clip_fp32)
    model, _, info = load_clip(args.clip_model_name, device=device, allow_download=args.allow_download,
                               download_root=args.clip_download_root)
    if checkpoint:
        load_clip_checkpoint(model, checkpoint, args)
    if precision == "fp16":
        round_weights_to_fp16(model)
    logger.info("CLIP precision %s%s", precision, " (weights rounded to fp16 values)" if precision == "fp16" else "")
    return model, {**info, "precision": precision}


def load_clip_checkpoint(model: CLIP, path: PathLike, args: argparse.Namespace) -> Any:
    """Load ``{'CLIP': state_dict, ...}`` strictly into the fp32 ``model`` (exact); returns the file's epoch."""
    payload = load_model(path, model, key=CLIP_KEY, trusted=args.trust_checkpoints)
    logger.info("CLIP weights loaded from %s (epoch %s)", path, payload.get("epoch"))
    return payload.get("epoch")


def tokenize_captions(texts: Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """CLIP token ids; a caption over ``context_length`` tokens is truncated with a warning (the original raised)."""
    try:
        return tokenize(texts, context_length, truncate=False)
    except RuntimeError:
        for text in texts:
            try:
                tokenize([text], context_length, truncate=False)
            except RuntimeError:
                warnings.warn(f"caption longer than {context_length} tokens, truncated: {text[:80]!r}...",
                              stacklevel=2)
        return tokenize(texts, context_length, truncate=True)


class ImageEncoder:
    """Raw fp32 CLIP image features of preprocessed images (autocast on CUDA when ``amp``)."""

    def __init__(self, model: CLIP, device: torch.device, amp: bool = False):
        self.model, self.device, self.amp = model, device, amp

    @property
    def compute(self) -> str:
        """How features are computed: 'fp16' (fp16 weights), 'autocast' (CUDA autocast) or 'fp32'."""
        if self.model.dtype == torch.float16:
            return "fp16"
        return "autocast" if amp_enabled(self.device, self.amp) else "fp32"

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with autocast(self.device, self.amp):
            return self.model.encode_image(images.to(self.device)).float()


class TextEncoder:
    """Raw fp32 CLIP text features of caption strings."""

    def __init__(self, model: CLIP, device: torch.device):
        self.model, self.device = model, device

    @property
    def compute(self) -> str:
        """How features are computed: 'fp16' (fp16 weights) or 'fp32'."""
        return "fp16" if self.model.dtype == torch.float16 else "fp32"

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        tokens = tokenize_captions(list(texts), int(self.model.context_length))
        return self.model.encode_text(tokens.to(self.device)).float()


def sum_fusion(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """The element-wise sum of CLIP4Cir (normalised by the scoring)."""
    return image_features + text_features


# ------------------------------------------------------------------------------------------------------ combiner


def load_combiner(path: PathLike, feature_dim: int, args: argparse.Namespace, device: torch.device) -> Combiner:
    """The Combiner of a ``{'epoch', 'Combiner'}`` file, loaded strictly in eval mode.

    ``args.learn_t`` None infers learn_t from the keys (``logit_scale``, ``logit_scale_sl`` present = 1); a given
    value that disagrees with the file raises an error naming those keys.
    """
    payload = load_torch_file(path, trusted=args.trust_checkpoints)
    if not isinstance(payload, dict) or not isinstance(payload.get("Combiner"), dict):
        found = sorted(payload) if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path}: no 'Combiner' entry (found {found}); expected {{'epoch', 'Combiner'}}")
    detected = learn_t_of(payload["Combiner"])
    learn_t = detected if args.learn_t is None else args.learn_t
    if learn_t != detected:
        state = "holds" if detected else "lacks"
        raise CheckpointError(f"{path}: --learn_t {learn_t} but the checkpoint {state} the keys logit_scale and "
                              f"logit_scale_sl (it was trained with learn_t={detected}); pass --learn_t {detected} "
                              "or leave the flag out to infer it")
    combiner = Combiner(feature_dim, args.projection_dim, args.hidden_dim, learn_t).to(device)
    load_model(path, combiner, trusted=args.trust_checkpoints, flag_hints=COMBINER_FLAG_HINTS)
    logger.info("Combiner loaded from %s (learn_t=%d)", path, learn_t)
    return combiner.eval()


def evaluation_models(args: argparse.Namespace, device: torch.device) -> tuple[CLIP, dict[str, Any], Combine]:
    """CLIP (``--clip-model-path`` loaded on top; fp32 computation, weights as :func:`build_clip`), its sizes and the
    combining function, all in eval mode."""
    model, info = build_clip(args, device, args.clip_model_path)
    model.requires_grad_(False).eval()
    if args.combining_function == "sum":
        if args.combiner_path:
            logger.warning("--combiner-path is ignored with --combining-function sum")
        return model, info, sum_fusion
    if not args.combiner_path:
        raise ValueError("--combining-function combiner needs --combiner-path")
    combiner = load_combiner(args.combiner_path, info["embed_dim"], args, device)
    return model, info, functools.partial(combiner.fused_query, fusion_weights=args.fusion_weights)


# ------------------------------------------------------------------------------------------------------------- data


def preprocess_for(args: argparse.Namespace, dim: int) -> Callable:
    return build_preprocess(args.transform, dim, args.target_ratio)


class NamedImages(Dataset):
    """(name, preprocessed image) of the given image names of a CIR dataset."""

    def __init__(self, dataset: Dataset, names: Sequence[str], preprocess: Callable):
        self.dataset, self.names, self.preprocess = dataset, list(names), preprocess

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[str, torch.Tensor]:
        name = self.names[index]
        return name, self.preprocess(open_image(self.dataset.image_path(name)))


class AugmentedRows(TripletRows):
    """Train triplets as (reference row, target row, captions, augmented reference image): only the random view
    is decoded and transformed per item; the clean reference and target are rows of a feature table."""

    def __init__(self, dataset: Dataset, rows: dict[str, int], augment: Callable):
        super().__init__(dataset, rows, backward=False)
        self.augment = augment

    def __getitem__(self, index: int) -> tuple:
        reference, target, captions = super().__getitem__(index)
        raw = open_image(self.dataset.image_path(triplet_fields(self.dataset, index)[0]))
        return reference, target, captions, self.augment(raw)


_fingerprint = functools.lru_cache(maxsize=None)(checkpoint_fingerprint)


def clip_cache_key(args: argparse.Namespace, clip_ckpt: PathLike | None, dim: int,
                   encoder: ImageEncoder | TextEncoder, **parts: Any) -> dict | None:
    """The ``--cache-dir`` key of frozen CLIP features (None without it): the CLIP file and fine-tuned checkpoint
    hashes, the precision of the weights (:func:`clip_precision`) and of the ``encoder``'s computation, the
    preprocessing and ``parts`` (what was encoded)."""
    if args.cache_dir is None:
        return None
    name = args.clip_model_name
    clip_id = _fingerprint(name) if Path(name).is_file() else name
    return {"clip": clip_id, "clip_ckpt": _fingerprint(clip_ckpt) if clip_ckpt else None,
            "precision": clip_precision(encoder.device, args.clip_fp32), "compute": encoder.compute,
            "transform": args.transform, "target_ratio": args.target_ratio, "dim": dim, **parts}


def encode_images(dataset: Dataset, encode: ImageFn, device: torch.device, args: argparse.Namespace,
                  batch_size: int = EXTRACT_BATCH_SIZE, cache_key: dict | None = None,
                  desc: str = "image features") -> tuple[torch.Tensor, list[str]]:
    """Raw fp32 features [N, D] and names of a (name, image) dataset, sharded over processes (collective)."""
    return extract_features(dataset, encode, device=device, batch_size=batch_size, num_workers=args.num_workers,
                            key_index=0, amp=False, cache_dir=args.cache_dir if cache_key else None,
                            cache_key=cache_key, desc=desc)


def train_image_table(train_set: Dataset, encode: ImageEncoder, device: torch.device, args: argparse.Namespace,
                      preprocess: Callable, batch_size: int,
                      cache_key: dict | None = None) -> tuple[torch.Tensor, dict[str, int]]:
    """Features of every image the train triplets use (collective), and each image's row."""
    names = TripletRows(train_set, {}, backward=False).used_images()
    table, keys = encode_images(NamedImages(train_set, names, preprocess), encode, device, args, batch_size,
                                cache_key, desc="train image features")
    return table, {name: row for row, name in enumerate(keys)}


def query_sets(args: argparse.Namespace, name: str, split: str, encode: ImageEncoder, device: torch.device, dim: int,
               clip_ckpt: PathLike | None = None, cache: bool = True) -> list[QuerySet]:
    """Validation (or CIRR test1) query sets with gallery features (collective): one per FashionIQ dress type."""
    root, preprocess = data_root(args, name), preprocess_for(args, dim)

    def gallery(dress_types: list[str]) -> tuple[torch.Tensor, list[str]]:
        dataset = classic_dataset(name, root, split, preprocess, dress_types or FIQ_DRESS_TYPES)
        key = clip_cache_key(args, clip_ckpt, dim, encode, what="gallery", root=str(root), split=split,
                             dress_types=dress_types) if cache else None
        return encode_images(dataset, encode, device, args, cache_key=key, desc=f"{split} gallery features")

    def queries(dress_types: list[str]) -> Dataset:
        return relative_dataset(name, root, split, preprocess, dress_types=dress_types or FIQ_DRESS_TYPES)

    return build_query_sets(name, split, gallery, queries)


def selected_checkpoints(name: str, prefix: str, single_best: str) -> dict[str, str]:
    """Metric -> best-checkpoint name: FashionIQ / Shoes one file, CIRR ``<prefix>_{arithmetic,harmonic,geometric}``
    (MLCL keeps no ``_mean`` file)."""
    names = best_checkpoint_names(name, prefix, single_best, SELECTION_METRIC.get(name, "average_recall"))
    return {metric: file for metric, file in names.items() if name != "cirr" or metric in CIRR_SELECTED}


# --------------------------------------------------------------------------------------------- run and logging


def default_run_name(args: argparse.Namespace, prefix: str) -> str:
    """``--run-name``, else the original's ``<prefix>_<timestamp>`` with a colon-free timestamp (a ``_1``, ``_2``...
    suffix is added by the run folder if it exists)."""
    return args.run_name or f"{prefix}_{datetime.now().strftime(RUN_TIMESTAMP)}"


class TermLog:
    """``loss_terms.csv`` next to ``train_metrics.csv``: per epoch the per-sample means of the five loss terms and
    α (process 0 writes; on resume, rows of epochs that run again are dropped)."""

    def __init__(self, run: TrainingRun):
        self.run = run
        self.csv = CSVLogger(run.dir / TERMS_FILE) if run.log.enabled else None
        if self.csv is not None and self.csv.rows:
            self.csv.truncate_after(run.start_epoch - 1)

    def log(self, epoch: int, values: dict[str, float]) -> None:
        self.run.log.tracker.log_metrics(values, epoch=epoch)
        if self.csv is not None:
            self.csv.log({"epoch": epoch, **values})
            logger.info("epoch %d: %s", epoch, ", ".join(f"{key} {value:.4f}" for key, value in values.items()))


class EpochMeans:
    """Per-sample means over an epoch (all processes) of named loss parts."""

    def __init__(self, device: torch.device):
        self.device, self.sums, self.count = device, {}, 0

    def add(self, parts: dict[str, torch.Tensor], batch_size: int) -> None:
        for key, value in parts.items():
            self.sums[key] = self.sums.get(key, 0.0) + value.detach().double() * batch_size
        self.count += batch_size

    def result(self) -> dict[str, float]:
        keys = list(self.sums)
        sums = [torch.as_tensor(self.sums[key], dtype=torch.float64, device=self.device) for key in keys]
        totals = all_reduce_sum(torch.stack([*sums, torch.tensor(float(self.count), dtype=torch.float64,
                                                                 device=self.device)]))
        return {key: (totals[i] / totals[-1]).item() for i, key in enumerate(keys)}


def warm_restart_lr(position: float, base_lr: float, period: float = 10, eta_min: float = 1e-6) -> float:
    """``CosineAnnealingWarmRestarts(T_0=period, T_mult=1, eta_min)`` at fractional epoch ``position``."""
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * (position % period) / period)) / 2


def hyperparameters(args: argparse.Namespace, keys: Sequence[str], precision: str, **extra: Any) -> dict[str, Any]:
    """The original parameter dict (``keys`` of ``args``, FashionIQ dress types), then our additions, the CLIP
    ``precision`` (:func:`clip_precision`) among them."""
    params = {key: getattr(args, key) for key in keys}
    if args.dataset == "fashioniq":
        params.update(train_dress_types=FIQ_DRESS_TYPES, val_dress_types=FIQ_DRESS_TYPES)
    params.update(seed=args.seed, num_workers=args.num_workers, clip_precision=precision, **extra)
    return params

