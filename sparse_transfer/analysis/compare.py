"""Does tuning change which pruning method wins? A fixed-hyperparameter sweep against a tuned
one, per architecture and mode.

The items ranked are the (method, sparsity) pairs of both sweeps (dense excluded), ordered by
mean delta against their own sweep's dense model (rank 1 is the smallest loss). Kendall's
tau-b between the two orders gets a 95% interval from the same paired bootstrap as the
summary: one replicate draws datasets once, for both sweeps, then seeds within each.
"""

from __future__ import annotations

import html
import os
import tempfile
from dataclasses import astuple, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sparse_transfer.analysis.bootstrap import bootstrap_mean_deltas, percentile_interval
from sparse_transfer.analysis.html_sections import html_table
from sparse_transfer.analysis.results import is_dense
from sparse_transfer.analysis.summary import (
    dense_accuracies,
    one_row_per_seed,
    per_dataset,
    seed_accuracies,
    summarize,
)

__all__ = [
    "CELL_COLUMNS",
    "RANKING_COLUMNS",
    "ComparePaths",
    "compare",
    "kendall_tau",
    "write_compare",
]

CELL_COLUMNS = ["arch", "mode", "method", "sparsity", "dataset", "fixed_top1", "tuned_top1"]
RANKING_COLUMNS = [
    "arch",
    "mode",
    "method",
    "sparsity",
    "fixed_mean_delta_pts",
    "tuned_mean_delta_pts",
    "fixed_rank",
    "tuned_rank",
    "kendall_tau",
    "tau_ci_low",
    "tau_ci_high",
]
_ITEM = ["arch", "mode", "method", "sparsity"]


@dataclass(frozen=True)
class ComparePaths:
    csv: Path  # RANKING_COLUMNS: per (arch, mode, method, sparsity), tau repeated per group
    cells: Path  # CELL_COLUMNS: mean test top-1 over seeds of every cell under each
    figure: Path
    html: Path


def kendall_tau(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of paired scores along the last axis (NaN where either is all ties)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    i, j = np.triu_indices(a.shape[-1], k=1)
    sa = np.sign(a[..., i] - a[..., j])
    sb = np.sign(b[..., i] - b[..., j])
    with np.errstate(invalid="ignore", divide="ignore"):
        return (sa * sb).sum(-1) / np.sqrt((sa != 0).sum(-1) * (sb != 0).sum(-1))


def compare(fixed: pd.DataFrame, tuned: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rankings, cells): see ``RANKING_COLUMNS`` and ``CELL_COLUMNS``."""
    cells = _cells(fixed, tuned)
    sides = {"fixed": summarize(fixed), "tuned": summarize(tuned)}
    parts = []
    for arch, mode in sorted(set(zip(cells["arch"], cells["mode"], strict=True))):
        parts.append(_ranking(fixed, tuned, sides, arch, mode))
    rankings = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    return rankings.reindex(columns=RANKING_COLUMNS), cells


def _cells(fixed: pd.DataFrame, tuned: pd.DataFrame) -> pd.DataFrame:
    key = [*_ITEM, "dataset"]
    left = per_dataset(fixed)[[*key, "mean_top1"]].rename(columns={"mean_top1": "fixed_top1"})
    right = per_dataset(tuned)[[*key, "mean_top1"]].rename(columns={"mean_top1": "tuned_top1"})
    return left.merge(right, on=key, how="outer").sort_values(key).reset_index(drop=True)


def _ranking(fixed, tuned, sides, arch: str, mode: str) -> pd.DataFrame:
    def items(summary: pd.DataFrame) -> pd.DataFrame:
        here = summary[(summary["arch"] == arch) & (summary["mode"] == mode)]
        return here[~here["method"].map(is_dense)].set_index(["method", "sparsity"])

    left, right = items(sides["fixed"]), items(sides["tuned"])
    shared = left.index.intersection(right.index)
    frame = pd.DataFrame(
        {
            "fixed_mean_delta_pts": left.loc[shared, "mean_delta_pts"],
            "tuned_mean_delta_pts": right.loc[shared, "mean_delta_pts"],
        }
    )
    for side in ("fixed", "tuned"):
        frame[f"{side}_rank"] = frame[f"{side}_mean_delta_pts"].rank(ascending=False)
    tau = float(kendall_tau(frame["fixed_mean_delta_pts"], frame["tuned_mean_delta_pts"]))
    low, high = _tau_interval(fixed, tuned, arch, mode, list(shared))
    frame = frame.reset_index().assign(
        arch=arch, mode=mode, kendall_tau=tau, tau_ci_low=low, tau_ci_high=high
    )
    return frame.sort_values("tuned_rank", kind="stable")


def _tau_interval(fixed, tuned, arch, mode, items: list) -> tuple[float, float]:
    if len(items) < 2:
        return float("nan"), float("nan")
    sides = []
    for table in (fixed, tuned):
        by_row = seed_accuracies(one_row_per_seed(table))
        chosen = {item: by_row[(arch, mode, *item)] for item in items}
        sides.append((chosen, dense_accuracies(by_row, arch, mode)))
    # Datasets that every item and both dense baselines have: the paired resampling units.
    datasets = sorted(
        set.intersection(*(set(dense) for _, dense in sides)).intersection(
            *(set(v) for chosen, _ in sides for v in chosen.values())
        )
    )
    if not datasets:
        return float("nan"), float("nan")
    replicates = []
    for chosen, dense in sides:
        # The same seed gives both calls the same dataset draws: the pairing of the sweeps.
        drawn = bootstrap_mean_deltas(chosen, dense, datasets)
        replicates.append(np.stack([drawn[item] for item in items], axis=-1))
    return percentile_interval(kendall_tau(replicates[0], replicates[1]))


def write_compare(
    fixed: pd.DataFrame, tuned: pd.DataFrame, out_dir: str | Path, *, sources: tuple[str, str]
) -> ComparePaths:
    """Write compare.csv, compare_cells.csv, compare.png and compare.html (all or none)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rankings, cells = compare(fixed, tuned)
    if rankings.empty:
        raise ValueError(
            "the two sweeps share no (arch, mode, method, sparsity) with a dense baseline: "
            "nothing to compare"
        )
    names = ("compare.csv", "compare_cells.csv", "compare.png", "compare.html")
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".compare-") as scratch:
        staged = ComparePaths(*(Path(scratch) / name for name in names))
        rankings.to_csv(staged.csv, index=False)
        cells.to_csv(staged.cells, index=False)
        _figure(rankings, staged.figure)
        staged.html.write_text(_page(rankings, cells, staged.figure, sources), encoding="utf-8")
        for path in astuple(staged):
            os.replace(path, out_dir / path.name)
    return ComparePaths(*(out_dir / name for name in names))


