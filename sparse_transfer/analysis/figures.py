"""The accuracy-vs-sparsity figure: absolute top-1 and delta against dense, one row per
(architecture, mode)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sparse_transfer.analysis.results import is_dense
from sparse_transfer.analysis.summary import per_dataset, summary_or_why

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["BARS_LABEL", "accuracy_vs_sparsity_figure", "plain_text", "plot_accuracy_vs_sparsity"]

BARS_LABEL = "bars: 95% bootstrap interval over datasets and seeds; hollow: interval holds 0"
# Methods at one sparsity are spread over this many sparsity points, so their bars never
# sit on top of each other.
_SPREAD_PTS = 1.6


def plain_text():
    """A context in which every label is drawn as given: no mathtext, no LaTeX.

    Method names come from user data; ``$\\undefinedmacro$`` must be a name, not a crash.
    """
    import matplotlib

    # Reports are written on headless cluster nodes and in CI: never ask for a display.
    matplotlib.use("Agg")
    return matplotlib.rc_context({"text.parse_math": False, "text.usetex": False})


def plot_accuracy_vs_sparsity(
    results: pd.DataFrame,
    path: str | Path,
    *,
    reference: pd.DataFrame | None = None,
    summary: pd.DataFrame | None = None,
) -> Path:
    """Write the figure of ``accuracy_vs_sparsity_figure`` as a PNG."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with plain_text():
        import matplotlib.pyplot as plt

        fig = accuracy_vs_sparsity_figure(results, reference=reference, summary=summary)
        try:
            fig.savefig(path, dpi=120)
        finally:
            plt.close(fig)
    return path


def accuracy_vs_sparsity_figure(
    results: pd.DataFrame,
    *,
    reference: pd.DataFrame | None = None,
    summary: pd.DataFrame | None = None,
) -> Figure:
    """Per (arch, mode): mean top-1 over datasets (left), mean delta vs dense with its 95%
    interval (right). ``reference`` (a ``summarize`` of the paper's numbers) is overlaid on
    the delta panel as dotted lines. ``summary``: the results' ``summarize`` when the caller
    has it (its bootstrap is not run twice). Call inside ``plain_text()``."""
    import matplotlib.pyplot as plt

    if summary is None:  # no dense baseline: an empty summary, the delta panels stay empty
        summary, _ = summary_or_why(results)
    absolute = (
        per_dataset(results)
        .groupby(["arch", "mode", "method", "sparsity"])["mean_top1"]
        .mean()
        .reset_index()
    )
    shown = summary if not summary.empty else absolute
    groups = list(dict.fromkeys(zip(shown["arch"], shown["mode"], strict=True)))
    fig, axes = plt.subplots(
        len(groups), 2, figsize=(13, 4.8 * len(groups)), squeeze=False, layout="constrained"
    )
    for row, (arch, mode) in enumerate(groups):
        label = " ".join(x for x in (arch, mode) if x) or "arch and mode unknown"
        here = (absolute["arch"] == arch) & (absolute["mode"] == mode)
        _plot_absolute(axes[row][0], absolute[here], label)
        ours = summary[(summary["arch"] == arch) & (summary["mode"] == mode)]
        paper = None
        if reference is not None:
            paper = reference[(reference["arch"] == arch) & (reference["mode"] == mode)]
        _plot_delta(axes[row][1], ours, label, paper)
    fig.suptitle(_title(results), fontsize=14)
    return fig


def _title(results: pd.DataFrame) -> str:
    """Say what was measured: the architectures and the datasets, from the table itself."""
    archs = ", ".join(sorted(a for a in results["arch"].unique() if a)) or "unknown arch"
    datasets = sorted(results["dataset"].unique())
    shown = ", ".join(datasets) if len(datasets) <= 4 else f"{len(datasets)} datasets"
    return f"Transfer top-1 vs. sparsity: {archs} on {shown}"


def _methods(frame: pd.DataFrame) -> list[str]:
    return sorted(m for m in frame["method"].unique() if not is_dense(m))


