"""CIRR test1 submission files of the re-ranked stage-1 top-K (``src/cirr_test_submission_stage2.py``).

    python reranking_cir/cirr_test_submission_stage2.py --submission-name stage2_0 --stage1-path <stage-1 run> \\
        --stage2-path <stage-2 run> --top-k-path <cirr_top_50_test1.pt or BLIP_stageI_b512_2e-5_cos10> --k 50

Each recall list is the re-ranked top K followed by stage-1 ranks K+1.. (so every list has 50 names); each subset
list is the 5 non-reference group members in stage-2 order, first 3. Files go to ``<output-root>/submission/CIRR/``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.args import setup_runtime
from common.cirr_submission import add_submission_args, submission_folder, write_checked_submission
from common.dist import cleanup
from common.runtime import run_main
from reranking_cir.args import add_rerank_args
from reranking_cir.data import build_query_sets, gallery_tokens_for_stage2
from reranking_cir.models import build_models, resolve_stage_path
from reranking_cir.rerank import rerank_order, rerank_topk
from reranking_cir.stage1_ranking import non_reference_members
from reranking_cir.stage2_reranking import load_set_topk, rerank

LIST_LENGTH = 50


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_submission_args(parser)
    add_rerank_args(parser, "stage-1 top-K file of test1 (cirr_test_submission.py --save-topk), or the alias "
                            "BLIP_stageI_b512_2e-5_cos10 (models/stage1/CIRR/cirr_top_200_test1.pt)")
    return parser


def main(argv: list[str] | None = None) -> tuple[Path, Path] | None:
    args = build_parser().parse_args(argv)
    dist = setup_runtime(args)
    folder = submission_folder(args.output_root, args.submission_name)
    models = build_models(args, dist.device, resolve_stage_path(args.stage1_path, "cirr", args), stage2=True,
                          stage2_path=resolve_stage_path(args.stage2_path, "cirr", args))
    query_set, = build_query_sets(args, "cirr", "test1", models.stage1.visual_encoder, dist.device)
    topk = load_set_topk(args, query_set, args.top_k_path, "cirr", "test1", args.k)
    result = rerank(models, query_set, topk, args.k, args,
                    gallery_tokens_for_stage2(models, query_set, "cirr", "test1", args, dist.device))
    files = None
    if dist.is_main:
        names = query_set.gallery_names
        ranking = rerank_topk(topk.index_rows(topk.width), result.scores)[:, :LIST_LENGTH]
        members = non_reference_members(query_set)
        subset = members.gather(1, rerank_order(result.group_scores))[:, :3]
        recall = [[names[i] for i in row] for row in ranking.tolist()]
        recall_subset = [[names[i] for i in row] for row in subset.tolist()]
        files = write_checked_submission(folder, args.submission_name, query_set.pairids, recall, recall_subset,
                                         min(LIST_LENGTH, topk.width))
    cleanup()
    return files


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
