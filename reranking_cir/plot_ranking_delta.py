"""Figure 8 of the paper as a script: the average rank change of the target against its stage-1 position
(``analysis_plot/plot_ranking_delta_vs_init_index.ipynb``).

    python reranking_cir/plot_ranking_delta.py --dataset fashionIQ \\
        --stage1-topk models/stage1/fashionIQ/fiq_top_200_val_DTYPE.pt \\
        --stage2-labels analysis_plot/fiq_stageII_labels_val_DTYPE.pt --k 200 --out-dir figures --combined

Per query whose target is in the top K: r1, r2 = its 0-based position before and after re-ranking. The top panel
shows avg delta_i = i - mean(r2 | r1 = i) per initial index, the bottom one the number of queries per index
(symlog). Writes ``<cirr|fiq>_init_index_vs_delta_avg[_<category>].png`` and ``..._stats.json`` (mean r1, mean r2,
their difference, deltas, counts), with ``--scatter`` a per-query scatter of r1 vs delta, and with ``--combined``
all panels of the run in one 2x2 figure. Inputs: top-K files or bare bool label tensors; stage-2 label files as
validate_stage2.py --save-labels writes them (or the authors' files). DTYPE stands for the FashionIQ category.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.cir.data import FIQ_DRESS_TYPES
from common.io import atomic_write_json
from reranking_cir.engine import dataset_name
from reranking_cir.paths import DTYPE
from reranking_cir.ranking_delta import delta_stats, load_labels

TEXT_WIDTH_PT = 496.86
PANEL_ORDER = ("dress", "shirt", "toptee", "cirr")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=dataset_name, required=True, help="CIRR or fashionIQ")
    parser.add_argument("--stage1-topk", required=True,
                        help="stage-1 top-K file (or bare bool labels) of the val split; DTYPE = FashionIQ category")
    parser.add_argument("--stage2-labels", required=True,
                        help="re-ordered labels (bool [N, K], validate_stage2.py --save-labels); DTYPE = category")
    parser.add_argument("--k", type=int, default=200, help="K: columns compared (default 200, as the paper)")
    parser.add_argument("--out-dir", required=True, help="folder for the PNGs and stats JSONs")
    parser.add_argument("--scatter", action="store_true", help="also plot r1 against delta per query")
    parser.add_argument("--combined", action="store_true", help="also draw every panel of this run in a 2x2 figure")
    return parser


def figure_size() -> tuple[float, float]:
    """1.5 x half the paper's text width (72.27 pt per inch), height = width / 1.4."""
    width = 1.5 * TEXT_WIDTH_PT / 2 / 72.27
    return width, width / 1.4


def draw_panel(axes, stats: dict) -> None:
    """Bars of avg delta (top axis) and the sample counts on a symlog scale (bottom axis)."""
    top, bottom = axes
    x = list(range(1, len(stats["deltas"]) + 1))
    top.bar(x, stats["deltas"], color="royalblue", width=0.8)
    top.grid(linestyle="--")
    top.set_ylabel("Average Δ")
    bottom.plot(x, stats["counts"], color="chocolate")
    bottom.set_yscale("symlog")
    bottom.grid(linestyle="--")
    bottom.set_ylabel("Number of samples")
    bottom.set_xlabel("Initial ranking (index)")


def save_figure(fig, path: Path) -> Path:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=150)
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = build_parser().parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"mathtext.fontset": "stix", "font.family": "STIXGeneral"})
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = FIQ_DRESS_TYPES if args.dataset == "fashioniq" else ["cirr"]
    all_stats = {}
    for name in names:
        suffix = "" if name == "cirr" else f"_{name}"
        prefix = "cirr" if name == "cirr" else "fiq"
        stage1_path, stage2_path = (p.replace(DTYPE, name) for p in (args.stage1_topk, args.stage2_labels))
        stats = delta_stats(load_labels(stage1_path, "stage-1 top-K labels"),
                            load_labels(stage2_path, "stage-2 label file"), args.k,
                            where=f"{stage1_path} vs {stage2_path}")
        print(f"{name}: mean r1 {stats['mean_r1']:.2f} -> mean r2 {stats['mean_r2']:.2f} "
              f"({stats['shift']:.2f} forward) over {stats['queries_in_top_k']} of {stats['queries']} queries")
        stem = f"{prefix}_init_index_vs_delta_avg{suffix}"
        fig, axes = plt.subplots(2, 1, sharex=True, figsize=figure_size(), gridspec_kw={"height_ratios": [2, 1]})
        draw_panel(axes, stats)
        fig.tight_layout()
        fig.subplots_adjust(hspace=0)
        save_figure(fig, out / f"{stem}.png")
        plt.close(fig)
        if args.scatter:
            fig, axis = plt.subplots(figsize=figure_size())
            axis.scatter([r + 1 for r in stats["r1"]], [a - b for a, b in zip(stats["r1"], stats["r2"])], s=4,
                         color="royalblue")
            axis.set(xlabel="Initial ranking (index)", ylabel="Δ")
            fig.tight_layout()
            save_figure(fig, out / f"{prefix}_init_index_vs_delta_scatter{suffix}.png")
            plt.close(fig)
        atomic_write_json({key: value for key, value in stats.items() if key not in ("r1", "r2")},
                          out / f"{stem}_stats.json", indent=2)
        all_stats[name] = stats
    if args.combined:
        width, height = figure_size()
        fig = plt.figure(figsize=(2 * width, 2 * height))
        grid = fig.add_gridspec(2, 2)
        for cell, name in zip(grid, [n for n in PANEL_ORDER if n in all_stats]):
            inner = cell.subgridspec(2, 1, height_ratios=[2, 1], hspace=0)
            top = fig.add_subplot(inner[0])
            draw_panel((top, fig.add_subplot(inner[1], sharex=top)), all_stats[name])
            top.set_title(name)
        fig.tight_layout()
        save_figure(fig, out / f"{'cirr' if args.dataset == 'cirr' else 'fiq'}_init_index_vs_delta_avg_combined.png")
        plt.close(fig)
    return all_stats


if __name__ == "__main__":
    main(sys.argv[1:])
