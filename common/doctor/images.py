"""Listed image files: which are missing, and (``--decode``) which do not decode, in parallel with a progress bar."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable

from common.data.images import open_image
from common.errors import INPUT_ERRORS
from common.io import PathLike, atomic_write_text
from common.runtime import available_cpus, progress


def missing_images(paths: Iterable[Path]) -> list[str]:
    """The paths that are not files, in the given order."""
    return [str(path) for path in paths if not path.is_file()]


def decode_problem(path: PathLike) -> str | None:
    """None when ``path`` decodes completely, else ``'<path>: <reason>'`` (``common.data.images.open_image``'s
    message)."""
    try:
        open_image(path).close()
    except INPUT_ERRORS as error:
        return str(error)
    return None


def undecodable_images(paths: list[Path], workers: int | None = None, desc: str = "decoding") -> list[str]:
    """``'<path>: <reason>'`` for each of ``paths`` that does not decode, in order; ``workers`` threads (default:
    the cores this process may use). Pillow releases the GIL while it decodes, so threads run in parallel."""
    workers = workers or available_cpus()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        problems = list(progress(pool.map(decode_problem, paths), desc=desc, total=len(paths), unit="img"))
    return [problem for problem in problems if problem is not None]


def write_problem_list(missing: list[str], undecodable: list[str], path: PathLike) -> Path:
    """One line per file: ``missing<TAB>path`` or ``undecodable<TAB>path: reason`` (atomically)."""
    lines = [f"missing\t{name}" for name in missing] + [f"undecodable\t{name}" for name in undecodable]
    return atomic_write_text("".join(f"{line}\n" for line in lines), path)
