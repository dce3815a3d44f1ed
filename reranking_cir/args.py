"""The flags of the seven Candidate Re-ranking scripts: the original ones with their defaults (the shared CLIP4Cir
builders are ``common.cir.args``'s) and the additions of this port."""
from __future__ import annotations

import argparse

from common.args import add_blip_args, add_runtime_args
from common.blip import BLIP_URLS
from common.cir import args as cir_args
from common.cir.data import dataset_choice

DEFAULT_MED_CONFIG = "configs/med_config.json"

dataset_name = dataset_choice("cirr", "fashioniq")
"""``--dataset``: CIRR or FashionIQ, case-insensitive -> ``'cirr'`` / ``'fashioniq'``."""
DATASET_HELP = "'CIRR' or 'fashionIQ', in any letter case (cirr, FashionIQ, FASHIONIQ, ... are the same)"


def add_image_args(parser: argparse.ArgumentParser) -> None:
    """The original ``--target-ratio`` and ``--transform``."""
    cir_args.add_image_args(parser, "image preprocessing (default targetpad; squarepad works here, unlike the "
                                    "original evaluation scripts)")


def add_port_args(parser: argparse.ArgumentParser, num_workers: int = 8) -> None:
    """Our additions shared by every script; all default to the original behaviour and files."""
    group = cir_args.add_port_group(parser)
    cir_args.add_num_workers(group, num_workers, f"DataLoader worker processes (default {num_workers})",
                             underscore_first=True)
    cir_args.add_data_root(group)
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


def add_rerank_args(parser: argparse.ArgumentParser, top_k_help: str) -> None:
    """The flags the two stage-2 scripts share: both checkpoints, preprocessing, the stage-1 top-K and K, the
    stage-2 scoring and our additions."""
    add_stage_path_args(parser, (1, 2))
    add_image_args(parser)
    parser.add_argument("--top-k-path", required=True, help=top_k_help)
    parser.add_argument("--k", type=int, default=50, help="candidates re-ranked per query, K (default 50)")
    add_stage2_eval_args(parser)
    add_port_args(parser)
