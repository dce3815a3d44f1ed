"""What the four Bi-BLIP4CIR scripts share: flags, BLIP encoders, datasets, frozen-feature tables, the validation
loop and checkpoint selection. One implementation serves FashionIQ and CIRR; the training epoch and the run folder
are ``common.training``'s.

Frozen features. The image encoder never trains, and in stage II the text encoder is frozen too, so their outputs
are computed once (``FrozenImages`` / ``FrozenTexts`` with a table) instead of at every step as the original does.
Both are in eval mode and preprocessing is deterministic, so the losses equal re-encoding up to float rounding
(padding lengths differ between batches); ``--no-feature-cache`` restores the original per-step encoding.
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from bi_blip4cir.combiner import Combiner
from bi_blip4cir.losses import sum_fusion
from bi_blip4cir.prompts import PROMPT_MODES, marker_hook
from common.args import add_blip_args, add_runtime_args, vit_config_from_arg
from common.blip import BlipImageEncoder, BlipTextEncoder, MedConfig, build_blip_tokenizer, load_blip_checkpoint
from common.blip.checkpoint import BLIP_SHA1
from common.data.cir import (CIRRDataset, FashionIQDataset, fiq_compositions, fiq_train_caption,
                             fiq_val_caption)
from common.data.paths import LAYOUTS, resolve_dataset_root
from common.features import checkpoint_fingerprint, extract_features
from common.io import CheckpointError, PathLike, is_url, load_torch_file, resolve_weights
from common.metrics.cir import cirr_recalls, fiq_recalls, fiq_summary, index_of
from common.runtime import get_logger
from common.training.checkpoint import load_model, save_model
from common.transforms import build_preprocess

logger = get_logger(__name__)

TEXT_ENCODER_KEY = "BLIPTextEncoder"
TEXT_MAX_LENGTH = 77
FIQ_DRESS_TYPES = ["dress", "toptee", "shirt"]
SHORT_NAMES = {"fashioniq": "fiq", "cirr": "cirr"}
DISPLAY_NAMES = {"fashioniq": "FashionIQ", "cirr": "CIRR"}
DEFAULT_MED_CONFIG = "src/blip_modules/med_config.json"
TRANSFORMS = ("targetpad", "squarepad")
EXTRACT_BATCH_SIZE = 32

Combine = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# ------------------------------------------------------------------------------------------------------------ flags


def dataset_name(value: str) -> str:
    """``--dataset``: FashionIQ or CIRR, case-insensitive -> ``'fashioniq'`` / ``'cirr'``."""
    name = value.lower()
    if name not in SHORT_NAMES:
        raise argparse.ArgumentTypeError(f"dataset should be either 'CIRR' or 'FashionIQ', got {value!r}")
    return name


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
    group.add_argument(*spellings, dest="num_workers", type=int, default=num_workers,
                       help=f"DataLoader worker processes (default {num_workers}; 4 for CIRR, 1-2 for FashionIQ "
                            "when RAM-bound, 8 for speed)")
    group.add_argument("--data-root", default=None,
                       help="folder holding fashionIQ_dataset/ and cirr_dataset/ (default: $FASHIONIQ_ROOT / "
                            "$CIRR_ROOT, then $CIR_DATA_ROOT, then $DATA_ROOT, then the current folder)")
    group.add_argument("--prompt-mode", default="upstream", choices=PROMPT_MODES,
                       help="where the [FORWARD]/[BACKWARD] markers go: 'upstream' (before every piece of the "
                            "caption split at the substring 'and', as the original) or 'prefix' (once at the start)")
    group.add_argument("--cache-dir", default=None,
                       help="folder for on-disk caches of frozen-encoder features, keyed by checkpoint hash, "
                            "split and preprocessing (default: keep them in memory only)")
    add_blip_args(parser)
    add_runtime_args(parser)


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
                        help="stage-II Combiner checkpoint ({'epoch', 'Combiner', ...}); required with combiner")
    add_combiner_dims(parser)
    parser.add_argument("--blip-model-path", default=None,
                        help="stage-I text-encoder checkpoint ({'epoch', 'BLIPTextEncoder', ...}) "
                             "(default: the pre-trained BLIP text encoder)")
    add_image_args(parser)


# ----------------------------------------------------------------------------------------------------------- models


def load_med_config(path: PathLike) -> MedConfig:
    """``--med-config-path``; the upstream default path falls back to BLIP's config shipped with ``common.blip``."""
    if Path(path).is_file():
        return MedConfig.from_json(path)
    if str(path) == DEFAULT_MED_CONFIG:
        return MedConfig.base()
    raise FileNotFoundError(f"{path}: --med-config-path not found (a BLIP med_config.json)")


