"""What the seven scripts share: flags, the two BLIP stages, query sets over cached ViT tokens, stage-1 scoring and
top-K files, and stage-2 re-ranking of a top-K file. FashionIQ and CIRR go through the same code.

ViT tokens of every gallery image are computed once per evaluation (fp32, as the original) and serve both the
stage-1 queries (reference tokens), the stage-1 target features (CLS) and the stage-2 candidates, when the two
stages' ViTs are equal (frozen ``model_base.pth`` in both, as upstream assumes). Otherwise stage 2's ViT encodes the
gallery again, and its tokens feed both the candidates and the references of ``z_t``, as in the original
``src/validate_stage2.py`` and in stage-2 training.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn
from transformers import BertTokenizer

from common.args import add_blip_args, add_runtime_args, vit_config_from_arg
from common.blip import BLIP_URLS, CirStage1, CirStage2, build_blip_tokenizer
from common.blip.checkpoint import read_blip_file
from common.blip.config import med_config_from_arg
from common.cir.data import (FIQ_DRESS_TYPES, classic_dataset, dataset_choice, dataset_root, relative_dataset,
                             triplet_fields)
from common.cir.evaluation import QuerySet, query_set_from_items, set_metrics
from common.dist import concat_all_gather, get_world_size, shard_range
from common.features import extract_features
from common.io import CheckpointError, PathLike
from common.metrics.cir import fiq_summary, rank_gallery, target_ranks
from common.runtime import get_logger
from common.transforms import build_preprocess
from reranking_cir.models import build_stage1, build_stage2, init_stage1, init_stage2, load_stage
from reranking_cir.paths import get_model_path, get_top_k_path
from reranking_cir.rerank import permute_labels, rerank_topk, stage2_cirr_metrics, stage2_fiq_metrics
from reranking_cir.scoring import Queries, encode_queries, stage2_scores
from reranking_cir.topk import TopK, build_topk, load_topk

logger = get_logger(__name__)

DATASETS = {"fashioniq": "fiq", "cirr": "cirr"}
DEFAULT_MED_CONFIG = "configs/med_config.json"
EXTRACT_BATCH_SIZE = 16
WIDE_KS = (50, 100, 150, 200, 300, 400, 500)

# ------------------------------------------------------------------------------------------------------------ flags


dataset_name = dataset_choice("cirr", "fashioniq")
"""``--dataset``: CIRR or FashionIQ, case-insensitive -> ``'cirr'`` / ``'fashioniq'``."""
DATASET_HELP = "'CIRR' or 'fashionIQ', in any letter case (cirr, FashionIQ, FASHIONIQ, ... are the same)"


def add_image_args(parser: argparse.ArgumentParser) -> None:
    """The original ``--target-ratio`` and ``--transform``."""
    parser.add_argument("--target-ratio", type=float, default=1.25, help="TargetPad ratio (default 1.25)")
    parser.add_argument("--transform", default="targetpad", choices=("targetpad", "squarepad"),
                        help="image preprocessing (default targetpad; squarepad works here, unlike the original "
                             "evaluation scripts)")


def add_port_args(parser: argparse.ArgumentParser, num_workers: int = 8) -> None:
    """Our additions shared by every script; all default to the original behaviour and files."""
    group = parser.add_argument_group("additions of this port")
    group.add_argument("--num_workers", "--num-workers", dest="num_workers", type=int, default=num_workers,
                       help=f"DataLoader worker processes (default {num_workers})")
    group.add_argument("--data-root", default=None,
                       help="folder holding fashionIQ_dataset/ and cirr_dataset/ (default: $FASHIONIQ_ROOT / "
                            "$CIRR_ROOT, then $CIR_DATA_ROOT, then $DATA_ROOT, then the current folder)")
    group.add_argument("--models-root", default="models",
                       help="folder that relative checkpoint paths and the top-K aliases live under (default models)")
    group.add_argument("--blip-pretrained-path", default=BLIP_URLS["model_base.pth"],
                       help="BLIP pre-trained checkpoint {'model': state_dict} that both stages start from (default "
                            "BLIP's model_base.pth URL, looked up in $VLR_WEIGHTS_DIR or ./weights/files; fetched "
                            "only with --allow-download)")
    group.add_argument("--med-config-path", default=DEFAULT_MED_CONFIG,
                       help=f"BLIP text-encoder config JSON (default {DEFAULT_MED_CONFIG}; when that file does not "
                            "exist, BLIP's med_config.json shipped with common/blip)")
    group.add_argument("--input-dim", type=int, default=384, help="image side in pixels (default 384)")
    group.add_argument("--eval-batch-size", type=int, default=32,
                       help="stage-1 queries per forward at evaluation (default 32, as the original loaders)")
    add_blip_args(parser)
    add_runtime_args(parser)


STAGE_PATH_HELP = {1: "stage-1 run folder or .pt file (key 'BLIP_Retrieval')",
                   2: "stage-2 run folder or .pt file (key 'BLIP_NLVR')"}


def add_stage_path_args(parser: argparse.ArgumentParser, stages: tuple[int, ...]) -> None:
    """The required ``--stage1-path`` / ``--stage2-path`` of the evaluation and submission scripts."""
    for stage in stages:
        parser.add_argument(f"--stage{stage}-path", required=True,
                            help=f"{STAGE_PATH_HELP[stage]}; relative paths are under --models-root")


def add_stage2_eval_args(parser: argparse.ArgumentParser) -> None:
    """How stage 2 scores its pairs (the original: one query at a time, fp32)."""
    group = parser.add_argument_group("stage-2 scoring (additions of this port)")
    group.add_argument("--kv-reuse", action=argparse.BooleanOptionalAction, default=True,
                       help="compute each candidate image's cross-attention keys/values once and score many pairs "
                            "per forward (default on; --no-kv-reuse runs the original per-query forwards)")
    group.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"),
                       help="stage-2 scoring precision; bf16 autocast applies on CUDA only (default fp32)")
    group.add_argument("--pair-batch", type=int, default=256, help="pairs per stage-2 forward (default 256)")
    group.add_argument("--image-chunk", type=int, default=32,
                       help="candidate images whose keys/values are held at once (default 32)")


# ----------------------------------------------------------------------------------------------------------- models


@dataclass
class Models:
    tokenizer: BertTokenizer
    stage1: CirStage1
    stage2: CirStage2 | None = None


def build_models(args: argparse.Namespace, device: torch.device, stage1_path: PathLike | None = None,
                 stage2: bool = False, stage2_path: PathLike | None = None) -> Models:
    """Stage 1 (and stage 2) from ``model_base.pth``, then the given checkpoints loaded strictly; eval mode."""
    tokenizer = build_blip_tokenizer(args.tokenizer, allow_download=args.allow_download)
    med = med_config_from_arg(args.med_config_path, DEFAULT_MED_CONFIG)
    if len(tokenizer) > med.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but {args.med_config_path} sets vocab_size "
                         f"{med.vocab_size}")
    vit = vit_config_from_arg(args.vit_config)
    path, payload = read_blip_file(args.blip_pretrained_path, allow_download=args.allow_download,
                                   trusted=args.trust_checkpoints)
    embed_dim = payload.get("model", payload)["vision_proj.weight"].shape[0]
    first = build_stage1(vit, med, args.input_dim, tokenizer.enc_token_id, embed_dim)
    _init(init_stage1, first, payload, path)
    if stage1_path is not None:
        epoch = load_stage(first, stage1_path, 1, args.trust_checkpoints)
        logger.info("stage 1 loaded from %s (epoch %s)", stage1_path, epoch)
    second = None
    if stage2:
        second = build_stage2(vit, med, args.input_dim, tokenizer.enc_token_id)
        report = _init(init_stage2, second, payload, path)
        logger.info("stage 2 initialised from %s: %d keys loaded, fresh: %s", path, len(report.loaded),
                    sorted({key.split(".weight")[0].split(".bias")[0] for key in report.missing}))
        if stage2_path is not None:
            epoch = load_stage(second, stage2_path, 2, args.trust_checkpoints)
            logger.info("stage 2 loaded from %s (epoch %s)", stage2_path, epoch)
        second = second.to(device).eval()
    return Models(tokenizer, first.to(device).eval(), second)


def _init(init, model: nn.Module, payload: dict, path: Path):
    try:
        return init(model, payload)
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from error


def same_vit(first: nn.Module, second: nn.Module) -> bool:
    """Whether two ViTs hold the same weights (then their gallery tokens are shared)."""
    a, b = first.state_dict(), second.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def resolve_stage_path(path: PathLike | None, dataset: str, args: argparse.Namespace) -> Path | None:
    return None if path is None else get_model_path(path, dataset, args.models_root)


# ------------------------------------------------------------------------------------------------------------- data


def preprocess_from_args(args: argparse.Namespace):
    return build_preprocess(args.transform, args.input_dim, args.target_ratio)


@torch.no_grad()
def gallery_tokens(vit: nn.Module, dataset, device: torch.device, args: argparse.Namespace,
                   desc: str = "gallery tokens") -> tuple[torch.Tensor, list[str]]:
    """ViT tokens ``[M, T, W]`` (fp32) and names of a classic dataset, sharded over processes (collective)."""
    was_training = vit.training
    vit.eval()
    tokens, names = extract_features(dataset, vit, device=device, batch_size=EXTRACT_BATCH_SIZE,
                                     num_workers=args.num_workers, key_index=0, amp=False, desc=desc)
    vit.train(was_training)
    return tokens, names


def split_items(dataset, split: str) -> list[tuple]:
    """Val/test items of a relative dataset without images; train triplets in the val item layout."""
    if split != "train":
        return [dataset[index] for index in range(len(dataset))]
    items = []
    for index in range(len(dataset.triplets)):
        reference, target, captions, _ = triplet_fields(dataset, index)
        if isinstance(captions, str):
            items.append((reference, target, captions, dataset.triplets[index]["img_set"]["members"]))
        else:
            items.append((reference, target, captions))
    return items


def build_query_sets(args: argparse.Namespace, name: str, split: str, vit: nn.Module,
                     device: torch.device) -> list[QuerySet]:
    """One query set per FashionIQ category (dress, toptee, shirt) or one CIRR set; ``gallery`` holds ViT tokens."""
    root = dataset_root(name, args.data_root)
    preprocess = preprocess_from_args(args)
    groups = [[dress_type] for dress_type in FIQ_DRESS_TYPES] if name == "fashioniq" else [[]]
    sets = []
    for dress_types in groups:
        types = dress_types or FIQ_DRESS_TYPES
        tokens, names = gallery_tokens(vit, classic_dataset(name, root, split, preprocess, types), device, args,
                                       desc=f"{dress_types[0] if dress_types else name} {split} gallery")
        items = split_items(relative_dataset(name, root, split, preprocess, dress_types=types), split)
        sets.append(query_set_from_items(dress_types[0] if dress_types else name, items, tokens, names,
                                         test=split == "test1"))
    return sets


def gallery_tokens_for_stage2(models: Models, query_set: QuerySet, name: str, split: str, args: argparse.Namespace,
                              device: torch.device) -> torch.Tensor | None:
    """None when stage 2's ViT equals stage 1's (the gallery tokens are shared), else stage 2's own tokens."""
    if same_vit(models.stage1.visual_encoder, models.stage2.visual_encoder):
        return None
    logger.info("the stage-2 ViT differs from stage 1's: encoding the %s gallery again", query_set.name)
    types = [query_set.name] if name == "fashioniq" else FIQ_DRESS_TYPES
    dataset = classic_dataset(name, dataset_root(name, args.data_root), split, preprocess_from_args(args), types)
    return gallery_tokens(models.stage2.visual_encoder, dataset, device, args, desc="stage-2 gallery tokens")[0]


