from __future__ import annotations

import html
import re
from pathlib import Path

import pandas as pd
import pytest

from sparse_transfer.analysis import (
    format_summary,
    plot_accuracy_vs_sparsity,
    summarize,
    write_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _results() -> pd.DataFrame:
    rows = []
    for mode in ("full", "linear"):
        for dataset, base in (("cifar10", 95.0), ("pets", 90.0)):
            for seed in ("1", "2"):
                rows.append((mode, "dense", 0.0, dataset, seed, base))
                rows.append((mode, "AC/DC", 0.9, dataset, seed, base - 1.0))
                rows.append((mode, "RigL ERK 1x", 0.9, dataset, seed, base - 2.5))
                rows.append((mode, "<gmp>", 0.95, dataset, seed, base - 4.0))
    frame = pd.DataFrame(rows, columns=["mode", "method", "sparsity", "dataset", "seed", "top1"])
    return frame.assign(arch="resnet50", run_id=[f"run{i}" for i in range(len(frame))])


def test_write_report_writes_all_artefacts(tmp_path: Path) -> None:
    results = _results()
    paths = write_report(results, tmp_path / "out", title="Sweep <1>", source="exp & co")
    for path in (paths.results, paths.summary, paths.figure, paths.html):
        assert path.is_file() and path.parent == tmp_path / "out"

    stored = pd.read_parquet(paths.results)
    assert len(stored) == len(results)
    assert set(stored["run_id"]) == set(results["run_id"])
    assert stored["top1"].sum() == pytest.approx(results["top1"].sum())

    summary, expected = pd.read_csv(paths.summary), summarize(stored)
    for frame in (summary, expected):  # empty in the CSV: no verdict (the dense rows)
        frame["within_noise"] = [None if pd.isna(v) else bool(v) for v in frame["within_noise"]]
    pd.testing.assert_frame_equal(summary, expected, check_dtype=False)

    assert paths.figure.read_bytes().startswith(PNG_MAGIC)

    page = paths.html.read_text(encoding="utf-8")
    for method in results["method"].unique():
        assert html.escape(method) in page
    assert "<gmp>" not in page
    assert "Sweep &lt;1&gt;" in page and "exp &amp; co" in page
    assert 'src="data:image/png;base64,' in page


def test_figure_is_a_png(tmp_path: Path) -> None:
    path = plot_accuracy_vs_sparsity(_results(), tmp_path / "fig" / "a.png")
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_format_summary_is_fixed_width_with_signed_deltas() -> None:
    text = format_summary(summarize(_results()))
    lines = text.splitlines()
    assert re.split(r"\s{2,}", lines[0]) == [
        "arch",
        "mode",
        "method",
        "sparsity",
        "datasets",
        "mean delta",
        "std",
        "95% interval",
        "within noise",
    ]
    assert len(lines) == 2 + 2 * 4
    rigl = next(line for line in lines if "RigL ERK 1x" in line and " full " in line)
    assert rigl.split()[-6:-3] == ["2", "-2.50", "0.00"]
    dense = next(line for line in lines if "dense" in line)
    assert "+0.00" in dense and dense.rstrip().endswith("-")  # no interval, no noise verdict
    # columns line up: every right-aligned cell ends at the same offset as its header
    ends = {line.index(" [") if " [" in line else None for line in lines[2:]} - {None}
    assert len(ends) <= 1


def test_a_sweep_whose_dense_cell_failed_still_gets_its_report(tmp_path: Path) -> None:
    """The dense cell's final runs all failed: the report names that failure and keeps the
    sparse results, with no deltas (nothing to take them against) instead of no report."""
    results = _results()
    results = results[results["method"] != "dense"]
    failures = pd.DataFrame(
        [{"cell": "dense/cifar10/full", "seed": "", "failure": "cell failed", "why": "diverged"}]
    )
    paths = write_report(results, tmp_path / "out", failures=failures)
    assert len(pd.read_parquet(paths.results)) == len(results)
    summary = pd.read_csv(paths.summary)
    assert summary.empty and "mean_delta_pts" in summary.columns
    page = paths.html.read_text(encoding="utf-8")
    assert "dense/cifar10/full" in page and "diverged" in page
    assert "no dense baseline" in page
    assert "AC/DC" in page  # the per-dataset accuracies are there
