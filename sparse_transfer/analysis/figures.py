"""The accuracy-vs-sparsity figure: absolute top-1 and delta against dense, one row per mode."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from sparse_transfer.analysis.results import is_dense
from sparse_transfer.analysis.summary import per_dataset, summarize

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["plot_accuracy_vs_sparsity"]


def plot_accuracy_vs_sparsity(results: pd.DataFrame, path: str | Path) -> Path:
    """Write a PNG: per mode, mean top-1 (left) and mean delta vs dense (right) by sparsity.

    The left panel averages each method's per-dataset mean top-1 over datasets; the right one
    plots ``summarize``'s mean delta with +-1 sample std over datasets as error bars.
    """
    import matplotlib

    # Reports are written on headless cluster nodes and in CI: never ask for a display.
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = summarize(results)
    absolute = (
        per_dataset(results)
        .groupby(["mode", "method", "sparsity"])["mean_top1"]
        .mean()
        .reset_index()
    )
    modes = list(dict.fromkeys(summary["mode"]))
    fig, axes = plt.subplots(
        len(modes), 2, figsize=(13, 4.8 * len(modes)), squeeze=False, layout="constrained"
    )
    for row, mode in enumerate(modes):
        label = mode or "mode unknown"
        _plot_absolute(axes[row][0], absolute[absolute["mode"] == mode], label)
        _plot_delta(axes[row][1], summary[summary["mode"] == mode], label)
    fig.suptitle("Transfer accuracy of sparse ImageNet models vs. sparsity", fontsize=14)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _methods(frame: pd.DataFrame) -> list[str]:
    return sorted(m for m in frame["method"].unique() if not is_dense(m))


def _plot_absolute(ax: Axes, frame: pd.DataFrame, mode: str) -> None:
    dense = frame[frame["method"].map(is_dense)]
    if not dense.empty:
        ax.axhline(dense["mean_top1"].mean(), color="black", linestyle="--", label="dense")
    for method in _methods(frame):
        points = frame[frame["method"] == method].sort_values("sparsity")
        ax.plot(points["sparsity"] * 100, points["mean_top1"], marker="o", label=method)
    ax.set_title(f"{mode}: mean top-1 over datasets")
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def _plot_delta(ax: Axes, frame: pd.DataFrame, mode: str) -> None:
    ax.axhline(0.0, color="black", linestyle="--", linewidth=1, label="dense")
    for method in _methods(frame):
        points = frame[frame["method"] == method].sort_values("sparsity")
        ax.errorbar(
            points["sparsity"] * 100,
            points["mean_delta_pts"],
            yerr=points["std_delta_pts"].fillna(0.0),
            marker="o",
            capsize=3,
            label=method,
        )
    ax.set_title(f"{mode}: mean delta vs. dense (±1 std over datasets)")
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("delta top-1 (pts)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