def build_blip_encoders(args: argparse.Namespace, device: torch.device) -> tuple[BlipImageEncoder, BlipTextEncoder]:
    """The frozen image encoder (eval, no grad) and the text encoder, both loaded from ``--blip-pretrained-path``.

    The projection width (256 for BLIP) is read from the checkpoint's ``vision_proj``. A key missing from the
    checkpoint raises (the original dropped into pdb).
    """
    source = args.blip_pretrained_path
    sha1 = BLIP_SHA1.get(str(source).rsplit("/", 1)[-1]) if is_url(source) else None
    path = resolve_weights(source, allow_download=args.allow_download, sha1=sha1)
    payload = load_torch_file(path, trusted=args.trust_checkpoints)
    state = payload.get("model", payload) if isinstance(payload, dict) else {}
    if "vision_proj.weight" not in state:
        raise CheckpointError(f"{path}: no 'vision_proj.weight'; expected a BLIP checkpoint {{'model': state_dict}}")
    embed_dim = state["vision_proj.weight"].shape[0]
    vit = vit_config_from_arg(args.vit_config)
    med = load_med_config(args.med_config_path)
    tokenizer = build_blip_tokenizer(args.tokenizer, allow_download=args.allow_download)
    if len(tokenizer) > med.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but {args.med_config_path} sets vocab_size "
                         f"{med.vocab_size}")
    image_encoder = BlipImageEncoder(vit, args.input_dim, embed_dim=embed_dim)
    text_encoder = BlipTextEncoder(med, tokenizer, embed_dim=embed_dim, encoder_width=vit.width,
                                   max_length=TEXT_MAX_LENGTH)
    for module, prefixes in ((image_encoder, ("visual_encoder.", "vision_proj.")),
                             (text_encoder, ("text_encoder.", "text_proj."))):
        try:
            load_blip_checkpoint(module, payload, select_prefix=prefixes)
        except CheckpointError as error:
            raise CheckpointError(f"{path}: {error}") from error
    image_encoder.requires_grad_(False)
    return image_encoder.to(device).eval(), text_encoder.to(device)


def load_text_encoder(path: PathLike, text_encoder: nn.Module, trusted: bool) -> Any:
    """Load a stage-I file (``{'epoch', 'BLIPTextEncoder', ...}``, released or ours) strictly; returns its epoch."""
    return load_model(path, text_encoder, key=TEXT_ENCODER_KEY, trusted=trusted).get("epoch")


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
    load_model(args.combiner_path, combiner, trusted=args.trust_checkpoints)
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


def dataset_root(name: str, data_root: PathLike | None) -> Path:
    """``--data-root``, else the dataset's environment variables, else the current folder (the original layout)."""
    if data_root is None and not any(os.environ.get(variable) for variable in LAYOUTS[name].env):
        data_root = "."
    return resolve_dataset_root(name, data_root)


def preprocess_from_args(args: argparse.Namespace) -> Callable:
    return build_preprocess(args.transform, args.input_dim, args.target_ratio)


def relative_dataset(name: str, root: Path, split: str, preprocess: Callable, prompt_mode: str,
                     dress_types: Sequence[str] = FIQ_DRESS_TYPES) -> Dataset:
    """Triplets with the direction markers; train items carry the backward captions too."""
    hook = marker_hook(prompt_mode)
    if name == "fashioniq":
        return FashionIQDataset(root, split, dress_types, "relative", preprocess, hook, return_reverse=True)
    return CIRRDataset(root, split, "relative", preprocess, hook, return_reverse=True)


def classic_dataset(name: str, root: Path, split: str, preprocess: Callable,
                    dress_types: Sequence[str] = FIQ_DRESS_TYPES) -> Dataset:
    """(image name, image) over a split's images."""
    if name == "fashioniq":
        return FashionIQDataset(root, split, dress_types, "classic", preprocess)
    return CIRRDataset(root, split, "classic", preprocess)


def compose_captions(name: str, captions: Sequence, rng: random.Random) -> list[str]:
    """The query strings of a collated batch: FashionIQ draws one of four compositions of the two captions per
    triplet (``fiq_train_caption``); CIRR uses its caption as is."""
    if name == "fashioniq":
        return [fiq_train_caption(pair, rng) for pair in zip(*captions)]
    return list(captions)


def caption_rng(seed: int, rank: int, epoch: int) -> random.Random:
    """The generator of the FashionIQ caption draws of one epoch on one process (so a resumed run draws the same)."""
    return random.Random(f"{seed}:{rank}:{epoch}")


