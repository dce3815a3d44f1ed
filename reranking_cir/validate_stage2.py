"""Re-rank a stage-1 top-K file with a stage-2 model and report the metrics (``src/validate_stage2.py``).

    python reranking_cir/validate_stage2.py --dataset CIRR --stage1-path <stage-1 run> --stage2-path <stage-2 run> \\
        --top-k-path <cirr_top_200_val.pt or BLIP_stageI_b512_2e-5_cos10> --k 50

Only the first K candidates of each query change order; recalls are measured on the final list: the re-ranked top K,
then stage 1's ranks K+1.. from the top-K file (so R@k for k >= K equals stage 1's; the original measured every
recall on the K re-ranked columns, so R@50 with K = 20 was R@20). The file must hold the stage-1 top 50 per query,
or the whole ranking. ``--save-labels PATH`` writes the re-ordered label tensor (bool [N, K], the input of
plot_ranking_delta.py; FashionIQ: ``DTYPE`` in PATH becomes each category). Candidate keys/values are computed once
per image (``--kv-reuse``, default) unless ``--no-kv-reuse`` asks for the original per-query forwards.
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
from common.io import atomic_torch_save, atomic_write_json, check_writable_root
from common.paper_numbers import note_metrics
from common.report.args import ReportOptions, add_report_args, report_options
from common.runtime import run_main
from reranking_cir.args import DATASET_HELP, add_rerank_args, dataset_name
from reranking_cir.data import build_query_sets, gallery_tokens_for_stage2
from reranking_cir.models import build_models, resolve_stage_path
from reranking_cir.paths import DTYPE
from reranking_cir.stage2_reranking import Reranked, load_set_topk, rerank, stage2_metrics
from reranking_cir.validate import print_metrics


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=dataset_name, required=True, help=DATASET_HELP)
    add_rerank_args(parser, "stage-1 top-K file of the val split, or the alias BLIP_stageI_b512_2e-5_cos10 (CIRR) / "
                            "BLIP_stageI_b512_2e-5_cos20 (FashionIQ); DTYPE stands for the FashionIQ category")
    parser.add_argument("--save-labels", default=None, metavar="PATH",
                        help="write the re-ordered top-K labels (bool [N, K]) to PATH (FashionIQ: DTYPE in PATH is "
                             "replaced by the category, else _<category> is added before the suffix)")
    add_metrics_json(parser, "next to the stage-2 checkpoint, <checkpoint>_stage2_<fiq|cirr>_k<K>.json")
    add_report_args(parser, select_note="; unused here: the queries whose target moved most are shown")
    return parser


def labels_path(path: str, dress_type: str | None) -> Path:
    """``--save-labels`` for one FashionIQ category (or CIRR)."""
    if dress_type is None:
        return Path(path)
    if DTYPE in path:
        return Path(path.replace(DTYPE, dress_type))
    file = Path(path)
    return file.with_name(f"{file.stem}_{dress_type}{file.suffix}")


def write_report(options: ReportOptions, args: argparse.Namespace, results: list[Reranked]) -> None:
    """``--report``: stage-1 and re-ranked top-k of the queries whose target moved most."""
    from common.report.rerank import write_rerank_report

    write_rerank_report(options, f"Re-ranking stage 2 (K = {args.k}), {args.dataset} val", args.dataset,
                        dataset_root(args.dataset, args.data_root), "val", [r.query_set for r in results],
                        [r.topk.sorted_index_names for r in results], [r.scores for r in results])


def main(argv: list[str] | None = None) -> dict[str, float] | None:
    args = build_parser().parse_args(argv)
    dist = setup_runtime(args)
    stage2_path = resolve_stage_path(args.stage2_path, args.dataset, args)
    path = metrics_json_path(args.metrics_json, (stage2_path,), f"stage2_{SHORT_NAMES[args.dataset]}_k{args.k}")
    check_writable_root(path.parent, "--metrics-json")
    if args.save_labels:
        check_writable_root(Path(args.save_labels).parent, "--save-labels")
    report = report_options(args)
    models = build_models(args, dist.device, resolve_stage_path(args.stage1_path, args.dataset, args), stage2=True,
                          stage2_path=stage2_path)
    query_sets = build_query_sets(args, args.dataset, "val", models.stage1.visual_encoder, dist.device)
    results = []
    for query_set in query_sets:
        topk = load_set_topk(args, query_set, args.top_k_path, args.dataset, "val", args.k)
        candidates = gallery_tokens_for_stage2(models, query_set, args.dataset, "val", args, dist.device)
        results.append(rerank(models, query_set, topk, args.k, args, candidates))
    metrics = None
    if dist.is_main:
        metrics = stage2_metrics(results)
        print_metrics(metrics)
        atomic_write_json(metrics, path, indent=2)
        print(f"metrics written to {path}")
        note_metrics(args.dataset, "val", metrics, path)
        if report is not None:
            write_report(report, args, results)
        if args.save_labels:
            for result in results:
                dress_type = None if args.dataset == "cirr" else result.query_set.name
                file = atomic_torch_save(result.labels.clone(), labels_path(args.save_labels, dress_type))
                print(f"re-ordered labels {tuple(result.labels.shape)} written to {file}")
    cleanup()
    return metrics


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
