"""Accuracy deltas of sparse models against the dense baseline, per dataset and overall."""

from __future__ import annotations

import pandas as pd

from sparse_transfer.analysis.results import is_dense

__all__ = ["SUMMARY_COLUMNS", "PER_DATASET_COLUMNS", "per_dataset", "summarize"]

SUMMARY_COLUMNS: list[str] = [
    "mode",
    "method",
    "sparsity",
    "n_datasets",
    "mean_delta_pts",
    "std_delta_pts",
]
PER_DATASET_COLUMNS: list[str] = [
    "arch",
    "mode",
    "method",
    "sparsity",
    "dataset",
    "n_seeds",
    "mean_top1",
    "std_top1",
    "dense_top1",
    "delta_pts",
]

_CELL = ["arch", "mode", "method", "sparsity", "dataset"]
_BASELINE = ["arch", "mode", "dataset"]


def per_dataset(results: pd.DataFrame) -> pd.DataFrame:
    """Seed statistics of every (arch, mode, method, sparsity, dataset) and its delta vs dense.

    ``mean_top1``/``std_top1`` are over seeds (sample std, NaN for a single seed);
    ``dense_top1`` is the dense model's mean over seeds on the same arch, mode and dataset, and
    ``delta_pts = mean_top1 - dense_top1`` (both NaN where that dataset has no dense run;
    exactly 0 on the dense rows).
    """
    cells = (
        results.groupby(_CELL, sort=False)["top1"]
        .agg(n_seeds="count", mean_top1="mean", std_top1="std")
        .reset_index()
    )
    dense_rows = results[results["method"].map(is_dense)]
    # Pooled over every dense row of the cell, so "Dense" and "dense" count as one baseline.
    baseline = dense_rows.groupby(_BASELINE)["top1"].mean().rename("dense_top1").reset_index()
    cells = cells.merge(baseline, on=_BASELINE, how="left")
    cells["delta_pts"] = cells["mean_top1"] - cells["dense_top1"]
    # The baseline is the reference: exactly 0, not the float noise of a second groupby.
    dense_cells = cells["method"].map(is_dense) & cells["dense_top1"].notna()
    cells.loc[dense_cells, "delta_pts"] = 0.0
    return _sorted(cells, ["mode", "arch"], ["sparsity", "dataset"])[PER_DATASET_COLUMNS]


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and spread over datasets of each method's accuracy delta against dense.

    Definition (in percentage points of top-1):

    1. For each (arch, mode, method, sparsity, dataset): mean top-1 over seeds, minus the dense
       model's mean top-1 over seeds on the same (arch, mode, dataset).
    2. Per (mode, method, sparsity): ``n_datasets`` is the number of those per-dataset deltas
       (one per dataset, and per arch if several archs share a mode); ``mean_delta_pts`` is
       their mean and ``std_delta_pts`` their sample standard deviation (ddof=1, NaN when
       ``n_datasets == 1``).

    Datasets without a dense baseline are skipped, not counted. The dense rows are included
    (delta 0). Rows are sorted by mode, dense first, then method name, then sparsity.
    Raises ``ValueError`` if the table has no dense baseline at all.
    """
    if not results["method"].map(is_dense).any():
        methods = sorted(results["method"].unique())
        raise ValueError(
            "no dense baseline in the results (no method named 'dense', any case); deltas "
            f"against dense cannot be computed. Methods found: {methods}"
        )
    deltas = per_dataset(results).dropna(subset=["dense_top1"])
    summary = (
        deltas.groupby(["mode", "method", "sparsity"])["delta_pts"]
        .agg(n_datasets="count", mean_delta_pts="mean", std_delta_pts="std")
        .reset_index()
    )
    summary["n_datasets"] = summary["n_datasets"].astype(int)
    return _sorted(summary, ["mode"], ["sparsity"])[SUMMARY_COLUMNS]


def _sorted(frame: pd.DataFrame, before: list[str], after: list[str]) -> pd.DataFrame:
    """Sort by ``before``, then dense first, then method name, then ``after``."""
    keyed = frame.assign(_not_dense=~frame["method"].map(is_dense))
    keys = [*before, "_not_dense", "method", *after]
    return keyed.sort_values(keys, kind="stable").drop(columns="_not_dense").reset_index(drop=True)