def possible_train_captions(dataset: Dataset) -> list[str]:
    """Every query string a training epoch can draw, forward and backward, without repeats (stage-II text table)."""
    strings: dict[str, None] = {}
    for index in range(len(dataset.triplets)):
        _, _, forward, backward = triplet_fields(dataset, index)
        for captions in (forward, backward):
            if isinstance(dataset, FashionIQDataset):
                strings.update(dict.fromkeys(fiq_compositions(captions)))
            else:
                strings[captions] = None
    return list(strings)


def triplet_fields(dataset: Dataset, index: int) -> tuple[str, str, Any, Any]:
    """(reference name, target name, forward captions, backward captions) of a train triplet, without images."""
    triplet, hook = dataset.triplets[index], dataset.caption_hook
    if isinstance(dataset, FashionIQDataset):
        captions = triplet["captions"]
        return (triplet["candidate"], triplet["target"], [hook(c, True) for c in captions],
                [hook(c, False) for c in captions])
    caption = triplet["caption"]
    return triplet["reference"], triplet["target_hard"], hook(caption, True), hook(caption, False)


class TripletRows(Dataset):
    """Train triplets as rows of an image-feature table: (reference row, target row, forward, backward captions).

    Collated exactly like the image dataset it wraps, so the two kinds of batches differ only in the image fields.
    """

    def __init__(self, dataset: Dataset, rows: dict[str, int]):
        self.dataset, self.rows = dataset, rows

    def __len__(self) -> int:
        return len(self.dataset.triplets)

    def __getitem__(self, index: int) -> tuple:
        reference, target, forward, backward = triplet_fields(self.dataset, index)
        return self.rows[reference], self.rows[target], forward, backward


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


@torch.no_grad()
def encode_texts(text_encoder: nn.Module, texts: Sequence[str], batch_size: int = EXTRACT_BATCH_SIZE) -> torch.Tensor:
    """Raw text features [S, D] in this process only, fp32."""
    return torch.cat([text_encoder(list(texts[i:i + batch_size])).float() for i in range(0, len(texts), batch_size)])


class FrozenImages:
    """Image features of a batch field: rows of a precomputed ``table``, or (``table=None``) the frozen encoder run
    on the images in chunks of ``chunk_size``, as the original does at every step."""

    def __init__(self, encoder: nn.Module, device: torch.device, table: torch.Tensor | None = None,
                 chunk_size: int = EXTRACT_BATCH_SIZE):
        self.encoder, self.device, self.table, self.chunk_size = encoder, device, table, chunk_size

    @torch.no_grad()
    def __call__(self, field: torch.Tensor) -> torch.Tensor:
        field = field.to(self.device, non_blocking=True)
        if self.table is not None:
            return self.table[field]
        return torch.cat([self.encoder(chunk) for chunk in field.split(self.chunk_size)])


class FrozenTexts:
    """Text features of a list of strings from a precomputed table, or (no table) the frozen encoder in one call."""

    def __init__(self, encoder: nn.Module, texts: Sequence[str] | None = None, table: torch.Tensor | None = None):
        self.encoder, self.table = encoder, table
        self.rows = {text: row for row, text in enumerate(texts or [])}

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        if self.table is None:
            return self.encoder(list(texts))
        return self.table[torch.tensor([self.rows[text] for text in texts], device=self.table.device)]


def train_triplets(args: argparse.Namespace, root: Path, image_encoder: nn.Module, device: torch.device,
                   batch_size: int = EXTRACT_BATCH_SIZE) -> tuple[Dataset, FrozenImages, Dataset, int]:
    """(train triplets, their image features, the dataset to load, loader workers) of both training stages.

    By default the train images are encoded once (``batch_size`` at a time) into a table and the loader yields
    table rows (``TripletRows``) without workers; ``--no-feature-cache`` loads the images and encodes them at every
    step in chunks of ``batch_size``, as the original.
    """
    preprocess = preprocess_from_args(args)
    train_set = relative_dataset(args.dataset, root, "train", preprocess, args.prompt_mode)
    if args.no_feature_cache:
        return train_set, FrozenImages(image_encoder, device, chunk_size=batch_size), train_set, args.num_workers
    table, names = encode_image_table(image_encoder, classic_dataset(args.dataset, root, "train", preprocess), device,
                                      args, batch_size=batch_size, root=str(root), split="train")
    rows = TripletRows(train_set, {image: row for row, image in enumerate(names)})
    return train_set, FrozenImages(image_encoder, device, table), rows, 0


# ------------------------------------------------------------------------------------------------------- evaluation


@dataclass
class QuerySet:
    """One evaluation split: its gallery features and its queries as gallery rows.

    ``name`` is the FashionIQ dress type or ``'cirr'``; targets are absent on CIRR test1, members on FashionIQ.
    """

    name: str
    gallery: torch.Tensor
    gallery_names: list[str]
    reference_idx: torch.Tensor
    captions: list[str]
    target_idx: torch.Tensor | None = None
    members_idx: torch.Tensor | None = None
    pairids: list[int] | None = None


