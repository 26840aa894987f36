"""A durable queue of a sweep's MLflow writes on the driver's disk, sent by a background thread.

Every write (a run opened, metrics, tags, an artifact, a status) is appended to an SQLite file
(WAL mode) and the caller goes on at once. A drainer thread sends the operations in order and
deletes each once sent, retrying with backoff for as long as the tracking server is unreachable:
training never waits for MLflow and never fails because of it. A driver killed with pending
operations loses none: the next process that opens the same file sends them.

Each operation is safe to send twice, since a crash can fall between sending one and marking
it done:
- a trial's run is found by its `sweep_id` and `trial_id` tags before one is created (the
  sweep's runs are learnt in one query per drainer), and its id is stored in the same
  transaction that marks the opening done;
- metrics carry the timestamp taken when they were queued, and MLflow's SQL store keeps one
  row per (key, timestamp, step, value) (its de-duplication, not a documented contract:
  checked against MLflow 3.17.2 on 2026-12-03), so a batch sent again adds nothing; a run
  found again after the outbox was lost (a resume on another machine) drops the epochs the
  server already has;
- params, tags and statuses are set to the same values again;
- an artifact is a private copy of the file taken when it was queued, uploaded to the same
  path, and deleted once its operation is done.
"""

from __future__ import annotations

import os
import pickle
import shutil
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from sparse_transfer.tracking.experiments import EXPERIMENT_TAGS, find_or_create_experiment

__all__ = ["Outbox", "open_outbox"]

# MLflow's own HTTP retries back off for about two minutes before they give up, on the
# caller's thread. The queue retries forever instead, so one short attempt per send is enough.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

_MAX_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch
_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.5, 5.0
_WAIT_NOTE_S = 30.0  # how often a waiting drain says what it waits for
_TRANSIENT_HTTP = {408, 429}
_KINDS = ("metrics", "tags", "artifact", "status")  # besides "open"

_SCHEMA = """
create table if not exists ops (
    seq integer primary key autoincrement,
    run_key text not null,
    kind text not null,
    payload blob not null,
    state text not null default 'pending',
    error text
);
create index if not exists ops_pending on ops(state, seq);
create table if not exists runs (
    run_key text primary key,
    run_id text,
    last_step integer,
    last_keys text,
    closed text
);
create table if not exists meta (key text primary key, value text);
"""

_lock = threading.Lock()
_open: dict[Path, Outbox] = {}


def open_outbox(path: Path, tracking_uri: str, experiment: str, sweep_id: str) -> Outbox:
    """The process's one queue on `path`: all recorders of a sweep share it and its drainer."""
    path = Path(path).expanduser().resolve()
    with _lock:
        box = _open.get(path)
        if box is None:
            box = _open[path] = Outbox(path, tracking_uri, experiment, sweep_id)
        return box


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
    conn.execute("pragma journal_mode=wal")
    conn.execute("pragma synchronous=normal")  # WAL + normal: durable across process crashes
    return conn


def is_transient(err: BaseException) -> bool:
    """Whether sending again later can succeed: the server down, overloaded or failing."""
    if isinstance(err, MlflowException):
        status = err.get_http_status_code()
        return status >= 500 or status in _TRANSIENT_HTTP
    if isinstance(err, sqlite3.OperationalError):
        return True  # a store busy or locked (the outbox, or an SQLite tracking store)
    return isinstance(err, OSError | ConnectionError | TimeoutError) or (
        type(err).__module__.startswith(("requests", "urllib3"))
    )


