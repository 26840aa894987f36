"""The demo, as the README runs it (with a smaller search): build the demo zoo, sweep every
method, and get a report that lists every method."""

from __future__ import annotations

import pandas as pd
import pytest
from sweep_helpers import REPO
from typer.testing import CliRunner

from sparse_transfer.cli import app
from sparse_transfer.pruning import METHODS

pytestmark = pytest.mark.slow


def test_demo_zoo_and_sweep_cover_every_method(ray_runtime, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = f"storage={tmp_path / 'runs'}"
    built = CliRunner().invoke(
        app, ["zoo", "build", str(REPO / "sweeps/zoo_demo.yaml"), "--set", storage]
    )
    assert built.exit_code == 0, built.output
    swept = CliRunner().invoke(
        app,
        [
            "sweep",
            str(REPO / "sweeps/demo_all_methods.yaml"),
            "--set",
            storage,
            "--set",
            "search.trials_per_cell=1",
            "--set",
            "seeds=[0]",
            "--set",
            "datasets=[digits_5to9]",
            "--set",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        ],
    )
    assert swept.exit_code == 0, swept.output
    (report,) = (tmp_path / "runs" / "sweeps").glob("*/report")
    summary = pd.read_csv(report / "summary.csv")
    assert {m.split("+")[0] for m in summary["method"]} == set(METHODS.names())
    downstream = summary[summary["method"].str.endswith("+downstream_gmp")]
    assert set(downstream["sparsity"]) == {0.9} and "dense+downstream_gmp" in set(
        downstream["method"]
    )
    assert set(summary["mode"]) == {"full", "linear"}
    html = (report / "report.html").read_text()
    assert all(method in html for method in METHODS.names())
    assert "mean delta" in swept.output
