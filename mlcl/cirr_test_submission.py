"""Write the CIRR test1 submission files of an MLCL model for the CIRR evaluation server.

    python mlcl/cirr_test_submission.py --submission-name mlcl --combining-function combiner \\
        --clip-model-name RN50x4 --clip-model-path tuned_clip_best.pt --combiner-path combiner_arithmetic.pt

Writes ``<output-root>/submission/CIRR/<name>/recall_submission_<name>.json`` (top 50 of the ranking without the
reference) and ``recall_subset_submission_<name>.json`` (top 3 among the query's group members), then checks both.
``--learn_t`` is inferred from the Combiner checkpoint when not given.

Captions longer than CLIP's 77 tokens are truncated with a warning (the original raised an error).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.args import setup_runtime
from common.cir.evaluation import query_scores
from common.cir.frozen import encode_texts
from common.cirr_submission import add_submission_args, submission_folder, write_checked_submission
from common.dist import cleanup
from common.metrics.cir import cirr_rankings
from common.runtime import run_main
from mlcl.args import add_evaluation_args, add_port_args, check_cache_dir, output_root_from_env
from mlcl.data import query_sets
from mlcl.models import ImageEncoder, TextEncoder, evaluation_models


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_submission_args(parser, folder_per_name=True)
    add_evaluation_args(parser)
    add_port_args(parser)
    output_root_from_env(parser)
    return parser


def main(argv: list[str] | None = None) -> tuple[Path, Path] | None:
    args = build_parser().parse_args(argv)
    dist = setup_runtime(args)
    folder = submission_folder(args.output_root, args.submission_name, folder_per_name=True)
    check_cache_dir(args)
    model, info, combine = evaluation_models(args, dist.device)
    query_set, = query_sets(args, "cirr", "test1", ImageEncoder(model, dist.device), dist.device,
                            info["input_resolution"], args.clip_model_path)
    files = None
    if dist.is_main:
        texts = encode_texts(TextEncoder(model, dist.device), query_set.captions)
        recall, recall_subset = cirr_rankings(query_scores(query_set, texts, combine).cpu(), query_set.reference_idx,
                                              query_set.members_idx, query_set.gallery_names)
        files = write_checked_submission(folder, args.submission_name, query_set.pairids, recall, recall_subset,
                                         min(50, len(query_set.gallery_names) - 1))
    cleanup()
    return files


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
