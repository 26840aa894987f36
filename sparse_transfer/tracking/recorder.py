"""MLflow bookkeeping for a sweep: one parent run, one nested child run per trial.

Idempotent by design: a child run is found again by its `sweep_id` and `trial_id` tags, so a
resumed sweep re-attaches to the runs it already has instead of creating second ones. Metrics
are buffered and sent with `log_batch`, not one request per metric.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

__all__ = ["SweepRecorder", "default_tracking_uri"]

# A new experiment's description, and its kind: "machine learning" makes MLflow 3's UI open
# the runs table, not the GenAI overview (traces, token usage).
EXPERIMENT_TAGS = {
    "mlflow.experimentKind": "custom_model_development",
    "mlflow.note.content": (
        "sparse-transfer sweeps: one parent run per sweep, one child run per trial. "
        "Reported accuracies come from the final runs only: filter with "
        "`tags.phase = 'final'`, group by `tags.method` and `tags.sparsity`, and compare "
        "`test_top1` per `tags.dataset` and `tags.mode`. One cell's search: "
        "`tags.phase = 'search' and tags.cell = '<upstream>/<dataset>/<mode>'`."
    ),
}
_FLUSH_SECONDS = 2.0
_MAX_BATCH = 900  # MLflow accepts at most 1000 metrics per log_batch


def default_tracking_uri(spec_uri: str | None) -> str:
    """The spec's URI, else $MLFLOW_TRACKING_URI, else MLflow's default sqlite:///mlflow.db
    (made absolute, so Ray workers and resumed drivers in other directories hit the same file)."""
    uri = spec_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        uri = f"sqlite:///{Path(uri.removeprefix('sqlite:///')).resolve()}"
    return uri


class SweepRecorder:
    def __init__(self, tracking_uri: str, experiment: str, sweep_id: str) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.sweep_id = sweep_id
        self._client: MlflowClient | None = None
        self._experiment_id: str | None = None
        self._runs: dict[str, str] = {}  # trial_id -> run_id
        self._last_step: dict[str, int] = {}  # run_id -> last metric step already logged
        self._pending: dict[str, list[Metric]] = {}
        self._flushed_at: dict[str, float] = {}
        self._closed: set[str] = set()  # runs finished before a resume: never touched again
        self._known: dict[str, tuple[str, str]] | None = None  # see `prefetch`

    # Pickled with Tune's experiment state: keep only the plain settings.
    def __getstate__(self) -> dict:
        return {
            "tracking_uri": self.tracking_uri,
            "experiment": self.experiment,
            "sweep_id": self.sweep_id,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["tracking_uri"], state["experiment"], state["sweep_id"])

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
            found = self._client.get_experiment_by_name(self.experiment)
            self._experiment_id = (
                found.experiment_id
                if found
                else self._client.create_experiment(self.experiment, tags=EXPERIMENT_TAGS)
            )
        return self._client

    @property
    def experiment_id(self) -> str:
        self.client  # noqa: B018  (creates the experiment on first use)
        return self._experiment_id  # type: ignore[return-value]

    def parent_run(self, tags: Mapping[str, str]) -> str:
        """The sweep's parent run, created once and re-opened on resume."""
        found = self._search(f"tags.sweep_id = '{self.sweep_id}' and tags.role = 'sweep'")
        if found:
            self.client.update_run(found[0], status="RUNNING")
            return found[0]
        run = self.client.create_run(
            self.experiment_id,
            tags={
                **tags,
                "sweep_id": self.sweep_id,
                "role": "sweep",
                MLFLOW_RUN_NAME: self.sweep_id,
            },
        )
        return run.info.run_id

    def open_trial(
        self,
        trial_id: str,
        parent_run_id: str,
        tags: Mapping[str, str],
        params: Mapping[str, object],
        run_name: str,
    ) -> str:
        if trial_id in self._runs:
            return self._runs[trial_id]
        if self._known is not None:  # one query at start, not one per trial
            found = [self._known[trial_id][0]] if trial_id in self._known else []
        else:
            query = f"tags.sweep_id = '{self.sweep_id}' and tags.trial_id = '{trial_id}'"
            found = self._search(query)
        if found and self.client.get_run(found[0]).info.status == "FINISHED":
            # Finished before a crash; Tune may report it once more. Leave the run as it is.
            self._closed.add(found[0])
            run_id = found[0]
        elif found:
            run_id = found[0]
            self.client.update_run(run_id, status="RUNNING")
            history = self.client.get_metric_history(run_id, "epoch")
            self._last_step[run_id] = max((m.step for m in history), default=0)
        else:
            all_tags = {
                **tags,
                "sweep_id": self.sweep_id,
                "trial_id": trial_id,
                MLFLOW_PARENT_RUN_ID: parent_run_id,
                MLFLOW_RUN_NAME: run_name,
            }
            run_id = self.client.create_run(self.experiment_id, tags=all_tags).info.run_id
            self.client.log_batch(
                run_id, params=[Param(k, str(v)) for k, v in sorted(params.items())]
            )
            self._last_step[run_id] = 0
        self._runs[trial_id] = run_id
        return run_id

    def log_epoch(self, trial_id: str, step: int, metrics: Mapping[str, float]) -> None:
        run_id = self._runs[trial_id]
        if run_id in self._closed or step <= self._last_step.get(run_id, 0):
            return  # already logged before a resume
        now_ms = int(time.time() * 1000)
        self._pending.setdefault(run_id, []).extend(
            Metric(k, float(v), now_ms, step) for k, v in metrics.items()
        )
        self._last_step[run_id] = step
        if time.monotonic() - self._flushed_at.get(run_id, 0.0) > _FLUSH_SECONDS:
            self.flush(run_id)

    def flush(self, run_id: str) -> None:
        pending = self._pending.pop(run_id, [])
        for start in range(0, len(pending), _MAX_BATCH):
            self.client.log_batch(run_id, metrics=pending[start : start + _MAX_BATCH])
        self._flushed_at[run_id] = time.monotonic()

    def close_trial(
        self,
        trial_id: str,
        status: str,
        *,
        metrics: Mapping[str, float] = (),
        tags: Mapping[str, str] = (),
        artifacts: Path | None = None,
    ) -> None:
        run_id = self._runs.get(trial_id)
        if run_id is None or run_id in self._closed:
            return
        self.flush(run_id)
        now_ms = int(time.time() * 1000)
        step = self._last_step.get(run_id, 0)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, float(v), now_ms, step) for k, v in dict(metrics).items()],
            tags=[RunTag(k, str(v)) for k, v in dict(tags).items()],
        )
        if artifacts is not None and artifacts.is_file():
            self.client.log_artifact(run_id, str(artifacts), artifact_path="checkpoint")
        self.client.set_terminated(run_id, status=status)

    def close_parent(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def log_parent_artifact(self, run_id: str, path: Path) -> None:
        self.client.log_artifact(run_id, str(path))

    def prefetch(self) -> None:
        """Learn this sweep's runs in one paged query, so opening a trial's run never
        searches MLflow (a search per trial grows with the runs the store holds)."""
        self._known = {}
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                f"tags.sweep_id = '{self.sweep_id}'",
                max_results=5000,
                page_token=token,
            )
            for run in page:
                if "trial_id" in run.data.tags:
                    self._known[run.data.tags["trial_id"]] = (run.info.run_id, run.info.status)
            token = page.token
            if not token:
                return

    def open_trial_keys(self) -> set[str]:
        """Trial keys of this sweep's runs still RUNNING: after a crash, some belong to trials
        the ledger already told (the sweep closes those from the ledger)."""
        if self._known is None:
            self.prefetch()
        return {key for key, (_, status) in self._known.items() if status == "RUNNING"}

    def flush_all(self) -> None:
        for run_id in list(self._pending):
            self.flush(run_id)

    def _search(self, filter_string: str) -> list[str]:
        runs = self.client.search_runs([self.experiment_id], filter_string, max_results=2)
        return [run.info.run_id for run in runs]
