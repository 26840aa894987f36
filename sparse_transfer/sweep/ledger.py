"""The sweep's one ledger: an Optuna journal storage that says what ran, what is running and
what is left, for the search and the final runs of every cell.

Per cell there are two Optuna studies in one storage: `<sweep>/<cell>` (the search: each trial's
parameters, its validation score per epoch as intermediate values, its state COMPLETE, PRUNED
or FAIL) and `<sweep>/<cell>/final` (one trial per seed of the cell's chosen configuration,
its value the test score). A trial still RUNNING in the ledger is in flight: after a crash it
is handed to Tune again and continues from its saved state. Nothing else decides what runs.

The journal is an append-only file in the sweep directory, written by the driver alone (so no
lock and no fsync per operation: a killed process loses nothing the kernel has). With S3
storage a background thread uploads what was appended since the last upload as one segment
object, so the bytes a sweep writes grow linearly in its trials; a resume on another machine
concatenates the segments. Work that must wait until the ledger is durable in S3 (deleting a
told trial's saved state) is queued with `after_durable`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import BaseJournalBackend

from sparse_transfer.storage import Storage

__all__ = ["LEDGER_FILE", "Ledger", "LedgerBackend", "fetch_ledger"]

LEDGER_FILE = "ledger.jsonl"
SEGMENTS = "ledger"  # S3: <sweep>/ledger/<byte offset>.jsonl, one object per upload
_UPLOAD_EVERY_S = 2.0


class LedgerBackend(BaseJournalBackend):
    """An append-only JSON-lines file with one writer, mirrored to S3 in segments."""

    def __init__(self, path: Path, store: Storage | None = None, parts: tuple = ()) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch()
        self.store = store if store is not None and store.is_remote else None
        self.parts = parts  # the sweep directory's parts in the storage
        self._logs: list[dict[str, Any]] = []
        with open(self.path, "rb") as handle:
            data = handle.read()
        complete = data[: data.rfind(b"\n") + 1]  # a torn last line is dropped
        if len(complete) < len(data):
            with open(self.path, "r+b") as handle:
                handle.truncate(len(complete))
        self._logs = [json.loads(line) for line in complete.splitlines() if line]
        self._size = len(complete)
        self._file = open(self.path, "ab")  # noqa: SIM115 (open for the sweep's life)
        self._uploaded = self._size if self.store is None else _uploaded_size(store, parts)
        self._lock = threading.RLock()  # see `atomic`
        self._waiting: list[tuple[int, Callable[[], None]]] = []
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None
        if self.store is not None:
            self._thread = threading.Thread(target=self._upload_loop, daemon=True)
            self._thread.start()

    def read_logs(self, log_number_from: int) -> Iterable[dict[str, Any]]:
        return self._logs[log_number_from:]

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "".join(json.dumps(log, separators=(",", ":")) + "\n" for log in logs)
        data = text.encode()
        with self._lock:
            self._file.write(data)
            self._file.flush()
            self._size += len(data)
            self._logs.extend(logs)
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
        """Upload what is not yet in S3 and run the actions waiting for it."""
        if self.store is None:
            return
        with self._lock:
            size, start = self._size, self._uploaded
            ready = [a for s, a in self._waiting if s <= size]
            self._waiting = [(s, a) for s, a in self._waiting if s > size]
        if size > start:
            with open(self.path, "rb") as handle:
                handle.seek(start)
                chunk = handle.read(size - start)
            segment = self.path.parent / SEGMENTS / f"{start:016d}.jsonl"
            segment.parent.mkdir(parents=True, exist_ok=True)
            segment.write_bytes(chunk)
            self.store.upload(*self.parts, SEGMENTS, segment.name)
            segment.unlink()
            self._uploaded = size
        for action in ready:
            action()

    def _upload_loop(self) -> None:
        while not self._closed:
            self._wake.wait(timeout=_UPLOAD_EVERY_S)
            self._wake.clear()
            try:
                self.sync()
            except Exception as err:  # retried at the next wake-up; the local file is whole
                print(f"ledger upload failed, will retry: {err}", flush=True)
            self._wake.wait(timeout=_UPLOAD_EVERY_S)  # batch appends into fewer segments

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.sync()
        self._file.close()


def _segments(store: Storage, parts: tuple) -> list[tuple[int, str, int]]:
    found = []
    for name, size in store.list_objects(*parts, SEGMENTS):
        if name.endswith(".jsonl") and "/" not in name:
            found.append((int(name.removesuffix(".jsonl")), name, size))
    return sorted(found)


def _uploaded_size(store: Storage, parts: tuple) -> int:
    segments = _segments(store, parts)
    return segments[-1][0] + segments[-1][2] if segments else 0


def fetch_ledger(store: Storage, parts: tuple, path: Path) -> None:
    """Rebuild this node's ledger file from S3's segments, unless the local one is longer
    (the same machine resuming: its file holds everything the segments hold, and more)."""
    if not store.is_remote:
        return
    segments = _segments(store, parts)
    total = segments[-1][0] + segments[-1][2] if segments else 0
    if path.is_file() and path.stat().st_size >= total:
        return
    data = bytearray()
    for offset, name, _ in segments:
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


class _NamedJournalStorage(JournalStorage):
    """Optuna's journal storage finds a study by its name by scanning every study, and a sweep
    opens two studies per cell: opening them all cost O(cells^2), 6 s of the driver's CPU at
    2,500 cells. A ledger's studies are never deleted or renamed, so their ids are kept by
    name (read once from the studies replayed at start, then as they are created)."""

    def __init__(self, backend: BaseJournalBackend) -> None:
        super().__init__(backend)
        # FrozenStudy has no public id; Optuna's own storages read `_study_id` the same way.
        self._ids = {study.study_name: study._study_id for study in self.get_all_studies()}

    def create_new_study(self, directions, study_name: str | None = None) -> int:
        if study_name in self._ids:  # what the journal would answer, without a log line
            raise optuna.exceptions.DuplicatedStudyError(study_name)
        study_id = super().create_new_study(directions, study_name)
        if study_name is not None:
            self._ids[study_name] = study_id
        return study_id

    def get_study_id_from_name(self, study_name: str) -> int:
        found = self._ids.get(study_name)
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
