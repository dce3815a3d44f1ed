"""Flags and set-up shared by the RA-TTA scripts (upstream's spelling and defaults, plus our optional ones)."""
from __future__ import annotations

import argparse

import torch

from common.clip import CLIP_MODELS, ClipRetrievalWrapper, load_clip
from ratta.data import IMAGENET_KEYS, STANDARD_KEYS


def script_parser(stage: int, name: str, imagenet: bool, summary: str) -> argparse.ArgumentParser:
    """The parser of ``ratta_<name>.py`` (``ratta_<name>_imagenet.py`` with ``imagenet``), described as
    'RA-TTA stage <stage> (<script>): <summary>'."""
    script = f"ratta_{name}_imagenet.py" if imagenet else f"ratta_{name}.py"
    return argparse.ArgumentParser(description=f"RA-TTA stage {stage} ({script}): {summary}")


def add_dataset_arg(parser: argparse.ArgumentParser, imagenet: bool) -> None:
    """The required ``--dataset``: an ImageNet key for the ``_imagenet`` scripts, else a standard one."""
    keys = IMAGENET_KEYS if imagenet else STANDARD_KEYS
    parser.add_argument("--dataset", type=str, required=True, help=f"one of: {' '.join(keys)}")


def add_model_args(parser: argparse.ArgumentParser, seed: int) -> argparse.ArgumentParser:
    """--net_name, --seed, --gpu, --max_threads (upstream) and --device, --weights, --allow_download,
    --download_root (ours)."""
    parser.add_argument("--net_name", type=str, default="ViT-B/16",
                        help=f"CLIP backbone, one of {', '.join(CLIP_MODELS)} (default ViT-B/16); with --weights "
                             f"any label works (it only names the outputs); '/' becomes '_' in output paths "
                             f"(ViT-B_16)")
    parser.add_argument("--seed", type=int, default=seed,
                        help=f"seed of python/numpy/torch, also the embedding sub-folder (default {seed})")
    parser.add_argument("--gpu", type=int, default=None,
                        help="CUDA device index (default: none; the device is then chosen by --device)")
    parser.add_argument("--max_threads", type=int, default=4, help="kept for compatibility; unused (default 4)")
    group = parser.add_argument_group("model and device (our additions)")
    group.add_argument("--device", default=None,
                       help="torch device, overrides --gpu (default: cuda:<gpu> with --gpu, else cuda if "
                            "available, else cpu)")
    group.add_argument("--weights", default=None,
                       help="local CLIP file to load for --net_name (default: the official file of --net_name "
                            "in --download_root)")
    group.add_argument("--allow_download", action="store_true",
                       help="download the official --net_name weights if they are not in --download_root")
    group.add_argument("--download_root", default=None, help="CLIP weights cache (default ~/.cache/clip)")
    return parser


def choose_device(args: argparse.Namespace) -> torch.device:
    """--device, else cuda:<--gpu>, else cuda if available, else cpu."""
    if args.device is not None:
        return torch.device(args.device)
    if args.gpu is not None:
        return torch.device("cuda", args.gpu)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(args: argparse.Namespace, device: torch.device) -> tuple[ClipRetrievalWrapper, dict]:
    """CLIP (fp16 on CUDA like upstream's ``clip.load``, fp32 on CPU) wrapped for unit-norm features."""
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    model, _, info = load_clip(args.weights or args.net_name, device=device, dtype=dtype,
                               allow_download=args.allow_download, download_root=args.download_root)
    return ClipRetrievalWrapper(model), info
