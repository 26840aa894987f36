"""The canonical results table read back from MLflow: one row per finished final run, and
what the report says about how each cell got its numbers."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from sparse_transfer import metrics as M
from sparse_transfer.analysis.provenance import (
    CellProvenance,
    FinalRun,
    SweepProvenance,
    total_hours,
)
from sparse_transfer.analysis.results import to_canonical

__all__ = [
    "FINAL_PHASE",
    "NoResultsError",
    "TEST_TOP1_METRIC",
    "SweepChoice",
    "choose_sweep",
    "experiment_of_sweep",
    "load_final_runs",
    "load_provenance",
    "ui_base",
    "ui_hint",
    "sweep_storage",
]

FINAL_PHASE = "final"
TEST_TOP1_METRIC = "test_top1"

_RUN_TAGS = ("arch", "mode", "method", "sparsity", "dataset", "seed", "cell", "sweep_id")
SEARCH_PHASE = "search"
_FINAL_FILTER = f"tags.phase = '{FINAL_PHASE}' and attributes.status = 'FINISHED'"
_PAGE_SIZE = 1000
SPEC_ARTIFACT = "spec.resolved.yaml"  # the sweep saves its resolved spec on the parent run
# Where `mlflow ui` serves by default: the base of the run links for a non-HTTP store.
LOCAL_UI = "http://127.0.0.1:5000"


class SweepChoice:
    """Which sweep of an experiment a report reads, and the others it could have read."""

    def __init__(self, sweep_id: str | None, sweeps: list[str]) -> None:
        self.sweep_id = sweep_id  # None: every sweep
        self.sweeps = sweeps  # every sweep with final runs, oldest first

    def describe(self) -> str:
        if self.sweep_id is None:
            return f"all {len(self.sweeps)} sweeps: {', '.join(self.sweeps)}"
        others = len(self.sweeps) - 1
        if others <= 0:
            return f"sweep {self.sweep_id} (the only one in the experiment)"
        return (
            f"sweep {self.sweep_id}, the latest of {len(self.sweeps)} in the experiment "
            "(--sweep-id ID for another, --all-sweeps for all)"
        )


def choose_sweep(
    tracking_uri: str, experiment: str, *, sweep_id: str | None = None, all_sweeps: bool = False
) -> SweepChoice:
    """The latest sweep with finished final runs unless told otherwise: two sweeps of one spec
    in one experiment must never be pooled by accident (each seed would count twice)."""
    if sweep_id and all_sweeps:
        raise ValueError("give --sweep-id or --all-sweeps, not both")
    client, ids = _experiment(tracking_uri, experiment)
    started: dict[str, int] = {}
    for run in _pages(client.search_runs, experiment_ids=ids, filter_string=_FINAL_FILTER):
        sweep = run.data.tags.get("sweep_id", "")
        started[sweep] = max(started.get(sweep, 0), run.info.start_time or 0)
    sweeps = sorted(started, key=lambda s: (started[s], s))
    if sweep_id and sweep_id not in started:
        raise ValueError(
            f"no finished final runs of sweep {sweep_id!r} in MLflow experiment "
            f"{experiment!r}; sweeps with final runs: {sweeps}"
        )
    if all_sweeps:
        return SweepChoice(None, sweeps)
    return SweepChoice(sweep_id or (sweeps[-1] if sweeps else None), sweeps)


class NoResultsError(ValueError):
    """No final run finished: there is nothing to report."""


def load_final_runs(
    tracking_uri: str, experiment: str, *, sweep_id: str | None = None
) -> pd.DataFrame:
    """Every FINISHED run tagged ``phase=final`` in ``experiment`` (of one sweep if
    ``sweep_id`` is given), as the canonical table.

    ``top1`` is the run's ``test_top1`` metric (percent); ``run_id``, ``sweep_id`` and
    ``cell`` are kept as extra columns.
    """
    client, ids = _experiment(tracking_uri, experiment)
    final_filter = _FINAL_FILTER + (f" and tags.sweep_id = '{sweep_id}'" if sweep_id else "")
    runs = list(_pages(client.search_runs, experiment_ids=ids, filter_string=final_filter))
    if not runs:
        total = sum(1 for _ in _pages(client.search_runs, experiment_ids=ids))
        raise NoResultsError(
            f"no finished runs tagged phase={FINAL_PHASE!r} in MLflow experiment "
            f"{experiment!r} ({total} runs in it in all)"
        )
    frame = pd.DataFrame([_row(run, experiment) for run in runs])
    return to_canonical(frame, source=f"MLflow experiment {experiment!r}")


def experiment_of_sweep(tracking_uri: str, sweep_id: str) -> str:
    """The name of the experiment that holds a sweep's final runs."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiments = list(_pages(client.search_experiments))
    runs = client.search_runs(
        [e.experiment_id for e in experiments],
        filter_string=f"{_FINAL_FILTER} and tags.sweep_id = '{sweep_id}'",
        max_results=1,
    )
    if not runs:
        raise ValueError(f"no finished final runs of sweep {sweep_id!r} at {tracking_uri}")
    by_id = {e.experiment_id: e.name for e in experiments}
    return by_id[runs[0].info.experiment_id]


def _experiment(tracking_uri: str, experiment: str) -> tuple[Any, list[str]]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in _pages(client.search_experiments))
        raise ValueError(
            f"no MLflow experiment named {experiment!r} at {tracking_uri}; existing: {names}"
        )
    return client, [found.experiment_id]


