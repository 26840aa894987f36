"""'Prune, then transfer' and 'transfer, then prune' side by side in one sweep and report."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sweep_helpers import child_runs, small_spec

from sparse_transfer.config import SpecError, parse_spec
from sparse_transfer.sweep import run_sweep

pytestmark = pytest.mark.slow


def test_prune_mode_is_reported_next_to_upstream_pruning(ray_runtime, zoo_dir, tmp_path):
    spec = small_spec(
        tmp_path,
        zoo_dir,
        modes=["full", "prune"],
        seeds=[0],
        search_space={
            m: {"lr": {"distribution": "loguniform", "low": 0.005, "high": 0.05}, "epochs": 3}
            for m in ("full", "prune")
        },
        search={"trials_per_cell": 2, "max_concurrent_trials": 2},
        downstream_pruning={"target_sparsity": 0.9},
    )
    state = run_sweep(spec, log=lambda _: None)
    runs = child_runs(state.tracking_uri, state.experiment, state.sweep_id)
    cells = {r.data.tags["cell"] for r in runs}
    # gmp_90 is already at the target: it has no prune cell
    assert cells == {
        "dense/digits_5to9/full",
        "gmp_90/digits_5to9/full",
        "dense/digits_5to9/prune",
    }
    for run in runs:
        if run.data.tags["mode"] == "prune" and run.data.tags["stopped_early"] == "false":
            assert run.data.metrics["final_sparsity"] == pytest.approx(0.9, abs=1e-3)
            assert run.data.tags["downstream_target"] == "0.9"
    summary = pd.read_csv(Path(state.sweep_dir) / "report" / "summary.csv")
    rows = {(r.mode, r.method, r.sparsity) for r in summary.itertuples()}
    assert ("full", "gmp", 0.9) in rows
    assert ("full", "dense+downstream_gmp", 0.9) in rows


def _raw(**changes) -> dict:
    raw = {
        "name": "p",
        "datasets": ["digits_5to9"],
        "modes": ["prune"],
        "seeds": [0],
        "upstream": [
            {
                "name": "g",
                "arch": "quickstart_cnn",
                "method": "gmp",
                "sparsity": 0.9,
                "zoo": "quickstart/gmp_90",
            }
        ],
        "search_space": {"prune": {"lr": 0.01, "epochs": 2}},
        "downstream_pruning": {"target_sparsity": 0.95},
    }
    raw.update(changes)
    return raw


def test_prune_mode_needs_a_target():
    with pytest.raises(SpecError, match="downstream_pruning"):
        parse_spec(_raw(downstream_pruning=None), source="spec.yaml")


def test_prune_target_must_exceed_some_upstream_sparsity():
    with pytest.raises(SpecError, match="downstream_pruning.target_sparsity"):
        parse_spec(_raw(downstream_pruning={"target_sparsity": 0.8}), source="spec.yaml")
    assert parse_spec(_raw(), source="spec.yaml").downstream_pruning.target_sparsity == 0.95
