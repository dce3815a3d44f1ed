"""Command-line flags shared by the paper scripts, defined once.

Each paper script builds its own parser with the original flags and defaults, then adds these groups. Flags that
the original scripts already had keep their spelling there; these are our additions and all default to the
original behaviour.
"""
from __future__ import annotations

import argparse
import dataclasses

from common.dist import DistInfo, init_distributed
from common.io import MalformedFileError, read_json
from common.run_record import note_args
from common.runtime import seed_everything


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's line breaks and appends ``(default: X)`` to every optional flag whose help does not
    state its default already."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or action.required or action.default is argparse.SUPPRESS
                or "default" in text.lower()):
            return text
        return f"{text} (default: %(default)s)"


def add_runtime_args(parser: argparse.ArgumentParser, seed: int = 0,
                     tokenizer: bool = True) -> argparse.ArgumentParser:
    """--device, --seed, --no-amp, --allow-download, --trust-checkpoints, and --tokenizer (BERT's, for BLIP scripts;
    ``tokenizer=False`` leaves it out, e.g. for CLIP, which has its own BPE tokenizer)."""
    group = parser.add_argument_group("runtime (shared by every script)")
    group.add_argument("--device", default=None,
                       help="torch device, e.g. cpu or cuda:0 (default: cuda if available, else cpu; "
                            "under torchrun each process uses cuda:LOCAL_RANK)")
    group.add_argument("--seed", type=int, default=seed, help=f"seed for random, numpy and torch (default {seed})")
    group.add_argument("--no-amp", action="store_true",
                       help="disable mixed precision on CUDA (CPU always runs in full precision)")
    group.add_argument("--allow-download", action="store_true",
                       help="allow fetching weights given as URLs or official names (checked against their hashes)")
    group.add_argument("--trust-checkpoints", action="store_true",
                       help="allow loading checkpoints that pickle non-tensor objects (weights_only=False)")
    if tokenizer:
        group.add_argument("--tokenizer", default=None,
                           help="BERT tokenizer: a folder with vocab.txt or the file itself (default: "
                                "$BLIP_TOKENIZER_DIR, then the local Hugging Face cache of bert-base-uncased)")
    return parser


def add_comet_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The original --api-key / --workspace / --experiment-name Comet flags."""
    parser.add_argument("--api-key", type=str, default=None,
                        help="Comet api key (default: none, no Comet logging; Comet logs only with a workspace too)")
    parser.add_argument("--workspace", type=str, default=None, help="Comet workspace (default: none)")
    parser.add_argument("--experiment-name", type=str, default=None,
                        help="Comet experiment name (default: Comet's own)")
    return parser


def add_output_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """--output-root, --run-name, --resume, --no-resume-state, --save-every-steps, --save-every-minutes for
    training scripts."""
    group = parser.add_argument_group("outputs and resume")
    group.add_argument("--output-root", default=".",
                       help="folder that receives models/ and submission/ (default: the current folder, as upstream)")
    group.add_argument("--run-name", default=None,
                       help="run folder name under <output-root>/models; if that folder exists, _1, _2... is appended "
                            "and a new run starts there (continue a run with --resume) (default: the upstream "
                            "timestamped name)")
    group.add_argument("--resume", default=None, metavar="RUN_DIR|auto",
                       help="continue an interrupted run from RUN_DIR/resume.pt, skipping finished epochs and steps. "
                            "'auto' continues the newest unfinished run folder of this script with the same "
                            "settings under the output root, else starts a new run (safe in a job script that a "
                            "scheduler or torchrun --max-restarts relaunches). Every flag "
                            "that changes the result (dataset, model and checkpoint paths, batch size, rates, "
                            "schedule, loss weights...) must equal the run's; the script lists any that differ and "
                            "stops before touching the folder. These may differ: --num-epochs (a larger value extends "
                            "a finished run), the data paths (--data-root and the per-dataset roots, --tokenizer, "
                            "--cache-dir, --clip-download-root), --device, --num-workers, --no-amp, the Comet flags, "
                            "--output-root, --run-name, --allow-download, --trust-checkpoints, --no-resume-state, "
                            "--save-every-steps, --save-every-minutes. A "
                            "finished run exits without writing; a folder another process trains into is refused "
                            "(default: a new run folder)")
    group.add_argument("--no-resume-state", action="store_true",
                       help="do not write RUN_DIR/resume.pt (by default it is rewritten after every epoch and is as "
                            "large as the model plus its optimizer state); such a run cannot be resumed")
    group.add_argument("--save-every-steps", type=_positive_int, default=None, metavar="N",
                       help="also rewrite resume.pt inside an epoch every N batches (with every process's data "
                            "order, RNG states and partial loss), so that --resume continues at the next step "
                            "(default: only after each epoch)")
    group.add_argument("--save-every-minutes", type=_positive_float, default=None, metavar="M",
                       help="also rewrite resume.pt inside an epoch when M minutes have passed since the last save "
                            "(default: only after each epoch)")
    return parser


def _positive_int(text: str) -> int:
    value = int(text) if text.strip().isdigit() else 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def setup_runtime(args: argparse.Namespace) -> DistInfo:
    """Choose the device once, join torchrun's process group if any, and seed every library (same seed on all ranks)."""
    info = init_distributed(args.device)
    seed_everything(args.seed)
    note_args(args, info.device, info.world_size)
    return info


def vit_config_from_arg(value: str):
    """A BLIP ``ViTConfig`` from a preset name (base, large, tiny) or a JSON file of its fields."""
    from common.blip.config import ViTConfig

    if value.endswith(".json"):
        fields = read_json(value, "a JSON object of ViTConfig fields (patch_size, width, depth, heads, ...)")
        known = {field.name for field in dataclasses.fields(ViTConfig)}
        unknown = sorted(set(fields) - known)
        if unknown:
            raise MalformedFileError(f"{value}: unknown ViT config keys {unknown}; expected some of {sorted(known)}")
        return ViTConfig(**fields)
    return ViTConfig.preset(value)


def add_blip_args(parser: argparse.ArgumentParser, vit_default: str = "base") -> argparse.ArgumentParser:
    """--vit-config: the BLIP vision transformer size."""
    parser.add_argument("--vit-config", default=vit_default,
                        help=f"BLIP ViT size: a preset (base, large, tiny) or a JSON file of ViTConfig fields "
                             f"(default {vit_default}, as in the paper)")
    return parser
