"""Data doctor: check a dataset copy against what the papers used, without loading a model.

    python doctor.py --dataset fashioniq --data-root DIR [--decode] [--workers N] [--json OUT] [--missing-list FILE]
    python doctor.py --all --data-root DIR

Checks the folders and files each script expects (with the fix when one is missing), the counts per split against
the published sizes (each size's source is in the JSON report: common/doctor/counts.py, <paper>/doctor.py), and that
every listed image exists and, with --decode, decodes (in parallel). Missing and undecodable files are written to
--missing-list. --expect listed skips the comparison with the published sizes (synthetic or partial copies, e.g. the
demo's data) and checks only what the annotation files list. Exit status 0 only when every checked copy matches; 1
otherwise. Each paper's datasets are registered by its <paper>/doctor.py.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from common.args import HelpFormatter
from common.doctor import DATASETS, EXPECT, DatasetReport, check_all, check_dataset
from common.doctor.images import write_problem_list
from common.io import atomic_write_json
from common.runtime import run_main

REPO = Path(__file__).resolve().parent


def load_paper_datasets() -> tuple[str, ...]:
    """Import every ``<paper>/doctor.py`` of the repository, which registers the paper's datasets (RA-TTA's test
    sets, TCR's corruption benchmarks) with common.doctor; returns the papers. Safe to call more than once."""
    papers = tuple(sorted(path.parent.name for path in REPO.glob("*/doctor.py")))
    for paper in papers:
        importlib.import_module(f"{paper}.doctor")
    return papers


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--dataset", action="append", default=[], metavar="NAME",
                        help=f"dataset to check (repeatable, case-insensitive; none by default): {', '.join(DATASETS)}")
    parser.add_argument("--all", action="store_true",
                        help="also check every other dataset found under --data-root (absent ones are listed, "
                             "not failures)")
    parser.add_argument("--data-root", type=Path, required=True,
                        help="folder holding the datasets (e.g. fashionIQ_dataset/, cirr_dataset/, shoes/, coco/, "
                             "coco-IP/, RA-TTA's --root folders), or one dataset's own folder")
    parser.add_argument("--expect", choices=EXPECT, default="published",
                        help="published: counts must equal the papers' sizes; listed: only check that what the "
                             "annotation files list is there")
    parser.add_argument("--decode", action="store_true", help="also decode every listed image")
    parser.add_argument("--workers", type=int, default=None,
                        help="decoding threads (default: the cores this process may use)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="write the full report as JSON to OUT")
    parser.add_argument("--missing-list", type=Path, default=Path("doctor_missing.txt"), metavar="FILE",
                        help="where the missing and undecodable files are listed, one per line, when there are any "
                             "(an existing list is rewritten, empty when nothing is missing)")
    return parser


def run(args: argparse.Namespace) -> list[DatasetReport]:
    if args.all:
        return check_all(args.data_root, tuple(args.dataset), args.decode, args.workers, args.expect)
    return [check_dataset(name, args.data_root, args.decode, args.workers, args.expect) for name in args.dataset]


def main(argv: list[str] | None = None) -> int:
    load_paper_datasets()
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.dataset and not args.all:
        parser.error("give --dataset NAME or --all")
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    if not args.data_root.is_dir():
        raise FileNotFoundError(f"{args.data_root}: no such folder (--data-root)")
    reports = run(args)
    checked = [report for report in reports if report.present]
    absent = [report.name for report in reports if not report.present]
    for report in checked:
        print(report.summary())
    if absent:
        print(f"absent under {args.data_root} (not checked): {', '.join(absent)}")
    missing = [name for report in checked for name in report.missing_files]
    undecodable = [name for report in checked for name in report.undecodable]
    if missing or undecodable or args.missing_list.exists():  # an earlier run's list must not outlive its files
        write_problem_list(missing, undecodable, args.missing_list)
    if missing or undecodable:
        print(f"{len(missing):,} missing and {len(undecodable):,} undecodable files listed in {args.missing_list}")
    if args.json is not None:
        atomic_write_json([report.as_dict() for report in reports], args.json, indent=2)
    if not checked:
        print(f"no dataset found under {args.data_root}")
    return 0 if checked and all(report.ok for report in checked) else 1


if __name__ == "__main__":
    run_main(lambda argv: sys.exit(main(argv)), sys.argv[1:])
