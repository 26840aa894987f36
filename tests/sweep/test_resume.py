"""Stop the driver mid-sweep, resume: every trial exactly once. Killed (SIGKILL, no clean-up)
or interrupted (Ctrl-C: Tune saves its state, the sweep stays in its phase and says how to
resume)."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState
from sweep_helpers import (
    CLI,
    child_runs,
    kill_when,
    optuna_trials,
    parent_runs,
    small_spec,
    start_sweep,
)

from sparse_transfer.config import dump_spec

pytestmark = pytest.mark.slow


def _finished_search_runs(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db, timeout=5) as connection:
            return connection.execute(
                "SELECT count(*) FROM runs JOIN tags ON runs.run_uuid = tags.run_uuid "
                "WHERE tags.key = 'phase' AND tags.value = 'search' AND runs.status = 'FINISHED'"
            ).fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def _interrupt_when(process: subprocess.Popen, ready, log_file: Path) -> None:
    """Ctrl-C to the driver alone once `ready()`; it must exit by itself, saying how to resume."""
    deadline = time.monotonic() + 300
    while not ready():
        assert process.poll() is None, "the sweep ended early:\n" + log_file.read_text()[-3000:]
        assert time.monotonic() < deadline, "the sweep made no progress"
        time.sleep(0.5)
    os.kill(process.pid, signal.SIGINT)
    assert process.wait(timeout=180) == 130, log_file.read_text()[-3000:]
    assert "sparse-transfer resume" in log_file.read_text()


@pytest.mark.parametrize("stop", ["SIGKILL", "Ctrl-C"])
def test_stopped_sweep_resumes_with_every_trial_exactly_once(zoo_dir, tmp_path, stop):
    spec = small_spec(tmp_path, zoo_dir, search={"trials_per_cell": 4, "max_concurrent_trials": 2})
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(dump_spec(spec))
    db = tmp_path / "mlflow.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "sweep.log"
    process = start_sweep(spec_file, log, env, tmp_path)
    stop_now = kill_when if stop == "SIGKILL" else _interrupt_when
    stop_now(process, lambda: _finished_search_runs(db) >= 5, log)

    (sweep_dir,) = (tmp_path / "runs" / "sweeps").iterdir()
    state = yaml.safe_load((sweep_dir / "state.json").read_text())
    told_before = [
        sum(t.state.is_finished() for t in trials) for trials in optuna_trials(sweep_dir).values()
    ]
    assert min(told_before) < 4, "killed too late to test a mid-search resume"
    before = {
        r.data.tags["trial_id"]: r
        for r in child_runs(state["tracking_uri"], "small", state["sweep_id"])
        if r.info.status == "FINISHED"
    }
    assert len(before) >= 5

    resumed = subprocess.run(
        [*CLI, "resume", str(sweep_dir)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "mean delta" in resumed.stdout  # the summary table is printed at the end
    # The progress counter goes on from the trials told before the stop. The first line may
    # be a final run's (finals start before the search ends): count both phases.
    first = next(line for line in resumed.stdout.splitlines() if line.startswith("[search "))
    counts = re.findall(r"(?:search|final) (\d+)/\d+", first.split("]")[0])
    assert sum(map(int, counts)) > len(before), first

    runs = child_runs(state["tracking_uri"], "small", state["sweep_id"])
    trial_ids = [r.data.tags["trial_id"] for r in runs]
    assert len(trial_ids) == len(set(trial_ids)), "a trial has two MLflow runs"
    cells = 4
    assert sum(r.data.tags["phase"] == "search" for r in runs) == cells * 4
    assert sum(r.data.tags["phase"] == "final" for r in runs) == cells * len(spec.seeds)
    assert {r.info.status for r in runs} == {"FINISHED"}
    (parent,) = parent_runs(state["tracking_uri"], "small", state["sweep_id"])
    assert parent.info.status == "FINISHED"

    # Trials finished before the kill were not run again.
    after = {r.data.tags["trial_id"]: r for r in runs}
    for trial_id, run in before.items():
        assert after[trial_id].info.end_time == run.info.end_time, trial_id

    # Each cell's budget was spent exactly once: a trial in flight at the crash was continued,
    # not failed and replaced.
    for name, trials in optuna_trials(sweep_dir).items():
        assert len(trials) == 4, name
        assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), name
    assert yaml.safe_load((sweep_dir / "state.json").read_text())["phase"] == "reported"
