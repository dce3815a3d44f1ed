"""Training-curve figures written next to the CSV logs."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from common.io import PathLike, new_file_mode


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
          "#17becf", "#000000", "#e6ab02")
"""matplotlib's tab10, then black and Dark2's dark yellow: 12 hues, so CIRR's 11 validation series share none."""
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*", "h", "p", "d")


def series_style(index: int) -> dict:
    """Matplotlib style of the ``index``-th series: the first 12 each get their own colour, and colour, line style
    and marker change together, so no two of the first 48 series look alike; marker sizes shrink along the list, so
    series lying on top of each other (all at 100) stay visible as nested markers."""
    return {"color": COLORS[index % len(COLORS)], "linestyle": LINESTYLES[(index // len(COLORS)) % len(LINESTYLES)],
            "marker": MARKERS[index % len(MARKERS)], "markersize": max(3.0, 9.0 - 0.5 * index),
            "markerfacecolor": "none", "linewidth": 1.4}


def plot_training_curves(
    train_csv: PathLike,
    val_csv: PathLike,
    out_png: PathLike,
    loss_column: str = "train_epoch_loss",
    metric_columns: list[str] | None = None,
    title: str | None = None,
) -> Path:
    """Plot the epoch loss (left) and validation recalls (right) per epoch into ``out_png``; the legend of the
    recalls sits outside the axes, one distinguishable style per series (``series_style``), epochs on integer
    ticks."""
    import matplotlib.pyplot as plt

    fig = draw_training_curves(train_csv, val_csv, loss_column, metric_columns, title)
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.stem}.tmp.png")
    try:
        fig.savefig(tmp, dpi=100, bbox_inches="tight")
        os.chmod(tmp, new_file_mode())
        tmp.replace(out_png)
    except BaseException:  # Ctrl-C included: no half-written file is left behind
        tmp.unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
    return out_png


def draw_training_curves(train_csv: PathLike, val_csv: PathLike, loss_column: str = "train_epoch_loss",
                         metric_columns: list[str] | None = None, title: str | None = None):
    """The figure ``plot_training_curves`` saves (a matplotlib Figure on the Agg backend; close it after use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    train_rows, val_rows = _read_csv(Path(train_csv)), _read_csv(Path(val_csv))
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(13, 4.5), gridspec_kw={"width_ratios": [1, 1.2]})
    if train_rows:
        ax_loss.plot([float(r["epoch"]) for r in train_rows], [float(r[loss_column]) for r in train_rows],
                     **series_style(0))
    ax_loss.set(xlabel="epoch", ylabel=loss_column, title="training loss")
    ax_loss.grid(alpha=0.3)
    if val_rows:
        columns = metric_columns or [c for c in val_rows[0] if c != "epoch"]
        epochs = [float(r["epoch"]) for r in val_rows]
        for index, column in enumerate(columns):
            values = [float(r[column]) if r.get(column) not in (None, "") else float("nan") for r in val_rows]
            ax_val.plot(epochs, values, label=column, **series_style(index))
        ax_val.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    ax_val.set(xlabel="epoch", ylabel="recall (%)", title="validation")
    ax_val.grid(alpha=0.3)
    for axes in (ax_loss, ax_val):
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