def load_provenance(tracking_uri: str, experiment: str, sweep_id: str) -> SweepProvenance:
    """How each cell of one sweep got its numbers: the final runs' hyperparameters, the search
    trials and how many ASHA stopped, the logged GPU- and CPU-hours, the commit, the resolved
    spec and the MLflow UI links."""
    client, ids = _experiment(tracking_uri, experiment)
    runs = list(
        _pages(
            client.search_runs, experiment_ids=ids, filter_string=f"tags.sweep_id = '{sweep_id}'"
        )
    )
    parent = next((r for r in runs if r.data.tags.get("role") == "sweep"), None)
    base = ui_base(tracking_uri)

    def url(run_id: str) -> str:
        return f"{base}/#/experiments/{ids[0]}/runs/{run_id}"

    by_cell: dict[str, list[Any]] = {}
    for run in runs:
        if run.data.tags.get("phase") in (FINAL_PHASE, SEARCH_PHASE):
            by_cell.setdefault(run.data.tags.get("cell", ""), []).append(run)
    cells = [_cell(cell, found, url) for cell, found in sorted(by_cell.items())]
    finals = [r for r in runs if r.data.tags.get("phase") == FINAL_PHASE]
    commit = parent.data.tags.get("git_commit", "") if parent else ""
    return SweepProvenance(
        sweep_id=sweep_id,
        commit=commit or next((r.data.tags.get("git_commit", "") for r in finals), ""),
        spec=_spec_text(client, parent.info.run_id) if parent else "",
        url=url(parent.info.run_id) if parent else "",
        ui_hint=ui_hint(tracking_uri),
        cells=cells,
    )


def _cell(cell: str, runs: list[Any], url: Callable[[str], str]) -> CellProvenance:
    finished = [r for r in runs if r.info.status == "FINISHED"]
    finals = sorted(
        (r for r in finished if r.data.tags.get("phase") == FINAL_PHASE),
        key=lambda r: r.data.tags.get("seed", ""),
    )
    search = [r for r in runs if r.data.tags.get("phase") == SEARCH_PHASE]
    # The final runs of a cell share one configuration; only the seed differs.
    hparams = dict(finals[0].data.params) if finals else {}
    hparams.pop("seed", None)
    return CellProvenance(
        cell=cell,
        hparams=hparams,
        search_trials=len(search),
        stopped_early=sum(r.data.tags.get("stopped_early") == "true" for r in search),
        gpu_hours=total_hours(r.data.metrics.get(M.GPU_HOURS) for r in runs),
        cpu_hours=total_hours(r.data.metrics.get(M.CPU_HOURS) for r in runs),
        finals=[
            FinalRun(r.data.tags.get("seed", ""), r.info.run_id, url(r.info.run_id))
            for r in finals
        ],
        best_search=_best_search(search),
    )


def _best_search(search: list[Any]) -> dict[str, float]:
    """Per validation metric, the best final value among the search trials that completed."""
    completed = [r for r in search if r.data.tags.get("ledger_state", "COMPLETE") == "COMPLETE"]
    best: dict[str, float] = {}
    for run in completed:
        for name in (M.VAL_TOP1, M.VAL_MEAN_CLASS_ACC):
            value = run.data.metrics.get(name)
            if value is not None and value > best.get(name, float("-inf")):
                best[name] = value
    return best


def _spec_text(client: Any, run_id: str) -> str:
    with tempfile.TemporaryDirectory() as scratch:
        try:
            path = client.download_artifacts(run_id, SPEC_ARTIFACT, scratch)
        except Exception:  # noqa: BLE001  (an older sweep without the artifact: say so)
            return ""
        return Path(path).read_text(encoding="utf-8", errors="replace")


def ui_base(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return LOCAL_UI


def ui_hint(tracking_uri: str) -> str:
    if tracking_uri.startswith(("http://", "https://")):
        return f"runs on the tracking server {tracking_uri}"
    from sparse_transfer.console import mlflow_ui_command, shell

    # the command a finished sweep prints, word for word
    return (
        f"the links open in the MLflow UI at {LOCAL_UI}; start it with "
        f"{shell(mlflow_ui_command(tracking_uri))}"
    )


def _pages(search: Callable[..., Any], **kwargs: Any) -> Iterator[Any]:
    """Yield every item of a paginated MLflow search, following page tokens to the end."""
    token = None
    while True:
        page = search(max_results=_PAGE_SIZE, page_token=token, **kwargs)
        yield from page
        token = page.token
        if not token:
            return


def _row(run: Any, experiment: str) -> dict[str, object]:
    tags = run.data.tags
    metrics = run.data.metrics
    if TEST_TOP1_METRIC not in metrics:
        raise ValueError(
            f"final run {run.info.run_id} in MLflow experiment {experiment!r} has no "
            f"{TEST_TOP1_METRIC!r} metric; logged metrics: {sorted(metrics)}"
        )
    row: dict[str, object] = {tag: tags.get(tag, "") for tag in _RUN_TAGS}
    if row["mode"] == "prune":
        # Transfer, then prune: a fully finetuned model at the downstream target, reported
        # next to models pruned upstream at the same sparsity ("prune, then transfer").
        row["method"] = f"{row['method']}+downstream_gmp"
        row["sparsity"] = tags["downstream_target"]
        row["mode"] = "full"
        row["transfer_mode"] = "prune"
    row["top1"] = metrics[TEST_TOP1_METRIC]
    row["run_id"] = run.info.run_id
    return row


def sweep_storage(tracking_uri: str, sweep_id: str) -> str | None:
    """The storage a sweep's parent run names (its `storage` tag), or None."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    ids = [e.experiment_id for e in _pages(client.search_experiments)]
    runs = client.search_runs(
        ids, filter_string=f"tags.sweep_id = '{sweep_id}' and tags.role = 'sweep'", max_results=1
    )
    return runs[0].data.tags.get("storage") if runs else None