def _sparsity_ticks(ax: Axes, frame: pd.DataFrame) -> None:
    measured = sorted(frame.loc[~frame["method"].map(is_dense), "sparsity"].unique())
    ax.set_xticks([s * 100 for s in measured], [f"{s * 100:g}" for s in measured])
    # Close sparsities (89 next to 90) would print over each other: tilt the labels.
    if any(b - a < 0.04 for a, b in itertools.pairwise(measured)):
        ax.tick_params(axis="x", labelrotation=45)


def _pad_y(ax: Axes, values: list[float]) -> None:
    """Limits that hold every value (the dense line included) with a margin on each side."""
    finite = [v for v in values if np.isfinite(v)]
    if not finite:
        return
    low, high = min(finite), max(finite)
    margin = max(0.08 * (high - low), 0.5)
    ax.set_ylim(low - margin, high + margin)


def _plot_absolute(ax: Axes, frame: pd.DataFrame, label: str) -> None:
    dense = frame[frame["method"].map(is_dense)]
    values = frame["mean_top1"].tolist()
    if not dense.empty:
        ax.axhline(dense["mean_top1"].mean(), color="black", linestyle="--", label="dense")
    for method in _methods(frame):
        points = frame[frame["method"] == method].sort_values("sparsity")
        ax.plot(points["sparsity"] * 100, points["mean_top1"], marker="o", label=method)
    _pad_y(ax, values)
    _sparsity_ticks(ax, frame)
    ax.set_title(f"{label}: mean top-1 over datasets")
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def _plot_delta(ax: Axes, frame: pd.DataFrame, label: str, paper: pd.DataFrame | None) -> None:
    dense_line = ax.axhline(0.0, color="black", linestyle="--", linewidth=1, label="dense")
    methods = _methods(frame)
    values = [0.0]
    handles = [dense_line]
    for index, method in enumerate(methods):
        points = frame[frame["method"] == method].sort_values("sparsity")
        offset = _SPREAD_PTS * (index - (len(methods) - 1) / 2) / max(len(methods), 1)
        x = points["sparsity"].to_numpy() * 100 + offset
        mean = points["mean_delta_pts"].to_numpy()
        low = np.where(points["ci_low_pts"].isna(), mean, points["ci_low_pts"])
        high = np.where(points["ci_high_pts"].isna(), mean, points["ci_high_pts"])
        bars = ax.errorbar(
            x, mean, yerr=[mean - low, high - mean], marker="o", capsize=3, label=method
        )
        color = bars.lines[0].get_color()
        noise = points["within_noise"].fillna(False).to_numpy(dtype=bool)
        ax.scatter(x[noise], mean[noise], s=36, color="white", edgecolors=color, zorder=3)
        handles.append(_legend_marker(method, color, hollow=bool(noise.size and noise.all())))
        values += [*low, *high]
        if paper is not None and not paper.empty:
            # Only at our sparsities: the overlay compares, it does not plot the paper.
            theirs = paper[
                (paper["method"] == method) & paper["sparsity"].isin(points["sparsity"])
            ]
            found, line = _plot_paper(ax, theirs, method, color)
            values += found
            handles += [line] if line is not None else []
    _pad_y(ax, values)
    _sparsity_ticks(ax, frame)
    ax.set_title(f"{label}: mean delta vs. dense\n({BARS_LABEL})", fontsize="medium")
    ax.set_xlabel("sparsity (%)")
    ax.set_ylabel("delta top-1 (pts)")
    ax.grid(alpha=0.3)
    # Below the axes: inside, it would sit on the bars' caps wherever the data is.
    ax.legend(
        handles=handles,
        fontsize="small",
        loc="upper center",
        bbox_to_anchor=(0.5, -0.16),
        ncol=min(len(handles), 4),
        frameon=False,
    )


def _legend_marker(method: str, color: str, hollow: bool):
    """A method's legend entry drawn as its points are: hollow when every one is."""
    from matplotlib.lines import Line2D

    face = "white" if hollow else color
    return Line2D([], [], color=color, marker="o", markerfacecolor=face, label=method)


def _plot_paper(ax: Axes, points: pd.DataFrame, method: str, color: str):
    points = points.sort_values("sparsity")
    if points.empty:
        return [], None
    (line,) = ax.plot(
        points["sparsity"] * 100,
        points["mean_delta_pts"],
        linestyle=":",
        marker="x",
        color=color,
        label=f"{method} (paper)",
    )
    return points["mean_delta_pts"].tolist(), line
