"""CIRR test-server submission files: writer and validator.

A submission is one JSON object ``{"<pairid>": [names...], ..., "metric": ..., "version": "rc2"}`` written with
sorted keys and no indentation: ``recall_submission_<name>.json`` holds the top 50 of the reference-free ranking,
``recall_subset_submission_<name>.json`` the top 3 among the query's group members. Validate before uploading:

    python -m common.cirr_submission submission/CIRR/recall_submission_NAME.json ...
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from common.errors import InputError
from common.io import PathLike, atomic_write_json, read_json
from common.run_record import note_output

VERSION = "rc2"
LIST_LENGTH = {"recall": 50, "recall_subset": 3}
FILE_PREFIX = {"recall": "recall_submission_", "recall_subset": "recall_subset_submission_"}
SERVER_SIZE_LIMIT = 5 * 1024 * 1024


class SubmissionError(InputError, ValueError):
    """A CIRR submission that the evaluation server would reject."""


def _pairid_key(pairid: Any) -> str:
    try:
        number = int(pairid)
    except (TypeError, ValueError):
        raise SubmissionError(f"pairid {pairid!r} is not an integer") from None
    if (isinstance(pairid, float) and pairid != number) or (isinstance(pairid, str) and pairid.strip() != str(number)):
        raise SubmissionError(f"pairid {pairid!r} is not an integer")
    return str(number)


def _check_names(where: str, key: str, names: Any, max_length: int, exact: bool) -> None:
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise SubmissionError(f"{where}: entry {key} is not a list of image names")
    if (exact and len(names) != max_length) or not 0 < len(names) <= max_length:
        expected = f"exactly {max_length}" if exact else f"1 to {max_length}"
        raise SubmissionError(f"{where}: entry {key} has {len(names)} names, expected {expected}")
    if len(set(names)) != len(names):
        raise SubmissionError(f"{where}: entry {key} repeats an image name")


def _build(metric: str, rankings: Mapping[Any, Sequence[str]], where: str) -> dict[str, Any]:
    submission: dict[str, Any] = {}
    for pairid, names in rankings.items():
        key = _pairid_key(pairid)
        if key in submission:
            raise SubmissionError(f"{where}: pairid {key} given twice")
        names = list(names)
        _check_names(where, key, names, LIST_LENGTH[metric], exact=False)
        submission[key] = names
    submission.update(version=VERSION, metric=metric)
    return submission


def _check_name(name: str) -> None:
    if not name or Path(name).name != name:
        raise SubmissionError(f"submission name {name!r} must be a plain file-name part (no folders)")


def submission_folder(output_root: PathLike, name: str, folder_per_name: bool = False) -> Path:
    """The folder that receives submission ``name``: ``<output_root>/submission/CIRR/`` (``folder_per_name``:
    ``.../CIRR/<name>/``, MLCL's layout). Call it before any work: it checks that ``name`` is a plain file-name part
    and that the folder (or the nearest one above it that exists) can receive files."""
    from common.io import check_writable_root  # imported here: the validator CLI stays light

    _check_name(name)
    folder = Path(output_root) / "submission" / "CIRR"
    if folder_per_name:
        folder = folder / name
    check_writable_root(folder, "--output-root")
    return folder


def write_cirr_submission(out_dir: PathLike, name: str, recall: Mapping[Any, Sequence[str]],
                          recall_subset: Mapping[Any, Sequence[str]]) -> tuple[Path, Path]:
    """Write ``recall_submission_<name>.json`` and ``recall_subset_submission_<name>.json`` into ``out_dir``.

    ``recall`` maps pairid → up to 50 distinct names, ``recall_subset`` pairid → up to 3 (the server expects exactly
    50 and 3; smaller galleries give shorter lists). Both must cover the same pairids. Files are written atomically.
    """
    _check_name(name)
    note_output(out_dir)
    files = []
    built = {}
    for metric, rankings in (("recall", recall), ("recall_subset", recall_subset)):
        built[metric] = _build(metric, rankings, f"{metric} submission {name!r}")
    if set(built["recall"]) != set(built["recall_subset"]):
        raise SubmissionError(f"submission {name!r}: recall and recall_subset cover different pairids")
    for metric, submission in built.items():
        path = Path(out_dir) / f"{FILE_PREFIX[metric]}{name}.json"
        atomic_write_json(submission, path, sort_keys=True)
        files.append(path)
    return files[0], files[1]


def validate_cirr_submission(path: PathLike, expected_pairids: Iterable[Any] | None = None,
                             list_length: int | None = None) -> dict[str, Any]:
    """Check a submission file as the CIRR server would; returns ``{"metric", "num_queries"}``.

    Checks: a JSON object under 5 MB, ``version`` rc2, ``metric`` recall or recall_subset (and matching the file
    name prefix when it has one), canonical integer pairid keys, lists of distinct names of exactly 50 (recall) or
    3 (recall_subset) names, or ``list_length`` when given, and, with ``expected_pairids``, exactly those pairids.
    """
    path = Path(path)
    submission = read_json(path, "a CIRR submission JSON object")
    where = str(path)
    if not isinstance(submission, dict):
        raise SubmissionError(f"{where}: expected a JSON object, found a {type(submission).__name__}")
    if path.stat().st_size > SERVER_SIZE_LIMIT:
        raise SubmissionError(f"{where}: {path.stat().st_size} bytes exceeds the CIRR server's 5 MB upload limit")
    if submission.get("version") != VERSION:
        raise SubmissionError(f"{where}: version is {submission.get('version')!r}, expected {VERSION!r}")
    metric = submission.get("metric")
    if metric not in LIST_LENGTH:
        raise SubmissionError(f"{where}: metric is {metric!r}, expected one of {', '.join(LIST_LENGTH)}")
    for other, prefix in FILE_PREFIX.items():
        if path.name.startswith(prefix) and other != metric:
            raise SubmissionError(f"{where}: metric is {metric!r} but the file name says {other!r}")
    pairids = [key for key in submission if key not in ("version", "metric")]
    for key in pairids:
        if not key.isdigit() or key != str(int(key)):
            raise SubmissionError(f"{where}: key {key!r} is not a pairid (a decimal integer)")
        _check_names(where, key, submission[key], list_length or LIST_LENGTH[metric], exact=True)
    if expected_pairids is not None:
        expected = {_pairid_key(pairid) for pairid in expected_pairids}
        missing, extra = sorted(expected - set(pairids), key=int), sorted(set(pairids) - expected, key=int)
        if missing or extra:
            raise SubmissionError(f"{where}: {len(missing)} expected pairids missing (e.g. {missing[:3]}), "
                                  f"{len(extra)} unexpected (e.g. {extra[:3]})")
    return {"metric": metric, "num_queries": len(pairids)}


def add_submission_args(parser: argparse.ArgumentParser, folder_per_name: bool = False) -> None:
    """``--submission-name`` and ``--output-root`` of the CIRR test-submission scripts. The files go to
    ``<output-root>/submission/CIRR/`` (``folder_per_name``: to ``.../CIRR/<name>/``, MLCL's layout)."""
    parser.add_argument("--submission-name", required=True,
                        help="name of the submission folder and files" if folder_per_name
                        else "name part of the two submission files")
    folder = "submission/CIRR/<name>/" if folder_per_name else "submission/CIRR/"
    parser.add_argument("--output-root", default=".",
                        help=f"folder that receives {folder} (default: the current folder, as the original)")


def write_checked_submission(out_dir: PathLike, name: str, pairids: Sequence[Any], recall: Sequence[Sequence[str]],
                             recall_subset: Sequence[Sequence[str]], list_length: int) -> tuple[Path, Path]:
    """``write_cirr_submission`` of the per-query lists (``recall[i]`` and ``recall_subset[i]`` rank for
    ``pairids[i]``), then ``validate_cirr_submission`` of both files (recall lists of ``list_length`` names, subsets
    of 3), printing what each holds."""
    files = write_cirr_submission(out_dir, name, dict(zip(pairids, recall)), dict(zip(pairids, recall_subset)))
    for path, length in zip(files, (list_length, LIST_LENGTH["recall_subset"])):
        result = validate_cirr_submission(path, pairids, list_length=length)
        print(f"{path}: {result['num_queries']} queries, metric {result['metric']}")
    return files

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Validate CIRR test submission files before uploading them.")
    parser.add_argument("files", nargs="+", type=Path,
                        help="recall_submission_*.json / recall_subset_submission_*.json")
    parser.add_argument("--list-length", type=int, default=None,
                        help="expected names per pairid (default: 50 for recall, 3 for recall_subset)")
    args = parser.parse_args(argv)
    status = 0
    for file in args.files:
        try:
            result = validate_cirr_submission(file, list_length=args.list_length)
        except (OSError, ValueError) as error:
            print(f"INVALID {error}", file=sys.stderr)
            status = 1
        else:
            print(f"OK {file}: metric {result['metric']}, {result['num_queries']} queries")
    return status


if __name__ == "__main__":
    sys.exit(main())
