"""The sweep core's failure paths, each on a real local Ray Tune, a real ledger and a real MLflow
store. The trials run the project's own trainable (state saving, failure reporting, retries)
around a stand-in for the transfer loop, so each trial takes milliseconds and does exactly
what the test needs: fail, diverge, lose its worker, or take its time."""

from __future__ import annotations

import sqlite3
from collections import Counter

import pytest
from ledger_helpers import finished_runs, go, interrupt_when, ledger_failures, make_sweep
from mlflow import MlflowClient
from optuna.trial import TrialState
from sweep_helpers import child_runs, ledger_trials, parent_runs

from sparse_transfer.sweep import runner
from sparse_transfer.sweep.failures import FAIL_FAST_AFTER

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_fail_fast_with_trials_running_gives_up_without_partial_final_runs(
    ray_runtime, tmp_path, monkeypatch
):
    spec, cells, state, _ = make_sweep(
        tmp_path,
        monkeypatch,
        {"dense/digits_5to9/linear": "raise", "gmp_90/digits_5to9/linear": "slow:3"},
        search={"trials_per_cell": 4, "max_concurrent_trials": 2},
    )
    with pytest.raises(runner.SweepFailedError, match="bad data in this cell"):
        go(state, spec)
    runs = child_runs(spec.tracking.uri, "small", state.sweep_id)
    assert not [r for r in runs if r.data.tags["phase"] == "final"], "final runs were started"
    assert not ledger_trials(state.sweep_dir, final=True) or all(
        not trials for trials in ledger_trials(state.sweep_dir, final=True).values()
    )
    statuses = Counter(r.info.status for r in runs)
    assert "RUNNING" not in statuses, statuses
    assert statuses["KILLED"] >= 1, "the slow cell's trial was running when the sweep stopped"
    (parent,) = parent_runs(spec.tracking.uri, "small", state.sweep_id)
    assert parent.info.status == "FAILED"
    with pytest.raises(runner.SweepFailedError):  # and it stays given up
        runner.resume_sweep(state.sweep_dir, log=print)


def test_fail_fast_counts_the_failures_from_before_a_restart(ray_runtime, tmp_path, monkeypatch):
    # each failure takes a second, so the Ctrl-C after the second lands inside the third
    behaviour = {c: "raise:1" for c in ("dense/digits_5to9/linear", "gmp_90/digits_5to9/linear")}
    spec, cells, state, _ = make_sweep(
        tmp_path, monkeypatch, behaviour, search={"trials_per_cell": 4, "max_concurrent_trials": 1}
    )
    interrupt_when(lambda: ledger_failures(state.sweep_dir) >= 2)
    with pytest.raises(runner.SweepInterrupted):
        go(state, spec)
    before = sum(
        t.state == TrialState.FAIL for ts in ledger_trials(state.sweep_dir).values() for t in ts
    )
    assert before == 2
    with pytest.raises(runner.SweepFailedError):
        go(runner.SweepState.load(state.sweep_dir), spec)
    failed = [
        t
        for ts in ledger_trials(state.sweep_dir).values()
        for t in ts
        if t.state == TrialState.FAIL
    ]
    assert len(failed) == FAIL_FAST_AFTER  # one more failure, not three more


def test_a_resumed_search_never_proposes_a_configuration_again(ray_runtime, tmp_path, monkeypatch):
    spec, cells, state, _ = make_sweep(
        tmp_path,
        monkeypatch,
        {},
        search={"trials_per_cell": 6, "max_concurrent_trials": 1, "sampler": "random"},
    )
    db = tmp_path / "mlflow.db"
    interrupt_when(lambda: finished_runs(db) >= 3)
    with pytest.raises(runner.SweepInterrupted):
        go(state, spec)
    go(runner.SweepState.load(state.sweep_dir), spec)
    for name, trials in ledger_trials(state.sweep_dir).items():
        assert len(trials) == 6, name
        params = [tuple(sorted(t.params.items())) for t in trials]
        assert len(set(params)) == len(params), f"{name} repeats a configuration: {params}"


