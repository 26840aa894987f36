"""Accuracy deltas of sparse models against the dense baseline, per dataset and overall.

Every statistic is taken within one architecture and one transfer mode: a ResNet-50 and a
MobileNetV1 at the same sparsity are different models, and never share a mean.

A (cell, seed) that appears more than once (the same run reported twice, possibly with
different values) counts as one seed: its rows are averaged into one value first, and
``duplicates`` lists them so that the report can name each one.
"""

from __future__ import annotations

import pandas as pd

from sparse_transfer.analysis.bootstrap import bootstrap_mean_deltas, percentile_interval
from sparse_transfer.analysis.results import is_dense

__all__ = [
    "DUPLICATES_RULE",
    "PER_DATASET_COLUMNS",
    "SUMMARY_COLUMNS",
    "duplicates",
    "per_dataset",
    "summarize",
    "within_noise",
]

SUMMARY_COLUMNS: list[str] = [
    "arch",
    "mode",
    "method",
    "sparsity",
    "n_datasets",
    "mean_delta_pts",
    "std_delta_pts",
    "ci_low_pts",
    "ci_high_pts",
    "within_noise",
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
_RUN = [*_CELL, "seed"]
_BASELINE = ["arch", "mode", "dataset"]
_ROW = ["arch", "mode", "method", "sparsity"]

DUPLICATES_RULE = (
    "A (cell, seed) reported more than once is counted as one seed: its values are averaged "
    "into one before any statistic, so it never counts as two seeds."
)


def duplicates(results: pd.DataFrame) -> pd.DataFrame:
    """Every (cell, seed) with more than one row: its key, the row count and the values."""
    repeated = results[results.duplicated(_RUN, keep=False)]
    grouped = repeated.groupby(_RUN, sort=False)["top1"]
    found = grouped.agg(
        rows="count", top1_values=lambda v: ", ".join(f"{x:g}" for x in v)
    ).reset_index()
    return found.sort_values(_RUN, kind="stable").reset_index(drop=True)


def one_row_per_seed(results: pd.DataFrame) -> pd.DataFrame:
    return results.groupby(_RUN, sort=False)["top1"].mean().reset_index()


def per_dataset(results: pd.DataFrame) -> pd.DataFrame:
    """Seed statistics of every (arch, mode, method, sparsity, dataset) and its delta vs dense.

    ``mean_top1``/``std_top1`` are over seeds (sample std, NaN for a single seed);
    ``dense_top1`` is the dense model's mean over seeds on the same arch, mode and dataset, and
    ``delta_pts = mean_top1 - dense_top1`` (both NaN where that dataset has no dense run;
    exactly 0 on the dense rows).
    """
    results = one_row_per_seed(results)
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


class NoDenseBaseline(ValueError):
    """The results hold no dense model: there is nothing to take deltas against."""


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean, spread and 95% interval over datasets of each method's delta against dense.

    Definition (in percentage points of top-1):

    1. For each (arch, mode, method, sparsity, dataset): mean top-1 over seeds, minus the dense
       model's mean top-1 over seeds on the same (arch, mode, dataset).
    2. Per (arch, mode, method, sparsity): ``n_datasets`` is the number of those per-dataset
       deltas; ``mean_delta_pts`` is their mean and ``std_delta_pts`` their sample standard
       deviation (ddof=1, NaN when ``n_datasets == 1``).
    3. ``ci_low_pts``/``ci_high_pts``: the 95% percentile interval of ``mean_delta_pts`` from
       a seeded two-stage paired bootstrap over datasets and seeds (``analysis.bootstrap``);
       NaN on the dense rows and where there is nothing to resample (one dataset, one seed).
       ``within_noise`` is True where that interval contains 0, False where it does not, and
       empty (``pd.NA``; an empty cell in summary.csv) where there is no interval: the dense
       rows are the reference, not a finding either way.

    Datasets without a dense baseline are skipped, not counted. Rows are sorted by arch, mode,
    dense first, then method name, then sparsity. Raises ``NoDenseBaseline`` (a
    ``ValueError``) if the table has no dense baseline at all.
    """
    if not results["method"].map(is_dense).any():
        methods = sorted(results["method"].unique())
        raise NoDenseBaseline(
            "no dense baseline in the results (no method named 'dense', any case); deltas "
            f"against dense cannot be computed. Methods found: {methods}"
        )
    deltas = per_dataset(results).dropna(subset=["dense_top1"])
    summary = (
        deltas.groupby(_ROW)["delta_pts"]
        .agg(n_datasets="count", mean_delta_pts="mean", std_delta_pts="std")
        .reset_index()
    )
    summary["n_datasets"] = summary["n_datasets"].astype(int)
    intervals = _intervals(one_row_per_seed(results), deltas)
    summary = summary.merge(intervals, on=_ROW, how="left")
    summary["within_noise"] = within_noise(summary["ci_low_pts"], summary["ci_high_pts"])
    return _sorted(summary, ["arch", "mode"], ["sparsity"])[SUMMARY_COLUMNS]


def within_noise(low: pd.Series, high: pd.Series) -> pd.Series:
    holds_zero = ((low <= 0.0) & (high >= 0.0)).astype("boolean")
    return holds_zero.mask(low.isna() | high.isna(), pd.NA)


def summary_or_why(results: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """``summarize``'s table and "", or, when the results hold no dense baseline (say the
    dense cell of a sweep failed), an empty table and why: a report of what there is."""
    try:
        return summarize(results), ""
    except NoDenseBaseline as err:
        return pd.DataFrame(columns=SUMMARY_COLUMNS), str(err)


def seed_accuracies(seeds: pd.DataFrame) -> dict[tuple, dict[str, list[float]]]:
    """(arch, mode, method, sparsity) -> dataset -> the seeds' top-1 values."""
    out: dict[tuple, dict[str, list[float]]] = {}
    for key, group in seeds.groupby(_CELL, sort=False)["top1"]:
        out.setdefault(tuple(key[:4]), {})[key[4]] = group.tolist()
    return out


