"""MLflow bookkeeping for a sweep: one parent run, one nested child run per trial.

Every write after the parent run exists goes through the sweep's outbox (see `outbox`): it is
appended to a file on the driver's disk and sent by a background thread, so a tracking server
that is down for minutes stops nothing, and a killed driver loses nothing. The sweep's parent
run is made synchronously, at the sweep's start, since its id is needed at once.

Idempotent by design: a child run is found again by its `sweep_id` and `trial_id` tags, so a
resumed sweep re-attaches to the runs it already has instead of creating second ones, and an
epoch already recorded is not recorded again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from sparse_transfer.tracking.experiments import EXPERIMENT_TAGS, find_or_create_experiment
from sparse_transfer.tracking.outbox import Outbox, is_transient, open_outbox

__all__ = ["OUTBOX_FILE", "SweepRecorder", "TrackingUnavailable", "default_tracking_uri"]

OUTBOX_FILE = "mlflow-outbox.sqlite"  # in the sweep directory, when the runner names it
_START_PATIENCE_S = 120.0  # how long the calls at a sweep's start wait for MLflow
_PARENT = "parent_run_id"  # outbox meta: the sweep's parent run
_MADE_HERE = "parent_made_here"  # outbox meta: this outbox made it, so it saw every run


class TrackingUnavailable(RuntimeError):
    """The tracking server did not answer a call that cannot be queued."""


def default_tracking_uri(spec_uri: str | None) -> str:
    """The spec's URI, else $MLFLOW_TRACKING_URI, else MLflow's default sqlite:///mlflow.db
    (made absolute, so Ray workers and resumed drivers in other directories hit the same file)."""
    uri = spec_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def _default_outbox(tracking_uri: str, experiment: str, sweep_id: str) -> Path:
    """A node-local outbox when the caller names none (one per sweep, server and experiment)."""
    cache = Path(os.environ.get("SPARSE_TRANSFER_CACHE", "~/.cache/sparse-transfer"))
    digest = hashlib.sha256(f"{tracking_uri}\n{experiment}".encode()).hexdigest()[:12]
    return cache.expanduser() / "mlflow-outbox" / f"{sweep_id}-{digest}.sqlite"


class SweepRecorder:
    def __init__(
        self,
        tracking_uri: str,
        experiment: str,
        sweep_id: str,
        outbox: Path | str | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.sweep_id = sweep_id
        self.outbox_path = Path(outbox or _default_outbox(tracking_uri, experiment, sweep_id))
        self._box: Outbox | None = None
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._opened: set[str] = set()  # trials whose opening this process already queued

    @property
    def box(self) -> Outbox:
        if self._box is None:
            self._box = open_outbox(
                self.outbox_path, self.tracking_uri, self.experiment, self.sweep_id
            )
        return self._box

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    @property
    def experiment_id(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = find_or_create_experiment(
                self.client, self.tracking_uri, self.experiment, EXPERIMENT_TAGS
            )
        return self._experiment_id

    def _patiently(self, call: Callable[[], object]):
        """`call()`, retried while the server is unreachable, for at most _START_PATIENCE_S."""
        deadline = time.monotonic() + _START_PATIENCE_S
        pause = 0.5
        while True:
            try:
                return call()
            except Exception as err:
                if not is_transient(err):
                    raise
                if time.monotonic() > deadline:
                    raise TrackingUnavailable(
                        f"tracking: the MLflow server at {self.tracking_uri} did not answer "
                        f"for {_START_PATIENCE_S:.0f} s ({err}); start it (or fix "
                        "tracking.uri in the spec) and run the command again"
                    ) from err
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    def outbox_is_new(self) -> bool:
        """Whether this outbox has not recorded the sweep's parent run yet: made on this node
        now, so the records an earlier driver queued (elsewhere) are not in it."""
        return not self.box.meta(_PARENT)

    def reach(self) -> str:
        """The experiment's id, once the server answers (for at most _START_PATIENCE_S)."""
        return self._patiently(lambda: self.experiment_id)

    def parent_run(self, tags: Mapping[str, str]) -> str:
        """The sweep's parent run, created once and re-opened on resume. Needs the server only
        when this outbox does not know the run yet (the sweep's first start on this disk)."""
        known = self.box.meta(_PARENT)
        if known:
            with self.box.transaction() as tx:
                tx.add(f"run:{known}", "status", status="RUNNING")
            return known
        return self._patiently(lambda: self._find_or_create_parent(tags))

    def _find_or_create_parent(self, tags: Mapping[str, str]) -> str:
        found = self._search(f"tags.sweep_id = '{self.sweep_id}' and tags.role = 'sweep'")
        if found:
            self.client.update_run(found[0], status="RUNNING")
            run_id = found[0]
        else:
            all_tags = {**tags, "sweep_id": self.sweep_id, "role": "sweep"}
            all_tags[MLFLOW_RUN_NAME] = self.sweep_id
            run_id = self.client.create_run(self.experiment_id, tags=all_tags).info.run_id
        with self.box.transaction() as tx:
            tx.set_meta(_PARENT, run_id)
            if not found:
                tx.set_meta(_MADE_HERE, "1")
        return run_id

    def open_trial(
        self,
        trial_id: str,
        parent_run_id: str,
        tags: Mapping[str, str],
        params: Mapping[str, object],
        run_name: str,
    ) -> str | None:
        """Queue the trial's run to be found or created; its id once the outbox knows it."""
        row = self.box.run(trial_id)
        if trial_id in self._opened or (row and row["closed"]):
            return row["run_id"] if row else None
        self._opened.add(trial_id)
        all_tags = {
            **tags,
            "sweep_id": self.sweep_id,
            "trial_id": trial_id,
            MLFLOW_PARENT_RUN_ID: parent_run_id,
            MLFLOW_RUN_NAME: run_name,
        }
        with self.box.transaction() as tx:
            tx.track(trial_id)
            tx.add(trial_id, "open", tags=all_tags, params=dict(params))
        return row["run_id"] if row else None

    def log_epoch(self, trial_id: str, step: int, metrics: Mapping[str, float]) -> None:
        row = self.box.run(trial_id)
        if row is None or row["closed"] or step <= (row["last_step"] or 0):
            return  # not opened, closed, or already logged before a resume
        now_ms = int(time.time() * 1000)
        items = [(k, float(v), now_ms, step) for k, v in metrics.items()]
        with self.box.transaction() as tx:
            tx.add(trial_id, "metrics", metrics=items, epoch=True)
            tx.track(trial_id, last_step=step, last_keys=json.dumps(sorted(metrics)))

    def drain(
        self, timeout: float | None = None, log: Callable[[str], None] | None = None
    ) -> bool:
        """Wait until MLflow has every record queued so far (forever with `timeout=None`);
        False if `timeout` ran out first. The runner calls it where it reads MLflow back."""
        return self.box.drain(timeout, log)

    def close_trial(
        self,
        trial_id: str,
        status: str,
        *,
        metrics: Mapping[str, float] = (),
        tags: Mapping[str, str] = (),
        artifacts: Path | None = None,
    ) -> None:
        row = self.box.run(trial_id)
        if row is None or row["closed"]:
            return
        now_ms = int(time.time() * 1000)
        step = row["last_step"] or 0
        # One value per (key, step): a closing metric the last epoch already logged is kept
        # as that epoch logged it.
        logged = set(json.loads(row["last_keys"] or "[]"))
        items = [(k, float(v), now_ms, step) for k, v in dict(metrics).items() if k not in logged]
        kept = self.box.keep_file(artifacts) if artifacts and artifacts.is_file() else None
        with self.box.transaction() as tx:
            if items:
                tx.add(trial_id, "metrics", metrics=items)
            if tags:
                tx.add(trial_id, "tags", tags={k: str(v) for k, v in dict(tags).items()})
            if kept:
                tx.add(trial_id, "artifact", path=kept, artifact_path="checkpoint")
            tx.add(trial_id, "status", status=status)
            tx.track(trial_id, closed=status)

    def close_parent(self, run_id: str, status: str = "FINISHED") -> None:
        with self.box.transaction() as tx:
            tx.add(f"run:{run_id}", "status", status=status)

    def log_parent_artifact(self, run_id: str, path: Path) -> None:
        kept = self.box.keep_file(Path(path))
        with self.box.transaction() as tx:
            tx.add(f"run:{run_id}", "artifact", path=kept, artifact_path=None)

    def open_trial_keys(self) -> set[str]:
        """Trial keys of this sweep's runs still open: RUNNING in MLflow, or opened through
        this outbox and not closed (their records may still wait to be sent). After a crash,
        some belong to trials the ledger already told (the sweep closes those from the
        ledger). When this outbox made the sweep's parent run it saw every run, and it alone
        answers while the server is down: nothing waits for the server then."""
        opened, closed = self.box.trial_keys()
        if self.box.meta(_MADE_HERE):
            try:
                return (self._server_open_keys() | opened) - closed
            except Exception as err:
                if not is_transient(err):
                    raise
                return opened - closed
        return (self._patiently(self._server_open_keys) | opened) - closed

    def _server_open_keys(self) -> set[str]:
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.sweep_id = '{self.sweep_id}' and attributes.status = 'RUNNING'",
            max_results=50000,
        )
        return {r.data.tags["trial_id"] for r in runs if "trial_id" in r.data.tags}

    def flush_all(self, timeout: float = 10.0) -> bool:
        """Give the queue a moment to reach MLflow (at the end of a Tune run); never longer
        than `timeout`: while the server is down, what is left waits on disk."""
        return self.drain(timeout)

    def _search(self, filter_string: str) -> list[str]:
        runs = self.client.search_runs([self.experiment_id], filter_string, max_results=2)
        return [run.info.run_id for run in runs]
