"""The sweep's one ledger: an Optuna journal storage that says what ran, what is running and
what is left, for the search and the final runs of every cell.

Per cell there are two Optuna studies in one storage: `<sweep>/<cell>` (the search: each trial's
parameters, its validation score per epoch as intermediate values, its state COMPLETE, PRUNED
or FAIL) and `<sweep>/<cell>/final` (one trial per seed of the cell's chosen configuration,
its value the test score). A trial still RUNNING in the ledger is in flight: after a crash it
is handed to Tune again and continues from its saved state. Nothing else decides what runs.

The journal is an append-only file in the sweep directory, written by one driver alone (the
sweep's lease, lease.py, keeps it so), with no fsync per operation: a killed process loses
nothing the kernel has. With S3 storage a background thread uploads what was appended since
the last upload as one segment object (a conditional write: a key another driver wrote is
never replaced), and closing the ledger compacts many segments into one object; a resume on
another machine concatenates the latest compacted object and the segments after it. Work that
must wait until the ledger is durable in S3 (deleting a told trial's saved state) is queued
with `after_durable`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.storages import JournalStorage
from optuna.storages._base import DEFAULT_STUDY_NAME_PREFIX
from optuna.storages.journal import BaseJournalBackend
from optuna.storages.journal._storage import JournalOperation, JournalStorageReplayResult
from optuna.study import StudyDirection
from optuna.study._frozen import FrozenStudy

from sparse_transfer.storage import Storage

__all__ = ["LEDGER_FILE", "Ledger", "LedgerBackend", "LedgerConflict", "fetch_ledger"]

LEDGER_FILE = "ledger.jsonl"
SEGMENTS = "ledger"  # S3: <sweep>/ledger/<byte offset>.jsonl per upload, c<end>.jsonl compacted
_UPLOAD_EVERY_S = 2.0
_COMPACT_AFTER = 64  # segments beyond the last compacted object that make a new one


class LedgerConflict(RuntimeError):
    """Another driver wrote this sweep's ledger in S3: this one must stop writing."""


