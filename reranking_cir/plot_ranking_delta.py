"""Figure 8 of the paper as a script: the average rank change of the target against its stage-1 position
(``analysis_plot/plot_ranking_delta_vs_init_index.ipynb``).

    python reranking_cir/plot_ranking_delta.py --dataset fashionIQ \\
        --stage1-topk models/stage1/fashionIQ/fiq_top_200_val_DTYPE.pt \\
        --stage2-labels analysis_plot/fiq_stageII_labels_val_DTYPE.pt --k 200 --out-dir figures --combined

Per query whose target is in the top K: r1, r2 = its 0-based position before and after re-ranking. The top panel
shows avg delta_i = i - mean(r2 | r1 = i) per initial index, the bottom one the number of queries per index
(symlog). Writes ``<cirr|fiq>_init_index_vs_delta_avg[_<category>].png`` and ``..._stats.json`` (mean r1, mean r2,
their difference, deltas, counts), with ``--scatter`` a per-query scatter of r1 vs delta, and with ``--combined``
all panels of the run side by side in one figure. Each figure has a title and says what delta means (delta =
r1 - r2, positive: moved up). Inputs: top-K files or bare bool label tensors; stage-2 label files as
validate_stage2.py --save-labels writes them (or the authors' files). DTYPE stands for the FashionIQ category.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator, StrMethodFormatter

from common.cir.data import FIQ_DRESS_TYPES
from common.io import atomic_write_json
from common.runtime import run_main
from reranking_cir.args import DATASET_HELP, dataset_name
from reranking_cir.paths import DTYPE
from reranking_cir.ranking_delta import delta_stats, load_labels

TEXT_WIDTH_PT = 496.86
PANEL_ORDER = ("dress", "shirt", "toptee", "cirr")
FONT = {"mathtext.fontset": "stix", "font.family": "STIXGeneral"}
HEADER_IN = 0.5  # inches above the panels for the title and the note on Δ
DELTA_NOTE = "Δ = stage-1 rank − stage-2 rank of the target (Δ > 0: re-ranking moved it up)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=dataset_name, required=True, help=DATASET_HELP)
    parser.add_argument("--stage1-topk", required=True,
                        help="stage-1 top-K file (or bare bool labels) of the val split; DTYPE = FashionIQ category")
    parser.add_argument("--stage2-labels", required=True,
                        help="re-ordered labels (bool [N, K], validate_stage2.py --save-labels); DTYPE = category")
    parser.add_argument("--k", type=int, default=200, help="K: columns compared (default 200, as the paper)")
    parser.add_argument("--out-dir", required=True, help="folder for the PNGs and stats JSONs")
    parser.add_argument("--scatter", action="store_true", help="also plot r1 against delta per query")
    parser.add_argument("--combined", action="store_true",
                        help="also draw every panel of this run side by side in one figure")
    return parser


def figure_size() -> tuple[float, float]:
    """One panel: 1.5 x half the paper's text width (72.27 pt per inch), height = width / 1.4."""
    width = 1.5 * TEXT_WIDTH_PT / 2 / 72.27
    return width, width / 1.4


def panel_name(name: str) -> str:
    return "CIRR" if name == "cirr" else name


def dataset_title(name: str) -> str:
    """``CIRR`` or ``FashionIQ <category>``."""
    return "CIRR" if name == "cirr" else f"FashionIQ {name}"


def count_ticks(max_count: int) -> list[int]:
    """Ticks of the symlog count axis: 0, then 1-2-5 steps up to 10, 1-3 steps up to 100 or decades beyond, up to
    the first tick >= ``max_count``; always at least three."""
    if max_count <= 10:
        candidates = [1, 2, 5, 10]
    elif max_count <= 100:
        candidates = [1, 3, 10, 30, 100]
    else:
        candidates = [10 ** power for power in range(len(str(max_count)) + 1)]
    ticks = [0]
    for tick in candidates:
        ticks.append(tick)
        if tick >= max(max_count, 2):
            break
    return ticks


def rank_locator() -> MaxNLocator:
    """Ticks for ranks and rank differences: integers in steps of 1, 2, 5 or 10 (times a power of ten)."""
    return MaxNLocator(integer=True, steps=[1, 2, 5, 10])


def draw_panel(axes, stats: dict) -> None:
    """Bars of avg delta (top axis) and the sample counts on a symlog scale (bottom axis), x = ranks 1..K."""
    top, bottom = axes
    x = list(range(1, len(stats["deltas"]) + 1))
    top.bar(x, stats["deltas"], color="royalblue", width=0.8)
    top.grid(linestyle="--", alpha=0.6)
    top.set_ylabel("Average Δ")
    top.tick_params(labelbottom=False)
    bottom.plot(x, stats["counts"], color="chocolate", linewidth=0.9)
    bottom.set_yscale("symlog")
    ticks = count_ticks(max(stats["counts"], default=0))
    bottom.set_ylim(0, ticks[-1] * 1.5)
    bottom.yaxis.set_major_locator(FixedLocator(ticks))
    bottom.yaxis.set_major_formatter(StrMethodFormatter("{x:g}"))
    bottom.yaxis.set_minor_locator(NullLocator())
    bottom.grid(linestyle="--", alpha=0.6)
    bottom.set_ylabel("Number of\nsamples")  # one line would be taller than this axis
    bottom.set_xlabel("Initial ranking (index)")
    bottom.xaxis.set_major_locator(rank_locator())


