"""What the four Bi-BLIP4CIR scripts share: flags, the BLIP encoders, the marked datasets and the BLIP feature
tables. The CLIP4Cir parts (datasets, frozen-feature tables, the validation loop, checkpoint selection, the Combiner)
are ``common.cir``'s, the training epoch and the run folder ``common.training``'s.

Frozen features. The image encoder never trains, and in stage II the text encoder is frozen too, so their outputs
are computed once (``FrozenImages`` / ``FrozenTexts`` with a table) instead of at every step as the original does.
Both are in eval mode and preprocessing is deterministic, so the losses equal re-encoding up to float rounding
(padding lengths differ between batches); ``--no-feature-cache`` restores the original per-step encoding.
"""
from __future__ import annotations

import argparse
import functools
import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from bi_blip4cir.losses import sum_fusion
from bi_blip4cir.prompts import PROMPT_MODES, marker_hook
from common.args import add_blip_args, add_runtime_args, vit_config_from_arg
from common.blip import BlipImageEncoder, BlipTextEncoder, build_blip_tokenizer, load_blip_checkpoint
from common.blip.checkpoint import read_blip_file
from common.blip.config import med_config_from_arg
from common.cir import data as cir_data
from common.cir import evaluation as cir_evaluation
from common.cir.combiner import Combiner
from common.cir.data import FIQ_DRESS_TYPES, TripletRows, classic_dataset, dataset_choice, triplet_fields
from common.cir.evaluation import Combine, QuerySet
from common.cir.frozen import FrozenImages
from common.data.images import open_image
from common.features import checkpoint_fingerprint, extract_features
from common.io import PathLike, check_torch_file, is_url
from common.runtime import available_cpus, default_workers, get_logger
from common.training.checkpoint import load_model
from common.transforms import build_preprocess

logger = get_logger(__name__)

TEXT_ENCODER_KEY = "BLIPTextEncoder"
TEXT_MAX_LENGTH = 77
SHORT_NAMES = {"fashioniq": "fiq", "cirr": "cirr"}
DISPLAY_NAMES = {"fashioniq": "FashionIQ", "cirr": "CIRR"}
DEFAULT_MED_CONFIG = "src/blip_modules/med_config.json"
TRANSFORMS = ("targetpad", "squarepad")
EXTRACT_BATCH_SIZE = 32

# ------------------------------------------------------------------------------------------------------------ flags


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
    parser.add_argument("--target-ratio", type=float, default=1.25, help="TargetPad ratio (default 1.25)")
    parser.add_argument("--transform", default="targetpad", choices=TRANSFORMS,
                        help="image preprocessing: targetpad or squarepad (default targetpad)")
    parser.add_argument("--input-dim", type=int, default=384,
                        help="image side in pixels, also the ViT input size (default 384)")


def add_saving_args(parser: argparse.ArgumentParser, validation_frequency: int) -> None:
    """The original ``--validation-frequency``, ``--save-training`` and ``--save-best`` of the training scripts."""
    parser.add_argument("--validation-frequency", type=int, default=validation_frequency,
                        help=f"validate when epoch %% frequency == 0 (default {validation_frequency})")
    parser.add_argument("--save-training", action="store_true", help="write checkpoints at all")
    parser.add_argument("--save-best", action="store_true",
                        help="with --save-training keep the best (and last) checkpoint instead of one per validation")


def training_hyperparameters(args: argparse.Namespace, keys: tuple[str, ...], **extra: Any) -> dict[str, Any]:
    """The original parameter dict of a training script (``keys`` of ``args``, the FashionIQ dress types), then the
    settings this port adds (``extra`` and the shared ones)."""
    params = {key: getattr(args, key) for key in keys}
    if args.dataset == "fashioniq":
        params.update(train_dress_types=FIQ_DRESS_TYPES, val_dress_types=FIQ_DRESS_TYPES)
    params.update(seed=args.seed, prompt_mode=args.prompt_mode, vit_config=args.vit_config,
                  feature_cache=not args.no_feature_cache, **extra)
    return params


def add_port_args(parser: argparse.ArgumentParser, num_workers: int, underscore_first: bool = False) -> None:
    """Our additions shared by every script (all default to the original behaviour)."""
    group = parser.add_argument_group("additions of this port")
    spellings = ["--num_workers", "--num-workers"] if underscore_first else ["--num-workers", "--num_workers"]
    group.add_argument(*spellings, dest="num_workers", type=int, default=default_workers(num_workers),
                       help=f"DataLoader worker processes (default {num_workers} as the original, capped at the "
                            f"{available_cpus()} cores of this machine; 4 for CIRR, 1-2 for FashionIQ when RAM-bound, "
                            "8 for speed)")
    group.add_argument("--data-root", default=None,
                       help="folder holding fashionIQ_dataset/ and cirr_dataset/ (default: $FASHIONIQ_ROOT / "
                            "$CIRR_ROOT, then $CIR_DATA_ROOT, then $DATA_ROOT, then the current folder)")
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


