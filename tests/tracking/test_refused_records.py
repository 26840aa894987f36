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