def dense_accuracies(by_row: dict[tuple, dict[str, list[float]]], arch: str, mode: str):
    """The pooled dense baseline's seed values per dataset of one (arch, mode)."""
    dense: dict[str, list[float]] = {}
    for (a, m, method, _), datasets in by_row.items():
        if (a, m) == (arch, mode) and is_dense(method):
            for dataset, values in datasets.items():
                dense.setdefault(dataset, []).extend(values)
    return dense


def _intervals(seeds: pd.DataFrame, deltas: pd.DataFrame) -> pd.DataFrame:
    by_row = seed_accuracies(seeds)
    rows = []
    for key, group in deltas.groupby(_ROW, sort=False):
        low = high = float("nan")
        datasets = group["dataset"].tolist()
        accuracies = by_row[tuple(key)]
        dense = dense_accuracies(by_row, key[0], key[1])
        resamplable = (
            len(datasets) > 1 or max(len(accuracies[datasets[0]]), len(dense[datasets[0]])) > 1
        )
        if not is_dense(key[2]) and resamplable:
            replicates = bootstrap_mean_deltas({key: accuracies}, dense, datasets)[key]
            low, high = percentile_interval(replicates)
        rows.append((*key, low, high))
    return pd.DataFrame(rows, columns=[*_ROW, "ci_low_pts", "ci_high_pts"])


def _sorted(frame: pd.DataFrame, before: list[str], after: list[str]) -> pd.DataFrame:
    """Sort by ``before``, then dense first, then method name, then ``after``."""
    keyed = frame.assign(_not_dense=~frame["method"].map(is_dense))
    keys = [*before, "_not_dense", "method", *after]
    return keyed.sort_values(keys, kind="stable").drop(columns="_not_dense").reset_index(drop=True)
