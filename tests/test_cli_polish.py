"""Readable outputs: progress bars on a terminal only, rounded printed metrics, worker counts capped at the cores,
training curves with a legend outside and one style per series, a light weights checker, ignored output folders."""
import argparse
import csv
import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import common.runtime as runtime
from common.args import add_output_args
from common.training.plots import draw_training_curves, series_style
from common.training.resume import IGNORED_FLAGS

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("env, drawn", [({}, False), ({"VLR_PROGRESS": "1"}, True),
                                        ({"VLR_PROGRESS": "1", "VLR_NO_PROGRESS": "1"}, False)])
def test_progress_bars_only_on_a_terminal(monkeypatch, env, drawn):
    for name in ("VLR_PROGRESS", "VLR_NO_PROGRESS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    log = io.StringIO()  # a redirected stderr: not a terminal
    monkeypatch.setattr(sys, "stderr", log)
    assert list(runtime.progress(range(30), desc="steps")) == list(range(30))
    assert ("\r" in log.getvalue()) is drawn


def test_default_workers_are_capped_at_the_cores(monkeypatch):
    monkeypatch.setattr(runtime, "available_cpus", lambda: 2)
    assert [runtime.default_workers(n) for n in (0, 1, 2, 8)] == [0, 1, 2, 2]
    assert runtime.available_cpus() == 2


def test_printed_numbers_are_rounded():
    assert runtime.format_metrics({"r_sum": 198.15999999999997, "recall_at1": 12.5, "n": 3}) == \
        "r_sum 198.16, recall_at1 12.50, n 3"
    assert runtime.format_number(0.00030000000000000073) == "0.0003"


def test_training_curves_legend_outside_and_distinct_styles(tmp_path):
    columns = [f"recall_at{k}" for k in (1, 5, 10, 50)] + [f"group_recall_at{k}" for k in (1, 2, 3)] + \
        ["mean(R@5+R_s@1)", "arithmetic_mean", "harmonic_mean", "geometric_mean", "extra"]
    styles = {tuple(sorted((k, v) for k, v in series_style(i).items() if k != "markersize")) for i in range(12)}
    assert len(styles) == 12
    assert len({series_style(i)["color"] for i in range(12)}) == 12  # CIRR's 11 series share no colour
    with open(tmp_path / "train.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["epoch", "train_epoch_loss"], [0, 2.0], [1, 1.0]])
    with open(tmp_path / "val.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *columns])
        writer.writerows([[epoch, *([100.0] * len(columns))] for epoch in (0, 1)])
    fig = draw_training_curves(tmp_path / "train.csv", tmp_path / "val.csv")
    try:
        fig.canvas.draw()
        axes = fig.axes[1]
        legend = axes.get_legend()
        assert len(legend.get_texts()) == 12
        assert legend.get_window_extent().x0 >= axes.get_window_extent().x1
        lines = axes.get_lines()
        assert len({(line.get_color(), line.get_linestyle(), line.get_marker()) for line in lines}) == 12
        assert len({line.get_markersize() for line in lines}) > 1  # overlapping series stay visible
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_training_curves_of_a_two_epoch_run_have_integer_epoch_ticks(tmp_path):
    with open(tmp_path / "train.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["epoch", "train_epoch_loss"], [0, 2.0], [1, 1.0]])
    with open(tmp_path / "val.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([["epoch", "recall_at1"], [0, 10.0], [1, 20.0]])
    fig = draw_training_curves(tmp_path / "train.csv", tmp_path / "val.csv")
    try:
        fig.canvas.draw()
        for axes in fig.axes:
            low, high = axes.get_xlim()
            ticks = [tick for tick in axes.get_xticks() if low <= tick <= high]
            assert ticks == [0.0, 1.0]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)


def test_run_name_and_resume_help_say_what_happens():
    parser = argparse.ArgumentParser()
    add_output_args(parser)
    helps = {action.dest: " ".join(action.help.split()) for action in parser._actions}
    assert "_1, _2... is appended" in helps["run_name"]
    grouped = {"api_key": "the Comet flags", "workspace": "the Comet flags", "experiment_name": "the Comet flags",
               "fiq_root": "per-dataset roots", "shoes_root": "per-dataset roots", "cirr_root": "per-dataset roots",
               "resume": "RUN_DIR"}
    for name in IGNORED_FLAGS:
        assert grouped.get(name, f"--{name.replace('_', '-')}") in helps["resume"], name
    assert "must equal the run's" in helps["resume"]


def test_weights_check_help_does_not_import_torch():
    code = ("import runpy, sys; sys.argv = ['weights/check.py', '--help']\n"
            "try:\n    runpy.run_path('weights/check.py', run_name='__main__')\n"
            "except SystemExit:\n    pass\nprint('torch loaded:', 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert "--paper" in result.stdout and "torch loaded: False" in result.stdout


@pytest.mark.skipif(shutil.which("git") is None or not (REPO / ".git").exists(), reason="needs the git checkout")
def test_gitignore_covers_the_default_output_folders():
    paths = ["output/Retrieval_flickr/log.txt", "models/run/resume.pt", "submission/CIRR/a.json", "demo_out/x",
             "logs/ratta/log.txt", "test_embedding/a.pth", "cache/features.pt"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *paths], cwd=REPO, capture_output=True, text=True)
    assert result.stdout.split() == paths