def test_a_lost_worker_is_retried_from_saved_state_without_using_the_budget(
    ray_runtime, tmp_path, monkeypatch, capsys
):
    spec, cells, state, log_dir = make_sweep(
        tmp_path, monkeypatch, {"dense/digits_5to9/linear": "die"}
    )
    go(state, spec)
    assert "dense/digits_5to9/linear: its worker was lost" in capsys.readouterr().out
    for name, trials in ledger_trials(state.sweep_dir).items():
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 3, name
    (died,) = log_dir.glob("*.died")
    key = died.name.removesuffix(".died")
    # epochs 1-2 were saved before the worker died at epoch 3; they were not trained again
    trained = (log_dir / f"{key}.epochs").read_text().split()
    assert trained == ["1", "2", "3", "3", "4"], trained
    runs = [
        r
        for r in child_runs(spec.tracking.uri, "small", state.sweep_id)
        if r.data.tags["trial_id"] == key
    ]
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    history = MlflowClient(spec.tracking.uri).get_metric_history(runs[0].info.run_id, "epoch")
    assert sorted(m.step for m in history) == [1, 2, 3, 4]  # every epoch once
    assert not list((state.sweep_dir / "trial_state").glob("*/state.pt")), "state left behind"


CELLS = ("dense/digits_5to9/linear", "gmp_90/digits_5to9/linear")


# The dense cell failing too: the report is written without deltas, not dropped.
@pytest.mark.parametrize("bad", CELLS[::-1], ids=["sparse", "dense"])
def test_own_failures_are_replaced_up_to_the_cell_limit_then_the_cell_fails_by_name(
    ray_runtime, tmp_path, monkeypatch, bad
):
    (good,) = set(CELLS) - {bad}
    spec, cells, state, _ = make_sweep(
        tmp_path,
        monkeypatch,
        {bad: "diverge"},
        search={"trials_per_cell": 2, "max_concurrent_trials": 1, "max_failures_per_cell": 1},
    )
    lines: list[str] = []
    done = go(state, spec, lines)
    assert set(done.failed_cells) == {bad}
    assert "2 search trials failed (limit 1)" in done.failed_cells[bad]
    assert any(line.startswith(f"FAILED cell {bad}") for line in lines), lines
    runs = child_runs(spec.tracking.uri, "small", state.sweep_id)
    finals = Counter(r.data.tags["cell"] for r in runs if r.data.tags["phase"] == "final")
    assert finals == {good: 2}
    diverged = [r for r in runs if r.data.tags.get("failure") == "diverged"]
    assert len(diverged) == 2 and all(r.info.status == "FAILED" for r in diverged)
    trials = ledger_trials(state.sweep_dir)[f"{state.sweep_id}/{bad}"]
    assert [t.state for t in trials] == [TrialState.FAIL] * 2
    # a divergent lr is the trial's own failure, not a bug: it never trips fail-fast
    assert done.phase == runner.REPORTED
    page = (state.sweep_dir / "report" / "report.html").read_text()
    assert "Failed cells and final runs: 1" in page and bad in page


def test_a_final_run_that_diverges_is_reported_not_dropped(ray_runtime, tmp_path, monkeypatch):
    cell = "gmp_90/digits_5to9/linear"  # the dense baseline stays: deltas need it
    spec, cells, state, _ = make_sweep(
        tmp_path, monkeypatch, {f"{cell}@final": "diverge"}, search={"trials_per_cell": 1}
    )
    go(state, spec)
    finals = [
        r
        for r in child_runs(spec.tracking.uri, "small", state.sweep_id)
        if r.data.tags["phase"] == "final" and r.data.tags["cell"] == cell
    ]
    assert [r.data.tags.get("failure") for r in finals] == ["diverged", "diverged"]
    page = (state.sweep_dir / "report" / "report.html").read_text()
    assert "Failed cells and final runs: 2" in page and page.count("diverged") >= 2


