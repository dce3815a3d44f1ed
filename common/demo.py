"""The contract between the top-level ``demo.py`` and each paper's ``<paper>/demo.py``.

``demo.py`` writes the synthetic datasets and tiny weights once, then calls ``run(ctx)`` of every paper folder that
has a ``demo.py``. Each ``run`` launches the paper's real scripts as subprocesses and returns its entry of
``demo_out/summary.json``: ``{"command": [...], "metrics": {...}, "baseline_metrics": {...}, "outputs": {...},
"seconds": x}``, optionally with ``"clean_metrics"`` (the same model on unshifted data, for context).

Every ``run_script`` call is recorded in ``ctx.runs``; ``demo.py`` adds them to the entry as ``"commands"`` (argv
lists, in order) and writes ``out/<paper>/commands.sh`` (``write_commands_script``), which replays them.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common.io import atomic_write_text


@dataclass
class DemoContext:
    """Where the demo's inputs live.

    ``data``: the data root (``fashionIQ_dataset/``, ``cirr_dataset/``, ``shoes/``, ``coco/``, ``flickr/``).
    ``weights``: tiny weights in the released formats: ``model_base.pth`` (BLIP ``{'model': sd}``, random),
    ``model_base_retrieval_coco.pth`` (BLIP retrieval layout, every ``BlipRetrieval`` key; the ITC path trained on
    the clean synthetic COCO split ``out/source_data/`` of seed + 1, minus any image whose scene is also in
    ``data/coco``; the ITM head is random), ``vit_config.json`` (the tiny ViT, for ``--vit-config``),
    ``med_config.json`` (tiny MED), ``tokenizer/vocab.txt``, ``clip_vit.pt`` and ``clip_rn.pt`` (tiny CLIP state
    dicts).
    ``out``: the demo output folder; each paper writes under ``out/<paper>/``.
    ``data_large``: a data root holding only ``cirr_dataset/``: the CIRR of ``data`` (val and test1 byte for byte)
    with a larger train split, for the pipelines that need more training triplets than the others (re-ranking's
    stage 2).
    """

    out: Path
    data: Path
    weights: Path
    data_large: Path | None = None
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)
    runs: list["ScriptRun"] = field(default_factory=list)
    """Every script run through this context (shared by ``dataclasses.replace`` copies), in order."""
    cleared: list[Path] = field(default_factory=list)
    """Output folders removed before the first command (``clear``); ``commands.sh`` removes them too."""

    def clear(self, *folders: Path) -> None:
        """Remove earlier outputs (e.g. run folders of a previous demo) so that the scripts start fresh."""
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
            self.cleared.append(Path(folder))

    def paper_dir(self, paper: str) -> Path:
        path = self.out / paper
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class ScriptRun:
    argv: list[str]
    seconds: float
    stdout: str
    cwd: str = ""
    env: dict[str, str] = field(default_factory=dict)
    """The variables the demo set for the script (on top of the caller's environment)."""


def run_script(ctx: DemoContext, argv: list[str], cwd: Path | None = None, log: Path | None = None) -> ScriptRun:
    """Run ``[python, *argv]`` (argv[0] is a script path or ``-m``), fail loudly with the tail of its output.
    The run is appended to ``ctx.runs`` (also when it fails)."""
    extra = {"VLR_NO_PROGRESS": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"), **ctx.env}
    run = ScriptRun(argv=[str(arg) for arg in argv], seconds=0.0, stdout="", cwd=str(Path(cwd or os.getcwd())),
                    env=extra)
    ctx.runs.append(run)
    start = time.perf_counter()
    result = subprocess.run([ctx.python, *run.argv], cwd=cwd, env={**os.environ, **extra}, capture_output=True,
                            text=True)
    run.seconds, run.stdout = time.perf_counter() - start, result.stdout
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"demo step failed ({' '.join(argv)}):\n{(result.stdout + result.stderr)[-4000:]}")
    return run


def write_commands_script(path: Path, runs: list[ScriptRun], repo: Path, python: str = sys.executable,
                          title: str = "demo pipeline", cleared: list[Path] | tuple = ()) -> Path:
    """A bash script that replays ``runs`` in order from the repository root ``repo`` (``$REPO`` overrides it,
    ``$PYTHON`` the interpreter), with the environment variables the demo set, after removing the ``cleared``
    output folders as the demo did; executable."""
    repo = Path(repo).resolve()
    lines = ["#!/usr/bin/env bash",
             f"# Replays the {title}: every command demo.py ran, in order, from the repository root.",
             f"#   bash {path.name}            (REPO=... and PYTHON=... override the paths below)",
             "set -euo pipefail",
             f"REPO=\"${{REPO:-{repo}}}\"",
             f"PYTHON=\"${{PYTHON:-{python}}}\"",
             'cd "$REPO"']
    if cleared:
        lines.append("rm -rf " + " ".join(shlex.quote(str(folder)) for folder in cleared))
    exported: dict[str, str] = {}
    for run in runs:
        changed = {name: value for name, value in run.env.items() if exported.get(name) != value}
        if changed:
            lines.append("export " + " ".join(f"{name}={shlex.quote(value)}" for name, value in changed.items()))
            exported.update(changed)
        command = '"$PYTHON" ' + shlex.join(run.argv)
        cwd = Path(run.cwd).resolve()
        if cwd != repo:
            where = f'"$REPO"/{shlex.quote(str(cwd.relative_to(repo)))}' if cwd.is_relative_to(repo) \
                else shlex.quote(str(cwd))
            command = f"(cd {where} && {command})"
        lines.append(command)
    atomic_write_text("\n".join(lines) + "\n", path)
    path.chmod(path.stat().st_mode | 0o111)
    return path
