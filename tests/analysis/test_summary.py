from __future__ import annotations

import math

import pandas as pd
import pytest

from sparse_transfer.analysis import SUMMARY_COLUMNS, per_dataset, summarize


def _table(rows: list[tuple[str, str, float, str, str, float]]) -> pd.DataFrame:
    """Rows of (mode, method, sparsity, dataset, seed, top1); arch fixed to resnet50."""
    frame = pd.DataFrame(rows, columns=["mode", "method", "sparsity", "dataset", "seed", "top1"])
    return frame.assign(arch="resnet50")


ROWS = [
    # dataset a: dense mean 90, gmp@0.9 mean 88 -> delta -2
    ("full", "dense", 0.0, "a", "1", 89.0),
    ("full", "dense", 0.0, "a", "2", 91.0),
    ("full", "gmp", 0.9, "a", "1", 87.0),
    ("full", "gmp", 0.9, "a", "2", 89.0),
    # dataset b: dense 80, gmp@0.9 76 -> delta -4; gmp@0.8 only here
    ("full", "dense", 0.0, "b", "1", 80.0),
    ("full", "gmp", 0.9, "b", "1", 76.0),
    ("full", "gmp", 0.8, "b", "1", 79.5),
    # dataset c has no dense run: skipped, not counted
    ("full", "gmp", 0.9, "c", "1", 10.0),
    # another mode, named like the paper's dense model
    ("linear", "Dense", 0.0, "a", "1", 70.0),
    ("linear", "AC/DC", 0.9, "a", "1", 71.5),
]


def test_summary_columns_and_order() -> None:
    summary = summarize(_table(ROWS))
    assert list(summary.columns) == SUMMARY_COLUMNS
    keys = list(zip(summary["mode"], summary["method"], summary["sparsity"], strict=True))
    assert keys == [
        ("full", "dense", 0.0),
        ("full", "gmp", 0.8),
        ("full", "gmp", 0.9),
        ("linear", "Dense", 0.0),
        ("linear", "AC/DC", 0.9),
    ]


def test_deltas_average_seeds_then_datasets_with_sample_std() -> None:
    summary = summarize(_table(ROWS)).set_index(["mode", "method", "sparsity"])
    gmp = summary.loc[("full", "gmp", 0.9)]
    assert gmp["n_datasets"] == 2  # dataset c has no dense baseline
    assert gmp["mean_delta_pts"] == pytest.approx(-3.0)
    assert gmp["std_delta_pts"] == pytest.approx(math.sqrt(2.0))  # ddof=1 over (-2, -4)
    single = summary.loc[("full", "gmp", 0.8)]
    assert single["n_datasets"] == 1
    assert single["mean_delta_pts"] == pytest.approx(-0.5)
    assert math.isnan(single["std_delta_pts"])


def test_dense_rows_have_zero_delta_and_modes_are_separate() -> None:
    summary = summarize(_table(ROWS)).set_index(["mode", "method", "sparsity"])
    dense = summary.loc[("full", "dense", 0.0)]
    assert (dense["n_datasets"], dense["mean_delta_pts"], dense["std_delta_pts"]) == (2, 0, 0)
    assert summary.loc[("linear", "AC/DC", 0.9)]["mean_delta_pts"] == pytest.approx(1.5)


def test_dense_baseline_is_matched_by_arch() -> None:
    rows = _table(ROWS[:4])
    other_arch = _table([("full", "gmp", 0.9, "a", "1", 50.0)]).assign(arch="mobilenet")
    summary = summarize(pd.concat([rows, other_arch], ignore_index=True))
    gmp = summary[summary["method"] == "gmp"]
    assert gmp["n_datasets"].tolist() == [1]
    assert gmp["mean_delta_pts"].tolist() == pytest.approx([-2.0])


def test_no_dense_baseline_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"no dense baseline.*\['gmp'\]"):
        summarize(_table([("full", "gmp", 0.9, "a", "1", 80.0)]))


def test_per_dataset_seed_statistics() -> None:
    table = per_dataset(_table(ROWS)).set_index(["mode", "method", "sparsity", "dataset"])
    gmp_a = table.loc[("full", "gmp", 0.9, "a")]
    assert gmp_a["n_seeds"] == 2
    assert gmp_a["mean_top1"] == pytest.approx(88.0)
    assert gmp_a["std_top1"] == pytest.approx(math.sqrt(2.0))
    assert gmp_a["dense_top1"] == pytest.approx(90.0)
    assert gmp_a["delta_pts"] == pytest.approx(-2.0)
    no_dense = table.loc[("full", "gmp", 0.9, "c")]
    assert math.isnan(no_dense["dense_top1"]) and math.isnan(no_dense["delta_pts"])