def test_final_runs_start_while_other_cells_still_search(ray_runtime, tmp_path, monkeypatch):
    spec, cells, state, _ = make_sweep(
        tmp_path,
        monkeypatch,
        {"gmp_90/digits_5to9/linear": "slow:1"},
        search={"trials_per_cell": 2, "max_concurrent_trials": 2},
    )
    go(state, spec)
    runs = child_runs(spec.tracking.uri, "small", state.sweep_id)
    fast_finals = [
        r.info.start_time
        for r in runs
        if r.data.tags["phase"] == "final" and r.data.tags["upstream"] == "dense"
    ]
    slow_search_end = max(
        r.info.end_time
        for r in runs
        if r.data.tags["phase"] == "search" and r.data.tags["upstream"] == "gmp_90"
    )
    assert len(fast_finals) == 2 and min(fast_finals) < slow_search_end


def test_a_gpu_hour_budget_stops_the_search_and_runs_every_cells_finals(
    ray_runtime, tmp_path, monkeypatch, capsys
):
    spec, cells, state, _ = make_sweep(
        tmp_path,
        monkeypatch,
        {f"{u}/digits_5to9/linear": "slow:0.5" for u in ("dense", "gmp_90")},
        search={"trials_per_cell": 10, "max_concurrent_trials": 2},
        budget={"gpu_hours": 2.0},
    )
    base = runner._base_config
    # An hour of a GPU per wall-clock second: the budget is spent after a few trials.
    monkeypatch.setattr(runner, "_base_config", lambda st, sp: {**base(st, sp), "gpu": 3600})
    go(state, spec)
    assert "GPU budget of 2 h spent" in capsys.readouterr().out
    runs = child_runs(spec.tracking.uri, "small", state.sweep_id)
    search = [r for r in runs if r.data.tags["phase"] == "search"]
    assert len(search) < 20
    finals = Counter(r.data.tags["cell"] for r in runs if r.data.tags["phase"] == "final")
    assert finals == {c.id: 2 for c in cells}
    assert all(r.data.metrics.get("gpu_hours", 0) > 0 for r in runs)


def test_a_crash_between_the_tell_and_the_record_does_not_wedge_the_resume(
    ray_runtime, tmp_path, monkeypatch
):
    spec, cells, state, _ = make_sweep(
        tmp_path, monkeypatch, {}, search={"trials_per_cell": 3, "max_concurrent_trials": 1}
    )
    db = tmp_path / "mlflow.db"
    interrupt_when(lambda: finished_runs(db) >= 2)
    with pytest.raises(runner.SweepInterrupted):
        go(state, spec)
    client = MlflowClient(spec.tracking.uri)
    told = [
        r
        for r in child_runs(spec.tracking.uri, "small", state.sweep_id)
        if r.info.status == "FINISHED"
    ]
    # The driver died after the ledger's tell and before the record of it: MLflow still has
    # the run RUNNING, and the outbox on the driver's disk never recorded its closing.
    client.update_run(told[0].info.run_id, status="RUNNING")
    key = told[0].data.tags["trial_id"]
    with sqlite3.connect(state.sweep_dir / "mlflow-outbox.sqlite") as outbox:
        outbox.execute("update runs set closed = null where run_key = ?", (key,))
    for _ in range(2):  # and again: every resume must get through
        go(runner.SweepState.load(state.sweep_dir), spec)
    runs = child_runs(spec.tracking.uri, "small", state.sweep_id)
    assert len(runs) == 2 * 3 + 2 * 2
    assert Counter(r.data.tags["trial_id"] for r in runs).most_common(1)[0][1] == 1
    for name, trials in ledger_trials(state.sweep_dir).items():
        assert [t.state.is_finished() for t in trials] == [True] * 3, name
    open_runs = [
        (r.data.tags["trial_id"], r.info.status) for r in runs if r.info.status != "FINISHED"
    ]
    assert not open_runs, (key, open_runs)  # the resume closed it from the ledger


