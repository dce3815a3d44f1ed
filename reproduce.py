"""Reproduce a paper's published numbers from the released files, in one command.

    python reproduce.py --paper bi_blip4cir --weights WEIGHTS_DIR --data-root DATA_DIR [--out DIR]
    python reproduce.py --all --weights WEIGHTS_DIR --data-root DATA_DIR

For each paper: checks the weights folder against weights/manifest.json (weights/check.py), checks each dataset
the evaluations read (the data doctor, common/doctor), then runs every evaluation of the released files listed in
the registry of published numbers (common/paper_numbers.json) with the paper's own scripts, and prints one table:
metric, paper, ours, delta, within tolerance. The table is also written as Markdown, CSV and JSON under --out,
beside each script's log. A file that is missing is listed with where to get it; that evaluation is skipped. CIRR
test1 has no public labels: the submission files are written and the table says where to upload them. Exit status 0
only when every number measured is within its tolerance, nothing was missing or failed, and both checks passed.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.io import atomic_write_json, atomic_write_text, read_json
from common.run_record import note_args, note_output
from common.runtime import run_main
from common.paper_numbers import (REGISTRY_ENV, Row, compare, format_csv, format_markdown, format_text,
                                  load_registry, paper_results, registry_path)
from weights.check import MANIFEST, check_weights, default_weights_dir, failures, format_table, load_manifest

REPO = Path(__file__).resolve().parent
CIRR_SERVER = "https://cirr.cecs.anu.edu.au/"


@dataclass
class Outcome:
    """What one registry result gave: its rows, the logs of its steps, the problem that stopped it and the released
    files it lacked, if any."""

    rows: list[Row]
    logs: list[str] = field(default_factory=list)
    problem: str = ""
    missing: list[str] = field(default_factory=list)


def fill(value: str, places: dict[str, Path]) -> str:
    """``value`` with ``{weights}``, ``{data_root}`` and ``{out}`` replaced by those folders."""
    for name, folder in places.items():
        value = value.replace(f"{{{name}}}", str(folder))
    return value


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()[:60]


def missing_files(result: dict[str, Any], weights: Path, sources: dict[str, str]) -> list[str]:
    """``'<path> (get it from <source>)'`` for each file of the result (``checkpoints`` and ``also_needs``) absent
    from ``weights``."""
    paths = [entry["path"] for entry in result["checkpoints"]] + list(result.get("also_needs", []))
    return [f"{path} (get it from {sources.get(path, 'the paper authors')})" for path in paths
            if not (weights / path).exists()]


def step_argv(step: dict[str, Any], places: dict[str, Path], extra: list[str], trust: bool) -> list[str]:
    """The command of one step: its script and filled-in args, its ``trust_args`` when ``trust``, then ``extra``."""
    trusted = step.get("trust_args", []) if trust else []
    return [sys.executable, step["script"], *(fill(arg, places) for arg in step["args"]), *trusted, *extra]


def run_step(argv: list[str], log: Path, env: dict[str, str]) -> str:
    """Run one step's command with its output in ``log``; '' when it succeeded, else why it did not."""
    script = argv[1]
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"  running {script} (log: {log})", flush=True)
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        handle.write(" ".join(argv) + "\n\n")
        handle.flush()
        code = subprocess.run(argv, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
    print(f"  {'done' if code == 0 else f'failed (exit status {code})'} in {time.perf_counter() - started:.0f}s",
          flush=True)
    if code == 0:
        return ""
    lines = [line for line in log.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return f"{script} failed: {lines[-1] if lines else f'exit status {code}'} (log: {log})"


def evaluate_result(result: dict[str, Any], places: dict[str, Path], sources: dict[str, str],
                    args: argparse.Namespace, env: dict[str, str]) -> Outcome:
    """Run a result's steps in their own folder under ``places['out']`` and compare what they wrote with the
    paper's numbers."""
    places = {**places, "out": places["out"] / slug(result["name"])}
    missing = missing_files(result, places["weights"], sources)
    if missing:
        note = f"skipped: {len(missing)} released file(s) missing, listed below the table"
        return Outcome(compare(result, None, note), problem="missing: " + "; ".join(missing), missing=missing)
    run, logs = result["run"], []
    for index, step in enumerate(run["steps"]):
        log = places["out"] / f"step{index}_{Path(step['script']).stem}.log"
        logs.append(str(log))
        problem = run_step(step_argv(step, places, args.script_args, args.trust_released_files), log, env)
        if problem:
            return Outcome(compare(result, None, problem), logs, problem)
    if run.get("submission"):
        files = sorted(str(path) for path in (places["out"] / "submission").rglob("recall*_submission_*.json"))
        note = f"test split: upload {', '.join(files) or 'the submission files'} to {CIRR_SERVER}"
        return Outcome(compare(result, None, note), logs)
    metrics_file = Path(fill(run["metrics_file"], places))
    return Outcome(compare(result, read_json(metrics_file, "the metrics the evaluation wrote")), logs)


def check_data(results: list[dict[str, Any]], data_root: Path, expect: str) -> list[dict[str, Any]]:
    """The data doctor's report on each dataset the results read (printed; ``expect`` as the doctor's
    ``--expect``); datasets it does not know are skipped."""
    from common.doctor import DATASETS, check_dataset
    from doctor import load_paper_datasets

    load_paper_datasets()
    reports = []
    for name in dict.fromkeys(result["dataset"] for result in results):
        if name not in DATASETS:
            continue
        report = check_dataset(name, data_root, expect=expect)
        print(report.summary())
        reports.append(report.as_dict())
    return reports


def reproduce_paper(paper: str, args: argparse.Namespace, registry: dict[str, Any], places: dict[str, Path],
                    env: dict[str, str]) -> tuple[list[Row], dict[str, Any]]:
    """Weights check, data check and every evaluation of one paper; the rows and a JSON-ready account."""
    print(f"\n=== {paper}: weights ({places['weights']})")
    weight_rows = check_weights(places["weights"], paper, args.manifest)
    print(format_table(weight_rows))
    results = paper_results(registry, paper)
    print(f"\n=== {paper}: data ({places['data_root']})")
    doctor = check_data(results, places["data_root"], args.expect)
    sources = {entry["path"]: entry.get("source") or entry.get("url") or ""
               for entry in load_manifest(args.manifest)["files"]}
    rows, runs = [], []
    for result in results:
        print(f"\n=== {paper}: {result['name']}")
        outcome = evaluate_result(result, places, sources, args, env)
        if outcome.problem:
            print(f"  {outcome.problem}")
        rows += outcome.rows
        runs.append({"result": result["name"], "logs": outcome.logs, "problem": outcome.problem,
                     "missing": outcome.missing})
    return rows, {"paper": paper, "weights": weight_rows, "data": doctor, "runs": runs}


def write_tables(rows: list[Row], account: list[dict[str, Any]], out: Path, stem: str) -> list[Path]:
    """``<stem>.md``, ``.csv`` and ``.json`` under ``out``."""
    json_content = {"rows": [row.as_dict() for row in rows], "papers": account}
    return [atomic_write_text(format_markdown(rows), out / f"{stem}.md"),
            atomic_write_text(format_csv(rows), out / f"{stem}.csv"),
            atomic_write_json(json_content, out / f"{stem}.json", indent=2)]


def passed(rows: list[Row], account: list[dict[str, Any]]) -> bool:
    """Every measured number within tolerance, no evaluation missing or failed, no weights-check failure (a corrupt
    or missing required file) and every dataset as the doctor expects it."""
    return (all(row.verdict != "NO" for row in rows)
            and not any(run["problem"] for paper in account for run in paper["runs"])
            and not any(failures(paper["weights"]) for paper in account)
            and all(report["ok"] for paper in account for report in paper["data"]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--paper", help="the paper to reproduce (one of the registry's: bi_blip4cir, reranking_cir, "
                                       "ratta)")
    which.add_argument("--all", action="store_true", help="every paper of the registry")
    parser.add_argument("--weights", type=Path, default=None,
                        help="weights folder in the manifest layout (default: $VLR_WEIGHTS_DIR, else weights/files)")
    parser.add_argument("--data-root", type=Path, required=True, help="folder holding the datasets")
    parser.add_argument("--out", type=Path, default=Path("reproduce_out"),
                        help="receives the metrics, submissions, logs and the tables (default: reproduce_out)")
    parser.add_argument("--registry", type=Path, default=None,
                        help=f"registry of published numbers (default: ${REGISTRY_ENV}, else "
                             "common/paper_numbers.json)")
    parser.add_argument("--manifest", type=Path, default=MANIFEST, help="weights manifest (default: %(default)s)")
    parser.add_argument("--expect", choices=("published", "listed"), default="published",
                        help="the data doctor's --expect: compare the counts with the published sizes, or only check "
                             "that the listed files are there (synthetic or partial copies) (default: %(default)s)")
    parser.add_argument("--trust-released-files", action="store_true",
                        help="let the scripts unpickle the authors' released files that need it (RA-TTA's LAION-2B "
                             "DB pickles: --trust_pickle); unpickling runs code, so only for files from the authors")
    parser.add_argument("--script-args", nargs=argparse.REMAINDER, default=[],
                        help="everything after this flag is passed to every script (e.g. --device cuda:1); "
                             "give it last")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    note_args(args)
    registry_file = registry_path(args.registry).resolve()
    registry = load_registry(registry_file)
    papers = list(registry["papers"]) if args.all else [args.paper]
    for paper in papers:
        paper_results(registry, paper)  # an unknown paper stops here, before any work
    places = {"weights": (args.weights or default_weights_dir()).resolve(), "data_root": args.data_root.resolve(),
              "out": args.out.resolve()}
    env = {**os.environ, REGISTRY_ENV: str(registry_file)}
    note_output(places["out"])
    rows, account = [], []
    for paper in papers:
        paper_rows, paper_account = reproduce_paper(paper, args, registry, places, env)
        rows += paper_rows
        account.append(paper_account)
    print("\n" + format_text(rows))
    missing = [path for paper in account for run in paper["runs"] for path in run["missing"]]
    if missing:
        print("\nmissing released files (under --weights), and where to get them:")
        print("\n".join(f"  {line}" for line in dict.fromkeys(missing)))
    stem = "reproduce_all" if args.all else f"reproduce_{args.paper}"
    files = write_tables(rows, account, places["out"], stem)
    print(f"\ntables: {', '.join(map(str, files))}")
    return 0 if passed(rows, account) else 1


if __name__ == "__main__":
    run_main(lambda argv: sys.exit(main(argv)))
