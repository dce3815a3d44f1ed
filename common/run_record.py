"""The record of what produced a result: ``run_info.json`` beside every output, and a short banner at start.

A script's record holds the git commit (and whether the tree was dirty), the command line, every resolved flag, the
Python / torch / CUDA / transformers / NumPy versions, the device and world size, each checkpoint it loaded (size,
SHA-256 and SHA-1) and the dataset counts it found. The pieces are noted where they happen, so a script needs no
code of its own:

- ``common.runtime.run_main`` opens the record (``recording``) and, at exit, writes it into every registered output
  folder with the run's status (also after an error or an interrupt);
- ``common.args.setup_runtime`` adds the flags, device and world size (``note_args``) and prints the banner;
- ``common.io.load_torch_file`` and the CLIP loader note each checkpoint (``note_checkpoint``);
- the query-set builder and the train loader note dataset counts (``note_dataset``);
- the writers of results register their folder (``note_output``).

Hashes are cached in ``$VLR_CACHE_DIR/file_hashes.json`` (default ``~/.cache/vlr/``), keyed by resolved path, size
and modification time, so a 900 MB checkpoint is read once. Only rank 0 hashes, prints and writes.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from common.io import MalformedFileError, PathLike, atomic_write_json, file_hashes, read_json

RECORD_NAME = "run_info.json"
FORMAT_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parents[1]
HASH_ALGOS = ("sha256", "sha1")
UNRECORDED = ("pre-extraction chunk",)
"""Kinds of loaded files left out of the record: partial state a run reads back to resume (hundreds of files)."""


def is_rank_zero() -> bool:
    """Rank 0 under torchrun (read from ``RANK``, so it holds before the process group exists), else True."""
    return os.environ.get("RANK", "0") == "0"


def cache_dir() -> Path:
    """``$VLR_CACHE_DIR``, else ``~/.cache/vlr``."""
    return Path(os.environ.get("VLR_CACHE_DIR") or Path.home() / ".cache" / "vlr").expanduser()


def cached_hashes(path: PathLike, cache_file: PathLike | None = None) -> dict[str, str]:
    """``file_hashes(path, HASH_ALGOS)`` (the manifest publishes SHA-256 or SHA-1), read from the cache when the file's resolved path, size and ``mtime_ns`` are unchanged,
    else computed and stored (entries of files that no longer exist are dropped then). An unreadable cache is
    ignored (and replaced)."""
    path = Path(path).resolve()
    cache_file = Path(cache_file) if cache_file is not None else cache_dir() / "file_hashes.json"
    stat = path.stat()
    try:
        cache = read_json(cache_file, "a JSON object of file hashes") if cache_file.is_file() else {}
    except (MalformedFileError, OSError):
        cache = {}
    cache = cache if isinstance(cache, dict) else {}
    entry = cache.get(str(path))
    key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    if isinstance(entry, dict) and all(entry.get(name) == value for name, value in key.items()) \
            and all(entry.get(algo) for algo in HASH_ALGOS):
        return {algo: entry[algo] for algo in HASH_ALGOS}
    hashes = file_hashes(path, HASH_ALGOS)
    cache = {name: value for name, value in cache.items() if Path(name).exists()}
    cache[str(path)] = {**key, **hashes}
    with contextlib.suppress(OSError):  # a read-only home must not stop the run
        atomic_write_json(cache, cache_file, indent=1, sort_keys=True)
    return hashes


def git_state(repo: PathLike = REPO_ROOT, executable: str = "git") -> dict[str, Any]:
    """``{"commit", "dirty"}`` of ``repo`` (tracked files only for ``dirty``); both ``"unknown"`` when git is absent
    or ``repo`` is not a git checkout."""
    def git(*args: str) -> str:
        return subprocess.run([executable, "-C", str(repo), *args], capture_output=True, text=True, check=True,
                              timeout=20).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": "unknown"}
    return {"commit": commit, "dirty": dirty}


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def library_versions() -> dict[str, str]:
    """Python, torch, CUDA (as torch was built; ``none`` for a CPU build), transformers and NumPy versions."""
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda or "none",
            "transformers": package_version("transformers"), "numpy": package_version("numpy")}


def plain(value: Any) -> Any:
    """A JSON-friendly copy of a flag value (paths and other objects become strings)."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    return str(value)


@dataclass
class RunRecord:
    """What one script run did; ``as_dict`` is the content of ``run_info.json``."""

    script: str
    argv: list[str]
    started: float = field(default_factory=time.time)
    git: dict[str, Any] = field(default_factory=git_state)
    versions: dict[str, str] = field(default_factory=library_versions)
    flags: dict[str, Any] = field(default_factory=dict)
    device: str = "unknown"
    world_size: int = 1
    checkpoints: dict[str, dict[str, Any]] = field(default_factory=dict)
    datasets: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    bannered: bool = False

    def command(self) -> str:
        return shlex.join(["python", self.script, *self.argv])

    def as_dict(self, status: str) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "status": status,
            "command": self.command(),
            "cwd": os.getcwd(),
            "started": _utc(self.started),
            "finished": _utc(time.time()),
            "seconds": round(time.time() - self.started, 3),
            "git": self.git,
            "versions": self.versions,
            "device": self.device,
            "world_size": self.world_size,
            "flags": self.flags,
            "checkpoints": list(self.checkpoints.values()),
            "datasets": self.datasets,
            "outputs": [str(folder) for folder in self.outputs],
        }


