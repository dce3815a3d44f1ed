"""CIRR test1 submission files of a stage-1 model, and its test1 top-K file (``src/cirr_test_submission.py``).

    python reranking_cir/cirr_test_submission.py --submission-name stage1_0 --stage1-path <stage-1 run> \\
        --save-topk --k 50

Writes ``<output-root>/submission/CIRR/recall_submission_<name>.json`` (top 50 without the reference) and
``recall_subset_submission_<name>.json`` (top 3 of the group members), checks both, and with ``--save-topk``
writes ``cirr_top_{k}_test1.pt`` into the stage-1 run folder (the input of cirr_test_submission_stage2.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.args import setup_runtime
from common.cirr_submission import add_submission_args, submission_folder, write_checked_submission
from common.dist import cleanup
from common.io import check_writable_root
from common.metrics.cir import cirr_rankings
from common.runtime import run_main
from reranking_cir.args import add_image_args, add_port_args, add_stage_path_args
from reranking_cir.data import build_query_sets
from reranking_cir.models import build_models, resolve_stage_path
from reranking_cir.paths import stage1_run_dir, topk_file_name
from reranking_cir.stage1_ranking import stage1_scores, stage1_topk
from reranking_cir.topk import save_topk


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_submission_args(parser)
    add_stage_path_args(parser, (1,))
    add_image_args(parser)
    parser.add_argument("--save-topk", action="store_true", help="also write the test1 top-K file")
    parser.add_argument("--k", type=int, default=50, help="columns of the test1 top-K file (default 50)")
    add_port_args(parser)
    return parser


def main(argv: list[str] | None = None) -> tuple[Path, Path] | None:
    args = build_parser().parse_args(argv)
    dist = setup_runtime(args)
    stage1_path = resolve_stage_path(args.stage1_path, "cirr", args)
    folder = submission_folder(args.output_root, args.submission_name)
    topk_path = stage1_run_dir(stage1_path) / topk_file_name("cirr", args.k, "test1")
    if args.save_topk:
        check_writable_root(topk_path.parent, "--save-topk")
    models = build_models(args, dist.device, stage1_path)
    query_set, = build_query_sets(args, "cirr", "test1", models.stage1.visual_encoder, dist.device)
    scores = stage1_scores(models, query_set, args)
    files = None
    if dist.is_main:
        recall, subset = cirr_rankings(scores, query_set.reference_idx, query_set.members_idx, query_set.gallery_names)
        files = write_checked_submission(folder, args.submission_name, query_set.pairids, recall, subset,
                                         min(50, len(query_set.gallery_names) - 1))
        if args.save_topk:
            topk = stage1_topk(query_set, scores, "test1", args.k)
            print(f"top-{args.k} file written to {save_topk(topk, topk_path)}")
    cleanup()
    return files


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
