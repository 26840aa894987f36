"""After the search: the report comes from the ledger, each step after the search is done once
by whichever start gets to it, and a tracking server that is down at the end holds nothing
back. A real sweep core (local Ray Tune, ledger) around the stand-in transfer loop, with a real
`mlflow server` process where the server goes down."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time

import pandas as pd
import pytest
from ledger_helpers import go, make_sweep
from mlflow import MlflowClient
from mlflow_process import MlflowServer
from sweep_helpers import parent_runs

from sparse_transfer.sweep import runner
from sparse_transfer.tracking import outbox as outbox_module

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _told(sweep_dir, state: int = 1) -> int:
    path = sweep_dir / "ledger.jsonl"
    text = path.read_text() if path.is_file() else ""
    return sum('"op_code":6' in line and f'"state":{state}' in line for line in text.splitlines())


def _finals(uri: str, sweep_id: str) -> list:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("small")
    query = f"tags.sweep_id = '{sweep_id}' and tags.phase = 'final'"
    return client.search_runs([experiment.experiment_id], query)


def test_mlflow_down_for_good_mid_sweep_the_sweep_still_reports_and_sync_sends_later(
    ray_runtime, tmp_path, monkeypatch
):
    server = MlflowServer(tmp_path)
    server.start()
    try:
        spec, cells, state, _ = make_sweep(
            tmp_path, monkeypatch, {}, tracking={"uri": server.uri, "experiment": "small"}
        )
        monkeypatch.setattr(runner, "_RECORDS_WAIT_S", 3.0)

        def outage() -> None:
            while _told(state.sweep_dir) < 2:
                time.sleep(0.05)
            server.stop()

        threading.Thread(target=outage, daemon=True).start()
        lines: list[str] = []
        go(state, spec, lines)
        assert server.process is None, "the server was up until the end"
        saved = json.loads((state.sweep_dir / "state.json").read_text())
        assert saved["phase"] == runner.REPORTED
        table = pd.read_parquet(state.sweep_dir / "report" / "results.parquet")
        assert sorted(zip(table["cell"], table["seed"], strict=True)) == sorted(
            (cell.id, str(seed)) for cell in cells for seed in (0, 1)
        )
        assert (state.sweep_dir / "report" / "report.html").is_file()
        waiting = [line for line in lines if "records wait in the outbox" in line]
        assert waiting and "sparse-transfer sync" in waiting[-1], lines[-5:]

        server.start()
        assert runner.sync_sweep(state.sweep_dir, log=print) == 0
        finals = _finals(server.uri, state.sweep_id)
        assert len(finals) == 4 and {r.info.status for r in finals} == {"FINISHED"}
        assert all("test_top1" in r.data.metrics for r in finals)
        (parent,) = parent_runs(server.uri, "small", state.sweep_id)
        assert parent.info.status == "FINISHED"
    finally:
        server.stop()


def test_a_crash_after_the_search_leaves_a_report_for_resume_to_write(
    ray_runtime, tmp_path, monkeypatch
):
    spec, cells, state, _ = make_sweep(tmp_path, monkeypatch, {})
    real = runner.write_sweep_report

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # the driver dies between the search and its report

    monkeypatch.setattr(runner, "write_sweep_report", crash)
    with pytest.raises(KeyboardInterrupt):
        go(state, spec)
    assert not (state.sweep_dir / "report" / "summary.csv").exists()
    monkeypatch.setattr(runner, "write_sweep_report", real)
    lines: list[str] = []
    resumed = runner.resume_sweep(state.sweep_dir, log=lines.append)
    assert resumed.phase == runner.REPORTED
    assert (state.sweep_dir / "report" / "summary.csv").is_file()
    assert not [line for line in lines if "nothing to do" in line]
    (parent,) = parent_runs(spec.tracking.uri, "small", state.sweep_id)
    assert parent.info.status == "FINISHED"
    again: list[str] = []
    runner.resume_sweep(state.sweep_dir, log=again.append)
    assert any("nothing to do" in line for line in again)


def test_a_sweep_saved_before_its_parent_run_resumes_with_one_parent(
    ray_runtime, tmp_path, monkeypatch
):
    """The state is saved first and the parent run made after: a crash in between leaves a
    sweep that resumes (and makes its one parent), never an orphan run without a sweep."""
    spec, cells, state, _ = make_sweep(tmp_path, monkeypatch, {})
    client = MlflowClient(spec.tracking.uri)
    for run in parent_runs(spec.tracking.uri, "small", state.sweep_id):
        client.delete_run(run.info.run_id)
    state.parent_run_id = ""
    state.save()
    runner.resume_sweep(state.sweep_dir, log=print)
    (parent,) = parent_runs(spec.tracking.uri, "small", state.sweep_id)
    assert parent.info.status == "FINISHED"
    assert json.loads((state.sweep_dir / "state.json").read_text())["parent_run_id"] == (
        parent.info.run_id
    )


@pytest.mark.parametrize("lost", ["mid-search", "after-the-report"])
def test_records_queued_by_a_driver_whose_disk_is_lost_are_rebuilt_from_the_ledger(
    ray_runtime, tmp_path, monkeypatch, lost
):
    """The MLflow server is down while trials are told, so their records wait in the driver's
    outbox; the driver stops (Ctrl-C mid-search, or at its end with the report written) and
    its disk (the outbox) is lost. A resume on a new disk queues every told trial's record
    again from the ledger: each trial ends with one finished run, and so does the sweep's."""
    server = MlflowServer(tmp_path)
    server.start()
    try:
        slow = {
            cell: "slow:0.5" for cell in ("dense/digits_5to9/linear", "gmp_90/digits_5to9/linear")
        }
        spec, cells, state, _ = make_sweep(
            tmp_path,
            monkeypatch,
            slow,  # the Ctrl-C lands while Tune runs
            tracking={"uri": server.uri, "experiment": "small"},
            search={"trials_per_cell": 3, "max_concurrent_trials": 1},
        )
        monkeypatch.setattr(runner, "_RECORDS_WAIT_S", 3.0)

        def outage_then_stop() -> None:
            while _told(state.sweep_dir) < 1:
                time.sleep(0.05)
            server.stop()
            while lost == "mid-search" and _told(state.sweep_dir) < 3:
                time.sleep(0.05)
            if lost == "mid-search":
                os.kill(os.getpid(), signal.SIGINT)

        threading.Thread(target=outage_then_stop, daemon=True).start()
        if lost == "mid-search":
            with pytest.raises(runner.SweepInterrupted):
                go(state, spec)
        else:
            go(state, spec)
            saved = json.loads((state.sweep_dir / "state.json").read_text())
            assert saved["phase"] == runner.REPORTED
        # The driver's machine is gone, and its outbox's sender with it (in this process, its
        # thread would go on sending from the deleted file's open handle).
        for box in list(outbox_module._open.values()):  # every outbox this process opened
            box.close()
        outbox = state.sweep_dir / "mlflow-outbox.sqlite"
        for path in state.sweep_dir.glob("mlflow-outbox.sqlite*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        assert not outbox.exists()
        server.start()
        monkeypatch.setattr(runner, "_RECORDS_WAIT_S", 120.0)  # a resume waits for its records
        runner.resume_sweep(state.sweep_dir, log=print)
        client = MlflowClient(server.uri)
        experiment = client.get_experiment_by_name("small").experiment_id
        runs = client.search_runs([experiment], f"tags.sweep_id = '{state.sweep_id}'")
        search = [r for r in runs if r.data.tags.get("phase") == "search"]
        assert len(search) == 6 and {r.info.status for r in search} == {"FINISHED"}
        for run in search:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_top1")]
            assert sorted(steps) == [1, 2, 3, 4], (run.data.tags["trial_id"], steps)
        finals = [r for r in runs if r.data.tags.get("phase") == "final"]
        assert len(finals) == 4 and {r.info.status for r in finals} == {"FINISHED"}
        assert all("test_top1" in r.data.metrics for r in finals)
        (parent,) = parent_runs(server.uri, "small", state.sweep_id)
        assert parent.info.status == "FINISHED"
    finally:
        server.stop()


def test_tune_folders_of_earlier_starts_are_removed(ray_runtime, tmp_path, monkeypatch):
    spec, cells, state, _ = make_sweep(tmp_path, monkeypatch, {})
    (state.sweep_dir / "tune-001").mkdir()  # as an earlier start left it
    state.tune_runs = 1
    go(state, spec)
    assert not list(state.sweep_dir.glob("tune-*")), list(state.sweep_dir.glob("tune-*"))
