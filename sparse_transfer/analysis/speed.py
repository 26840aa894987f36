"""Speed beside accuracy: the speed table (`sparse-transfer speed`) joined to the summary,
the accuracy-vs-speedup figure with its Pareto front, and its report section.

Accuracy from one set of weights is never joined with speed from another. A speed row joins
an accuracy row of the same (arch, method, sparsity) only when its weights are the ones the
accuracy was measured on: the same file (sha256) for a sweep's own upstreams; a published
checkpoint of the catalog for the paper's tables (which were measured on those). Speed
measured on anything else (a speed-only demonstration's random weights, another training
run) is refused with the reason, never quietly shown beside the wrong accuracy.
"""

from __future__ import annotations

import html
import io
import math
from pathlib import Path

import numpy as np
import pandas as pd

from sparse_transfer.analysis.results import is_dense

__all__ = [
    "PUBLISHED",
    "SPEED_SUMMARY_COLUMNS",
    "accuracy_vs_speedup_svg",
    "join_speed",
    "pareto_front",
    "read_speed",
    "speed_section",
    "speedups",
]

PUBLISHED = "published"  # accuracy of the catalog's published checkpoints (the paper's)
# Summary columns added beside each (arch, mode, method, sparsity) row.
SPEED_SUMMARY_COLUMNS = ["speedup", "speedup_engine", "speedup_batch_size", "flops_speedup"]
# The engine whose speedup is shown: the sparse one when it was measured.
_ENGINE_ORDER = ("deepsparse", "onnxruntime", "torch")
_KEY = ["arch", "method", "sparsity"]
_NEEDED = {*_KEY, "upstream", "engine", "batch_size", "status", "images_per_s"}
_NEEDED |= {"speedup_vs_dense_same_engine", "flops_speedup", "weights", "weights_sha256"}
_NEEDED |= {"source"}


def read_speed(where: str | Path) -> pd.DataFrame:
    """A speed table: DIR/speed.csv (or the CSV itself). ValueError naming the file when it
    is missing or lacks columns."""
    path = Path(where)
    if path.is_dir():
        path = path / "speed.csv"
    if not path.is_file():
        raise ValueError(f"--speed: {path} does not exist (write it with `sparse-transfer speed`)")
    try:
        table = pd.read_csv(path, keep_default_na=False, na_values=[""])
    except (ValueError, OSError) as err:
        raise ValueError(f"--speed: {path}: not a readable CSV: {err}") from None
    missing = sorted(_NEEDED - set(table.columns))
    if missing:
        raise ValueError(f"--speed: {path}: not a speed table (no columns {missing})")
    table["sparsity"] = table["sparsity"].astype(float).round(6)
    table.attrs["path"] = str(path)
    return table


def speedups(speed: pd.DataFrame, weights: dict | str) -> pd.DataFrame:
    """One row per (arch, method, sparsity): the measured speedup vs dense of the preferred
    engine at its largest batch. `weights` is what the accuracy was measured on: a mapping
    (arch, method, sparsity) -> set of sha256, or PUBLISHED. Raises ValueError naming the
    upstream when a row's weights are not those."""
    ok = speed[(speed["status"] == "ok") & speed["speedup_vs_dense_same_engine"].notna()]
    _check_weights(ok, weights, speed.attrs.get("path", "the speed table"))
    rows = []
    for key, group in ok.groupby(_KEY, sort=False):
        engines = [e for e in _ENGINE_ORDER if e in set(group["engine"])] or sorted(
            group["engine"]
        )
        mine = group[group["engine"] == engines[0]]
        best = mine[mine["batch_size"] == mine["batch_size"].max()].iloc[0]
        rows.append(
            (
                *key,
                best["speedup_vs_dense_same_engine"],
                engines[0],
                best["batch_size"],
                best["flops_speedup"],
            )
        )
    return pd.DataFrame(rows, columns=[*_KEY, *SPEED_SUMMARY_COLUMNS])


def _check_weights(speed: pd.DataFrame, weights: dict | str, where: str) -> None:
    for row in speed.itertuples(index=False):
        key = (row.arch, row.method, round(float(row.sparsity), 6))
        what = f"{where}: upstream {row.upstream!r} ({row.arch}, {row.method}, {row.sparsity:g})"
        if weights == PUBLISHED:
            if not str(row.source).startswith("catalog:") or row.weights != "trained":
                raise ValueError(
                    f"{what} was measured on {row.weights} weights from {row.source}, not on "
                    "the published checkpoint the accuracy table reports: speed and accuracy "
                    "of different weights are never joined. Measure the published "
                    "checkpoints (upstreams with `catalog:` in a sweep spec) instead."
                )
        elif key in weights and row.weights_sha256 not in weights[key]:
            raise ValueError(
                f"{what} was measured on weights {str(row.weights_sha256)[:12]} "
                f"({row.weights}, {row.source}); the accuracy on "
                f"{', '.join(sorted(s[:12] for s in weights[key]))}: speed and accuracy of "
                "different weights are never joined. Run `sparse-transfer speed` on the "
                "sweep's own spec."
            )