def test_saved_state_of_another_configuration_is_never_resumed(ray_runtime, tmp_path, monkeypatch):
    """A ledger that lost its last segment hands a trial key to a new configuration: the state
    saved under that key for the old one must not be continued."""
    import torch

    spec, cells, state, log_dir = make_sweep(
        tmp_path,
        monkeypatch,
        {c: "slow:1" for c in ("dense/digits_5to9/linear", "gmp_90/digits_5to9/linear")},
        search={"trials_per_cell": 1, "max_concurrent_trials": 2},
    )
    states = state.sweep_dir / "trial_state"
    interrupt_when(lambda: len(list(states.glob("*/state.pt"))) >= 1)
    with pytest.raises(runner.SweepInterrupted):
        go(state, spec)
    (saved, *_) = states.glob("*/state.pt")
    key = saved.parent.name
    before = (log_dir / f"{key}.epochs").read_text().split()
    foreign = {"epoch": 3, "model": {"w": torch.zeros(2)}, "config_digest": "another config"}
    torch.save(foreign, saved)
    go(runner.SweepState.load(state.sweep_dir), spec)
    trained = (log_dir / f"{key}.epochs").read_text().split()[len(before) :]
    assert trained[0] == "1", trained  # started over, not at epoch 4


def test_a_result_the_ledger_lost_is_reported_again_from_the_saved_state(
    ray_runtime, tmp_path, monkeypatch
):
    """A trial saves its state before its epoch's result reaches the ledger; a crash that loses
    the ledger's tail (its last S3 segment) keeps the state and loses the result. The resumed
    trial says that result again, so early stopping decides its rung on the epoch it is for
    (seen in the S3 double-kill test: a rung-0 decision taken on epoch 2's score)."""
    spec, cells, state, _ = make_sweep(
        tmp_path,
        monkeypatch,
        {c: "slow:1" for c in ("dense/digits_5to9/linear", "gmp_90/digits_5to9/linear")},
        search={"trials_per_cell": 2, "max_concurrent_trials": 1},
        early_stopping={"scheduler": "asha", "grace_period": 1, "reduction_factor": 2},
    )
    states = state.sweep_dir / "trial_state"
    interrupt_when(lambda: len(list(states.glob("*/state.pt"))) >= 1)
    with pytest.raises(runner.SweepInterrupted):
        go(state, spec)
    import torch

    (saved,) = states.glob("*/state.pt")  # one trial at a time
    epoch = torch.load(saved, weights_only=True)["epoch"]
    key = saved.parent.name  # c<cell index>-search-<trial number>
    study = f"{state.sweep_id}/{cells[int(key[1:5])].id}"
    trial = ledger_trials(state.sweep_dir)[study][int(key[-5:])]
    ledger = state.sweep_dir / "ledger.jsonl"
    lines = ledger.read_text().splitlines(keepends=True)
    score = '"op_code":7,"worker_id"'
    lost = next(
        (
            i
            for i, line in enumerate(lines)
            if score in line and f'"trial_id":{trial._trial_id},"step":{epoch},' in line
        ),
        len(lines),
    )
    ledger.write_text("".join(lines[:lost]))  # the tail from the saved epoch's score on
    go(runner.SweepState.load(state.sweep_dir), spec)
    for name, trials in ledger_trials(state.sweep_dir).items():
        for trial in trials:
            steps = sorted(trial.intermediate_values)
            assert steps == list(range(1, len(steps) + 1)), (name, trial.number, steps)
            for rung, step in ((0, 1), (1, 2)):
                if f"completed_rung_{rung}" in trial.system_attrs:
                    value = trial.system_attrs[f"completed_rung_{rung}"]
                    assert value == trial.intermediate_values[step], (name, trial.number, rung)
