"""The outbox replayed after a crash that fell after MLflow got its records and before they
were marked sent: sending the same queue twice must leave MLflow as sending it once did."""

from __future__ import annotations

import shutil
import socket
import sqlite3
from collections import Counter

from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from sparse_transfer.tracking import SweepRecorder
from sparse_transfer.tracking.experiments import find_or_create_experiment

SWEEP, EXPERIMENT = "replayed", "replay"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def _copy_outbox(source, target) -> None:
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def test_a_queue_sent_twice_records_everything_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = find_or_create_experiment(client, uri, EXPERIMENT)
    tags = {"sweep_id": SWEEP, "role": "sweep", MLFLOW_RUN_NAME: SWEEP}
    parent = client.create_run(experiment, tags=tags).info.run_id

    # Queued while the server is unreachable: nothing is sent.
    queued = tmp_path / "queued.sqlite"
    offline = SweepRecorder(f"http://127.0.0.1:{_closed_port()}", EXPERIMENT, SWEEP, queued)
    artifact = tmp_path / "weights.safetensors"
    artifact.write_bytes(b"weights")
    for trial in ("done", "running"):
        offline.open_trial(trial, parent, {"phase": "search"}, {"lr": 0.1}, run_name=trial)
        for step in (1, 2, 3):
            offline.log_epoch(trial, step, {"epoch": step, "loss": 1.0 / step})
    offline.close_trial("done", "FINISHED", tags={"node": "n"}, artifacts=artifact)
    offline.log_parent_artifact(parent, artifact)
    assert offline.box.pending() > 0

    first, second = tmp_path / "first.sqlite", tmp_path / "second.sqlite"
    _copy_outbox(queued, first)
    _copy_outbox(queued, second)
    shutil.copytree(tmp_path / "queued.sqlite.files", tmp_path / "kept-files")
    assert SweepRecorder(uri, EXPERIMENT, SWEEP, first).drain(timeout=60)
    # The crash: MLflow has it all, the outbox marked nothing. A new driver sends it again.
    shutil.copytree(tmp_path / "kept-files", tmp_path / "queued.sqlite.files", dirs_exist_ok=True)
    replay = SweepRecorder(uri, EXPERIMENT, SWEEP, second)
    assert replay.drain(timeout=60)
    assert replay.box.failed == 0
    with sqlite3.connect(second) as conn:  # sent operations do not pile up in the file
        assert conn.execute("select count(*) from ops").fetchone()[0] == 0

    runs = client.search_runs([experiment], f"tags.sweep_id = '{SWEEP}' and tags.trial_id != ''")
    assert sorted(r.data.tags["trial_id"] for r in runs) == ["done", "running"]
    for run in runs:
        for key in ("epoch", "loss"):
            history = client.get_metric_history(run.info.run_id, key)
            assert Counter(m.step for m in history) == {1: 1, 2: 1, 3: 1}, (key, history)
        assert run.data.params == {"lr": "0.1"}
    done = next(r for r in runs if r.data.tags["trial_id"] == "done")
    assert done.info.status == "FINISHED" and done.data.tags["node"] == "n"
    assert [a.path for a in client.list_artifacts(done.info.run_id, "checkpoint")] == [
        "checkpoint/weights.safetensors"
    ]
    assert [a.path for a in client.list_artifacts(parent)] == ["weights.safetensors"]


def test_a_key_given_to_a_new_trial_after_a_crash_gets_a_run_of_its_own(tmp_path):
    """A trial lost before the ledger kept it leaves its run RUNNING; the resumed sweep gives
    its key to a new trial with other parameters: the old run goes to the trash, tagged."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = SweepRecorder(uri, EXPERIMENT, SWEEP, tmp_path / "first.sqlite")
    parent = first.parent_run({})
    first.open_trial("t", parent, {"phase": "search"}, {"lr": 0.1}, run_name="t")
    first.log_epoch("t", 1, {"epoch": 1})
    assert first.drain(timeout=60)
    # The driver died; a new one (another machine: another outbox) reuses the key.
    second = SweepRecorder(uri, EXPERIMENT, SWEEP, tmp_path / "second.sqlite")
    second.open_trial("t", parent, {"phase": "search"}, {"lr": 0.3}, run_name="t")
    second.close_trial("t", "FINISHED")
    assert second.drain(timeout=60) and second.box.failed == 0
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    (run,) = client.search_runs([experiment], "tags.trial_id = 't'")
    assert run.data.params == {"lr": "0.3"} and run.info.status == "FINISHED"
    assert "epoch" not in run.data.metrics
    (lost,) = client.search_runs([experiment], "tags.lost_in_crash = 'true'", run_view_type=2)
    assert lost.data.params == {"lr": "0.1"} and lost.info.lifecycle_stage == "deleted"