def shard(query_set: QuerySet) -> range:
    """The queries of this process."""
    return shard_range(len(query_set.captions))


# ---------------------------------------------------------------------------------------------------------- stage 1


def stage1_queries(models: Models, query_set: QuerySet, rows: range, args: argparse.Namespace,
                   with_z_t: bool = False, gallery: torch.Tensor | None = None) -> Queries:
    """Stage-1 outputs of the queries ``rows`` of ``query_set``; reference tokens from ``gallery`` (default the
    query set's)."""
    gallery = query_set.gallery if gallery is None else gallery
    return encode_queries(models.stage1, models.tokenizer, lambda r: gallery[r.to(gallery.device)],
                          query_set.reference_idx[rows.start:rows.stop],
                          query_set.captions[rows.start:rows.stop], batch_size=args.eval_batch_size,
                          with_z_t=with_z_t, desc=f"{query_set.name} stage-1 queries")


@torch.no_grad()
def stage1_scores(models: Models, query_set: QuerySet, args: argparse.Namespace) -> torch.Tensor:
    """``[Q, M]`` cosine scores of every query against the gallery (queries sharded, then gathered), on CPU."""
    targets = models.stage1.target_features(query_set.gallery)
    local = stage1_queries(models, query_set, shard(query_set), args).features @ targets.T
    return concat_all_gather(local.contiguous()).cpu()


