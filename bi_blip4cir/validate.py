"""Validate Bi-BLIP4CIR checkpoints (released or ours) on FashionIQ or CIRR val.

    python bi_blip4cir/validate.py --dataset CIRR --combining-function combiner \\
        --blip-model-path tuned_blip_mean.pt --combiner-path combiner_mean.pt

Prints the recalls as the original does and also writes them as JSON (``--metrics-json``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bi_blip4cir.engine import (SHORT_NAMES, add_evaluation_args, add_port_args, build_query_sets, dataset_name,
                                load_evaluation_models)
from common.args import setup_runtime
from common.cir.data import dataset_root
from common.cir.evaluation import evaluate_composed
from common.cir.frozen import encode_texts
from common.dist import cleanup
from common.io import atomic_write_json


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=dataset_name, required=True, help="should be either 'CIRR' or 'fashionIQ'")
    add_evaluation_args(parser)
    add_port_args(parser, num_workers=8)
    parser.add_argument("--metrics-json", default=None,
                        help="where to write the metrics (default ./validate_<fiq|cirr>_<combining-function>.json)")
    return parser


def print_metrics(name: str, metrics: dict[str, float]) -> None:
    """The original printout: FashionIQ categories in the order shirt, dress, toptee, then the two averages."""
    if name == "cirr":
        for key, value in metrics.items():
            print(f"{key} = {value}")
        return
    for dress_type in ("shirt", "dress", "toptee"):
        print(f"{dress_type}_recallat10 = {metrics[f'{dress_type}_recall_at10']}")
        print(f"{dress_type}_recallat50 = {metrics[f'{dress_type}_recall_at50']}")
    print(f"average recall10 = {metrics['average_recall_at10']}")
    print(f"average recall50 = {metrics['average_recall_at50']}")


def main(argv: list[str] | None = None) -> dict[str, float] | None:
    args = build_parser().parse_args(argv)
    dist = setup_runtime(args)
    image_encoder, text_encoder, combine = load_evaluation_models(args, dist.device)
    query_sets = build_query_sets(args.dataset, "val", dataset_root(args.dataset, args.data_root), image_encoder,
                                  dist.device, args)
    metrics = None
    if dist.is_main:
        metrics = evaluate_composed(query_sets, [encode_texts(text_encoder, s.captions) for s in query_sets], combine)
        print_metrics(args.dataset, metrics)
        path = Path(args.metrics_json or f"validate_{SHORT_NAMES[args.dataset]}_{args.combining_function}.json")
        atomic_write_json(metrics, path, indent=2)
        print(f"metrics written to {path}")
    cleanup()
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