class LedgerBackend(BaseJournalBackend):
    """An append-only JSON-lines file with one writer, mirrored to S3 in segments.

    Optuna's journal storage replays every log once when it opens, then asks only for the
    logs after the last one it read: the file is streamed for the replay, and only logs
    appended since and not yet read are held in memory."""

    def __init__(self, path: Path, store: Storage | None = None, parts: tuple = ()) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self.store = store if store is not None and store.is_remote else None
        self.parts = parts  # the sweep directory's parts in the storage
        self._size, self._on_disk = _trim_torn_line(self.path)
        self._tail: list[dict[str, Any]] = []  # appended, not yet read: logs _on_disk...
        self._tail_start = self._on_disk
        self._file = open(self.path, "ab")  # noqa: SIM115 (open for the sweep's life)
        self._uploaded = self._size if self.store is None else _uploaded_size(store, parts)
        self._lock = threading.RLock()  # see `atomic`
        self._sync_lock = threading.Lock()  # one upload at a time: segments never overlap
        self._waiting: list[tuple[int, Callable[[], None]]] = []
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        if self.store is not None:
            self._thread = threading.Thread(target=self._upload_loop, daemon=True)
            self._thread.start()

    def __getstate__(self) -> dict:  # Optuna's contract: a storage pickles and reopens
        return {"path": self.path, "store": self.store, "parts": self.parts}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["store"], state["parts"])

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        with self._lock:
            if log_number_from >= self._tail_start:
                logs = self._tail[log_number_from - self._tail_start :]
                # read: the storage never asks for them again
                del self._tail[: log_number_from - self._tail_start]
                self._tail_start = log_number_from
                return list(logs)
            self._file.flush()
            tail = list(self._tail)
            until = self._tail_start
        # streamed: the replay at open never holds every parsed line at once
        return itertools.chain(_read_lines(self.path, log_number_from, until), tail)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        data = text.encode()
        with self._lock:
            self._file.write(data)
            self._file.flush()
            self._size += len(data)
            self._tail.extend(logs)
        self._wake.set()

    @contextmanager
    def atomic(self):
        """Appends made inside reach S3 in one segment: no upload falls between them."""
        with self._lock:
            yield

    def after_durable(self, action: Callable[[], None]) -> None:
        """Run `action` once everything appended so far is durable (at once when local)."""
        if self.store is None:
            action()
            return
        with self._lock:
            self._waiting.append((self._size, action))
        self._wake.set()

    def sync(self) -> None:
        """Upload what is not yet in S3 and run the actions waiting for it. A segment's key
        is written only if absent: a second driver's segment is never overwritten."""
        if self.store is None:
            return
        with self._sync_lock:
            with self._lock:
                size, start = self._size, self._uploaded
                ready = [a for s, a in self._waiting if s <= size]
                self._waiting = [(s, a) for s, a in self._waiting if s > size]
            if size > start:
                self._put(f"{start:016d}.jsonl", start, size)
                self._uploaded = size
            for action in ready:
                action()

    def _put(self, name: str, start: int, end: int) -> None:
        with open(self.path, "rb") as handle:
            handle.seek(start)
            chunk = handle.read(end - start)
        segment = self.store.local(*self.parts, SEGMENTS, name)
        segment.parent.mkdir(parents=True, exist_ok=True)
        segment.write_bytes(chunk)
        try:
            if not self.store.upload(*self.parts, SEGMENTS, name, if_absent=True):
                raise LedgerConflict(
                    f"another driver wrote {self.store.display(*self.parts, SEGMENTS, name)}: "
                    "two drivers ran this sweep at once; this one stops writing"
                )
        finally:
            segment.unlink(missing_ok=True)

    def compact(self) -> None:
        """Replace the segments in S3 by one object of everything uploaded, so a resume on
        another machine downloads a few objects, not one per upload. Only when there are
        many: the whole ledger is uploaded again each time."""
        if self.store is None:
            return
        self.sync()
        with self._sync_lock:
            base, pieces = _chain(self.store, self.parts)
            if len(pieces) < _COMPACT_AFTER or self._uploaded == 0:
                return
            self._put(f"c{self._uploaded:016d}.jsonl", 0, self._uploaded)
            for name in [*([base[1]] if base else []), *(n for _, n, _ in pieces)]:
                self.store.delete(*self.parts, SEGMENTS, name)

    def _upload_loop(self) -> None:
        while not self._closed:
            self._wake.wait(timeout=_UPLOAD_EVERY_S)
            self._wake.clear()
            try:
                self.sync()
            except LedgerConflict as err:
                print(f"ledger: {err}", flush=True)
                return
            except Exception as err:  # retried at the next wake-up; the local file is whole
                print(f"ledger upload failed, will retry: {err}", flush=True)
            self._wake.wait(timeout=_UPLOAD_EVERY_S)  # batch appends into fewer segments

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        try:
            self.compact()  # syncs first; waits for an upload still on its way
        finally:
            self._file.close()


def _trim_torn_line(path: Path) -> tuple[int, int]:
    """(bytes, lines) of the file's complete lines; a torn last line is cut off."""
    size = lines = 0
    with open(path, "rb") as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break
            size += len(line)
            lines += line != b"\n"
    if path.stat().st_size > size:
        with open(path, "r+b") as handle:
            handle.truncate(size)
    return size, lines


def _read_lines(path: Path, start: int, until: int) -> Iterable[dict[str, Any]]:
    """The logs numbered start..until-1 of the file."""
    number = 0
    with open(path, "rb") as handle:
        for line in handle:
            if number >= until:
                return
            if line == b"\n":
                continue
            if number >= start:
                yield json.loads(line)
            number += 1


def _chain(store: Storage, parts: tuple) -> tuple[tuple[int, str, int] | None, list]:
    """(the latest compacted object as (end, name, size), or None; the segments after it,
    as (start, name, size) in order)."""
    compacted, segments = [], []
    for name, size in store.list_objects(*parts, SEGMENTS):
        if "/" in name or not name.endswith(".jsonl"):
            continue
        if name.startswith("c"):
            compacted.append((int(name[1:].removesuffix(".jsonl")), name, size))
        else:
            segments.append((int(name.removesuffix(".jsonl")), name, size))
    base = max(compacted) if compacted else None
    after = base[0] if base else 0
    return base, sorted(s for s in segments if s[0] >= after)


