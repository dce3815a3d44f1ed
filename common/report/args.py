"""The report flags shared by the evaluation scripts, defined once, and the check of ``--report DIR``.

Light on purpose: nothing here imports torch or PIL, so a script run without ``--report`` pays nothing."""
from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from common.errors import InputError
from common.io import check_writable_root

SELECTIONS = ("best", "worst", "random")


class ReportDirError(InputError, NotADirectoryError):
    """``--report DIR`` that names a file, or sits below one."""


@dataclass(frozen=True)
class ReportOptions:
    """What a report shows: ``queries`` examples picked by ``select`` (seeded by ``seed``), ``top_k`` results each."""

    folder: Path
    queries: int = 12
    select: tuple[str, ...] = SELECTIONS
    top_k: int = 5
    seed: int = 0


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number


def parse_selection(value: str) -> tuple[str, ...]:
    """``best,worst,random`` (any non-empty subset, any order) as a tuple."""
    parts = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = [part for part in parts if part not in SELECTIONS]
    if not parts or unknown:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(SELECTIONS)}, got {value!r}")
    return tuple(dict.fromkeys(parts))


def add_report_args(parser: argparse.ArgumentParser, select_note: str = "") -> None:
    """``--report DIR``, ``--report-queries N``, ``--report-select`` and ``--report-top-k`` in their own help group;
    ``select_note`` says how this script picks its queries when it differs."""
    group = parser.add_argument_group("retrieval report")
    group.add_argument("--report", default=None, metavar="DIR",
                       help="write DIR/index.html (self-contained, opens from disk) and DIR/grid.png showing what "
                            "example queries retrieved, from the scores this run computed (default: no report)")
    group.add_argument("--report-queries", type=_positive, default=12, metavar="N",
                       help="queries shown in the report (default 12)")
    group.add_argument("--report-select", type=parse_selection, default=SELECTIONS, metavar="WHICH",
                       help="which queries: a comma-separated subset of best,worst,random, N shared between them; "
                            f"random is seeded by --seed (default best,worst,random){select_note}")
    group.add_argument("--report-top-k", type=_positive, default=5, metavar="K",
                       help="results shown per query (default 5)")


def check_report_dir(folder: str | os.PathLike) -> Path:
    """``folder`` as a Path, or a ``ReportDirError`` when it (or a folder above it) is a file or cannot be written."""
    try:
        check_writable_root(folder, "--report")
    except (NotADirectoryError, PermissionError) as error:
        raise ReportDirError(str(error)) from None
    return Path(folder)


def report_options(args: argparse.Namespace) -> ReportOptions | None:
    """The options of ``--report`` (checked), or None without it."""
    if args.report is None:
        return None
    return ReportOptions(check_report_dir(args.report), args.report_queries, tuple(args.report_select),
                         args.report_top_k, args.seed)


def cir_report_hook(options: ReportOptions | None, title: str, dataset: str, root: Path, split: str = "val"):
    """The ``report`` argument of ``validate_composed``: writes the CIR report of the query sets and scores it is
    given (the report code is imported only then); None without ``--report``."""
    if options is None:
        return None

    def write(query_sets, scores) -> Path:
        from common.report.cir import write_cir_report

        return write_cir_report(options, title, dataset, root, split, query_sets, scores)

    return write
