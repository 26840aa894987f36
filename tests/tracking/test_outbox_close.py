"""Closing an outbox lets go of its file: a process that closes and reopens outboxes (a test
run, a long-lived driver) does not pile up SQLite handles."""

from __future__ import annotations

import os
from pathlib import Path

from sparse_transfer.tracking.outbox import open_outbox


def _handles_on(path: Path) -> list[str]:
    fds = Path(f"/proc/{os.getpid()}/fd")
    targets = []
    for fd in fds.iterdir():
        try:
            targets.append(os.readlink(fd))
        except OSError:
            continue  # closed while listing
    return [t for t in targets if t.startswith(str(path))]


def test_close_lets_go_of_the_file(tmp_path):
    path = (tmp_path / "outbox.sqlite").resolve()
    box = open_outbox(path, f"sqlite:///{tmp_path / 'mlflow.db'}", "e", "s")
    assert box.pending() == 0
    assert _handles_on(path), "the outbox holds its file while open"
    box.close()
    assert _handles_on(path) == []
    again = open_outbox(path, f"sqlite:///{tmp_path / 'mlflow.db'}", "e", "s")
    assert again is not box and again.pending() == 0  # the next one opens the file afresh
    again.close()
