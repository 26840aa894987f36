"""A worker node lost mid-trial, three times in one sweep, the way a reclaimed spot instance
dies: its raylet and every process on it killed at once, a fresh node started in its place. The
cluster is real: a head (0 CPUs, so trials run only on workers) and two worker raylets."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from ray.cluster_utils import Cluster
from sweep_helpers import child_runs, ledger_trials, small_spec

from sparse_transfer.config import dump_spec

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]
KILLS = 3
EPOCHS = 40  # long enough trials (seconds each) that the kills land mid-trial


def _saved_states(storage) -> list:
    return list(storage.glob("sweeps/*/trial_state/*/state.pt"))


def test_three_worker_nodes_lost_mid_trial(zoo_dir, tmp_path):
    cluster = Cluster(initialize_head=True, connect=False, head_node_args={"num_cpus": 0})
    try:
        workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
        cluster.wait_for_nodes()
        spec = small_spec(
            tmp_path,
            zoo_dir,
            modes=["full"],
            seeds=[0],
            search_space={
                "full": {
                    "lr": {"distribution": "loguniform", "low": 0.005, "high": 0.05},
                    "epochs": EPOCHS,
                }
            },
            search={"trials_per_cell": 4, "max_concurrent_trials": 2},
            early_stopping={"scheduler": "none"},
            resources={"checkpoint_interval_s": 0},  # a state every epoch: kills cost little
        )
        spec_file = tmp_path / "spec.yaml"
        spec_file.write_text(dump_spec(spec))
        log = tmp_path / "sweep.log"
        with open(log, "w") as out:
            driver = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sparse_transfer.cli",
                    "sweep",
                    str(spec_file),
                    "--address",
                    cluster.address,
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            storage = tmp_path / "runs"
            seen: set = set()
            for kill in range(KILLS):
                deadline = time.monotonic() + 300
                while not set(_saved_states(storage)) - seen:  # a new trial mid-way, saved
                    assert driver.poll() is None, log.read_text()[-3000:]
                    assert time.monotonic() < deadline, f"no progress before kill {kill + 1}"
                    time.sleep(0.2)
                seen |= set(_saved_states(storage))
                victim = workers.pop(0)
                cluster.remove_node(victim, allow_graceful=False)  # raylet and its workers
                workers.append(cluster.add_node(num_cpus=1))  # the replacement instance
            assert driver.wait(timeout=600) == 0, log.read_text()[-5000:]
        output = log.read_text()
        assert output.count("its worker was lost") >= 1, output[-3000:]
        assert "interrupted" not in output

        (sweep_dir,) = (storage / "sweeps").iterdir()
        for name, trials in ledger_trials(sweep_dir).items():
            assert len(trials) == 4, name  # the budget is unchanged
            assert all(t.state == TrialState.COMPLETE for t in trials), name
        runs = child_runs(spec.tracking.uri, "small", sweep_dir.name)
        assert Counter(r.data.tags["trial_id"] for r in runs).most_common(1)[0][1] == 1
        assert len(runs) == 2 * 4 + 2 * 1
        assert {r.info.status for r in runs} == {"FINISHED"}
        client = MlflowClient(spec.tracking.uri)
        for run in runs:  # every epoch recorded once: those before a kill were kept
            steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch")]
            assert sorted(steps) == list(range(1, EPOCHS + 1)), (run.data.tags["trial_id"], steps)
        assert not _saved_states(storage), "told trials left their state behind"
    finally:
        cluster.shutdown()