COMBINER_FLAG_HINTS = {"text_projection_layer.*": "--projection-dim / --feature-dim",
                       "image_projection_layer.*": "--projection-dim / --feature-dim",
                       "combiner_layer.*": "--projection-dim / --hidden-dim",
                       "output_layer.*": "--hidden-dim / --feature-dim",
                       "dynamic_scalar.*": "--projection-dim / --hidden-dim"}
"""Which flags set the sizes of a Combiner's weights, for the shape-mismatch message of a --combiner-path file."""
TEXT_ENCODER_FLAG_HINTS = {"text_proj.*": "the projection width of --blip-pretrained-path",
                           "text_encoder.*": "--med-config-path"}


def check_checkpoint_flags(args: argparse.Namespace) -> None:
    """Cheap checks, before any model is built or image encoded, that every checkpoint flag names a readable torch
    file (URLs are checked when fetched); errors name the file and the flag."""
    expected = {"--blip-pretrained-path": ("model", "vision_proj.weight"), "--blip-model-path": (TEXT_ENCODER_KEY,),
                "--combiner-path": ()}
    for flag, keys in expected.items():
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value and not is_url(value):
            check_torch_file(value, flag, expect_any=keys)


def add_combiner_dims(parser: argparse.ArgumentParser) -> None:
    """The original ``--feature-dim``, ``--projection-dim`` and ``--hidden-dim`` of the Combiner."""
    parser.add_argument("--feature-dim", type=int, default=256,
                        help="Combiner input/output width = the BLIP projection width (default 256)")
    parser.add_argument("--projection-dim", type=int, default=640 * 4, help="Combiner projection width (default 2560)")
    parser.add_argument("--hidden-dim", type=int, default=640 * 8, help="Combiner hidden width (default 5120)")


def add_evaluation_args(parser: argparse.ArgumentParser) -> None:
    """Model flags of validate.py and cirr_test_submission.py."""
    parser.add_argument("--combining-function", required=True, choices=("combiner", "sum"),
                        help="how image and text features are composed: the trained Combiner or the normalised sum")
    add_blip_path_args(parser)
    parser.add_argument("--combiner-path", default=None,
                        help="stage-II Combiner checkpoint ({'epoch', 'Combiner', ...}); required with combiner "
                             "(default: none)")
    add_combiner_dims(parser)
    parser.add_argument("--blip-model-path", default=None,
                        help="stage-I text-encoder checkpoint ({'epoch', 'BLIPTextEncoder', ...}) "
                             "(default: the pre-trained BLIP text encoder)")
    add_image_args(parser)


# ----------------------------------------------------------------------------------------------------------- models


def build_blip_encoders(args: argparse.Namespace, device: torch.device) -> tuple[BlipImageEncoder, BlipTextEncoder]:
    """The frozen image encoder (eval, no grad) and the text encoder, both loaded from ``--blip-pretrained-path``.

    The projection width (256 for BLIP) is read from the checkpoint's ``vision_proj``. A key missing from the
    checkpoint raises (the original dropped into pdb).
    """
    path, payload = read_blip_file(args.blip_pretrained_path, allow_download=args.allow_download,
                                   trusted=args.trust_checkpoints)
    embed_dim = payload.get("model", payload)["vision_proj.weight"].shape[0]
    vit = vit_config_from_arg(args.vit_config)
    med = med_config_from_arg(args.med_config_path, DEFAULT_MED_CONFIG)
    tokenizer = build_blip_tokenizer(args.tokenizer, allow_download=args.allow_download)
    if len(tokenizer) > med.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but {args.med_config_path} sets vocab_size "
                         f"{med.vocab_size}")
    image_encoder = BlipImageEncoder(vit, args.input_dim, embed_dim=embed_dim)
    text_encoder = BlipTextEncoder(med, tokenizer, embed_dim=embed_dim, encoder_width=vit.width,
                                   max_length=TEXT_MAX_LENGTH)
    for module, prefixes in ((image_encoder, ("visual_encoder.", "vision_proj.")),
                             (text_encoder, ("text_encoder.", "text_proj."))):
        load_blip_checkpoint(module, payload, select_prefix=prefixes, source_name=path,
                             flag_hints={"visual_encoder.*": "--vit-config / --input-dim",
                                         "text_encoder.*": "--med-config-path"})
    image_encoder.requires_grad_(False)
    return image_encoder.to(device).eval(), text_encoder.to(device)