def stage1_metrics(query_sets: Sequence[QuerySet], scores: Sequence[torch.Tensor]) -> dict[str, float]:
    """The original stage-1 metric dict (FashionIQ per category + averages, or CIRR)."""
    if query_sets[0].name == "cirr":
        return set_metrics(query_sets[0], scores[0])
    return fiq_summary({qs.name: set_metrics(qs, s) for qs, s in zip(query_sets, scores)})


def stage1_ranking(query_set: QuerySet, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The stage-1 rankings ``[Q, W]`` (CIRR: reference removed, FashionIQ: kept) and, for CIRR, the 5
    non-reference members in stage-1 order ``[Q, 5]``."""
    order = rank_gallery(scores)
    if query_set.name != "cirr":
        return order, None
    references = query_set.reference_idx.unsqueeze(1)
    order = order[order != references].view(len(order), -1)
    members = non_reference_members(query_set)
    position = torch.full(scores.shape, -1, dtype=torch.long)
    position.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order).contiguous())
    return order, members.gather(1, position.gather(1, members).argsort(1))


def non_reference_members(query_set: QuerySet) -> torch.Tensor:
    """``[Q, 5]`` gallery rows of each CIRR query's group members other than its reference."""
    members, references = query_set.members_idx, query_set.reference_idx.unsqueeze(1)
    keep = members != references
    if not torch.all(keep.sum(1) == members.shape[1] - 1):
        raise ValueError("every CIRR query needs its reference exactly once among its img_set members")
    return members[keep].view(len(members), -1)


def print_wide_recalls(query_set: QuerySet, scores: torch.Tensor) -> None:
    """R@50..R@500 of the stage-1 ranking, as the original prints them before saving a top-K file."""
    if query_set.target_idx is None:
        return
    exclude = query_set.reference_idx if query_set.name == "cirr" else None
    ranks = target_ranks(scores, query_set.target_idx, exclude_idx=exclude)
    width = scores.shape[1] - (exclude is not None)
    for k in WIDE_KS:
        if k <= width:
            print(f"{query_set.name} R@{k} = {100.0 * (ranks < k).float().mean().item():.2f}")


def stage1_topk(query_set: QuerySet, scores: torch.Tensor, split: str, k: int) -> TopK:
    """The top-K file content of one query set."""
    order, group = stage1_ranking(query_set, scores)
    dress_type = None if query_set.name == "cirr" else query_set.name
    return build_topk(order, query_set.gallery_names, split, k, query_set.target_idx, group, dress_type)


# ---------------------------------------------------------------------------------------------------------- stage 2


@dataclass
class Reranked:
    """Stage-2 results of one query set over its top-K file."""

    query_set: QuerySet
    topk: TopK
    k: int
    scores: torch.Tensor
    group_scores: torch.Tensor | None

    @property
    def labels(self) -> torch.Tensor | None:
        """The first K stage-1 labels in stage-2 order (the Figure-8 label tensor)."""
        return None if self.topk.labels is None else permute_labels(self.topk.labels[:, :self.k], self.scores)

    @property
    def final_labels(self) -> torch.Tensor:
        """Labels of the final lists ``[N, W]``: the re-ranked top K, then the file's stage-1 ranks K+1..W."""
        return rerank_topk(self.topk.labels, self.scores)


def load_set_topk(args: argparse.Namespace, query_set: QuerySet, top_k_path: PathLike, dataset: str, split: str,
                  k: int) -> TopK:
    """The checked top-K file of one query set (aliases and ``DTYPE`` resolved)."""
    dress_type = None if dataset == "cirr" else query_set.name
    path = get_top_k_path(top_k_path, dataset, split == "test1", args.models_root, dress_type)
    targets = None
    if query_set.target_idx is not None:
        targets = [query_set.gallery_names[i] for i in query_set.target_idx.tolist()]
    return load_topk(path, k=k, split=split, index_names=query_set.gallery_names, n_queries=len(query_set.captions),
                     target_names=targets, dress_type=dress_type)


@torch.no_grad()
def rerank(models: Models, query_set: QuerySet, topk: TopK, k: int, args: argparse.Namespace,
           candidate_gallery: torch.Tensor | None = None) -> Reranked:
    """Stage-2 scores of each query's first ``k`` candidates (and, for CIRR, its 5 non-reference members), queries
    sharded over processes and gathered. ``candidate_gallery``: stage-2 ViT tokens when its ViT differs; they then
    serve the references of ``z_t`` too."""
    gallery = query_set.gallery if candidate_gallery is None else candidate_gallery
    candidates = topk.index_rows(k)
    if query_set.name == "cirr":
        candidates = torch.cat([candidates, non_reference_members(query_set)], dim=1)
    rows = shard(query_set)
    queries = stage1_queries(models, query_set, rows, args, with_z_t=True, gallery=gallery)
    local = stage2_scores(models.stage2, queries, candidates[rows.start:rows.stop],
                          lambda r: gallery[r.to(gallery.device)], kv_reuse=args.kv_reuse,
                          pair_batch=args.pair_batch, image_chunk=args.image_chunk, dtype=args.dtype,
                          desc=f"{query_set.name} stage-2 re-ranking")
    device = gallery.device if get_world_size() > 1 else torch.device("cpu")
    scores = concat_all_gather(local.to(device)).cpu()
    group = scores[:, k:] if query_set.name == "cirr" else None
    return Reranked(query_set, topk, k, scores[:, :k], group)


def stage2_metrics(results: Sequence[Reranked]) -> dict[str, float]:
    """The original stage-2 metric dict, measured on the final lists (re-ranked top K, then stage-1 ranks K+1..)."""
    if results[0].query_set.name == "cirr":
        result = results[0]
        group_labels = non_reference_members(result.query_set) == result.query_set.target_idx.unsqueeze(1)
        return stage2_cirr_metrics(result.final_labels, group_labels, result.group_scores)
    return stage2_fiq_metrics({result.query_set.name: result.final_labels for result in results})

