"""The contract between the top-level ``demo.py`` and each paper's ``<paper>/demo.py``.

``demo.py`` writes the synthetic datasets and tiny weights once, then calls ``run(ctx)`` of every paper folder that
has a ``demo.py``. Each ``run`` launches the paper's real scripts as subprocesses and returns its entry of
``demo_out/summary.json``: ``{"command": [...], "metrics": {...}, "baseline_metrics": {...}, "outputs": {...},
"seconds": x}``, optionally with ``"clean_metrics"`` (the same model on unshifted data, for context).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


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
    """

    out: Path
    data: Path
    weights: Path
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)

    def paper_dir(self, paper: str) -> Path:
        path = self.out / paper
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class ScriptRun:
    argv: list[str]
    seconds: float
    stdout: str


def run_script(ctx: DemoContext, argv: list[str], cwd: Path | None = None, log: Path | None = None) -> ScriptRun:
    """Run ``[python, *argv]`` (argv[0] is a script path or ``-m``), fail loudly with the tail of its output."""
    env = {**os.environ, "VLR_NO_PROGRESS": "1", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
           **ctx.env}
    start = time.perf_counter()
    result = subprocess.run([ctx.python, *argv], cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(f"demo step failed ({' '.join(argv)}):\n{(result.stdout + result.stderr)[-4000:]}")
    return ScriptRun(argv=list(argv), seconds=seconds, stdout=result.stdout)