def join_speed(summary: pd.DataFrame, speed: pd.DataFrame) -> pd.DataFrame:
    """The summary with SPEED_SUMMARY_COLUMNS beside each row (empty where not measured)."""
    keyed = summary.assign(_sparsity=summary["sparsity"].astype(float).round(6))
    speed = speed.rename(columns={"sparsity": "_sparsity"})
    joined = keyed.merge(speed, on=["arch", "method", "_sparsity"], how="left")
    return joined.drop(columns="_sparsity")[[*summary.columns, *SPEED_SUMMARY_COLUMNS]]


def pareto_front(frame: pd.DataFrame) -> pd.Series:
    """True on the rows no other row beats on both speedup and mean delta (higher is better
    for both; ties on both are kept)."""
    x = frame["speedup"].to_numpy(dtype=float)
    y = frame["mean_delta_pts"].to_numpy(dtype=float)
    front = []
    for i in range(len(frame)):
        dominated = (x >= x[i]) & (y >= y[i]) & ((x > x[i]) | (y > y[i]))
        front.append(bool(np.isfinite(x[i]) and np.isfinite(y[i]) and not dominated.any()))
    return pd.Series(front, index=frame.index)


def accuracy_vs_speedup_svg(summary: pd.DataFrame) -> str:
    """One panel per transfer mode: measured speedup (x) against the mean delta vs dense with
    its 95% interval (y); the Pareto front of each architecture joined by a line. Inline SVG
    with real text, so the labels are readable on the page."""
    from sparse_transfer.analysis.figures import plain_text

    points = summary.dropna(subset=["speedup", "mean_delta_pts"])
    modes = list(dict.fromkeys(points["mode"]))
    with plain_text():
        import matplotlib
        import matplotlib.pyplot as plt

        with matplotlib.rc_context({"svg.fonttype": "none"}):
            fig, axes = plt.subplots(
                1,
                len(modes),
                figsize=(6.5 * len(modes), 4.8),
                squeeze=False,
                layout="constrained",
            )
            for ax, mode in zip(axes[0], modes, strict=True):
                _panel(ax, points[points["mode"] == mode], mode)
            buffer = io.StringIO()
            try:
                # no creation date or tool in the page: the same report renders the same
                metadata = {"Date": None, "Creator": None, "Format": None, "Type": None}
                fig.savefig(buffer, format="svg", metadata=metadata)
            finally:
                plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _panel(ax, frame: pd.DataFrame, mode: str) -> None:
    ax.axhline(0.0, color="black", linestyle="--", linewidth=1, label="dense")
    for arch, group in frame.groupby("arch", sort=False):
        mean = group["mean_delta_pts"].to_numpy(dtype=float)
        low = np.where(group["ci_low_pts"].isna(), mean, group["ci_low_pts"])
        high = np.where(group["ci_high_pts"].isna(), mean, group["ci_high_pts"])
        x = group["speedup"].to_numpy(dtype=float)
        bars = ax.errorbar(
            x, mean, yerr=[mean - low, high - mean], fmt="o", capsize=3, label=f"{arch}"
        )
        for xi, yi, method, sparsity in zip(
            x, mean, group["method"], group["sparsity"], strict=True
        ):
            tag = "dense" if is_dense(method) else f"{method} {sparsity * 100:g}%"
            ax.annotate(
                tag, (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize="x-small"
            )
        front = group[pareto_front(group)].sort_values("speedup")
        ax.plot(
            front["speedup"],
            front["mean_delta_pts"],
            color=bars.lines[0].get_color(),
            linewidth=2,
            alpha=0.5,
            label=f"{arch} Pareto front",
        )
    ax.set_title(f"{mode}: accuracy vs. measured speedup")
    ax.set_xlabel("measured speedup vs dense (x)")
    ax.set_ylabel("mean delta top-1 vs dense (pts, 95% interval)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def speed_section(summary: pd.DataFrame, note: str) -> list[str]:
    """The report's accuracy-vs-speedup figure and where its speed comes from."""
    measured = summary.dropna(subset=["speedup", "mean_delta_pts"])
    if measured.empty:
        return [
            "<h2>Accuracy vs. speedup</h2>",
            f"<p>{html.escape(note)}</p>" if note else "",
            "<p>No row of the summary has a measured speedup.</p>",
        ]
    front = pd.Series(False, index=measured.index)
    for _, group in measured.groupby(["arch", "mode"], sort=False):
        front.loc[group.index] = pareto_front(group)
    names = [
        f"{r.arch} {r.mode} {r.method} {r.sparsity * 100:g}% ({r.speedup:.2f}x)"
        for r in measured[front].itertuples()
    ]
    return [
        "<h2>Accuracy vs. speedup</h2>",
        f"<p>{html.escape(note)}</p>",
        f'<div class="figure" role="img" aria-label="accuracy vs speedup">'
        f"{accuracy_vs_speedup_svg(summary)}</div>",
        f"<p>Pareto front (no other model is both faster and more accurate): "
        f"{html.escape('; '.join(names))}.</p>",
    ]


def speedup_text(value: object) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else (f"{float(value):.2f}x")
    )
