"""Figure 8 of Candidate Re-ranking (plot_ranking_delta.py) as a person reads it: damaged label files end with one
line naming the file, and the figures have readable count ticks, integer rank ticks, titles, the meaning of delta
and a canvas sized to the panels drawn. Figures are inspected through the builders main() saves."""
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch

from common.runtime import run_main
from reranking_cir import plot_ranking_delta
from reranking_cir.plot_ranking_delta import (DELTA_NOTE, HEADER_IN, combined_figure, count_ticks, figure_size,
                                              index_figure, scatter_figure)
from reranking_cir.ranking_delta import delta_stats, load_labels

REPO = Path(__file__).resolve().parent.parent


def label_pair(ranks: list[tuple[int, int]], k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage-1 and stage-2 labels with one target per query at the given (r1, r2) columns."""
    stage1 = torch.zeros(len(ranks), k, dtype=torch.bool)
    stage2 = torch.zeros(len(ranks), k, dtype=torch.bool)
    for row, (r1, r2) in enumerate(ranks):
        stage1[row, r1], stage2[row, r2] = True, True
    return stage1, stage2


def shirt_like(k: int = 20) -> dict:
    """The demo's shirt: a handful of queries, at most 5 at one index (a default symlog axis shows only 10^0)."""
    return delta_stats(*label_pair([(0, 0)] * 5 + [(1, 0), (2, 4), (3, 1)], k), k)


def visible_ticks(axis) -> list[float]:
    low, high = axis.get_view_interval()
    return [tick for tick in axis.get_majorticklocs() if low <= tick <= high]


def texts(fig) -> list[str]:
    return [text.get_text() for text in fig.texts]


@pytest.fixture
def label_files(tmp_path) -> dict:
    stage1, stage2 = label_pair([(0, 0), (3, 1), (3, 2), (7, 2)], 10)
    torch.save({"labels": stage1}, tmp_path / "top_10_val.pt")
    torch.save(stage2, tmp_path / "stage2_labels.pt")
    return {"stage1": tmp_path / "top_10_val.pt", "stage2": tmp_path / "stage2_labels.pt", "out": tmp_path / "fig"}


def argv(files: dict, *extra: str) -> list[str]:
    return ["--dataset", "CIRR", "--stage1-topk", str(files["stage1"]), "--stage2-labels", str(files["stage2"]),
            "--k", "10", "--out-dir", str(files["out"]), *extra]


@pytest.mark.parametrize("damage, words", [("empty", ("empty",)), ("truncated", ("truncated", "corrupt")),
                                           ("missing", ("not found",))])
def test_damaged_labels_file_is_one_line_naming_file_and_flag(label_files, damage, words, capsys):
    path = label_files["stage2"]
    data = path.read_bytes()
    path.unlink()
    if damage != "missing":
        path.write_bytes(b"" if damage == "empty" else data[:len(data) // 2])
    with pytest.raises(SystemExit) as stop:
        run_main(plot_ranking_delta.main, argv(label_files))
    assert stop.value.code == 1
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and message.startswith(f"{Path(sys.argv[0]).name}: error: --stage2-labels: ")
    assert str(path) in message and "--stage2-labels" in message
    assert any(word in message for word in words), message
    assert not (label_files["out"]).exists()  # checked before any output


def test_command_line_reports_an_empty_labels_file_without_traceback(label_files):
    label_files["stage2"].write_bytes(b"")
    result = subprocess.run([sys.executable, "reranking_cir/plot_ranking_delta.py", *argv(label_files)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr and str(label_files["stage2"]) in result.stderr
    assert "empty" in result.stderr


def test_top_k_file_pickled_under_numpy_1_loads(tmp_path):
    """The authors' top-K files name NumPy 1.x's ``numpy.core.multiarray`` for their str arrays."""
    stage1, _ = label_pair([(0, 0), (2, 1)], 3)
    today = tmp_path / "numpy2.pt"
    torch.save({"sorted_index_names": np.array([["a", "b", "c"], ["c", "a", "b"]]), "labels": stage1}, today,
               _use_new_zipfile_serialization=False)  # one pickle stream, so the module name can be rewritten
    released = tmp_path / "numpy1.pt"
    released.write_bytes(today.read_bytes().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    assert b"numpy.core.multiarray\n" in released.read_bytes()
    assert torch.equal(load_labels(released, "stage-1 top-K file", "--stage1-topk"), stage1)


@pytest.mark.parametrize("max_count", [0, 1, 2, 5, 9, 40, 100, 650, 4000])
def test_count_axis_has_several_readable_ticks(max_count):
    assert len(count_ticks(max_count)) >= 3 and count_ticks(max_count)[-1] >= max_count
    stats = {"deltas": [0.0] * 20, "counts": [max_count] + [0] * 19}
    bottom = index_figure([("shirt", stats)], "t").axes[1]
    ticks = visible_ticks(bottom.yaxis)
    assert len(ticks) >= 3 and max(ticks) >= max_count
    labels = bottom.yaxis.get_major_formatter().format_ticks(ticks)
    assert labels == [str(int(tick)) for tick in ticks]  # plain integers, no 10^0 next to 0


def test_shirt_like_counts_axis_ticks():
    bottom = index_figure([("shirt", shirt_like())], "t").axes[1]
    assert visible_ticks(bottom.yaxis) == [0, 1, 2, 5]


def test_rank_axes_have_integer_ticks():
    stats = shirt_like()
    index_axes = index_figure([("shirt", stats)], "t").axes
    scatter_axis, = scatter_figure(stats, "t", 20).axes
    for axis in (index_axes[1].xaxis, scatter_axis.xaxis, scatter_axis.yaxis):
        ticks = visible_ticks(axis)
        assert len(ticks) >= 3 and all(float(tick).is_integer() for tick in ticks), ticks
    assert index_axes[0].xaxis.get_majorticklocs().tolist() == index_axes[1].xaxis.get_majorticklocs().tolist()


def test_figures_have_titles_and_the_meaning_of_delta(label_files):
    assert "stage-1 rank − stage-2 rank" in DELTA_NOTE and "Δ > 0" in DELTA_NOTE
    stats = plot_ranking_delta.main(argv(label_files, "--scatter"))["cirr"]
    assert stats["mean_r1"] - stats["mean_r2"] == stats["shift"] > 0  # the note's sign: positive = moved up
    for fig, words in ((index_figure([("shirt", stats)], "FashionIQ shirt: average Δ per initial rank"), "shirt"),
                       (scatter_figure(stats, "CIRR: Δ per query", 10), "CIRR"),
                       (combined_figure({"dress": stats, "shirt": stats, "toptee": stats}, 10), "FashionIQ")):
        title, note = texts(fig)
        assert words in title and "Δ" in title and note == DELTA_NOTE


def test_titles_of_the_saved_figures_name_dataset_and_category(monkeypatch, tmp_path):
    stage1, stage2 = label_pair([(0, 0), (3, 1)], 10)
    for category in ("dress", "shirt", "toptee"):
        torch.save(stage1, tmp_path / f"s1_{category}.pt")
        torch.save(stage2, tmp_path / f"s2_{category}.pt")
    saved = {}
    monkeypatch.setattr(plot_ranking_delta, "save_figure", lambda fig, path: saved.setdefault(path.name, fig))
    plot_ranking_delta.main(["--dataset", "fashionIQ", "--stage1-topk", str(tmp_path / "s1_DTYPE.pt"),
                             "--stage2-labels", str(tmp_path / "s2_DTYPE.pt"), "--k", "10", "--out-dir",
                             str(tmp_path / "fig"), "--scatter", "--combined"])
    assert len(saved) == 7
    for name, fig in saved.items():
        title, note = texts(fig)
        category = name.removesuffix(".png").split("_")[-1]
        assert "FashionIQ" in title and note == DELTA_NOTE
        assert category == "combined" or category in title
        assert ("per query" in title) == ("scatter" in name) and "K = 10" in title


def test_combined_canvas_fits_the_panels(label_files):
    width, height = figure_size()
    stats = plot_ranking_delta.main(argv(label_files, "--combined"))
    cirr = combined_figure(stats, 10)
    assert len(cirr.axes) == 2  # one panel: the delta bars over the counts
    assert tuple(cirr.get_size_inches()) == pytest.approx((width, height + HEADER_IN))
    image = matplotlib.image.imread(label_files["out"] / "cirr_init_index_vs_delta_avg_combined.png")
    assert image.shape[:2] == (round(150 * (height + HEADER_IN)), round(150 * width))
    fiq = combined_figure({name: stats["cirr"] for name in ("toptee", "dress", "shirt")}, 10)
    assert len(fiq.axes) == 6 and fiq.get_size_inches()[0] == pytest.approx(3 * width)
    assert [axis.get_title() for axis in fiq.axes[:3]] == ["dress", "shirt", "toptee"]  # the paper's order
