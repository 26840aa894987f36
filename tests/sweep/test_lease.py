"""One driver per sweep: a second `resume` of a sweep that is being driven exits at once,
naming the holder and how to take over; a dead holder's lease is taken over."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from s3_helpers import s3_server

from sparse_transfer.storage import Storage
from sparse_transfer.sweep.lease import LEASE_FILE, SweepBusy, hold_lease

s3 = pytest.fixture(s3_server)
PARTS = ("sweeps", "s")


def _sweep_dir(tmp_path):
    sweep_dir = tmp_path / "runs" / "sweeps" / "s"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "state.json").write_text(
        json.dumps(
            {
                "sweep_id": "s",
                "storage": str(tmp_path / "runs"),
                "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "experiment": "e",
                "parent_run_id": "",
                "phase": "running",
                "commit": "",
            }
        )
    )
    return sweep_dir


def test_a_second_resume_of_a_live_sweep_exits_at_once_naming_the_holder(tmp_path):
    sweep_dir = _sweep_dir(tmp_path)
    store = Storage(str(tmp_path / "runs"))
    with hold_lease(store, PARTS, sweep_dir, str(sweep_dir)):
        done = subprocess.run(
            [sys.executable, "-m", "sparse_transfer.cli", "resume", str(sweep_dir)],
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert done.returncode == 3, done.stdout + done.stderr
    assert f"pid {__import__('os').getpid()}" in done.stderr
    assert "only one driver" in done.stderr and "Traceback" not in done.stderr
    assert "resuming" not in done.stdout  # nothing read or written before the lease


def test_the_lease_is_free_again_after_its_driver_ends(tmp_path):
    sweep_dir = _sweep_dir(tmp_path)
    store = Storage(str(tmp_path / "runs"))
    with (
        hold_lease(store, PARTS, sweep_dir, "here"),
        pytest.raises(SweepBusy, match="being driven by pid"),
        hold_lease(store, PARTS, sweep_dir, "here"),
    ):
        pass
    with hold_lease(store, PARTS, sweep_dir, "here"):
        pass


def _remote_holder(store, holder: dict) -> None:
    path = store.local(*PARTS, LEASE_FILE)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(holder))
    store.upload(*PARTS, LEASE_FILE)


def test_s3_lease_of_another_machine_is_refused_until_taken_over(s3, tmp_path):
    store = Storage(s3.uri("lease"))
    _remote_holder(store, {"host": "other-machine", "pid": 7, "since": "noon"})
    here = tmp_path / "sweep"
    with (
        pytest.raises(SweepBusy, match="pid 7 on other-machine.*--take-over"),
        hold_lease(store, PARTS, here, "s3://x"),
    ):
        pass
    with hold_lease(store, PARTS, here, "s3://x", take_over=True):
        held = json.loads(store.local(*PARTS, LEASE_FILE).read_text())
        assert held["host"] != "other-machine"
    assert not store.exists(*PARTS, LEASE_FILE)  # given back at the end


def test_s3_lease_of_a_dead_process_on_this_machine_is_taken_over(s3, tmp_path):
    import socket

    store = Storage(s3.uri("dead"))
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    _remote_holder(store, {"host": socket.gethostname(), "pid": int(dead.stdout), "started": "1"})
    with hold_lease(store, PARTS, tmp_path / "sweep", "s3://x"):
        pass
