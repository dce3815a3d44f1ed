"""Validate Bi-BLIP4CIR checkpoints (released or ours) on FashionIQ or CIRR val.

    python bi_blip4cir/validate.py --dataset CIRR --combining-function combiner \\
        --blip-model-path tuned_blip_mean.pt --combiner-path combiner_mean.pt

Prints the recalls as the original does (rounded to two decimals) and writes them, unrounded, as JSON next to the
checkpoint it evaluated: ``<checkpoint>_val_<fiq|cirr>_<combining-function>.json`` beside ``--combiner-path`` (with
the Combiner), else beside ``--blip-model-path``, else beside ``--blip-pretrained-path``; ``--metrics-json`` chooses
the file instead.
"""
from __future__ import annotations

import argparse
import sys

from bi_blip4cir.args import add_evaluation_args, add_port_args, dataset_name
from bi_blip4cir.data import build_query_sets
from bi_blip4cir.models import check_checkpoint_flags, load_evaluation_models
from common.args import setup_runtime
from common.cir.args import SHORT_NAMES, add_metrics_json
from common.cir.data import dataset_root
from common.cir.evaluation import composed_metrics_path, validate_composed
from common.dist import cleanup
from common.io import check_writable_root
from common.report.args import add_report_args, cir_report_hook, report_options
from common.runtime import run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=dataset_name, required=True, help="should be either 'CIRR' or 'fashionIQ'")
    add_evaluation_args(parser)
    add_port_args(parser, num_workers=8)
    add_metrics_json(parser, "next to the evaluated checkpoint, <checkpoint>_val_<fiq|cirr>_<combining-function>.json")
    add_report_args(parser)
    return parser


def main(argv: list[str] | None = None) -> dict[str, float] | None:
    args = build_parser().parse_args(argv)
    dist = setup_runtime(args)
    check_checkpoint_flags(args)
    path = composed_metrics_path(args, (args.blip_model_path, args.blip_pretrained_path), SHORT_NAMES[args.dataset])
    check_writable_root(path.parent, "--metrics-json")
    root = dataset_root(args.dataset, args.data_root)
    report = cir_report_hook(report_options(args), f"Bi-BLIP4CIR validation, {args.dataset} val", args.dataset, root)
    image_encoder, text_encoder, combine = load_evaluation_models(args, dist.device)
    query_sets = build_query_sets(args.dataset, "val", root, image_encoder, dist.device, args)
    metrics = validate_composed(args.dataset, query_sets, text_encoder, combine, path, dist.is_main, report)
    cleanup()
    return metrics


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
