"""Small sweep specs for the end-to-end tests, and readers of what a sweep left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
from mlflow import MlflowClient

from sparse_transfer.config import SweepSpec, parse_spec

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "sparse_transfer.cli"]


def start_sweep(spec_file: Path, log_file: Path, env: dict, cwd: Path) -> subprocess.Popen:
    """`sparse-transfer sweep` in its own process group (so it can be killed with its Ray)."""
    with open(log_file, "w") as log:
        return subprocess.Popen(
            [*CLI, "sweep", str(spec_file)],
            stdout=log,
            stderr=log,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )


def kill_when(process: subprocess.Popen, ready, log_file: Path, timeout: float = 300) -> None:
    """SIGKILL the driver and the local Ray it started once `ready()`: a crash, no clean-up."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the sweep ended early:\n" + log_file.read_text()[-3000:]
        assert time.monotonic() < deadline, "the sweep made no progress"
        time.sleep(0.5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def small_spec(tmp_path: Path, zoo_dir: Path | None, **changes) -> SweepSpec:
    """A 4-cell study (dense and gmp_90 x digits_5to9 x both modes); `zoo_dir=None` keeps
    the zoo in the sweep's storage."""
    raw = {
        "name": "small",
        "upstream": [
            {
                "name": "dense",
                "arch": "quickstart_cnn",
                "method": "dense",
                "sparsity": 0.0,
                "zoo": "quickstart/dense",
            },
            {
                "name": "gmp_90",
                "arch": "quickstart_cnn",
                "method": "gmp",
                "sparsity": 0.9,
                "zoo": "quickstart/gmp_90",
            },
        ],
        "datasets": ["digits_5to9"],
        "modes": ["full", "linear"],
        "seeds": [0, 1],
        "search_space": {
            "full": {
                "lr": {"distribution": "loguniform", "low": 0.005, "high": 0.05},
                "batch_size": {"distribution": "choice", "choices": [32, 64]},
                "epochs": 4,
            },
            "linear": {
                "lr": {"distribution": "loguniform", "low": 0.02, "high": 0.2},
                "epochs": 4,
            },
        },
        "search": {"trials_per_cell": 3, "max_concurrent_trials": 2},
        "early_stopping": {"scheduler": "asha", "grace_period": 1, "reduction_factor": 2},
        "storage": str(tmp_path / "runs"),
        **({"zoo_dir": str(zoo_dir)} if zoo_dir else {}),
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "small"},
    }
    raw.update(changes)
    return parse_spec(raw, source="test spec")


def child_runs(tracking_uri: str, experiment: str, sweep_id: str) -> list:
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], f"tags.sweep_id = '{sweep_id}'", max_results=5000)
    return [r for r in runs if r.data.tags.get("role") != "sweep"]


def parent_runs(tracking_uri: str, experiment: str, sweep_id: str) -> list:
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs(
        [experiment_id], f"tags.sweep_id = '{sweep_id}' and tags.role = 'sweep'"
    )


def ledger_trials(sweep_dir: Path, final: bool = False) -> dict[str, list]:
    """Study name -> trials, read from the sweep's ledger file as optuna-dashboard reads it:
    the search studies, or with `final` the final-run studies."""
    backend = optuna.storages.journal.JournalFileBackend(str(sweep_dir / "ledger.jsonl"))
    storage = optuna.storages.JournalStorage(backend)
    return {
        name: optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        for name in optuna.get_all_study_names(storage)
        if name.endswith("/final") == final
    }


optuna_trials = ledger_trials  # the search studies


def count_by(runs, *tags: str) -> Counter:
    return Counter(tuple(r.data.tags.get(t) for t in tags) for r in runs)
