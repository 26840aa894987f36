"""The tracking server down for minutes: a real `mlflow server` process stopped mid-sweep for
longer than MLflow's own client retries (OUTAGE_S), then started again on the same port and
store. Two drivers share the outage: a sweep, which must keep training and end with every
record in MLflow exactly once; and a recorder process killed with SIGKILL while its records
wait in its outbox, whose successor sends them once the server is back."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow_process import MlflowServer
from sweep_helpers import REPO, child_runs, parent_runs, small_spec, start_sweep

from sparse_transfer.config import dump_spec
from sparse_transfer.tracking import OUTBOX_FILE

# The outage alone lasts OUTAGE_S; the module's one scenario runs in the first test's setup.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

OUTAGE_S = 125  # MLflow's default HTTP retries give up after about two minutes
DRIVER = [sys.executable, str(Path(__file__).with_name("recorder_driver.py"))]


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _finished_lines(log: Path) -> int:
    text = log.read_text() if log.exists() else ""
    return sum(line.startswith(("[search ", "[final ")) for line in text.splitlines())


def _trial_runs(uri: str) -> int:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("outage")
    if experiment is None:
        return 0
    return len(client.search_runs([experiment.experiment_id], "tags.trial_id != ''"))


def _pending(outbox: Path) -> int:
    with sqlite3.connect(outbox) as conn:
        return conn.execute("select count(*) from ops where state = 'pending'").fetchone()[0]


@pytest.fixture(scope="module")
def outage(tmp_path_factory, zoo_dir):
    """Runs the whole scenario once; the tests below each check their driver's part."""
    root = tmp_path_factory.mktemp("outage")
    server = MlflowServer(root)
    server.start()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "SPARSE_TRANSFER_CACHE": str(root / "cache"),
    }
    spec = small_spec(
        root,
        zoo_dir,
        tracking={"uri": server.uri, "experiment": "outage"},
        search={"trials_per_cell": 3, "max_concurrent_trials": 2},
    )
    spec_file = root / "spec.yaml"
    spec_file.write_text(dump_spec(spec))
    sweep_log = root / "sweep.log"
    sweep = start_sweep(spec_file, sweep_log, env, root)

    work = root / "driver"
    work.mkdir()
    outbox = work / "outbox.sqlite"
    args = [server.uri, str(outbox), str(work)]
    driver_log = open(work / "log.txt", "w")  # noqa: SIM115
    driver = subprocess.Popen(
        [*DRIVER, "log", *args], stdout=driver_log, stderr=driver_log, env=env
    )
    try:
        _wait(lambda: (work / "parent").exists(), 120, "the driver's parent run")
        # Mid-sweep: the first trial's run is on the server, and no trial has finished yet.
        _wait(lambda: _trial_runs(server.uri) or sweep.poll() is not None, 400, "a trial's run")
        assert sweep.poll() is None, sweep_log.read_text()[-4000:]

        server.stop()
        stopped = time.monotonic()
        done_at_stop = _finished_lines(sweep_log)
        (work / "go").write_text("")
        _wait(lambda: (work / "queued").exists(), 60, "the driver's records")
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        pending_at_kill = _pending(outbox)
        successor = subprocess.Popen(
            [*DRIVER, "drain", *args], stdout=driver_log, stderr=driver_log, env=env
        )
        # The outage lasts OUTAGE_S whatever the sweep does; it may finish training meanwhile.
        _wait(lambda: time.monotonic() - stopped >= OUTAGE_S, OUTAGE_S + 5, "the outage")
        done_in_outage = _finished_lines(sweep_log) - done_at_stop
        alive_after_outage = sweep.poll() is None
        server.start()
        restarted = time.monotonic()
        sweep_rc = sweep.wait(timeout=400)
        successor_rc = successor.wait(timeout=120)
        # A sweep that finished during the outage left its last records in its outbox (it
        # waits a bounded time at the end): `sync` sends them now that the server is back.
        (sweep_dir,) = (root / "runs" / "sweeps").iterdir()
        synced = subprocess.run(
            [sys.executable, "-m", "sparse_transfer.cli", "sync", str(sweep_dir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert synced.returncode == 0, synced.stdout + synced.stderr
        yield {
            "uri": server.uri,
            "root": root,
            "sweep_log": sweep_log.read_text(),
            "sweep_rc": sweep_rc,
            "alive_after_outage": alive_after_outage,
            "done_in_outage": done_in_outage,
            "drain_s": time.monotonic() - restarted,
            "work": work,
            "outbox": outbox,
            "pending_at_kill": pending_at_kill,
            "successor_rc": successor_rc,
            "driver_log": (work / "log.txt").read_text(),
        }
    finally:
        if sweep.poll() is None:
            os.killpg(sweep.pid, signal.SIGKILL)
        for process in (driver, locals().get("successor")):
            if process is not None and process.poll() is None:
                process.kill()
        driver_log.close()
        server.stop()


def _assert_each_metric_step_once(client: MlflowClient, run) -> None:
    for key in run.data.metrics:
        steps = Counter(m.step for m in client.get_metric_history(run.info.run_id, key))
        assert steps and max(steps.values()) == 1, f"{key} logged twice at a step: {steps}"


def test_sweep_keeps_training_through_an_mlflow_outage_and_loses_nothing(outage):
    log = outage["sweep_log"]
    assert outage["sweep_rc"] == 0, log[-6000:]
    assert outage["done_in_outage"] >= 1, "no trial finished while MLflow was down:\n" + log
    print(
        f"trials finished during the outage: {outage['done_in_outage']}; "
        f"sweep ended {outage['drain_s']:.0f} s after the server came back"
    )

    uri = outage["uri"]
    client = MlflowClient(uri)
    (parent,) = parent_runs(uri, "outage", parent_sweep_id := _sweep_id(outage["root"]))
    runs = child_runs(uri, "outage", parent_sweep_id)
    trial_ids = Counter(r.data.tags["trial_id"] for r in runs)
    assert max(trial_ids.values()) == 1, "a trial has two MLflow runs"
    phases = Counter(r.data.tags["phase"] for r in runs)
    assert phases == {"search": 4 * 3, "final": 4 * 2}
    assert {r.info.status for r in runs} == {"FINISHED"}
    assert parent.info.status == "FINISHED"
    for run in runs:
        assert {"node", "epochs_run", "stopped_early", "cell", "git_commit"} <= set(run.data.tags)
        assert run.data.params["lr"]
        _assert_each_metric_step_once(client, run)
        epochs = [m.step for m in client.get_metric_history(run.info.run_id, "epoch")]
        assert epochs == list(range(1, int(run.data.tags["epochs_run"]) + 1))
        if run.data.tags["phase"] == "final":
            files = [a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")]
            assert files == ["checkpoint/weights.safetensors"]
    artifacts = sorted(a.path for a in client.list_artifacts(parent.info.run_id))
    assert artifacts == ["report.html", "spec.resolved.yaml", "summary.csv"], artifacts
    outbox = outage["root"] / "runs" / "sweeps" / parent_sweep_id / OUTBOX_FILE
    with sqlite3.connect(outbox) as conn:
        states = dict(conn.execute("select state, count(*) from ops group by state").fetchall())
    assert states == {}, states  # each operation deleted once sent; none refused


def _sweep_id(root: Path) -> str:
    (sweep_dir,) = (root / "runs" / "sweeps").iterdir()
    return sweep_dir.name


def test_driver_killed_during_the_outage_loses_nothing(outage):
    from recorder_driver import EPOCHS, EXPERIMENT, SWEEP_ID, TRIALS

    assert outage["pending_at_kill"] > 0, "nothing was waiting when the driver was killed"
    assert outage["successor_rc"] == 0, outage["driver_log"][-4000:]
    assert "drained, 0 refused" in outage["driver_log"]
    uri = outage["uri"]
    client = MlflowClient(uri)
    (parent,) = parent_runs(uri, EXPERIMENT, SWEEP_ID)
    assert parent.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["spec.yaml"]
    runs = child_runs(uri, EXPERIMENT, SWEEP_ID)
    assert sorted(r.data.tags["trial_id"] for r in runs) == [f"trial_{n}" for n in range(TRIALS)]
    for run in runs:
        number = int(run.data.tags["trial_id"].removeprefix("trial_"))
        assert run.info.status == "FINISHED"
        assert run.data.tags["node"] == "n1"
        assert run.data.params == {"lr": str(0.01 * (number + 1))}
        assert run.data.metrics["final_sparsity"] == 0.5
        _assert_each_metric_step_once(client, run)
        losses = client.get_metric_history(run.info.run_id, "loss")
        assert sorted((m.step, m.value) for m in losses) == [
            (e, 1.0 / (e + number)) for e in range(1, EPOCHS + 1)
        ]
        (artifact,) = client.list_artifacts(run.info.run_id, "checkpoint")
        local = client.download_artifacts(run.info.run_id, artifact.path, str(outage["work"]))
        assert Path(local).read_text() == f"weights of trial_{number}"