def _utc(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


_record: RunRecord | None = None


def current() -> RunRecord | None:
    """The record of this process's run, None outside ``recording``."""
    return _record


def start(argv: list[str], script: str | None = None) -> RunRecord:
    """Open this process's record (the previous one, if any, is dropped)."""
    global _record
    _record = RunRecord(script=script or _script_name(), argv=list(argv))
    return _record


def _script_name() -> str:
    path = Path(sys.argv[0])
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(REPO_ROOT))
    return str(path)


def note_args(args: argparse.Namespace, device: Any = None, world_size: int = 1) -> None:
    """Record every resolved flag, the device and the world size, then print the banner (once, on rank 0)."""
    if _record is None:
        return
    _record.flags = plain(vars(args))
    _record.device = str(device) if device is not None else _record.device
    _record.world_size = int(world_size)
    if not _record.bannered and is_rank_zero():
        print(banner(_record), flush=True)
        _record.bannered = True


def banner(record: RunRecord) -> str:
    """Three lines: the script and time, the code and library versions, the device."""
    git = record.git
    commit = git["commit"][:10] if git["commit"] != "unknown" else "unknown"
    dirty = {True: " (uncommitted changes)", False: "", "unknown": ""}[git["dirty"]]
    versions = record.versions
    return (f"== {record.script}  started {_utc(record.started)}\n"
            f"   git {commit}{dirty}; python {versions['python']}, torch {versions['torch']} "
            f"(CUDA {versions['cuda']}), transformers {versions['transformers']}, numpy {versions['numpy']}\n"
            f"   device {record.device}, world size {record.world_size}; {RECORD_NAME} is written beside the outputs")


def note_checkpoint(path: PathLike, what: str = "checkpoint") -> None:
    """Record a file the run loaded: resolved path, size and hashes (rank 0; once per file)."""
    if _record is None or not is_rank_zero() or what in UNRECORDED:
        return
    path = Path(path).resolve()
    if str(path) in _record.checkpoints or not path.is_file():
        return
    _record.checkpoints[str(path)] = {"path": str(path), "what": what, "size": path.stat().st_size,
                                      **cached_hashes(path)}


def note_dataset(name: str, split: str, **counts: int) -> None:
    """Record the counts a script found for one dataset split, e.g. ``queries=6016, gallery=3817``."""
    if _record is not None:
        _record.datasets.append({"name": name, "split": split, **{key: int(value) for key, value in counts.items()}})


def note_output(folder: PathLike) -> None:
    """Register a folder that receives this run's results; ``run_info.json`` is written there at exit."""
    if _record is None:
        return
    folder = Path(folder).resolve()
    if folder not in _record.outputs:
        _record.outputs.append(folder)


def earlier_runs(path: Path) -> list[dict[str, Any]]:
    """The records kept in ``path`` (an earlier ``run_info.json``): its run and the runs it kept, oldest first; none
    when the file is absent or unreadable."""
    try:
        previous = read_json(path, "a run record") if path.is_file() else None
    except (MalformedFileError, OSError):
        return []
    if not isinstance(previous, dict):
        return []
    kept = previous.pop("earlier_runs", [])
    return [*(kept if isinstance(kept, list) else []), previous]


def finish(status: str) -> list[Path]:
    """Write the record, with ``status``, into every registered output folder (rank 0); the files written. The
    records already there (an earlier run of the folder: a resumed training run, another script writing results
    beside these) are kept, oldest first, under ``earlier_runs``."""
    if _record is None or not is_rank_zero():
        return []
    content = _record.as_dict(status)
    written = []
    for folder in _record.outputs:
        if folder.is_dir():
            path = folder / RECORD_NAME
            record = {**content, "earlier_runs": earlier_runs(path)}
            written.append(atomic_write_json(record, path, indent=2))
    return written


def exit_status(error: BaseException | None) -> str:
    """``completed``, ``exit status N``, ``interrupted (KeyboardInterrupt)`` or ``failed: <type>: <message>``."""
    if error is None or (isinstance(error, SystemExit) and error.code in (0, None)):
        return "completed"
    if isinstance(error, SystemExit):
        return f"exit status {error.code}"
    if isinstance(error, KeyboardInterrupt) or type(error).__name__ == "Terminated":
        return f"interrupted ({type(error).__name__})"
    return f"failed: {type(error).__name__}: {error}"


@contextlib.contextmanager
def recording(argv: list[str]) -> Iterator[RunRecord]:
    """Open the record for the body (a script's ``main``) and write it at the end, with the way the body ended."""
    global _record
    record = start(argv)
    error: BaseException | None = None
    try:
        yield record
    except BaseException as raised:
        error = raised
        raise
    finally:
        finish(exit_status(error))
        _record = None
