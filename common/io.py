"""File I/O shared by every paper: safe torch loading, weight resolution, atomic writes, JSON with clear errors."""
from __future__ import annotations

import errno
import fnmatch
import hashlib
import json
import os
import pickletools
import tempfile
import urllib.request
import zipfile
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import Any, BinaryIO, Callable

from common.errors import InputError

# torch is imported inside the functions that need it, so light tools (weights/check.py --help) start fast.
PathLike = str | os.PathLike


class CheckpointError(InputError, RuntimeError):
    """A checkpoint file that cannot be read, or whose contents do not fit the model."""


class MalformedFileError(InputError, ValueError):
    """A data file (JSON...) that cannot be parsed."""


def key_problems(source: PathLike, model_name: str, missing: Sequence[str] = (), unexpected: Sequence[str] = (),
                 shapes: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]] | None = None,
                 flag_hints: Mapping[str, str] | None = None, limit: int = 20) -> str:
    """One error message for a checkpoint that does not fit ``model_name``: the file, then every shape mismatch
    (key, checkpoint shape, model shape and, when ``flag_hints`` maps a matching fnmatch pattern to it, the flag
    that sets that size), the missing keys and the unexpected keys (at most ``limit`` of each, with the count)."""
    parts = []
    for key, (found, wanted) in (shapes or {}).items():
        flag = next((flag for pattern, flag in (flag_hints or {}).items() if fnmatch.fnmatchcase(key, pattern)), None)
        hint = f" (that size is set by {flag})" if flag else ""
        parts.append(f"shape mismatch for {key}: checkpoint {tuple(found)}, model {tuple(wanted)}{hint}")
    for label, keys in (("missing", missing), ("unexpected", unexpected)):
        keys = sorted(keys)
        shown = ", ".join(keys[:limit]) + (f" ... ({len(keys)} in all)" if len(keys) > limit else "")
        parts.append(f"{label} keys ({len(keys)}): {shown or 'none'}")
    return f"{source}: checkpoint does not fit {model_name}: " + "; ".join(parts)


def is_url(value: PathLike) -> bool:
    return str(value).startswith(("http://", "https://"))


def file_hashes(path: PathLike, algos: Sequence[str], chunk: int = 1 << 20) -> dict[str, str]:
    """Algorithm -> hex digest of a file for each of ``algos`` (``sha256``, ``sha1``, ``md5`` ...), in one read."""
    digests = {algo: hashlib.new(algo) for algo in algos}
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            for digest in digests.values():
                digest.update(block)
    return {algo: digest.hexdigest() for algo, digest in digests.items()}


