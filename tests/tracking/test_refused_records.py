"""Records MLflow refuses for good (not an outage: a bad value) are named at the end of a
sweep, not only counted."""

from __future__ import annotations

from sparse_transfer.sweep import runner
from sparse_transfer.tracking import OUTBOX_FILE, SweepRecorder


def test_refused_records_are_named_at_the_end(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    state = runner.SweepState("s", str(tmp_path / "runs"), uri, "e", "", runner.DONE, "")
    state.sweep_dir.mkdir(parents=True)
    recorder = SweepRecorder(uri, "e", "s", state.sweep_dir / OUTBOX_FILE)
    parent = recorder.parent_run({})
    recorder.open_trial("c0000-search-00000", parent, {"phase": "search"}, {}, run_name="t")
    recorder.close_trial("c0000-search-00000", "FINISHED", tags={"no\x00such?name": "v"})
    lines: list[str] = []
    assert runner.send_records(state, log=lines.append) == 0
    refused = [line for line in lines if line.startswith("mlflow refused tags")]
    assert refused and "c0000-search-00000" in refused[0] and "Names may only" in refused[0]


def test_a_sweeps_end_waits_for_a_silent_server_as_long_as_the_runner_says(tmp_path, monkeypatch):
    """The wait is read when the sweep ends, so `_RECORDS_WAIT_S` (and `sync`'s patience)
    hold: a default bound at import once kept every sweep 60 s on a server that was down."""
    import socket
    import time

    with socket.socket() as free:  # a port nothing listens on: every send is refused at once
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    uri = f"http://127.0.0.1:{port}"
    state = runner.SweepState("s", str(tmp_path / "runs"), uri, "e", "", runner.DONE, "")
    state.sweep_dir.mkdir(parents=True)
    recorder = SweepRecorder(uri, "e", "s", state.sweep_dir / OUTBOX_FILE)
    recorder.close_parent("0" * 32, "FINISHED")  # queued: only the sender talks to the server
    monkeypatch.setattr(runner, "_RECORDS_WAIT_S", 1.0)
    monkeypatch.setattr(runner, "_SYNC_PATIENCE_S", 2.0)
    for patient, bound in (({}, 1.0), ({"patient": True}, 2.0)):
        lines: list[str] = []
        started = time.monotonic()
        assert runner.send_records(state, log=lines.append, **patient) > 0
        waited = time.monotonic() - started
        assert bound - 0.1 <= waited < bound + 10, (patient, waited)
        assert "sparse-transfer sync" in lines[-1]
    recorder.box.close()