def load_text_encoder(path: PathLike, text_encoder: nn.Module, trusted: bool) -> Any:
    """Load a stage-I file (``{'epoch', 'BLIPTextEncoder', ...}``, released or ours) strictly; returns its epoch."""
    return load_model(path, text_encoder, key=TEXT_ENCODER_KEY, trusted=trusted,
                      flag_hints=TEXT_ENCODER_FLAG_HINTS).get("epoch")


def check_feature_dim(args: argparse.Namespace, text_encoder: BlipTextEncoder) -> None:
    """``--feature-dim`` must equal the BLIP projection width of the checkpoint."""
    width = text_encoder.text_proj.out_features
    if args.feature_dim != width:
        raise ValueError(f"--feature-dim {args.feature_dim} differs from the projection width {width} of "
                         f"{args.blip_pretrained_path}")


def combining_function(args: argparse.Namespace, device: torch.device) -> Combine:
    """``--combining-function``: the normalised sum, or the Combiner loaded strictly from ``--combiner-path``."""
    if args.combining_function == "sum":
        if args.combiner_path:
            logger.warning("--combiner-path is ignored with --combining-function sum")
        return sum_fusion
    if not args.combiner_path:
        raise ValueError("--combining-function combiner needs --combiner-path")
    combiner = Combiner(args.feature_dim, args.projection_dim, args.hidden_dim).to(device)
    load_model(args.combiner_path, combiner, trusted=args.trust_checkpoints, flag_hints=COMBINER_FLAG_HINTS)
    return combiner.eval()


def load_evaluation_models(args: argparse.Namespace, device: torch.device) -> tuple[nn.Module, nn.Module, Combine]:
    """The image encoder, the text encoder (``--blip-model-path`` loaded on top when given) and the combining
    function that validate.py and cirr_test_submission.py evaluate, all in eval mode."""
    image_encoder, text_encoder = build_blip_encoders(args, device)
    if args.combining_function == "combiner":
        check_feature_dim(args, text_encoder)
    if args.blip_model_path:
        epoch = load_text_encoder(args.blip_model_path, text_encoder, args.trust_checkpoints)
        logger.info("BLIP text encoder loaded from %s (epoch %s)", args.blip_model_path, epoch)
    return image_encoder, text_encoder.eval(), combining_function(args, device)


# ------------------------------------------------------------------------------------------------------------- data


def preprocess_from_args(args: argparse.Namespace) -> Callable:
    return build_preprocess(args.transform, args.input_dim, args.target_ratio)


def relative_dataset(name: str, root: Path, split: str, preprocess: Callable, prompt_mode: str,
                     dress_types: Sequence[str] = FIQ_DRESS_TYPES) -> Dataset:
    """Triplets with the direction markers; train items carry the backward captions too."""
    return cir_data.relative_dataset(name, root, split, preprocess, marker_hook(prompt_mode), dress_types,
                                     return_reverse=True)


# -------------------------------------------------------------------------------------------------- frozen features


_fingerprint = functools.lru_cache(maxsize=None)(checkpoint_fingerprint)


def feature_cache_key(args: argparse.Namespace, **parts: Any) -> dict[str, Any] | None:
    """The on-disk cache key of frozen features (None without ``--cache-dir``): checkpoint hashes, model files,
    preprocessing and ``parts`` (what was encoded: dataset root, split, ...)."""
    if args.cache_dir is None:
        return None
    key = {"blip": _fingerprint(args.blip_pretrained_path), "vit": args.vit_config, "med": args.med_config_path,
           "tokenizer": args.tokenizer, "transform": args.transform, "target_ratio": args.target_ratio,
           "input_dim": args.input_dim, **parts}
    if parts.get("what") == "texts" and getattr(args, "blip_model_path", None):
        key["text_encoder"] = _fingerprint(args.blip_model_path)
    return key


def encode_image_table(image_encoder: nn.Module, image_set: Dataset, device: torch.device,
                       args: argparse.Namespace, batch_size: int = EXTRACT_BATCH_SIZE,
                       **key_parts: Any) -> tuple[torch.Tensor, list[str]]:
    """Raw image features [N, D] and names of a classic dataset, sharded over processes, fp32 (collective).
    ``key_parts`` (dataset, split, ...) name what was encoded in the ``--cache-dir`` key."""
    return extract_features(image_set, image_encoder, device=device, batch_size=batch_size,
                            num_workers=args.num_workers, key_index=0, amp=False, cache_dir=args.cache_dir,
                            cache_key=feature_cache_key(args, what="images", **key_parts), desc="image features")


def encode_text_table(text_encoder: nn.Module, texts: Sequence[str], device: torch.device, args: argparse.Namespace,
                      batch_size: int = EXTRACT_BATCH_SIZE, **key_parts: Any) -> torch.Tensor:
    """Raw text features [S, D] of ``texts``, sharded over processes, fp32 (collective)."""
    pairs = [(text, text) for text in texts]
    features, _ = extract_features(pairs, text_encoder, device=device, batch_size=batch_size, amp=False,
                                   cache_dir=args.cache_dir, desc="text features",
                                   cache_key=feature_cache_key(args, what="texts", **key_parts))
    return features


