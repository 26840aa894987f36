"""The paper's published raw results through our loader and summary, checked against an
independent computation that uses only ``csv`` and ``statistics``."""

from __future__ import annotations

import csv
import statistics
from collections import defaultdict
from pathlib import Path

import pytest

from sparse_transfer.analysis import load_table, summarize
from sparse_transfer.reference import RAW_RESULTS

# Data rows per file (header excluded), as counted with `wc -l` minus one.
PAPER_ROWS = {
    "resnet50_full.csv": 723,
    "resnet50_linear.csv": 1200,
    "mobilenetv1_full.csv": 132,
    "mobilenetv1_linear.csv": 600,
}


def _independent_summary(path: Path) -> dict[tuple[str, float], tuple[int, float, float]]:
    """(method, sparsity) -> (n_datasets, mean delta, sample std), from the CSV directly."""
    seeds: dict[tuple[str, float, str], list[float]] = defaultdict(list)
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = [name for name in next(reader) if name]  # the header ends with a comma
        for fields in reader:
            record = dict(zip(header, fields[: len(header)], strict=True))
            key = (record["model"].strip(), float(record["sparsity"]), record["dset"])
            seeds[key].append(float(record["val_acc"]) * 100)
    means = {key: statistics.fmean(values) for key, values in seeds.items()}
    dense = {dset: acc for (method, _, dset), acc in means.items() if method == "Dense"}
    deltas: dict[tuple[str, float], list[float]] = defaultdict(list)
    for (method, sparsity, dset), acc in means.items():
        if dset in dense:
            deltas[(method, sparsity)].append(acc - dense[dset])
    return {
        key: (len(v), statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else float("nan"))
        for key, v in deltas.items()
    }


def test_resnet50_full_summary_matches_independent_computation() -> None:
    path = RAW_RESULTS / "resnet50_full.csv"
    results = load_table(path, mode="full")
    assert len(results) == 723
    summary = summarize(results)
    expected = _independent_summary(path)

    got = {(row.method, row.sparsity): row for row in summary.itertuples(index=False)}
    assert set(got) == set(expected)
    assert len(summary) == len(expected)
    for key, (n_datasets, mean, std) in expected.items():
        row = got[key]
        assert row.mode == "full"
        assert row.n_datasets == n_datasets, key
        assert row.mean_delta_pts == pytest.approx(mean, abs=1e-9), key
        assert row.std_delta_pts == pytest.approx(std, abs=1e-9, nan_ok=True), key


def test_resnet50_full_headline_numbers() -> None:
    """Spot checks that would catch a fraction/percent or sign slip in both computations."""
    summary = summarize(load_table(RAW_RESULTS / "resnet50_full.csv", mode="full"))
    rows = summary.set_index(["method", "sparsity"])
    assert rows.loc[("Dense", 0.0), "n_datasets"] == 12
    assert rows.loc[("AC/DC", 0.8), "mean_delta_pts"] == pytest.approx(-0.805, abs=0.01)
    assert rows.loc[("LTH-T", 0.95), "mean_delta_pts"] < -5


@pytest.mark.parametrize(("name", "rows"), sorted(PAPER_ROWS.items()))
def test_every_paper_file_loads(name: str, rows: int) -> None:
    mode = "full" if name.endswith("_full.csv") else "linear"
    table = load_table(RAW_RESULTS / name, mode=mode)
    assert len(table) == rows
    assert table["top1"].between(0, 100).all()
    assert table["top1"].max() > 1  # percent, not the file's fraction
    assert summarize(table)["n_datasets"].min() >= 1