def _uploaded_size(store: Storage, parts: tuple) -> int:
    base, segments = _chain(store, parts)
    if segments:
        return segments[-1][0] + segments[-1][2]
    return base[0] if base else 0


def fetch_ledger(store: Storage, parts: tuple, path: Path) -> None:
    """Make this node's ledger file S3's. A local file longer than S3's is kept only when S3's
    objects are its prefix (the same machine resuming: its file holds everything S3 holds,
    and more); one that differs (another machine drove the sweep since) is set aside."""
    if not store.is_remote:
        return
    base, segments = _chain(store, parts)
    pieces = ([(0, base[1], base[2])] if base else []) + segments
    total = pieces[-1][0] + pieces[-1][2] if pieces else 0
    if path.is_file() and path.stat().st_size >= total:
        if _is_prefix(store, parts, path, pieces):
            return
        aside = path.with_name(f"{path.name}.diverged-{int(time.time())}")
        path.replace(aside)
        print(f"ledger: {path} differs from the sweep's ledger in S3; set aside as {aside}")
    data = bytearray()
    for offset, name, _ in pieces:
        if offset != len(data):
            raise RuntimeError(
                f"ledger segments in {store.display(*parts)} have a gap at {offset}"
            )
        store.download(*parts, SEGMENTS, name)
        local = store.local(*parts, SEGMENTS, name)
        data += local.read_bytes()
        local.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".fetch")
    tmp.write_bytes(bytes(data))
    tmp.replace(path)


def _is_prefix(store: Storage, parts: tuple, path: Path, pieces: list) -> bool:
    """Whether S3's objects hold the local file's first bytes, by their MD5 ETags."""
    etags = store.etags(*parts, SEGMENTS) if pieces else {}
    with open(path, "rb") as handle:
        for offset, name, size in pieces:
            handle.seek(offset)
            if hashlib.md5(handle.read(size)).hexdigest() != etags.get(name):
                return False
    return True


_NO_ATTRS: dict[str, Any] = {}  # shared by studies and trials without attributes: never changed


class _NamedReplay(JournalStorageReplayResult):
    """Optuna's replayed journal state, with its studies' ids kept by name. Optuna's own
    replay checks a new study's name against a list of every study's name, so opening a
    sweep's studies (two per cell) cost O(cells^2): 7 of 52 CPU seconds at 2,500 cells. A
    ledger's studies are never renamed. Trials with equal distributions share one
    distribution object (Optuna's replay parses one per trial and parameter: about 0.15 kB a
    trial at 100,000 trials), and studies and trials without attributes one empty dict.
    Private: `JournalStorageReplayResult`, its `_apply_create_study`/`_apply_delete_study`/
    `_apply_create_trial`/`_apply_set_trial_param`, `_studies`,
    `_trials`, `_study_id_to_trial_ids`, `_next_study_id` and `_is_issued_by_this_worker`,
    checked against Optuna 5.1.0 on 2026-12-03 (tests/test_internals.py)."""

    def __init__(self, worker_id_prefix: str) -> None:
        super().__init__(worker_id_prefix)
        self.ids: dict[str, int] = {}
        self.distributions: dict[str, BaseDistribution] = {}  # by their JSON

    def _apply_create_trial(self, log: dict[str, Any]) -> None:  # Optuna's, then shared
        super()._apply_create_trial(log)
        trial = self._trials.get(len(self._trials) - 1)
        if trial is not None and not trial.system_attrs:
            # Optuna's replay never changes a trial's attributes in place (each change makes
            # a new dict), so trials without any can share one empty dict.
            trial.system_attrs = _NO_ATTRS

    def _apply_set_trial_param(self, log: dict[str, Any]) -> None:  # Optuna's, then shared
        super()._apply_set_trial_param(log)
        trial = self._trials.get(log["trial_id"])
        name = log["param_name"]
        if trial is not None and name in trial.distributions:
            # Optuna's replay has just made this trial's dict of distributions: its own
            shared = self.distributions.setdefault(log["distribution"], trial.distributions[name])
            trial.distributions[name] = shared

    def _apply_create_study(self, log: dict[str, Any]) -> None:  # Optuna's, with `ids`
        name = log["study_name"]
        if name in self.ids:
            if self._is_issued_by_this_worker(log):
                raise optuna.exceptions.DuplicatedStudyError(name)
            return
        study_id = self._next_study_id
        self._next_study_id += 1
        self._studies[study_id] = FrozenStudy(
            study_name=name,
            direction=None,
            user_attrs=_NO_ATTRS,  # Optuna's replay copies them before any change
            system_attrs=_NO_ATTRS,
            study_id=study_id,
            directions=[StudyDirection(d) for d in log["directions"]],
        )
        self._study_id_to_trial_ids[study_id] = []
        self.ids[name] = study_id

    def _apply_delete_study(self, log: dict[str, Any]) -> None:
        super()._apply_delete_study(log)
        self.ids = {name: i for name, i in self.ids.items() if i in self._studies}