def add_header(fig: Figure, title: str) -> None:
    """The title and, below it, what Δ means, in the ``HEADER_IN`` inches above the axes."""
    height = fig.get_figheight()
    fig.text(0.5, 1 - 0.08 / height, title, ha="center", va="top", fontsize=11)
    fig.text(0.5, 1 - 0.32 / height, DELTA_NOTE, ha="center", va="top", fontsize=8.5, color="dimgray")
    fig.tight_layout(rect=(0, 0, 1, 1 - HEADER_IN / height))


def index_figure(panels: Sequence[tuple[str, dict]], title: str) -> Figure:
    """Figure 8's panels (avg delta over count per initial index) side by side, one column per ``(name, stats)``;
    column titles name the panels when there are several."""
    width, height = figure_size()
    fig = Figure(figsize=(width * len(panels), height + HEADER_IN))
    axes = fig.subplots(2, len(panels), sharex="col", squeeze=False, gridspec_kw={"height_ratios": [2, 1]})
    for column, (name, stats) in enumerate(panels):
        draw_panel(axes[:, column], stats)
        if len(panels) > 1:
            axes[0, column].set_title(panel_name(name))
    fig.align_ylabels()
    add_header(fig, title)
    fig.subplots_adjust(hspace=0)
    return fig


def scatter_figure(stats: dict, title: str, k: int) -> Figure:
    """Per query: its initial rank (1-based) against its delta = r1 - r2."""
    width, height = figure_size()
    fig = Figure(figsize=(width, height + HEADER_IN))
    axis = fig.subplots()
    axis.axhline(0, color="gray", linewidth=0.8)
    axis.scatter([r + 1 for r in stats["r1"]], [a - b for a, b in zip(stats["r1"], stats["r2"])], s=8, alpha=0.6,
                 linewidths=0, color="royalblue")
    axis.set(xlabel="Initial ranking (index)", ylabel="Δ", xlim=(0, k + 1))
    axis.grid(linestyle="--", alpha=0.6)
    axis.xaxis.set_major_locator(rank_locator())
    axis.yaxis.set_major_locator(rank_locator())
    add_header(fig, title)
    return fig


def combined_figure(all_stats: dict[str, dict], k: int) -> Figure:
    """Every panel of the run in the paper's order, (a) dress (b) shirt (c) toptee (d) CIRR."""
    names = [name for name in PANEL_ORDER if name in all_stats]
    dataset = "CIRR" if names == ["cirr"] else "FashionIQ"
    return index_figure([(name, all_stats[name]) for name in names],
                        f"{dataset}: average Δ per initial rank (K = {k})")


def save_figure(fig: Figure, path: Path) -> Path:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=150)
    tmp.replace(path)
    return path


def read_stats(args: argparse.Namespace) -> dict[str, dict]:
    """Per panel name: the delta statistics of its stage-1 and stage-2 files (DTYPE replaced), all read and
    checked before anything is written."""
    names = FIQ_DRESS_TYPES if args.dataset == "fashioniq" else ["cirr"]
    all_stats = {}
    for name in names:
        stage1, stage2 = (p.replace(DTYPE, name) for p in (args.stage1_topk, args.stage2_labels))
        all_stats[name] = delta_stats(load_labels(stage1, "stage-1 top-K file", "--stage1-topk"),
                                      load_labels(stage2, "stage-2 label file", "--stage2-labels"), args.k,
                                      where=f"{stage1} vs {stage2}")
    return all_stats


def main(argv: list[str] | None = None) -> dict[str, dict]:
    args = build_parser().parse_args(argv)
    all_stats = read_stats(args)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with matplotlib.rc_context(FONT):
        for name, stats in all_stats.items():
            suffix = "" if name == "cirr" else f"_{name}"
            prefix = "cirr" if name == "cirr" else "fiq"
            print(f"{name}: mean r1 {stats['mean_r1']:.2f} -> mean r2 {stats['mean_r2']:.2f} "
                  f"({stats['shift']:.2f} forward) over {stats['queries_in_top_k']} of {stats['queries']} queries")
            stem = f"{prefix}_init_index_vs_delta_avg{suffix}"
            title = f"{dataset_title(name)}: average Δ per initial rank (K = {args.k})"
            save_figure(index_figure([(name, stats)], title), out / f"{stem}.png")
            if args.scatter:
                save_figure(scatter_figure(stats, f"{dataset_title(name)}: Δ per query (K = {args.k})", args.k),
                            out / f"{prefix}_init_index_vs_delta_scatter{suffix}.png")
            atomic_write_json({key: value for key, value in stats.items() if key not in ("r1", "r2")},
                              out / f"{stem}_stats.json", indent=2)
        if args.combined:
            save_figure(combined_figure(all_stats, args.k),
                        out / f"{'cirr' if args.dataset == 'cirr' else 'fiq'}_init_index_vs_delta_avg_combined.png")
    return all_stats


if __name__ == "__main__":
    run_main(main, sys.argv[1:])
