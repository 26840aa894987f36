"""A worker node's copies of trial folders: each trial start removes the copies of trials the
driver already removed from S3 (told trials), and never a folder another trial holds."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sparse_transfer.storage import Storage
from sparse_transfer.sweep.trainable import _clean_node_cache, _lock_path, state_parts

SWEEP = "s1"


@pytest.fixture
def s3(monkeypatch, tmp_path):
    from s3_helpers import s3_server

    yield from s3_server(monkeypatch, tmp_path)


def _trial_folder(store: Storage, key: str) -> None:
    folder = store.local(*state_parts(SWEEP, key))
    folder.mkdir(parents=True)
    (folder / "state.pt").write_bytes(b"saved state")


def test_a_node_removes_its_copies_of_told_trials_only(s3):
    store = Storage(s3.uri("study"))
    for key in ("told", "running", "in-s3", "starting"):
        _trial_folder(store, key)
    store.upload(*state_parts(SWEEP, "in-s3", "state.pt"))
    # Another trial process on this node holds "running" (gone from S3 too: its first save
    # is not uploaded yet).
    lock = _lock_path(store, SWEEP, "running")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time\n"
            f"f = open({str(lock)!r}, 'a'); fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        _clean_node_cache(store, SWEEP, keep="starting")
    finally:
        holder.kill()
        holder.wait()
    root = store.local(*state_parts(SWEEP, ""))
    left = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert left == ["in-s3", "running", "starting"]
    assert (root / "running" / "state.pt").read_bytes() == b"saved state"


def test_local_storage_is_left_to_the_driver(tmp_path):
    store = Storage(str(tmp_path / "runs"))
    _trial_folder(store, "told")
    _clean_node_cache(store, SWEEP, keep="other")
    assert (store.local(*state_parts(SWEEP, "told")) / "state.pt").is_file()


def test_the_lock_files_of_told_trials_go_too(s3):
    """Lock files left by told trials would make every trial start list more files: the
    clean-up removes them with their folders (under the lock), so the listing stays short."""
    store = Storage(s3.uri("study"))
    for n in range(20):
        key = f"told-{n}"
        _trial_folder(store, key)
        _lock_path(store, SWEEP, key).touch()
    _trial_folder(store, "starting")
    _clean_node_cache(store, SWEEP, keep="starting")
    root = store.local(*state_parts(SWEEP, ""))
    assert sorted(p.name for p in root.iterdir()) == ["starting"]
