"""The ledger's mirror in S3 (a local moto server): one upload at a time, a key another driver
wrote never replaced, a local file that is not S3's prefix never kept, segments compacted."""

from __future__ import annotations

import threading
import time

import pytest
from s3_helpers import s3_server

from sparse_transfer.storage import Storage
from sparse_transfer.sweep import ledger as ledger_module
from sparse_transfer.sweep.ledger import LedgerBackend, LedgerConflict, fetch_ledger

s3 = pytest.fixture(s3_server)
PARTS = ("sweeps", "s")


def _log(n: int, text: str = "x") -> list[dict]:
    return [{"op_code": 0, "worker_id": "w", "n": i, "text": text} for i in range(n)]


def _fetched(store: Storage, tmp_path, name: str) -> bytes:
    path = tmp_path / name / "ledger.jsonl"
    fetch_ledger(store, PARTS, path)
    return path.read_bytes()


def test_close_never_uploads_beside_an_upload_on_its_way(s3, tmp_path, monkeypatch):
    """The upload thread is mid-PUT of the first appends when the driver syncs on its own (as
    `close` does): the thread's older, smaller segment must not land over the newer one."""
    monkeypatch.setattr(ledger_module, "_UPLOAD_EVERY_S", 0.05)
    store = Storage(s3.uri("race"))
    real, uploading = store.upload, threading.Event()

    def slow_upload(*parts, **kwargs):
        small = store.local(*parts).stat().st_size < 300
        uploading.set()
        time.sleep(1.5 if small else 0.2)  # the thread's small segment lands last
        return real(*parts, **kwargs)

    monkeypatch.setattr(store, "upload", slow_upload)
    backend = LedgerBackend(tmp_path / "a" / "ledger.jsonl", store, PARTS)
    backend.append_logs(_log(2))
    assert uploading.wait(10)
    backend.append_logs(_log(5, "more"))
    backend.sync()
    backend.close()
    local = (tmp_path / "a" / "ledger.jsonl").read_bytes()
    assert _fetched(Storage(s3.uri("race")), tmp_path, "b") == local


def test_a_second_driver_never_replaces_a_segment(s3, tmp_path):
    store = Storage(s3.uri("two"))
    first = LedgerBackend(tmp_path / "a" / "ledger.jsonl", store, PARTS)
    second = LedgerBackend(tmp_path / "b" / "ledger.jsonl", Storage(s3.uri("two")), PARTS)
    first.append_logs(_log(3, "first"))
    first.sync()
    second.append_logs(_log(3, "second"))
    with pytest.raises(LedgerConflict, match="another driver wrote"):
        second.sync()
    first.close()
    assert b"second" not in _fetched(store, tmp_path, "c")


def test_a_local_ledger_that_is_not_s3_s_prefix_is_set_aside(s3, tmp_path):
    """Machine A drove the sweep, then B from A's upload, then A again: A's longer local file
    holds a history B never saw, and must not be spliced onto B's."""
    store = Storage(s3.uri("splice"))
    path_a = tmp_path / "a" / "ledger.jsonl"
    a = LedgerBackend(path_a, store, PARTS)
    a.append_logs(_log(2, "shared"))
    a.sync()
    a.store = None  # A dies: what it appends next never reaches S3
    a.append_logs(_log(20, "only-on-a"))
    path_b = tmp_path / "b" / "ledger.jsonl"
    fetch_ledger(store, PARTS, path_b)
    b = LedgerBackend(path_b, Storage(s3.uri("splice")), PARTS)
    b.append_logs(_log(2, "b"))
    b.close()
    assert path_a.stat().st_size > path_b.stat().st_size
    fetch_ledger(store, PARTS, path_a)  # A resumes
    assert path_a.read_bytes() == path_b.read_bytes()
    assert list(path_a.parent.glob("ledger.jsonl.diverged-*"))


def test_the_same_machine_keeps_its_longer_ledger(s3, tmp_path):
    store = Storage(s3.uri("same"))
    path = tmp_path / "a" / "ledger.jsonl"
    a = LedgerBackend(path, store, PARTS)
    a.append_logs(_log(2))
    a.sync()
    a.store = None
    a.append_logs(_log(3, "tail"))
    before = path.read_bytes()
    fetch_ledger(store, PARTS, path)
    assert path.read_bytes() == before


def test_closing_compacts_segments_and_a_resume_downloads_a_few(s3, tmp_path, monkeypatch):
    monkeypatch.setattr(ledger_module, "_COMPACT_AFTER", 4)
    store = Storage(s3.uri("compact"))
    backend = LedgerBackend(tmp_path / "a" / "ledger.jsonl", store, PARTS)
    for n in range(10):
        backend.append_logs(_log(1, f"u{n}"))
        backend.sync()
    assert len(store.list_objects(*PARTS, "ledger")) == 10
    backend.close()
    assert [n for n, _ in store.list_objects(*PARTS, "ledger")] == [
        f"c{backend._uploaded:016d}.jsonl"
    ]
    resumed = LedgerBackend(tmp_path / "a" / "ledger.jsonl", Storage(s3.uri("compact")), PARTS)
    resumed.append_logs(_log(1, "after"))
    resumed.close()  # two objects: fewer than the compaction threshold
    downloads = []
    fresh = Storage(s3.uri("compact"))
    real = fresh.download
    monkeypatch.setattr(fresh, "download", lambda *p: downloads.append(p) or real(*p))
    assert _fetched(fresh, tmp_path, "b") == (tmp_path / "a" / "ledger.jsonl").read_bytes()
    assert len(downloads) == 2


def test_a_reopened_ledger_holds_no_parsed_log_lines(tmp_path):
    """The replay at open streams the file: nothing of it stays in the backend."""
    from sparse_transfer.sweep.ledger import Ledger

    ledger = Ledger(tmp_path, None, (), "s")
    study = ledger.study("cell")
    for _ in range(50):
        trial = study.ask()
        for step in range(10):
            trial.report(float(step), step)
        study.tell(trial, 1.0)
    ledger.close()
    reopened = Ledger(tmp_path, None, (), "s")
    assert len(reopened.trials(reopened.study("cell"))) == 50
    assert reopened.backend._tail == []  # the in-memory copy of the log, on the old code
    reopened.close()