class NamedImages(Dataset):
    """(name, preprocessed image) of the listed images of a CIR dataset: the train images the triplets use."""

    def __init__(self, dataset: Dataset, names: Sequence[str], preprocess: Callable):
        self.dataset, self.names, self.preprocess = dataset, list(names), preprocess

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> tuple[str, Any]:
        name = self.names[index]
        return name, self.preprocess(open_image(self.dataset.image_path(name)))


def unreadable_images(dataset: Dataset, names: Sequence[str], threads: int) -> dict[str, str]:
    """Name -> error message of each image in ``names`` that cannot be opened and decoded (read in threads)."""
    def problem(name: str) -> str | None:
        try:
            open_image(dataset.image_path(name))
        except OSError as error:
            return str(error)
        return None

    with ThreadPoolExecutor(max(1, threads)) as pool:
        return {name: error for name, error in zip(names, pool.map(problem, names)) if error is not None}


def skip_bad_triplets(train_set: Dataset, threads: int) -> list[str]:
    """``--skip-bad-images``: drop from ``train_set`` the triplets whose reference or target cannot be read.
    Each unreadable file is logged once, then the counts; returns the unreadable image names."""
    names = TripletRows(train_set, {}).used_images()
    bad = unreadable_images(train_set, names, threads)
    for error in bad.values():
        logger.warning("--skip-bad-images: skipping %s", error)
    if bad:
        kept = [triplet for index, triplet in enumerate(train_set.triplets)
                if not set(triplet_fields(train_set, index)[:2]) & set(bad)]
        logger.warning("--skip-bad-images: %d of %d train images are unreadable; %d of %d triplets left out",
                       len(bad), len(names), len(train_set.triplets) - len(kept), len(train_set.triplets))
        train_set.triplets = kept
    return list(bad)


class TrainData(NamedTuple):
    """What both training stages train on: the triplets, their image features, the dataset the loader reads, its
    worker count, and the images ``--skip-bad-images`` left out."""

    train_set: Dataset
    images: FrozenImages
    data: Dataset
    workers: int
    skipped: list[str]


def train_triplets(args: argparse.Namespace, root: Path, image_encoder: nn.Module, device: torch.device,
                   batch_size: int = EXTRACT_BATCH_SIZE) -> TrainData:
    """The train triplets and their image features, for both training stages.

    By default the images the train triplets use (not every image of the split) are encoded once (``batch_size``
    at a time) into a table and the loader yields table rows (``TripletRows``) without workers;
    ``--no-feature-cache`` loads the images and encodes them at every step in chunks of ``batch_size``, as the
    original. With ``--skip-bad-images`` triplets with an unreadable image are left out first.
    """
    preprocess = preprocess_from_args(args)
    train_set = relative_dataset(args.dataset, root, "train", preprocess, args.prompt_mode)
    skipped = skip_bad_triplets(train_set, max(1, args.num_workers)) if getattr(args, "skip_bad_images", False) \
        else []
    if args.no_feature_cache:
        return TrainData(train_set, FrozenImages(image_encoder, device, chunk_size=batch_size), train_set,
                         args.num_workers, skipped)
    names = TripletRows(train_set, {}).used_images()
    subset = hashlib.sha1("\n".join(names).encode()).hexdigest()
    table, encoded = encode_image_table(image_encoder, NamedImages(train_set, names, preprocess), device, args,
                                        batch_size=batch_size, root=str(root), split="train", images=subset)
    rows = TripletRows(train_set, {image: row for row, image in enumerate(encoded)})
    return TrainData(train_set, FrozenImages(image_encoder, device, table), rows, 0, skipped)


# ------------------------------------------------------------------------------------------------------- evaluation


def build_query_sets(name: str, split: str, root: Path, image_encoder: nn.Module, device: torch.device,
                     args: argparse.Namespace) -> list[QuerySet]:
    """Gallery features (computed once, collective) and marked queries of a split (``common.cir``'s query sets)."""
    preprocess = preprocess_from_args(args)

    def encode_gallery(dress_types: Sequence[str]) -> tuple[torch.Tensor, list[str]]:
        gallery = classic_dataset(name, root, split, preprocess, dress_types or FIQ_DRESS_TYPES)
        return encode_image_table(image_encoder, gallery, device, args, root=str(root), split=split,
                                  dress_types=tuple(dress_types))

    return cir_evaluation.build_query_sets(name, split, encode_gallery, lambda dress_types: relative_dataset(
        name, root, split, preprocess, args.prompt_mode, dress_types or FIQ_DRESS_TYPES))