def file_hash(path: PathLike, algo: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file (``sha256``, ``sha1``, ``md5`` ...), read in chunks."""
    return file_hashes(path, (algo,), chunk)[algo]


def numpy_safe_globals() -> list:
    """The globals a pickled NumPy array or scalar needs, for ``torch.serialization.safe_globals``.

    Pickles name ``_reconstruct`` / ``scalar`` under NumPy 2's ``numpy._core.multiarray``, or under NumPy 1.x's
    ``numpy.core.multiarray`` (files saved before NumPy 2, such as the Re-ranking authors' top-K files); both
    spellings map to today's functions (NumPy 2 keeps ``numpy.core`` only as a deprecated alias of ``numpy._core``).
    ``ndarray`` and ``dtype`` are named the same in both, and the dtype classes (``numpy.dtypes.StrDType``, ...) are
    the types of the dtypes the pickle rebuilds. None of these runs code taken from the file.
    """
    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # NumPy 1.x
        from numpy.core import multiarray
    functions = [(getattr(multiarray, name), f"{module}.{name}") for name in ("_reconstruct", "scalar")
                 for module in ("numpy._core.multiarray", "numpy.core.multiarray")]
    dtype_classes = [cls for cls in vars(np.dtypes).values() if isinstance(cls, type) and issubclass(cls, np.dtype)]
    return [*functions, (np.ndarray, "numpy.ndarray"), (np.dtype, "numpy.dtype"), *dtype_classes]


def _load_weights_only(path: PathLike, map_location: Any = "cpu", **kwargs: Any) -> Any:
    """``torch.load(weights_only=True)`` that also accepts NumPy arrays and scalars (``numpy_safe_globals``)."""
    import torch

    with torch.serialization.safe_globals(numpy_safe_globals()):
        return torch.load(path, map_location=map_location, weights_only=True, **kwargs)


def load_torch_file(path: PathLike, *, trusted: bool = False, map_location: Any = "cpu",
                    what: str = "checkpoint") -> Any:
    """Load a ``torch.save`` file on ``map_location``; ``what`` names the kind of file in errors.

    Tries ``weights_only=True`` first, with NumPy arrays and scalars allowed (``numpy_safe_globals``, both NumPy 1.x
    and 2 names). Files that pickle other objects (argparse namespaces) load only with ``trusted=True``; otherwise
    the error says how to allow it. An empty, truncated or damaged file is reported as corrupt with its size on disk,
    never with the ``--trust-checkpoints`` advice.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found")
    from common.run_record import note_checkpoint  # noqa: PLC0415 - run_record imports common.io
    note_checkpoint(path, what)
    try:
        return _load_weights_only(path, map_location)
    except Exception as safe_error:  # noqa: BLE001 - re-raised with context below
        damage = torch_file_damage(path)
        if damage is not None:
            raise CheckpointError(_corrupt_message(path, damage, what)) from safe_error
        if not trusted:
            if _refused_by_weights_only(safe_error):
                raise CheckpointError(
                    f"{path}: the file is a valid {what}, but it pickles objects that weights_only=True "
                    f"refuses ({_short_reason(safe_error)}). If you trust this file, load it with trusted=True "
                    "(scripts: --trust-checkpoints)."
                ) from safe_error
            raise CheckpointError(_corrupt_message(path, _short_reason(safe_error), what)) from safe_error
    try:
        return torch.load(path, map_location=map_location, weights_only=False)
    except Exception as error:  # noqa: BLE001
        raise CheckpointError(_corrupt_message(path, f"{type(error).__name__}: {_short_reason(error)}", what)) \
            from error


def _corrupt_message(path: Path, reason: str, what: str = "checkpoint") -> str:
    return (f"{path}: corrupt or not a torch {what} ({file_size_text(path)} on disk; {reason}). "
            "Download or copy it again.")


def file_size_text(path: PathLike) -> str:
    """The size of a file in readable units, e.g. ``'1.5 MB (1532210 bytes)'``."""
    size = Path(path).stat().st_size
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit} ({size} bytes)"
    return f"{size} bytes"


def _refused_by_weights_only(error: Exception) -> bool:
    """Whether torch refused the file's pickled objects (as opposed to failing to read the file)."""
    import pickle

    text = str(error)
    return isinstance(error, pickle.UnpicklingError) and "Weights only load failed" in text and (
        "Unsupported global" in text or "GLOBAL" in text or "Unsupported operand" in text)


def torch_file_damage(path: PathLike) -> str | None:
    """Why ``path`` is not an intact ``torch.save`` file (truncated archive, bad CRC, unreadable pickle), or None.

    Nothing in the file is executed: the zip members are CRC-checked and the pickle opcodes only parsed.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        return "the file is empty"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
                if bad is not None:
                    return f"member {bad} fails its CRC check"
                pickles = [name for name in archive.namelist() if name.endswith("data.pkl")]
                if not pickles:
                    return "a zip archive without the data.pkl of a torch checkpoint"
                for _ in pickletools.genops(archive.read(pickles[0])):
                    pass
        except Exception as error:  # noqa: BLE001 - any failure here means a damaged archive
            return f"damaged zip archive: {type(error).__name__}: {error}"
        return None
    with open(path, "rb") as handle:
        head = handle.read(4)
        if head == b"PK\x03\x04":
            return "a zip archive whose end is missing: the file is truncated"
        if not head.startswith(b"\x80"):
            return "it is neither a zip archive nor a pickle"
        handle.seek(0)
        try:
            for _ in pickletools.genops(handle):
                pass
        except Exception as error:  # noqa: BLE001
            return f"truncated or damaged pickle: {type(error).__name__}: {error}"
    return None


def check_torch_file(path: PathLike, flag: str | None = None, expect_any: Sequence[str] = ()) -> Path:
    """Cheap check, before any heavy work, that ``path`` exists, is readable and looks like a torch checkpoint
    (zip archive or pickle) and, with ``expect_any``, that its top-level dict holds one of those keys (read
    without loading the tensors; skipped for files only ``--trust-checkpoints`` can open). Errors name the file
    and the flag that gave it. Returns the path."""
    path = Path(path).expanduser()
    given = f" (given by {flag})" if flag else ""
    if not path.exists():
        raise FileNotFoundError(f"{path}: checkpoint file not found{given}")
    if not path.is_file():
        raise CheckpointError(f"{path}: is a folder, expected a checkpoint file{given}")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{path}: checkpoint file is not readable{given}")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        size = file_size_text(path)
        raise CheckpointError(f"{path}: not a torch checkpoint ({size}; neither a zip archive nor a pickle){given}")
    if expect_any and head.startswith(b"PK\x03\x04"):
        keys = _top_level_keys(path)
        if keys is not None and not set(expect_any) & set(keys):
            raise CheckpointError(f"{path}: expected a checkpoint with one of the entries {list(expect_any)}, "
                                  f"found {sorted(map(str, keys))[:10]}{given}")
    return path


def _top_level_keys(path: Path) -> list | None:
    """The keys of a zip checkpoint's top-level dict, read memory-mapped (tensors untouched); None when it cannot
    be read safely this way (the full load then explains why)."""
    try:
        payload = _load_weights_only(path, mmap=True)
    except Exception:  # noqa: BLE001 - the real load reports it
        return None
    return list(payload) if isinstance(payload, dict) else []


def _short_reason(error: Exception) -> str:
    """The informative line of torch's long weights-only error (the unsupported global), else its first line."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "Unsupported global" in line:
            return line.split(" Please use")[0]
    return lines[0].split(". This is an internal")[0] if lines else type(error).__name__


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
        os.chmod(tmp.name, new_file_mode())
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


def new_file_mode() -> int:
    """The mode a plain ``open(path, 'w')`` gives a new file under the current umask (e.g. 0o644)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


class DiskFull(InputError, OSError):
    """No space left (or quota exceeded) while writing a file; the file under its final name is untouched."""


def atomic_write(path: PathLike, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(binary handle)`` on a temporary file in the same folder, then rename, so a crash never leaves a
    half file. The file gets the mode of a plainly created one (the user's umask), not the temporary file's 0600.
    On any failure the temporary file is removed; a full disk raises ``DiskFull`` saying the earlier file is kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp_name, new_file_mode())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException as error:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = "the previous file is kept unchanged" if path.exists() else "nothing was written under that name"
            raise DiskFull(f"{path}: disk full while writing it ({error.strerror}); {kept}") from error
        raise
    return path


def atomic_torch_save(obj: Any, path: PathLike) -> Path:
    """``torch.save`` that never leaves a partial file behind."""
    import torch

    return atomic_write(path, lambda handle: torch.save(obj, handle))


def atomic_write_text(text: str, path: PathLike) -> Path:
    return atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


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
        raise MalformedFileError(
            f"{path}: malformed JSON at line {error.lineno} column {error.colno} ({error.msg}); expected {what}"
        ) from error


def check_writable_root(root: PathLike, flag: str = "--output-root") -> None:
    """Fail fast when ``root`` (or the nearest folder above it that exists) cannot receive new files."""
    path = Path(root).expanduser().absolute()
    existing = next(folder for folder in (path, *path.parents) if folder.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"{flag} {root}: {existing} is a file, expected a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {root}: cannot create files in {existing} (permission denied)")
