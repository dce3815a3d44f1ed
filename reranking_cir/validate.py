"""Validate a stage-1 model on FashionIQ or CIRR and optionally write its top-K files (``src/validate.py``).

    python reranking_cir/validate.py --dataset CIRR --stage1-path <stage-1 run> --save-topk --k 200

Prints the original metrics (and R@50..R@500), writes them as JSON (``--metrics-json``) and with ``--save-topk`` the
top-K files ``cirr_top_{k}_{split}.pt`` / ``fiq_top_{k}_{split}_{dress type}.pt`` in the stage-1 run folder (next to
its ``saved_models/``), in the original pickled layout. Without ``--stage1-path`` the pre-trained BLIP is evaluated.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.args import setup_runtime
from common.cir.args import SHORT_NAMES, add_metrics_json
from common.cir.data import dataset_root
from common.cir.evaluation import metrics_json_path
from common.dist import cleanup
from common.io import atomic_write_json, check_writable_root
from common.report.args import add_report_args, cir_report_hook, report_options
from common.run_record import note_output
from common.runtime import run_main
from reranking_cir.args import DATASET_HELP, add_image_args, add_port_args, dataset_name
from reranking_cir.data import build_query_sets
from reranking_cir.models import build_models, resolve_stage_path
from reranking_cir.paths import stage1_run_dir, topk_file_name
from reranking_cir.stage1_ranking import print_wide_recalls, stage1_metrics, stage1_scores, stage1_topk
from reranking_cir.topk import save_topk


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=dataset_name, required=True, help=DATASET_HELP)
    parser.add_argument("--stage1-path", default=None,
                        help="stage-1 run folder or .pt file ({'epoch', 'BLIP_Retrieval', ...}); relative paths are "
                             "under --models-root (default: the pre-trained BLIP, not fine-tuned)")
    add_image_args(parser)
    parser.add_argument("--train", action="store_true", help="evaluate (and save top-K of) the train split")
    parser.add_argument("--save-topk", action="store_true", help="write the top-K file(s) of the split")
    parser.add_argument("--k", type=int, default=200, help="columns kept in the top-K file (default 200)")
    add_port_args(parser)
    parser.add_argument("--topk-dir", default=None,
                        help="where the top-K files go (default: the stage-1 run folder, as the original; "
                             "required without --stage1-path)")
    add_metrics_json(parser, "next to the stage-1 checkpoint, or the pre-trained BLIP file, "
                             "<checkpoint>_stage1_<fiq|cirr>_<split>.json")
    add_report_args(parser)
    return parser


def print_metrics(metrics: dict[str, float]) -> None:
    """The metric dict, one ``key = value`` per line as the original prints it (rounded to two decimals)."""
    for key, value in metrics.items():
        print(f"{key} = {value:.2f}")


def main(argv: list[str] | None = None) -> dict[str, float] | None:
    args = build_parser().parse_args(argv)
    dist = setup_runtime(args)
    split = "train" if args.train else "val"
    stage1_path = resolve_stage_path(args.stage1_path, args.dataset, args)
    if args.save_topk and stage1_path is None and args.topk_dir is None:
        raise ValueError("--save-topk without --stage1-path needs --topk-dir")
    path = metrics_json_path(args.metrics_json, (stage1_path, args.blip_pretrained_path),
                             f"stage1_{SHORT_NAMES[args.dataset]}_{split}")
    check_writable_root(path.parent, "--metrics-json")
    if args.save_topk:
        folder = Path(args.topk_dir) if args.topk_dir else stage1_run_dir(stage1_path)
        check_writable_root(folder, "--topk-dir" if args.topk_dir else "--save-topk (the stage-1 run folder; "
                                                                       "--topk-dir picks another)")
    report = cir_report_hook(report_options(args), f"Re-ranking stage 1, {args.dataset} {split}", args.dataset,
                             dataset_root(args.dataset, args.data_root), split)
    models = build_models(args, dist.device, stage1_path)
    query_sets = build_query_sets(args, args.dataset, split, models.stage1.visual_encoder, dist.device)
    scores = [stage1_scores(models, query_set, args) for query_set in query_sets]
    metrics = None
    if dist.is_main:
        metrics = stage1_metrics(query_sets, scores)
        print_metrics(metrics)
        atomic_write_json(metrics, path, indent=2)
        print(f"metrics written to {path}")
        note_output(path.parent)
        if report is not None:
            report(query_sets, scores)
        if args.save_topk:
            for query_set, set_scores in zip(query_sets, scores):
                print_wide_recalls(query_set, set_scores)
                topk = stage1_topk(query_set, set_scores, split, args.k)
                dress_type = None if args.dataset == "cirr" else query_set.name
                file = save_topk(topk, folder / topk_file_name(args.dataset, args.k, split, dress_type))
                print(f"top-{args.k} file written to {file}")
    cleanup()
    return metrics


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
