"""A real sweep (local Ray Tune, Optuna, ASHA, MLflow SQLite), then what it must have left."""

from __future__ import annotations

from pathlib import Path

import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from safetensors.torch import load_file
from sweep_helpers import child_runs, count_by, optuna_trials, parent_runs, small_spec

from sparse_transfer.metrics import STUDY_TAGS
from sparse_transfer.sweep import run_sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(ray_runtime, zoo_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    spec = small_spec(tmp, zoo_dir)
    state = run_sweep(spec, log=lambda _: None)
    return spec, state, child_runs(state.tracking_uri, state.experiment, state.sweep_id)


def test_one_child_run_per_trial_with_every_tag(finished):
    spec, state, runs = finished
    cells = 2 * 1 * 2
    search = [r for r in runs if r.data.tags["phase"] == "search"]
    final = [r for r in runs if r.data.tags["phase"] == "final"]
    assert len(search) == cells * spec.search.trials_per_cell
    assert len(final) == cells * len(spec.seeds)
    trial_ids = [r.data.tags["trial_id"] for r in runs]
    assert len(trial_ids) == len(set(trial_ids)), "a trial has more than one run"
    (parent,) = parent_runs(state.tracking_uri, state.experiment, state.sweep_id)
    assert parent.info.status == "FINISHED"
    for run in runs:
        missing = [t for t in (*STUDY_TAGS, "git_commit", "node") if not run.data.tags.get(t)]
        assert not missing, f"run {run.info.run_id} lacks tags {missing}"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["sweep_id"] == state.sweep_id
        assert run.info.status == "FINISHED"
        assert "lr" in run.data.params and "epochs" in run.data.params
        assert "final_sparsity" in run.data.metrics
    assert count_by(final, "cell", "seed") == {
        (cell, str(seed)): 1 for cell in {r.data.tags["cell"] for r in runs} for seed in spec.seeds
    }


def test_final_runs_are_scored_on_test_with_a_checkpoint(finished, tmp_path):
    _, state, runs = finished
    client = MlflowClient(state.tracking_uri)
    for run in (r for r in runs if r.data.tags["phase"] == "final"):
        assert 0 <= run.data.metrics["test_top1"] <= 100
        assert "val_top1" not in run.data.metrics
        history = client.get_metric_history(run.info.run_id, "test_top1")
        # the test split is scored once, at the last epoch (no `eval_every` in this spec)
        assert [m.step for m in history] == [int(run.data.params["epochs"])]
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")]
        assert artifacts == ["checkpoint/weights.safetensors"]
        # weights only: no optimizer state, and no masks (they are in the upstream file)
        path = client.download_artifacts(run.info.run_id, artifacts[0], str(tmp_path))
        keys = set(load_file(path))
        assert keys and all(
            k.endswith(("weight", "bias", "running_mean", "running_var", "num_batches_tracked"))
            for k in keys
        ), keys


def test_full_finetuning_keeps_upstream_sparsity(finished):
    _, _, runs = finished
    full = [r for r in runs if r.data.tags["mode"] == "full"]
    assert full
    for run in full:
        upstream = float(run.data.tags["sparsity"])
        assert run.data.metrics["final_sparsity"] == pytest.approx(upstream, abs=1e-3)
        assert run.data.metrics["final_sparsity"] == run.data.metrics["upstream_sparsity"]


def test_feature_cache_is_computed_once_and_reused(finished):
    _, state, runs = finished
    linear = sorted(
        (r for r in runs if r.data.tags["mode"] == "linear"), key=lambda r: r.info.start_time
    )
    # 2 upstream models x {train, val} for search + {trainval, test} for final runs
    files = sorted(state.store.local("features").glob("*.parquet"))
    assert len(files) == 2 * 4
    for phase in ("search", "final"):
        for upstream in ("dense", "gmp_90"):
            hits = [
                r.data.metrics["feature_cache_hit"]
                for r in linear
                if r.data.tags["phase"] == phase and r.data.tags["upstream"] == upstream
            ]
            assert hits[0] == 0.0 and all(h == 1.0 for h in hits[1:]), (phase, upstream, hits)


def test_each_cell_gets_its_budget_and_pruned_trials_are_pruned(finished):
    spec, state, runs = finished
    studies = optuna_trials(Path(state.sweep_dir))
    assert len(studies) == 4
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(Path(state.sweep_dir) / "ledger.jsonl"))
    )
    for name in studies:  # optuna-dashboard names the objective, not "Objective 0"
        study = optuna.load_study(study_name=name, storage=storage)
        assert study.metric_names == [spec.search.metric], name
    for name, trials in studies.items():
        assert name.startswith(state.sweep_id + "/")
        assert len(trials) == spec.search.trials_per_cell
        assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        assert any(t.state == TrialState.COMPLETE for t in trials)
    stopped = {
        (r.data.tags["cell"], int(r.data.tags["optuna_trial"]))
        for r in runs
        if r.data.tags.get("stopped_early") == "true"
    }
    pruned = {
        (name.split("/", 1)[1], t.number)
        for name, trials in studies.items()
        for t in trials
        if t.state == TrialState.PRUNED
    }
    assert stopped == pruned
    for trials in studies.values():
        for t in trials:
            if t.state == TrialState.PRUNED:
                assert max(t.intermediate_values) < 4  # stopped before its last epoch


def test_report_is_written_from_final_runs(finished):
    _, state, runs = finished
    report = Path(state.sweep_dir) / "report"
    results = pd.read_parquet(report / "results.parquet")
    assert len(results) == len([r for r in runs if r.data.tags["phase"] == "final"])
    summary = pd.read_csv(report / "summary.csv")
    assert set(summary["method"]) == {"dense", "gmp"}
    assert (report / "report.html").read_text().count("gmp") >= 1