class _NamedJournalStorage(JournalStorage):
    """Optuna's journal storage over `_NamedReplay`: a study is created and found by name in
    O(1). (A subclass: its `__init__` and `create_new_study` are Optuna 5.1.0's, checked on
    2026-12-03, with the scan over every study replaced by the replay's `ids`; this backend
    keeps no snapshots, so none is loaded or saved.)"""

    def __init__(self, backend: BaseJournalBackend) -> None:
        self._worker_id_prefix = str(uuid.uuid4()) + "-"
        self._backend = backend
        self._thread_lock = threading.Lock()
        self._replay_result = _NamedReplay(self._worker_id_prefix)
        with self._thread_lock:
            self._sync_with_backend()

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._replay_result = _NamedReplay(self._worker_id_prefix)

    def create_new_study(self, directions, study_name: str | None = None) -> int:
        if study_name is None:
            study_name = DEFAULT_STUDY_NAME_PREFIX + str(uuid.uuid4())
        with self._thread_lock:
            if study_name in self._replay_result.ids:  # what the journal would answer
                raise optuna.exceptions.DuplicatedStudyError(study_name)
            self._write_log(
                JournalOperation.CREATE_STUDY, {"study_name": study_name, "directions": directions}
            )
            self._sync_with_backend()
            return self._replay_result.ids[study_name]

    def has_study(self, study_name: str) -> bool:
        return study_name in self._replay_result.ids

    def get_study_id_from_name(self, study_name: str) -> int:
        found = self._replay_result.ids.get(study_name)
        return found if found is not None else super().get_study_id_from_name(study_name)


class Ledger:
    """The studies of one sweep, over one storage opened once."""

    def __init__(self, sweep_dir: Path, store: Storage | None, parts: tuple, sweep_id: str):
        self.backend = LedgerBackend(Path(sweep_dir) / LEDGER_FILE, store, parts)
        self.storage = _NamedJournalStorage(self.backend)
        self.sweep_id = sweep_id

    def study_name(self, cell_id: str, final: bool = False) -> str:
        # The sweep id makes names unique: reusing a name on shared storage would merge sweeps.
        return f"{self.sweep_id}/{cell_id}" + ("/final" if final else "")

    def study(
        self,
        cell_id: str,
        *,
        final: bool = False,
        sampler: optuna.samplers.BaseSampler | None = None,
        pruner: optuna.pruners.BasePruner | None = None,
    ) -> optuna.Study:
        return optuna.create_study(
            storage=self.storage,
            study_name=self.study_name(cell_id, final),
            direction="maximize",
            sampler=sampler,
            pruner=pruner,
            load_if_exists=True,
        )

    def trials(self, study: optuna.Study, states=None) -> list[optuna.trial.FrozenTrial]:
        return study.get_trials(deepcopy=False, states=states)

    def close(self) -> None:
        self.backend.close()
