"""`report --experiment`: which sweep it reads, and what report.html says about how each cell
got its numbers. Runs are created in a real MLflow store with the tags a sweep writes."""

from __future__ import annotations

import html
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from sparse_transfer import metrics as M
from sparse_transfer.console import mlflow_ui_command, shell
from sparse_transfer.tracking.experiments import find_or_create_experiment
from sparse_transfer.tracking.runs_table import LOCAL_UI, ui_base

CLI = [sys.executable, "-m", "sparse_transfer.cli"]
EXPERIMENT = "two-sweeps"
METHOD = "<b>gmp</b>"  # HTML in a method name must reach the page escaped
SPEC = "name: small\nsearch: {trials_per_cell: 3}  # <not a tag>\n"


def _run(client, experiment_id, start: int, tags: dict, metrics: dict, params=None) -> str:
    run = client.create_run(experiment_id, start_time=start, tags=tags)
    run_id = run.info.run_id
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    for key, value in (params or {}).items():
        client.log_param(run_id, key, value)
    client.set_terminated(run_id, status="FINISHED")
    return run_id


def _sweep(client, experiment_id, tmp_path: Path, sweep_id: str, start: int, base: float):
    """One sweep: a parent with the spec, 2 cells x (3 search trials, 2 seeds of finals)."""
    parent = client.create_run(
        experiment_id,
        start_time=start,
        tags={"role": "sweep", "sweep_id": sweep_id, "git_commit": f"commit-{sweep_id}"},
    ).info.run_id
    spec = tmp_path / sweep_id / "spec.resolved.yaml"
    spec.parent.mkdir()
    spec.write_text(SPEC)
    client.log_artifact(parent, str(spec))
    runs = {}
    for method, sparsity, loss, lr in (
        ("dense", "0.0", 0.0, "0.01"),
        (METHOD, "0.9", 2.0, "0.03"),
    ):
        cell = f"{method}-{sparsity}-digits"
        common = {
            "sweep_id": sweep_id,
            "method": method,
            "sparsity": sparsity,
            "arch": "quickstart_cnn",
            "dataset": "digits",
            "mode": "full",
            "cell": cell,
            "mlflow.parentRunId": parent,
            "git_commit": f"commit-{sweep_id}",
        }
        for trial in range(3):
            stopped = "true" if trial < 2 else "false"
            tags = {**common, "phase": "search", "seed": "0", "stopped_early": stopped}
            _run(client, experiment_id, start + 1, tags, {M.GPU_HOURS: 0.25, M.CPU_HOURS: 1.0})
        for seed in ("0", "1"):
            tags = {**common, "phase": "final", "seed": seed}
            metrics = {M.TEST_TOP1: base - loss + int(seed), M.GPU_HOURS: 0.5, M.CPU_HOURS: 2.0}
            params = {"lr": lr, "epochs": "4", "batch_size": "32"}
            runs[(cell, seed)] = _run(client, experiment_id, start + 2, tags, metrics, params)
    client.set_terminated(parent)
    return parent, runs


@pytest.fixture
def store(tmp_path: Path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment_id = find_or_create_experiment(client, uri, EXPERIMENT)
    first = _sweep(client, experiment_id, tmp_path, "sweep-old", 1_000_000, 90.0)
    second = _sweep(client, experiment_id, tmp_path, "sweep-new", 2_000_000, 80.0)
    return uri, experiment_id, first, second


def _report(uri: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    args = ["report", "--out", str(out), "--experiment", EXPERIMENT, "--tracking-uri", uri]
    done = subprocess.run([*CLI, *args, *extra], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done


def test_report_reads_the_latest_sweep_and_names_it(store, tmp_path: Path) -> None:
    uri = store[0]
    done = _report(uri, tmp_path / "latest")
    assert "sweep sweep-new, the latest of 2" in done.stderr
    results = pd.read_parquet(tmp_path / "latest" / "results.parquet")
    assert set(results["sweep_id"]) == {"sweep-new"} and len(results) == 4
    assert "sweep-new" in (tmp_path / "latest" / "report.html").read_text()

    _report(uri, tmp_path / "old", "--sweep-id", "sweep-old")
    old = pd.read_parquet(tmp_path / "old" / "results.parquet")
    assert set(old["sweep_id"]) == {"sweep-old"}
    assert sorted(old["top1"]) == [88.0, 89.0, 90.0, 91.0]

    done = _report(uri, tmp_path / "all", "--all-sweeps")
    assert "all 2 sweeps: sweep-old, sweep-new" in done.stderr
    every = pd.read_parquet(tmp_path / "all" / "results.parquet")
    assert len(every) == 8


def test_unknown_sweep_id_lists_the_sweeps(store, tmp_path: Path) -> None:
    args = ["--experiment", EXPERIMENT, "--tracking-uri", store[0], "--sweep-id", "nope"]
    done = subprocess.run(
        [*CLI, "report", "--out", str(tmp_path / "r"), *args], capture_output=True, text=True
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "'sweep-new'" in done.stderr and "'sweep-old'" in done.stderr


def test_report_html_says_how_each_cell_got_its_numbers(store, tmp_path: Path) -> None:
    uri, experiment_id, _, (parent, finals) = store
    _report(uri, tmp_path / "r")
    page = (tmp_path / "r" / "report.html").read_text()
    gmp_cell = html.escape(f"{METHOD}-0.9-digits")
    assert gmp_cell in page and METHOD not in page
    row = page[page.index(f'<td class="text">{gmp_cell}</td>') :].split("</tr>")[0]
    # the final runs' configuration, the search budget and what ASHA stopped, the cost
    assert "batch_size=32; epochs=4; lr=0.03" in row
    assert "<td>3</td><td>2</td>" in row  # 3 search trials, 2 stopped early
    assert "<td>1.750</td><td>7.000</td>" in row  # 3 x 0.25 + 2 x 0.5 GPU-h, 3 + 4 CPU-h
    for seed in ("0", "1"):
        run_id = finals[(f"{METHOD}-0.9-digits", seed)]
        link = f"{LOCAL_UI}/#/experiments/{experiment_id}/runs/{run_id}"
        assert f'<a href="{link}">seed {seed}</a>' in row
    assert "search: 6 trials in all, 4 of them stopped early by ASHA" in page
    assert "GPU-hours: 3.500; CPU-hours: 14.000" in page
    assert "commit-sweep-new" in page
    assert html.escape(SPEC) in page
    assert f"{LOCAL_UI}/#/experiments/{experiment_id}/runs/{parent}" in page
    # the command a finished sweep prints, word for word
    assert html.escape(shell(mlflow_ui_command(uri))) in page


def test_hours_not_logged_read_na(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment_id = find_or_create_experiment(client, uri, EXPERIMENT)
    for method, sparsity, top1 in (("dense", "0.0", 90.0), ("gmp", "0.9", 88.0)):
        tags = {
            "sweep_id": "s",
            "phase": "final",
            "method": method,
            "sparsity": sparsity,
            "arch": "a",
            "dataset": "d",
            "mode": "full",
            "cell": method,
            "seed": "0",
        }
        _run(client, experiment_id, 1, tags, {M.TEST_TOP1: top1})
    _report(uri, tmp_path / "r")
    page = (tmp_path / "r" / "report.html").read_text()
    assert "GPU-hours: n/a; CPU-hours: n/a" in page


def test_links_of_a_tracking_server_use_its_address() -> None:
    assert ui_base("http://mlflow.internal:5000/") == "http://mlflow.internal:5000"
    assert ui_base("sqlite:////tmp/mlflow.db") == LOCAL_UI
