"""The canonical results table read back from MLflow: one row per finished final run."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pandas as pd

from sparse_transfer.analysis.results import to_canonical

__all__ = ["FINAL_PHASE", "TEST_TOP1_METRIC", "load_final_runs"]

FINAL_PHASE = "final"
TEST_TOP1_METRIC = "test_top1"

_RUN_TAGS = ("arch", "mode", "method", "sparsity", "dataset", "seed", "cell", "sweep_id")
_FINAL_FILTER = f"tags.phase = '{FINAL_PHASE}' and attributes.status = 'FINISHED'"
_PAGE_SIZE = 1000


def load_final_runs(
    tracking_uri: str, experiment: str, *, sweep_id: str | None = None
) -> pd.DataFrame:
    """Every FINISHED run tagged ``phase=final`` in ``experiment`` (of one sweep if
    ``sweep_id`` is given), as the canonical table.

    ``top1`` is the run's ``test_top1`` metric (percent); ``run_id``, ``sweep_id`` and
    ``cell`` are kept as extra columns.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        names = sorted(e.name for e in _pages(client.search_experiments))
        raise ValueError(
            f"no MLflow experiment named {experiment!r} at {tracking_uri}; existing: {names}"
        )
    ids = [found.experiment_id]
    final_filter = _FINAL_FILTER + (f" and tags.sweep_id = '{sweep_id}'" if sweep_id else "")
    runs = list(_pages(client.search_runs, experiment_ids=ids, filter_string=final_filter))
    if not runs:
        total = sum(1 for _ in _pages(client.search_runs, experiment_ids=ids))
        raise ValueError(
            f"no finished runs tagged phase={FINAL_PHASE!r} in MLflow experiment "
            f"{experiment!r} ({total} runs in it in all)"
        )
    frame = pd.DataFrame([_row(run, experiment) for run in runs])
    return to_canonical(frame, source=f"MLflow experiment {experiment!r}")


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
