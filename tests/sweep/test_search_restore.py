"""A crash can leave Tune's trial list and its search algorithm's saved state from different
moments: Tune saves them as separate files and uploads them one by one in the background, while
it keeps rewriting its local copies (on S3 an upload takes seconds, so a kill often falls in
between). However the two disagree, the resumed search spends each cell's budget exactly once
and finishes. The search phase runs here with a stand-in trainable, in this process."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from optuna.trial import TrialState
from ray import tune
from sweep_helpers import child_runs, optuna_trials, small_spec

from sparse_transfer.sweep import runner
from sparse_transfer.sweep.cells import plan_cells
from sparse_transfer.tracking import SweepRecorder

pytestmark = pytest.mark.slow


def _stand_in(gate: Path):
    """A trainable that reports every epoch at once. A cell's trials after its first (search:
    Optuna trial 1 on; final: seed 1 on) wait for `gate`, so they are the live ones when the
    driver is interrupted."""

    def trainable(config: dict) -> None:
        settings = config["trial"]
        order = settings["optuna_trial"] if "optuna_trial" in settings else settings["seed"]
        if order >= 1:
            (gate.parent / f"started-{tune.get_context().get_trial_id()}").touch()
            while not gate.exists():
                time.sleep(0.05)
        for epoch in range(1, int(settings["hparams"]["epochs"]) + 1):
            tune.report({"epoch": epoch, "val_top1": 100 * settings["hparams"]["lr"]})

    return trainable


def _interrupt_when_started(gate: Path, count: int) -> threading.Thread:
    """SIGINT this process (Tune ends the run and saves its state) once `count` trials wait."""

    def watch() -> None:
        while len(list(gate.parent.glob("started-*"))) < count:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _forget_live_trials(experiment_dir: Path, finished: bool = False) -> set[str]:
    """Drop the unfinished trials (the finished ones with `finished`) from Tune's saved trial
    list, as if its snapshot predated them, while the search algorithm's saved state still
    counts them."""
    (path,) = experiment_dir.glob("experiment_state-*.json")
    state = json.loads(path.read_text())
    kept, lost = [], set()
    for entry in state["trial_data"]:
        trial = json.loads(entry[0])
        if (trial["status"] == "TERMINATED") != finished:
            kept.append(entry)
        else:
            lost.add(trial["trial_id"])
    state["trial_data"] = kept
    path.write_text(json.dumps(state))
    return lost


def _sweep_in_phase(spec, tmp_path: Path, sweep_id: str, phase: str):
    """The cells and a fresh SweepState of a sweep in `phase` (its parent run in MLflow)."""
    cells = plan_cells(spec, {u.name: (tmp_path / f"{u.name}.pt", "") for u in spec.upstream})
    recorder = SweepRecorder(spec.tracking.uri, "small", sweep_id)
    parent = recorder.parent_run({})
    state = runner.SweepState(
        sweep_id, spec.storage, spec.tracking.uri, "small", parent, phase, ""
    )
    state.sweep_dir.mkdir(parents=True)
    return cells, state


@pytest.mark.timeout(180)  # a hung search fails here, not after the global 10 minutes
@pytest.mark.parametrize(
    ("trials_per_cell", "lost"),
    [(3, True), (2, True), (3, False)],
    ids=["lost-mid-search", "lost-last-asks", "kept"],
)
def test_resumed_search_spends_each_budget_once(
    ray_runtime, tmp_path, monkeypatch, trials_per_cell, lost
):
    gate = tmp_path / "gate" / "open"
    gate.parent.mkdir()
    monkeypatch.setattr(runner, "_trainable", lambda spec: _stand_in(gate))
    spec = small_spec(
        tmp_path,
        None,
        modes=["linear"],
        search_space={
            "linear": {"lr": {"distribution": "loguniform", "low": 0.02, "high": 0.2}, "epochs": 2}
        },
        search={"trials_per_cell": trials_per_cell, "max_concurrent_trials": 2},
        early_stopping={"scheduler": "none"},
    )
    cells, state = _sweep_in_phase(spec, tmp_path, "small-restore", "search")

    # Each cell's first trial finishes; its second is running when the driver stops.
    _interrupt_when_started(gate, count=len(cells))
    with pytest.raises(runner.SweepInterrupted, match="sparse-transfer resume"):
        runner._run_phase(
            "search", runner._search_tuner, state, spec, cells, restore=False, log=print
        )
    experiment_dir = state.sweep_dir / "search"
    if lost:
        assert len(_forget_live_trials(experiment_dir)) == len(cells)

    gate.touch()
    runner._run_phase("search", runner._search_tuner, state, spec, cells, restore=True, log=print)

    for name, trials in optuna_trials(state.sweep_dir).items():
        states = [t.state for t in trials]
        told = sum(s in (TrialState.COMPLETE, TrialState.PRUNED) for s in states)
        assert told == trials_per_cell, (name, states)
        assert TrialState.RUNNING not in states, (name, states)
        # A trial Tune lost is failed in Optuna and replaced; one Tune kept is resumed.
        assert states.count(TrialState.FAIL) == (1 if lost else 0), (name, states)


@pytest.mark.timeout(180)
@pytest.mark.parametrize("forget", ["running", "finished", "none"])
def test_resumed_final_phase_runs_every_planned_run_exactly_once(
    ray_runtime, tmp_path, monkeypatch, forget
):
    gate = tmp_path / "gate" / "open"
    gate.parent.mkdir()
    monkeypatch.setattr(runner, "_trainable", lambda spec: _stand_in(gate))
    spec = small_spec(
        tmp_path,
        None,
        modes=["linear"],
        seeds=[0, 1],
        search_space={"linear": {"lr": 0.1, "epochs": 2}},
        search={"max_concurrent_trials": 2},
        early_stopping={"scheduler": "none"},
    )
    cells, state = _sweep_in_phase(spec, tmp_path, "small-final-restore", "final")
    sweep_id = state.sweep_id
    plan = runner.plan_final_runs(state, spec, cells)
    (state.sweep_dir / runner.FINAL_PLAN_FILE).write_text(json.dumps(plan))

    # Each cell's seed 0 finishes; its seed 1 is running when the driver stops.
    _interrupt_when_started(gate, count=len(cells))
    with pytest.raises(runner.SweepInterrupted):
        runner._run_phase(
            "final", runner._final_tuner, state, spec, cells, restore=False, log=print
        )
    if forget != "none":
        lost = _forget_live_trials(state.sweep_dir / "final", finished=forget == "finished")
        assert len(lost) == len(cells)

    gate.touch()
    runner._run_phase("final", runner._final_tuner, state, spec, cells, restore=True, log=print)

    runs = child_runs(spec.tracking.uri, "small", sweep_id)
    finished = Counter(
        (r.data.tags["cell"], r.data.tags["seed"]) for r in runs if r.info.status == "FINISHED"
    )
    assert finished == Counter({(c.id, str(seed)): 1 for c in cells for seed in (0, 1)})
