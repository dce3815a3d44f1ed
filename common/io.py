"""File I/O shared by every paper: safe torch loading, weight resolution, atomic writes, JSON with clear errors."""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

import torch

PathLike = str | os.PathLike


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read, or whose contents do not fit the model."""


def is_url(value: PathLike) -> bool:
    return str(value).startswith(("http://", "https://"))


def file_hash(path: PathLike, algo: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file (``sha256``, ``sha1``, ``md5`` ...), read in chunks."""
    digest = hashlib.new(algo)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def load_torch_file(path: PathLike, *, trusted: bool = False, map_location: Any = "cpu") -> Any:
    """Load a ``torch.save`` file on ``map_location``.

    Tries ``weights_only=True`` first. Files that pickle other objects (numpy arrays, argparse namespaces) load
    only with ``trusted=True``; otherwise the error says how to allow it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint file not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as safe_error:  # noqa: BLE001 - re-raised with context below
        if not trusted:
            raise CheckpointError(
                f"{path}: could not be loaded with weights_only=True ({_short_reason(safe_error)}). "
                "If you trust this file, load it with trusted=True (scripts: --trust-checkpoints)."
            ) from safe_error
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(error).__name__}: {error})") from error


def _short_reason(error: Exception) -> str:
    """The informative line of torch's long weights-only error (the unsupported global), else its first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported global" in line:
            return line.split(" Please use")[0]
    return lines[0] if lines else type(error).__name__


def resolve_weights(
    name_or_path: PathLike,
    *,
    cache_dir: PathLike | None = None,
    allow_download: bool = False,
    sha256: str | None = None,
    sha1: str | None = None,
) -> Path:
    """Return a local path for a weight file given as a path or an http(s) URL.

    A URL is looked up in ``cache_dir`` (default ``$VLR_WEIGHTS_DIR`` or ``./weights/files``) by its file name and
    downloaded only when ``allow_download`` is true. Downloads and cached files are checked against the given hash.
    """
    if not is_url(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: weight file not found")
        return path
    url = str(name_or_path)
    cache = Path(cache_dir or os.environ.get("VLR_WEIGHTS_DIR", "weights/files")).expanduser()
    target = cache / url.rsplit("/", 1)[-1]
    if not target.is_file():
        if not allow_download:
            raise FileNotFoundError(
                f"{target}: weight file not found locally. Download {url} into {cache}, "
                "or pass --allow-download to fetch it."
            )
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=cache, delete=False, suffix=".part") as tmp:
            with urllib.request.urlopen(url) as response:  # noqa: S310 - user-allowed download
                for block in iter(lambda: response.read(1 << 20), b""):
                    tmp.write(block)
        _check_hashes(Path(tmp.name), sha256=sha256, sha1=sha1, source=url, remove_on_mismatch=True)
        os.replace(tmp.name, target)
        return target
    _check_hashes(target, sha256=sha256, sha1=sha1, source=url, remove_on_mismatch=False)
    return target


def _check_hashes(path: Path, *, sha256: str | None, sha1: str | None, source: str, remove_on_mismatch: bool) -> None:
    for algo, expected in (("sha256", sha256), ("sha1", sha1)):
        if expected is None:
            continue
        actual = file_hash(path, algo)
        if actual != expected:
            if remove_on_mismatch:
                path.unlink(missing_ok=True)
            raise CheckpointError(f"{path} (from {source}): {algo} is {actual}, expected {expected}")


def _atomic_write(path: PathLike, write) -> Path:
    """Write through a temporary file in the same folder, then rename, so a crash never leaves a half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save`` that never leaves a partial file behind."""
    return _atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write_text(text: str, path: PathLike) -> Path:
    return _atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def atomic_write_json(obj: Any, path: PathLike, **dump_kwargs: Any) -> Path:
    """Write JSON atomically; ``dump_kwargs`` go to ``json.dumps`` (e.g. ``indent=4, sort_keys=True``)."""
    return atomic_write_text(json.dumps(obj, **dump_kwargs), path)


def read_json(path: PathLike, what: str = "a JSON file") -> Any:
    """Read JSON, raising errors that name the file and what it should have held."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found (expected {what})")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"{path}: malformed JSON at line {error.lineno} column {error.colno} ({error.msg}); expected {what}"
        ) from error
