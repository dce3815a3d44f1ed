"""Fixtures shared by several test files."""
from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True, scope="session")
def private_hash_cache(tmp_path_factory):
    """The run record's hash cache of every script the tests run (in process or as a subprocess) lives in a
    temporary folder, never in the user's ``~/.cache/vlr``."""
    folder = tmp_path_factory.mktemp("vlr_cache")
    saved = os.environ.get("VLR_CACHE_DIR")
    os.environ["VLR_CACHE_DIR"] = str(folder)
    yield folder
    if saved is None:
        os.environ.pop("VLR_CACHE_DIR", None)
    else:
        os.environ["VLR_CACHE_DIR"] = saved


@pytest.fixture
def one_thread():
    """Tiny models on a shared 2-core machine run far faster on one intra-op thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def read_only(monkeypatch):
    """Make folders read-only, also for root (whom the mode bits do not stop): ``os.access`` refuses writing there."""
    folders = []
    access = os.access

    def guarded(path, mode, *args, **kwargs):
        inside = Path(path).resolve() in folders
        return access(path, mode, *args, **kwargs) and not (inside and mode & os.W_OK)

    monkeypatch.setattr(os, "access", guarded)

    def add(folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o555)
        folders.append(folder.resolve())
        return folder

    yield add
    for folder in folders:
        folder.chmod(0o755)
