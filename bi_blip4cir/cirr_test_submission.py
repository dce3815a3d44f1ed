"""Write the CIRR test1 submission files of a Bi-BLIP4CIR model for the CIRR evaluation server.

    python bi_blip4cir/cirr_test_submission.py --submission-name bi-blip4cir --combining-function combiner \\
        --blip-model-path tuned_blip_mean.pt --combiner-path combiner_mean.pt

Writes ``<output-root>/submission/CIRR/recall_submission_<name>.json`` (top 50 of the ranking without the reference)
and ``recall_subset_submission_<name>.json`` (top 3 among the query's group members), then checks both files.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bi_blip4cir.args import add_evaluation_args, add_port_args
from bi_blip4cir.data import build_query_sets
from bi_blip4cir.models import check_checkpoint_flags, load_evaluation_models
from common.args import setup_runtime
from common.cir.data import dataset_root
from common.cir.evaluation import query_scores
from common.cir.frozen import encode_texts
from common.cirr_submission import add_submission_args, submission_folder, write_checked_submission
from common.dist import cleanup
from common.metrics.cir import cirr_rankings
from common.runtime import run_main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_submission_args(parser)
    add_evaluation_args(parser)
    add_port_args(parser, num_workers=8)
    return parser


def main(argv: list[str] | None = None) -> tuple[Path, Path] | None:
    args = build_parser().parse_args(argv)
    dist = setup_runtime(args)
    check_checkpoint_flags(args)
    folder = submission_folder(args.output_root, args.submission_name)
    image_encoder, text_encoder, combine = load_evaluation_models(args, dist.device)
    query_set, = build_query_sets("cirr", "test1", dataset_root("cirr", args.data_root), image_encoder, dist.device,
                                  args)
    files = None
    if dist.is_main:
        scores = query_scores(query_set, encode_texts(text_encoder, query_set.captions), combine).cpu()
        recall, recall_subset = cirr_rankings(scores, query_set.reference_idx, query_set.members_idx,
                                              query_set.gallery_names)
        files = write_checked_submission(folder, args.submission_name,
                                         query_set.pairids, recall, recall_subset,
                                         min(50, len(query_set.gallery_names) - 1))
    cleanup()
    return files


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
