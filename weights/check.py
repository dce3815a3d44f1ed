"""Check a weights folder against ``weights/manifest.json``.

    python weights/check.py --dir WEIGHTS_DIR [--paper NAME] [--json OUT] [--manifest FILE]

Each listed file is present (published hash matches), missing, corrupt (hash mismatch) or unverified (found, but
no hash is published). Exits 1 when a file required by the selected paper(s) is missing or any file is corrupt.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from common.io import PathLike, atomic_write_json, file_hash, read_json

MANIFEST = Path(__file__).resolve().with_name("manifest.json")
PAPERS = ("tcr", "ratta", "bi_blip4cir", "reranking_cir", "mlcl")
STATUSES = ("present", "missing", "corrupt", "unverified")
HASHES = ("sha256", "sha1")


def default_weights_dir() -> Path:
    """``$VLR_WEIGHTS_DIR``, else ``weights/files`` (the cache folder of ``common.io.resolve_weights``)."""
    return Path(os.environ.get("VLR_WEIGHTS_DIR", "weights/files")).expanduser()


def load_manifest(path: PathLike = MANIFEST) -> dict[str, Any]:
    """Read a manifest and check that every file entry has the fields the checker uses."""
    manifest = read_json(path, "a weights manifest with a 'files' list")
    for entry in manifest.get("files", []):
        missing = {"path", "papers", "required_by", *HASHES} - set(entry)
        if missing:
            raise ValueError(f"{path}: entry {entry.get('path', entry)} lacks {sorted(missing)}")
    return manifest


def check_file(path: Path, entry: dict[str, Any]) -> tuple[str, str]:
    """Status of one file and a short detail (the mismatching hash, or what was verified)."""
    if not path.is_file():
        return "missing", ""
    expected = {algo: entry[algo] for algo in HASHES if entry.get(algo)}
    if not expected:
        return "unverified", "no published hash"
    for algo, value in expected.items():
        actual = file_hash(path, algo)
        if actual != value.lower():
            return "corrupt", f"{algo} {actual} != published {value}"
    return "present", f"{', '.join(expected)} ok"


def check_weights(weights_dir: PathLike, paper: str | None = None,
                  manifest: PathLike = MANIFEST) -> list[dict[str, Any]]:
    """One row per manifest file (only those of ``paper`` when given): path, absolute file, status, detail,
    required (by ``paper``, or by any paper when None), papers, source."""
    if paper is not None and paper not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; choose from {', '.join(PAPERS)}")
    weights_dir = Path(weights_dir).expanduser()
    rows = []
    for entry in load_manifest(manifest)["files"]:
        if paper is not None and paper not in entry["papers"]:
            continue
        status, detail = check_file(weights_dir / entry["path"], entry)
        required = paper in entry["required_by"] if paper is not None else bool(entry["required_by"])
        rows.append({"path": entry["path"], "file": str(weights_dir / entry["path"]), "status": status,
                     "detail": detail, "required": required, "papers": entry["papers"],
                     "source": entry.get("source") or entry.get("url")})
    return rows


def failures(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows that make the check fail: corrupt files, and missing files that are required."""
    return [row for row in rows if row["status"] == "corrupt" or (row["required"] and row["status"] == "missing")]


def format_table(rows: list[dict[str, Any]]) -> str:
    width = max([len(row["path"]) for row in rows] + [4])
    lines = [f"{'status':<11}{'req':<5}{'path':<{width}}  detail / where to get it"]
    for row in rows:
        hint = row["detail"] if row["status"] != "missing" else row["source"] or ""
        lines.append(f"{row['status']:<11}{'yes' if row['required'] else '':<5}{row['path']:<{width}}  {hint}")
    counts = ", ".join(f"{sum(row['status'] == s for row in rows)} {s}" for s in STATUSES)
    lines.append(f"{len(rows)} files: {counts}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=None,
                        help="weights folder holding the manifest paths (default: $VLR_WEIGHTS_DIR, else "
                             "weights/files)")
    parser.add_argument("--paper", choices=PAPERS, default=None,
                        help="check only this paper's files; 'req' then means required by this paper "
                             "(default: every file; required by any paper)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT",
                        help="also write the rows as a JSON list to OUT")
    parser.add_argument("--manifest", type=Path, default=MANIFEST,
                        help=f"manifest to check against (default: {MANIFEST})")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    weights_dir = args.dir or default_weights_dir()
    if not weights_dir.is_dir():
        print(f"note: {weights_dir} is not a folder; every file will be reported missing", file=sys.stderr)
    rows = check_weights(weights_dir, args.paper, args.manifest)
    print(format_table(rows))
    if args.json is not None:
        atomic_write_json(rows, args.json, indent=2)
    failed = failures(rows)
    for row in failed:
        print(f"FAIL {row['status']}: {row['path']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