def build_query_sets(name: str, split: str, root: Path, image_encoder: nn.Module, device: torch.device,
                     args: argparse.Namespace) -> list[QuerySet]:
    """Gallery features (computed once, collective) and marked queries: one set per FashionIQ dress type in the
    original order (dress, toptee, shirt), or one CIRR set. FashionIQ queries use the fixed "C1 and c2" caption."""
    preprocess = preprocess_from_args(args)
    groups = [[dress_type] for dress_type in FIQ_DRESS_TYPES] if name == "fashioniq" else [()]
    query_sets = []
    for dress_types in groups:
        gallery, names = encode_image_table(image_encoder, classic_dataset(name, root, split, preprocess, dress_types),
                                            device, args, root=str(root), split=split, dress_types=dress_types)
        queries = relative_dataset(name, root, split, preprocess, args.prompt_mode, dress_types)
        items = [queries[index] for index in range(len(queries))]
        if name == "fashioniq":
            references, targets, captions = zip(*items)
            query_sets.append(QuerySet(dress_types[0], gallery, names, index_of(references, names),
                                       [fiq_val_caption(pair) for pair in captions],
                                       target_idx=index_of(targets, names)))
        elif split == "test1":
            pairids, references, captions, members = zip(*items)
            query_sets.append(QuerySet("cirr", gallery, names, index_of(references, names), list(captions),
                                       members_idx=index_of(members, names), pairids=list(pairids)))
        else:
            references, targets, captions, members = zip(*items)
            query_sets.append(QuerySet("cirr", gallery, names, index_of(references, names), list(captions),
                                       target_idx=index_of(targets, names), members_idx=index_of(members, names)))
    return query_sets


@torch.no_grad()
def query_scores(query_set: QuerySet, text_features: torch.Tensor, combine: Combine) -> torch.Tensor:
    """[Q, N] cosine scores of the normalised compositions against the normalised gallery."""
    references = query_set.gallery[query_set.reference_idx.to(query_set.gallery.device)]
    predicted = F.normalize(combine(references, text_features.to(references.device)).float(), dim=-1)
    return predicted @ F.normalize(query_set.gallery, dim=-1).T


@torch.no_grad()
def evaluate(query_sets: Sequence[QuerySet], text_features: Sequence[torch.Tensor], combine: Combine) -> dict:
    """Validation metrics with the original keys: per-category FashionIQ recalls and averages, or the CIRR recalls
    and means. ``text_features[i]`` encodes ``query_sets[i].captions``."""
    if query_sets[0].name == "cirr":
        query_set = query_sets[0]
        scores = query_scores(query_set, text_features[0], combine).cpu()
        return cirr_recalls(scores, query_set.reference_idx, query_set.target_idx, query_set.members_idx)
    return fiq_summary({query_set.name: fiq_recalls(query_scores(query_set, features, combine).cpu(),
                                                    query_set.target_idx)
                        for query_set, features in zip(query_sets, text_features)})


# ------------------------------------------------------------------------------------------- runs and checkpoints


def best_checkpoint_names(name: str, prefix: str, fiq_best: str) -> dict[str, str]:
    """Metric -> file name of the original best checkpoints (FashionIQ: one file; CIRR: four)."""
    if name == "fashioniq":
        return {"average_recall": fiq_best}
    return {"mean(R@5+R_s@1)": f"{prefix}_mean", "arithmetic_mean": f"{prefix}_arithmetic",
            "harmonic_mean": f"{prefix}_harmonic", "geometric_mean": f"{prefix}_geometric"}


def save_validated(run_dir: Path, prefix: str, best_names: dict[str, str], best: dict[str, float], epoch: int,
                   metrics: dict[str, float], model: nn.Module, optimizer: torch.optim.Optimizer,
                   args: argparse.Namespace, key: str | None = None) -> None:
    """Update ``best`` (strictly greater wins) and write the original files: with ``--save-training``,
    ``<prefix>_last`` and either the improved best files (``--save-best``) or ``<prefix>_<epoch>``."""
    improved = [metric for metric in best_names if metrics[metric] > best.get(metric, -math.inf)]
    best.update({metric: metrics[metric] for metric in improved})
    if not args.save_training:
        return
    names = [best_names[metric] for metric in improved] if args.save_best else [f"{prefix}_{epoch}"]
    for file_name in [*names, f"{prefix}_last"]:
        save_model(file_name, epoch, model, run_dir, optimizer, key=key)
