"""Validate MLCL checkpoints on FashionIQ, Shoes or CIRR val (the CLIP4Cir validation CLI, which MLCL removed).

    python mlcl/validate.py --dataset Shoes --combining-function combiner --clip-model-name RN50x4 \\
        --clip-model-path tuned_clip_best.pt --combiner-path combiner_best.pt

FashionIQ: R@10 / R@50 per category and their averages (reference kept in the gallery). Shoes: R@1/10/50 with the
reference excluded and their mean. CIRR: R@1/5/10/50 (reference excluded), R_s@1/2/3 among the group members and the
means (the geometric mean is 0 when a recall is 0). Prints the metrics and writes them as JSON next to the checkpoint
evaluated (or ``--metrics-json``).

Captions longer than CLIP's 77 tokens are truncated with a warning (the original raised an error).
"""
from __future__ import annotations

import argparse
import sys

from common.args import setup_runtime
from common.cir.args import add_metrics_json
from common.cir.evaluation import composed_metrics_path, validate_composed
from common.dist import cleanup
from common.io import check_writable_root
from common.report.args import add_report_args, cir_report_hook, report_options
from common.runtime import run_main
from mlcl.args import add_evaluation_args, add_port_args, check_cache_dir, data_root, dataset_name
from mlcl.data import query_sets
from mlcl.models import ImageEncoder, TextEncoder, evaluation_models

SHORT_NAMES = {"fashioniq": "fiq", "shoes": "shoes", "cirr": "cirr"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=dataset_name, required=True,
                        help="'FashionIQ', 'Shoes' or 'CIRR' (case-insensitive)")
    add_evaluation_args(parser)
    add_port_args(parser)
    add_metrics_json(parser, "next to the evaluated checkpoint, "
                             "<checkpoint>_val_<fiq|shoes|cirr>_<combining-function>.json")
    add_report_args(parser)
    return parser


def main(argv: list[str] | None = None) -> dict[str, float] | None:
    args = build_parser().parse_args(argv)
    dist = setup_runtime(args)
    path = composed_metrics_path(args, (args.clip_model_path, args.clip_model_name), SHORT_NAMES[args.dataset])
    check_writable_root(path.parent, "--metrics-json")
    check_cache_dir(args)
    report = cir_report_hook(report_options(args), f"MLCL validation, {args.dataset} val", args.dataset,
                             data_root(args, args.dataset))
    model, info, combine = evaluation_models(args, dist.device)
    sets = query_sets(args, args.dataset, "val", ImageEncoder(model, dist.device), dist.device,
                      info["input_resolution"], args.clip_model_path)
    metrics = validate_composed(args.dataset, sets, TextEncoder(model, dist.device), combine, path, dist.is_main,
                                report)
    cleanup()
    return metrics


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