def tau_title(group: pd.DataFrame) -> str:
    first = group.iloc[0].to_dict()  # a dict: a Series' .mode is a method, not the column
    return (
        f"{first['arch']} {first['mode']}: Kendall's tau {first['kendall_tau']:+.2f} "
        f"(95% interval {first['tau_ci_low']:+.2f} to {first['tau_ci_high']:+.2f})"
    )


def _figure(rankings: pd.DataFrame, path: Path) -> None:
    """Per (arch, mode), a slope chart: each method's mean delta under fixed and tuned."""
    from sparse_transfer.analysis.figures import plain_text

    with plain_text():
        import matplotlib.pyplot as plt

        groups = list(rankings.groupby(["arch", "mode"], sort=False))
        fig, axes = plt.subplots(
            1, len(groups), figsize=(6.5 * len(groups), 5), squeeze=False, layout="constrained"
        )
        for ax, (_, group) in zip(axes[0], groups, strict=True):
            for row in group.itertuples(index=False):
                ys = [row.fixed_mean_delta_pts, row.tuned_mean_delta_pts]
                ax.plot([0, 1], ys, marker="o", label=f"{row.method} {row.sparsity * 100:g}%")
            ax.axhline(0.0, color="black", linestyle="--", linewidth=1)
            ax.set_xticks([0, 1], ["fixed hyperparameters", "tuned"])
            ax.set_xlim(-0.3, 1.3)
            ax.set_ylabel("mean delta vs. dense (pts)")
            ax.set_title(tau_title(group), fontsize="medium")
            ax.grid(alpha=0.3)
            ax.legend(fontsize="small")
        fig.suptitle("Does tuning change which method wins?", fontsize=14)
        try:
            fig.savefig(path, dpi=120)
        finally:
            plt.close(fig)


def _page(rankings: pd.DataFrame, cells: pd.DataFrame, figure: Path, sources) -> str:
    import base64

    image = base64.b64encode(figure.read_bytes()).decode("ascii")
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>fixed vs. tuned</title></head><body>',
        "<h1>Fixed vs. tuned hyperparameters</h1>",
        f"<p>fixed: {esc(sources[0])}<br>tuned: {esc(sources[1])}</p>",
        "<p>Rank 1 is the smallest loss against dense. The interval of Kendall's tau is the "
        "95% percentile interval of a paired bootstrap over datasets and seeds.</p>",
    ]
    for _, group in rankings.groupby(["arch", "mode"], sort=False):
        parts += [f"<h2>{esc(tau_title(group))}</h2>", html_table(group, {})]
    parts += [
        f'<img alt="fixed vs tuned" src="data:image/png;base64,{image}">',
        "<h2>Every cell: mean test top-1 over seeds</h2>",
        html_table(cells, {}),
        "</body></html>",
    ]
    return "\n".join(parts)