class Outbox:
    def __init__(self, path: Path, tracking_uri: str, experiment: str, sweep_id: str) -> None:
        self.path = path
        self.files = path.with_name(path.name + ".files")  # private copies of artifacts
        self.tracking_uri, self.experiment, self.sweep_id = tracking_uri, experiment, sweep_id
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = _connect(path)  # the callers' connection, used under `_write`
        self._conn.executescript(_SCHEMA)
        self._dconn = _connect(path)  # the drainer's own
        self._write = threading.Lock()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self.failed = 0  # operations MLflow refused for good (a bad value, not an outage)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._drain_forever, daemon=True, name="mlflow")
        self._thread.start()

    # -- the caller's side: append and return --------------------------------------------
    def transaction(self):
        return _Transaction(self)

    def _read(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._write:
            return self._conn.execute(sql, args).fetchall()

    def run(self, run_key: str) -> dict | None:
        """The outbox's row for a run: its run_id, last_step (and the metric keys logged at
        it, JSON) and closed status."""
        rows = self._read(
            "select run_id, last_step, last_keys, closed from runs where run_key = ?",
            (run_key,),
        )
        names = ("run_id", "last_step", "last_keys", "closed")
        return dict(zip(names, rows[0], strict=True)) if rows else None

    def meta(self, key: str) -> str | None:
        rows = self._read("select value from meta where key = ?", (key,))
        return rows[0][0] if rows else None

    def trial_keys(self) -> tuple[set[str], set[str]]:
        """(opened, closed): the trials whose runs this outbox opened, and those it closed."""
        rows = self._read("select run_key, closed from runs where run_key not like 'run:%'")
        return {key for key, _ in rows}, {key for key, closed in rows if closed}

    def pending(self) -> int:
        return self._read("select count(*) from ops where state = 'pending'")[0][0]

    def refused(self) -> list[tuple[str, str, str]]:
        """(run key, kind, MLflow's answer) of each operation refused for good."""
        return self._read("select run_key, kind, error from ops where state = 'failed'")

    def keep_file(self, path: Path) -> str:
        """A private copy of `path` (a hard link where possible), kept until it is sent."""
        target = self.files / uuid.uuid4().hex / path.name
        target.parent.mkdir(parents=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copy2(path, target)
        return str(target)

    def drain(
        self, timeout: float | None = None, log: Callable[[str], None] | None = None
    ) -> bool:
        """Wait until every queued operation is sent (or refused); False if `timeout` ran out."""
        log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        deadline = None if timeout is None else time.monotonic() + timeout
        noted = time.monotonic()
        while (left := self.pending()) > 0:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            if now - noted >= _WAIT_NOTE_S:
                noted = now
                log(f"mlflow: {left} records wait for {self.tracking_uri} (queued in {self.path})")
            self._wake.set()
            with self._idle:
                wait = 1.0 if deadline is None else max(0.0, min(1.0, deadline - now))
                self._idle.wait(wait)
        return True

    # -- the drainer ------------------------------------------------------------------------
    def _drain_forever(self) -> None:
        sender = _Sender(self)
        backoff = _BACKOFF_FIRST_S
        while not self._closed.is_set():
            try:
                backoff = self._drain_once(sender, backoff)
            except Exception as err:  # noqa: BLE001  (the outbox itself failed: never die)
                print(f"mlflow: outbox {self.path}: {err}; retrying", file=sys.stderr)
                time.sleep(_BACKOFF_MAX_S)

    def close(self) -> None:
        """Stop sending, as the process's exit would: what is pending stays in the file."""
        self._closed.set()
        self._wake.set()
        self._thread.join(timeout=60)
        with _lock:
            if _open.get(self.path) is self:
                del _open[self.path]  # the next recorder opens the file afresh
        with self._write:
            self._conn.close()
        if not self._thread.is_alive():  # a drainer stuck in a send keeps its own
            self._dconn.close()

    def _drain_once(self, sender: _Sender, backoff: float) -> float:
        """Send the next batch; the backoff to use after it."""
        batch = self._next_batch()
        if not batch:
            with self._idle:
                self._idle.notify_all()
            self._wake.wait(1.0)
            self._wake.clear()
            return backoff
        try:
            sender.send(batch)
        except Exception as err:  # noqa: BLE001  (classified: retried, or recorded)
            if not is_transient(err):
                self._refuse(batch, err)
                return _BACKOFF_FIRST_S
            sender.forget()  # the server may have restarted: look things up again
            time.sleep(backoff)
            return min(backoff * 2, _BACKOFF_MAX_S)
        return _BACKOFF_FIRST_S

    def _next_batch(self) -> list[tuple[int, str, str, dict]]:
        """The oldest pending operation and the pending ones of the same run after it, up to
        its next opening or its first status: sent together (metrics and tags as one
        log_batch), since only the order within a run matters."""
        rows = self._dconn.execute(
            "select seq, run_key, kind, payload from ops where state = 'pending' "
            "order by seq limit 500"
        ).fetchall()
        batch, count = [], 0
        for seq, run_key, kind, payload in rows:
            if batch and run_key != batch[0][1]:
                continue
            data = pickle.loads(payload)
            count += len(data.get("metrics", ()))
            if batch and (kind == "open" or count > _MAX_BATCH):
                break
            batch.append((seq, run_key, kind, data))
            if kind == "status":
                break
        return batch

    def mark_done(self, seqs: Iterable[int], run_key: str | None = None, run_id: str = "") -> None:
        """Operations sent; with `run_key`, the run's id found or created by the first one,
        stored in the same transaction (a crash cannot keep one without the other)."""
        conn = self._dconn
        conn.execute("begin immediate")
        if run_key is not None:
            conn.execute("update runs set run_id = ? where run_key = ?", (run_id, run_key))
        # Sent operations are deleted: the file holds what waits (and what was refused) only.
        conn.executemany("delete from ops where seq = ?", [(s,) for s in seqs])
        conn.execute("commit")

    def _refuse(self, batch, err: BaseException) -> None:
        self.failed += len(batch)
        kinds = ", ".join(sorted({kind for _, _, kind, _ in batch}))
        print(
            f"mlflow: {self.tracking_uri} refused {kinds} for {batch[0][1]}: {err}",
            file=sys.stderr,
            flush=True,
        )
        self._dconn.executemany(
            "update ops set state = 'failed', error = ? where seq = ?",
            [(str(err)[:2000], seq) for seq, *_ in batch],
        )


class _Transaction:
    """Appends operations (and run bookkeeping) atomically; the drainer wakes on commit."""

    def __init__(self, box: Outbox) -> None:
        self.box = box

    def __enter__(self) -> _Transaction:
        self.box._write.acquire()
        self.box._conn.execute("begin immediate")
        return self

    def __exit__(self, kind, value, tb) -> None:
        try:
            self.box._conn.execute("commit" if kind is None else "rollback")
        finally:
            self.box._write.release()
        if kind is None:
            self.box._wake.set()

    def add(self, run_key: str, kind: str, **payload) -> None:
        self.box._conn.execute(
            "insert into ops (run_key, kind, payload) values (?, ?, ?)",
            (run_key, kind, pickle.dumps(payload)),
        )

    def track(self, run_key: str, **fields) -> None:
        """Create or update the outbox's row for a run (its last step, closed status...)."""
        self.box._conn.execute("insert or ignore into runs (run_key) values (?)", (run_key,))
        for name, value in fields.items():
            self.box._conn.execute(
                f"update runs set {name} = ? where run_key = ?",  # noqa: S608 (our own names)
                (value, run_key),
            )

    def set_meta(self, key: str, value: str) -> None:
        self.box._conn.execute("insert or replace into meta values (?, ?)", (key, value))


class _Sender:
    """Sends operations to the tracking server; lives on the drainer thread only."""

    def __init__(self, box: Outbox) -> None:
        self.box = box
        self.client = MlflowClient(box.tracking_uri)
        self._experiment_id: str | None = None
        self._run_ids: dict[str, str] = {}  # run_key -> run id
        self._frozen: set[str] = set()  # runs found FINISHED when re-attached: left alone
        self._server_step: dict[str, int] = {}  # epochs a re-attached run already has
        self._known: dict[str, tuple[str, str]] | None = None  # see _known_runs

    def forget(self) -> None:
        self._experiment_id = None

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = find_or_create_experiment(
                self.client, self.box.tracking_uri, self.box.experiment, EXPERIMENT_TAGS
            )
        return self._experiment_id

    def send(self, batch: list[tuple[int, str, str, dict]]) -> None:
        seq, run_key, kind, data = batch[0]
        if kind == "open":
            run_id = self._open(run_key, data)
            self.box.mark_done([seq], run_key, run_id)
            batch = batch[1:]
            if not batch:
                return
        run_id = self._run_id(run_key)
        if run_id and run_key not in self._frozen:
            items = {name: [d for _, _, k, d in batch if k == name] for name in _KINDS}
            self._records(run_key, run_id, items["metrics"], items["tags"])
            self._artifacts(run_id, items["artifact"])
            if items["status"]:
                self._status(run_id, items["status"][-1]["status"])
        self.box.mark_done([s for s, *_ in batch])
        for _, _, kind, data in batch:
            if kind == "artifact":
                shutil.rmtree(Path(data["path"]).parent, ignore_errors=True)

    def _run_id(self, run_key: str) -> str | None:
        if run_key.startswith("run:"):
            return run_key.removeprefix("run:")
        if run_key not in self._run_ids:
            row = self.box._dconn.execute(
                "select run_id from runs where run_key = ?", (run_key,)
            ).fetchone()
            if row is None or not row[0]:
                return None  # its opening was refused: nothing to attach to
            self._run_ids[run_key] = row[0]
        return self._run_ids[run_key]

    def _open(self, trial_id: str, data: dict) -> str:
        known = self._run_id(trial_id)
        if known:  # a restored trial running again
            if trial_id not in self._frozen:
                self.client.update_run(known, status="RUNNING")
            return known
        found = self._known_runs().get(trial_id)
        if found and found[1] == "RUNNING" and self._other_trial(found[0], data["params"]):
            found = None  # its old run was put away: this trial gets its own
        if found and found[1] == "FINISHED":
            self._frozen.add(trial_id)  # finished before a crash; Tune reports it once more
            run_id = found[0]
        elif found:
            run_id = found[0]
            self.client.update_run(run_id, status="RUNNING")
            history = self.client.get_metric_history(run_id, "epoch")
            self._server_step[trial_id] = max((int(m.step) for m in history), default=0)
        else:
            run_id = self.client.create_run(self.experiment_id, tags=data["tags"]).info.run_id
            self._known[trial_id] = (run_id, "RUNNING")
        params = [Param(k, str(v)) for k, v in sorted(data["params"].items())]
        if params and trial_id not in self._frozen:
            self.client.log_batch(run_id, params=params)
        self._run_ids[trial_id] = run_id
        return run_id

    def _other_trial(self, run_id: str, params: dict) -> bool:
        """Whether the open run under this key belongs to another trial: one that a crash
        took before the ledger kept it, whose key the resumed sweep gave to a new trial
        (other parameters). That run is tagged, ended KILLED and deleted (to MLflow's
        trash), as a lost trial's run: a KILLED run is never re-attached, so a replay after a
        crash in between still gives the new trial a run of its own."""
        logged = self.client.get_run(run_id).data.params
        if all(logged.get(k) == str(v) for k, v in params.items()):
            return False
        self.client.set_tag(run_id, "lost_in_crash", "true")
        self.client.set_terminated(run_id, status="KILLED")
        self.client.delete_run(run_id)
        return True

    def _known_runs(self) -> dict[str, tuple[str, str]]:
        """trial_id -> (run id, status) of the sweep's runs in MLflow, learnt in one paged
        query when this sender first needs it (a search per trial grows with the store);
        the runs it creates itself are added as it goes."""
        if self._known is None:
            known, token = {}, None
            while True:
                page = self.client.search_runs(
                    [self.experiment_id],
                    f"tags.sweep_id = '{self.box.sweep_id}'",
                    max_results=5000,
                    page_token=token,
                )
                for run in page:  # a KILLED run (lost, or given up) is never re-attached
                    if "trial_id" in run.data.tags and run.info.status != "KILLED":
                        known[run.data.tags["trial_id"]] = (run.info.run_id, run.info.status)
                token = page.token
                if not token:
                    break
            self._known = known
        return self._known

    def _records(self, run_key: str, run_id: str, metrics: list, tags: list) -> None:
        floor = self._server_step.get(run_key, 0)
        entries = [
            Metric(key, value, ts, step)
            for item in metrics
            for key, value, ts, step in item["metrics"]
            if not (item.get("epoch") and step <= floor)
        ]
        run_tags = [RunTag(k, str(v)) for item in tags for k, v in item["tags"].items()]
        if entries or run_tags:
            self.client.log_batch(run_id, metrics=entries, tags=run_tags)

    def _artifacts(self, run_id: str, items: list[dict]) -> None:
        for item in items:
            path = Path(item["path"])
            if path.is_file():  # gone only if this very upload was done and marked before
                self.client.log_artifact(run_id, str(path), artifact_path=item["artifact_path"])

    def _status(self, run_id: str, status: str) -> None:
        if status == "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        else:
            self.client.set_terminated(run_id, status=status)
