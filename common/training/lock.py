"""A lock file in a run folder, so that two processes never train into one folder at once.

``run.lock`` is created with ``O_CREAT | O_EXCL`` (atomic: one process wins) and holds the owner's pid, host and
start time as JSON. A lock left by a process that no longer runs on this host is stale and taken over with a
warning; a lock of a live process (or of another host, whose processes cannot be checked) stops the newcomer with a
message naming the folder and the pid.
"""
from __future__ import annotations

import atexit
import json
import os
import socket
from datetime import datetime
from pathlib import Path

from common.errors import InputError
from common.io import PathLike, new_file_mode
from common.runtime import get_logger

logger = get_logger(__name__)

LOCK_FILE = "run.lock"


class RunLocked(InputError, RuntimeError):
    """Another live process trains into the run folder."""


def _owner() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now().isoformat(timespec="seconds")}


def read_lock(run_dir: PathLike) -> dict | None:
    """The owner recorded in ``run_dir/run.lock`` (``{}`` when the file is empty or unreadable), None without one."""
    path = Path(run_dir) / LOCK_FILE
    try:
        owner = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}
    return owner if isinstance(owner, dict) else {}


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def lock_state(owner: dict) -> str:
    """``'ours'`` (this process), ``'stale'`` (a dead process on this host) or ``'live'`` (anything else)."""
    pid, host = owner.get("pid"), owner.get("host")
    if not isinstance(pid, int) or host != socket.gethostname():
        return "live"
    if pid == os.getpid():
        return "ours"
    return "live" if _process_alive(pid) else "stale"


def _locked_message(run_dir: Path, owner: dict) -> str:
    path = run_dir / LOCK_FILE
    if "pid" not in owner:
        return (f"{run_dir}: {path} names no process (it is being written, or a crash left it empty); if no process "
                "trains into this folder, delete the file and run again")
    return (f"{run_dir}: another process trains into this folder (pid {owner['pid']} on {owner.get('host')}, "
            f"started {owner.get('started')}); wait for it to end or stop it. If no such process runs, delete {path}")


def check_unlocked(run_dir: PathLike) -> None:
    """Raise RunLocked when a live process other than this one holds ``run_dir``'s lock (writes nothing)."""
    owner = read_lock(run_dir)
    if owner is not None and lock_state(owner) == "live":
        raise RunLocked(_locked_message(Path(run_dir), owner))


def _create(path: Path, owner: dict) -> bool:
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, new_file_mode())
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as handle:
        json.dump(owner, handle)
    return True


def acquire_lock(run_dir: PathLike) -> dict:
    """Create ``run_dir/run.lock`` for this process, released by ``release_lock`` or at exit; returns the owner
    record. A stale lock (dead pid on this host) or one of this process is taken over, a live one raises
    RunLocked."""
    run_dir = Path(run_dir)
    path, owner = run_dir / LOCK_FILE, _owner()
    while not _create(path, owner):
        held = read_lock(run_dir)
        if held is None:  # released in between: try again
            continue
        state = lock_state(held)
        if state == "live":
            raise RunLocked(_locked_message(run_dir, held))
        if state == "stale":
            logger.warning("%s: taking over the lock of pid %s (started %s), which no longer runs", run_dir,
                           held.get("pid"), held.get("started"))
        path.unlink(missing_ok=True)
    atexit.register(release_lock, run_dir, owner)
    return owner


def release_lock(run_dir: PathLike, owner: dict) -> None:
    """Remove ``run_dir/run.lock`` if it still holds ``owner`` (a lock taken over since is left alone)."""
    if read_lock(run_dir) == owner:
        (Path(run_dir) / LOCK_FILE).unlink(missing_ok=True)
