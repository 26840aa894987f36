"""A weak cell keeps its whole budget: search and ASHA act within a cell, never across cells."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from optuna.trial import TrialState
from sweep_helpers import child_runs, optuna_trials, small_spec

from sparse_transfer.models import ARCHS, UpstreamCheckpoint, load_upstream, save_upstream
from sparse_transfer.sweep import run_sweep

pytestmark = pytest.mark.slow

TRIALS, EPOCHS = 6, 6


def _random_init_upstream(path: Path, zoo_dir: Path) -> Path:
    """An untrained CNN: its frozen features are near chance, a clearly weaker upstream."""
    preprocessing = load_upstream(zoo_dir / "quickstart/dense.pt").metadata["preprocessing"]
    torch.manual_seed(0)
    model = ARCHS.get("quickstart_cnn").build(5)
    masks = {}
    save_upstream(
        path,
        UpstreamCheckpoint(
            "quickstart_cnn", 5, model.state_dict(), masks, {"preprocessing": preprocessing}
        ),
    )
    return path


def test_weak_cell_gets_full_budget_and_a_full_length_best_trial(ray_runtime, zoo_dir, tmp_path):
    weak_path = _random_init_upstream(tmp_path / "random_init.pt", zoo_dir)
    spec = small_spec(
        tmp_path,
        zoo_dir,
        upstream=[
            {
                "name": "strong",
                "arch": "quickstart_cnn",
                "method": "dense",
                "sparsity": 0.0,
                "zoo": "quickstart/dense",
            },
            {
                "name": "weak",
                "arch": "quickstart_cnn",
                "method": "dense",
                "sparsity": 0.0,
                "checkpoint": str(weak_path),
            },
        ],
        modes=["linear"],
        seeds=[0],
        search_space={
            "linear": {
                "lr": {"distribution": "loguniform", "low": 0.05, "high": 0.2},
                "epochs": EPOCHS,
            }
        },
        search={"trials_per_cell": TRIALS, "max_concurrent_trials": 2},
        early_stopping={"scheduler": "asha", "grace_period": 1, "reduction_factor": 2},
    )
    state = run_sweep(spec, log=lambda _: None)
    studies = optuna_trials(Path(state.sweep_dir))
    strong = studies[f"{state.sweep_id}/strong/digits_5to9/linear"]
    weak = studies[f"{state.sweep_id}/weak/digits_5to9/linear"]

    # The premise: at every epoch, every weak trial scores below every strong trial, so an
    # ASHA comparing across cells would rank all weak trials last.
    for epoch in range(1, EPOCHS + 1):
        weak_scores = [
            t.intermediate_values[epoch] for t in weak if epoch in t.intermediate_values
        ]
        strong_scores = [
            t.intermediate_values[epoch] for t in strong if epoch in t.intermediate_values
        ]
        if weak_scores and strong_scores:
            assert max(weak_scores) < min(strong_scores), f"premise fails at epoch {epoch}"

    # The weak cell still got every one of its trials ...
    assert len(weak) == len(strong) == TRIALS
    runs = child_runs(state.tracking_uri, state.experiment, state.sweep_id)
    weak_search = [
        r for r in runs if r.data.tags["upstream"] == "weak" and r.data.tags["phase"] == "search"
    ]
    assert len(weak_search) == TRIALS
    # ... and its best trial ran every epoch, told to Optuna as COMPLETE.
    complete = [t for t in weak if t.state == TrialState.COMPLETE]
    assert complete, "no weak trial ran to its last epoch: ASHA compared it across cells"
    best = max(complete, key=lambda t: t.value)
    assert sorted(best.intermediate_values) == list(range(1, EPOCHS + 1))
    best_run = next(r for r in weak_search if r.data.tags["optuna_trial"] == str(best.number))
    assert best_run.data.tags["epochs_run"] == str(EPOCHS)
    # ASHA was really on: some trials were stopped early, and Optuna knows them as PRUNED.
    pruned = [t for t in weak + strong if t.state == TrialState.PRUNED]
    assert pruned
    assert all(max(t.intermediate_values) < EPOCHS for t in pruned)
    # The weak cell goes on to its final run like any other.
    finals = [r for r in runs if r.data.tags["phase"] == "final"]
    assert sorted(r.data.tags["upstream"] for r in finals) == ["strong", "weak"]
