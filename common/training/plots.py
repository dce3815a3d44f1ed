"""Training-curve figures written next to the CSV logs."""
from __future__ import annotations

import csv
from pathlib import Path

from common.io import PathLike


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def plot_training_curves(
    train_csv: PathLike,
    val_csv: PathLike,
    out_png: PathLike,
    loss_column: str = "train_epoch_loss",
    metric_columns: list[str] | None = None,
    title: str | None = None,
) -> Path:
    """Plot the epoch loss (left) and validation recalls (right) per epoch into ``out_png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_rows, val_rows = _read_csv(Path(train_csv)), _read_csv(Path(val_csv))
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    if train_rows:
        ax_loss.plot([float(r["epoch"]) for r in train_rows], [float(r[loss_column]) for r in train_rows], marker="o")
    ax_loss.set(xlabel="epoch", ylabel=loss_column, title="training loss")
    if val_rows:
        columns = metric_columns or [c for c in val_rows[0] if c != "epoch"]
        epochs = [float(r["epoch"]) for r in val_rows]
        for column in columns:
            ax_val.plot(epochs, [float(r[column]) for r in val_rows], marker="o", label=column)
        ax_val.legend(fontsize=7)
    ax_val.set(xlabel="epoch", ylabel="recall (%)", title="validation")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name(f".{out_png.stem}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out_png)
    return out_png
