"""The per-dataset image DB: ``<db_root>/<database>_<dataset>_aux_<net>`` (RA-TTA:ratta_after_extract.py).

Upstream's file is a pickle of ``{'embedding': float array [N, D], ...}``. Our builder writes the same pickle
(with ``paths``, ``net_name``, ``image_size``, ``normalized`` and ``format_version``) plus ``<file>.npz`` holding
the same arrays; the loader prefers ``.npz`` / ``.npy`` and unpickles only with ``trust_pickle`` (unpickling an
untrusted file runs code).
"""
from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from common.io import MalformedFileError, atomic_write, file_size_text

FORMAT_VERSION = 1


def net_tag(net_name: str) -> str:
    """The folder/file tag of a backbone name: ``ViT-B/16`` → ``ViT-B_16``."""
    return net_name.replace("/", "_")


def db_path(db_root: str | Path, database: str, dataset: str, net_name: str) -> Path:
    return Path(db_root) / f"{database}_{dataset}_aux_{net_tag(net_name)}"


def normalize_rows(embedding: np.ndarray) -> np.ndarray:
    """Unit-norm rows computed in float32, stored as float16."""
    rows = np.asarray(embedding, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{int((norms == 0).sum())} DB rows are all zero and cannot be normalised")
    return (rows / norms).astype(np.float16)


def save_db(path: str | Path, embedding: np.ndarray, paths: list[str], net_name: str, image_size: int | None
            ) -> tuple[Path, Path]:
    """Write the pickle (upstream layout, a superset) and ``<path>.npz``; returns both paths."""
    path = Path(path)
    meta = {"net_name": net_name, "image_size": image_size, "normalized": True, "format_version": FORMAT_VERSION}
    record = {"embedding": embedding, "paths": list(paths), **meta}
    atomic_write(path, lambda handle: pickle.dump(record, handle, protocol=4))
    buffer = io.BytesIO()
    np.savez(buffer, embedding=embedding, paths=np.array(paths, dtype=str), meta=json.dumps(meta))
    npz = path.with_name(path.name + ".npz")
    atomic_write(npz, lambda handle: handle.write(buffer.getvalue()))
    return path, npz


def read_db_file(path: Path, read: Callable[[Path], Any]) -> Any:
    """``read(path)``; an empty, truncated or damaged file is reported as such, naming it."""
    redo = "download it again or rebuild it with ratta/ratta_build_db.py"
    if path.stat().st_size == 0:
        raise MalformedFileError(f"{path}: the DB file is empty (0 bytes); {redo}")
    try:
        return read(path)
    except (EOFError, OSError, ValueError, zipfile.BadZipFile, pickle.UnpicklingError) as error:
        raise MalformedFileError(f"{path}: truncated, damaged or not a DB file ({file_size_text(path)} on disk; "
                                 f"{type(error).__name__}: {error}); {redo}") from None


def _read_npz(path: Path) -> tuple[dict[str, Any], list[str]]:
    """The 'embedding' and 'meta' arrays of an ``.npz`` (the only ones used) and the names of all its arrays."""
    with np.load(path, allow_pickle=False) as data:
        return {key: data[key] for key in ("embedding", "meta") if key in data}, list(data.keys())


def _read_pickle(path: Path) -> Any:
    with open(path, "rb") as handle:
        return pickle.load(handle)


def load_db(path: str | Path, trust_pickle: bool = False) -> dict[str, Any]:
    """``{'embedding': float16 [N, D], 'net_name': ... or None, 'source': file read}`` from ``<path>.npz``,
    ``<path>.npy`` or (only with ``trust_pickle``) the pickle ``<path>``."""
    path = Path(path)
    npz, npy = path.with_name(path.name + ".npz"), path.with_name(path.name + ".npy")
    if npz.is_file():
        data, names = read_db_file(npz, _read_npz)
        if "embedding" not in data:
            raise ValueError(f"{npz}: no 'embedding' array (found {names})")
        meta = json.loads(str(data["meta"])) if "meta" in data else {}
        record = {"embedding": data["embedding"], **meta, "source": str(npz)}
    elif npy.is_file():
        record = {"embedding": read_db_file(npy, lambda file: np.load(file, allow_pickle=False)), "source": str(npy)}
    elif path.is_file():
        if not trust_pickle:
            raise PermissionError(f"{path}: the DB is a pickle and unpickling runs code; pass --trust_pickle if you "
                                  f"trust this file, or convert it to {npz.name} / {npy.name}")
        loaded = read_db_file(path, _read_pickle)
        if not isinstance(loaded, dict) or "embedding" not in loaded:
            raise MalformedFileError(f"{path}: expected a pickled dict with an 'embedding' array [N, D]")
        record = {**loaded, "source": str(path)}
    else:
        raise FileNotFoundError(f"{path}: no DB file (also looked for {npz.name} and {npy.name}); download it or "
                                f"build one with ratta/ratta_build_db.py")
    embedding = np.asarray(record["embedding"])
    if embedding.ndim != 2:
        raise ValueError(f"{record['source']}: 'embedding' must be [N, D], got shape {embedding.shape}")
    record["embedding"] = embedding.astype(np.float16)
    return record


def check_db(record: dict[str, Any], dim: int, net_name: str) -> None:
    """Raise unless the DB matches the test embeddings' dimension and (when recorded) the backbone."""
    source, rows = record["source"], record["embedding"]
    if rows.shape[1] != dim:
        raise ValueError(f"{source}: DB rows have dimension {rows.shape[1]} but the test embeddings have {dim} "
                         f"(a DB of another backbone?)")
    stored = record.get("net_name")
    if stored is not None and stored != net_name:
        raise ValueError(f"{source}: DB built with {stored!r}, but --net_name is {net_name!r}")


def subsample_rows(rows: np.ndarray, fraction: float, mode: str) -> np.ndarray:
    """Upstream's ImageNet DB subsample: ``np.random.randint(N, size=int(fraction * N))`` (with replacement, the
    global numpy RNG) for 'randint'; a permutation prefix (no duplicates) for 'permutation'."""
    n = rows.shape[0]
    size = int(fraction * n)
    if mode == "randint":
        return rows[np.random.randint(n, size=size)]
    if mode == "permutation":
        return rows[np.random.permutation(n)[:size]]
    raise ValueError(f"unknown --db_subsample_mode {mode!r}; choose randint or permutation")
