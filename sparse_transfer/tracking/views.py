"""A saved view of a sweep's final runs in the MLflow UI: the link a finished sweep prints.

MLflow's UI keeps a view (search, sort, columns) in an experiment tag
`mlflow.sharedViewState.<key>` and opens it from `#/experiments/<id>/runs?viewStateShareKey=<key>`:
the same mechanism as its own "Share" button, so what opens is what a user could have saved.

Sorting by run name, not by start time, is what makes the rows flat: MLflow fetches the parents of
matching child runs, and nests them under a collapsed parent row, only when sorting by start time.
Checked against MLflow 3.17.2's UI bundle (2026-12-03): the tag prefix, the URL key, and that a
view holds `searchFilter`, `orderByKey`, `orderByAsc` and `selectedColumns`.
"""

from __future__ import annotations

import json

from mlflow import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME

from sparse_transfer import metrics as M

__all__ = ["FINAL_RUN_COLUMNS", "final_run_name", "final_runs_filter", "save_final_runs_view"]

SHARED_VIEW_TAG = "mlflow.sharedViewState."
# The tags a final run is compared by, after its test accuracy
FINAL_RUN_TAGS = ("method", "sparsity", "dataset", "mode", "seed", "arch")
_RUN_NAME_COLUMN = "attributes.`Run Name`"  # the grid's column ids
FINAL_RUN_COLUMNS = [f"metrics.`{M.TEST_TOP1}`", *(f"tags.`{tag}`" for tag in FINAL_RUN_TAGS)]


def final_run_name(config: dict) -> str:
    """A final run's name as the report reads it: `resnet50 gmp 90% cifar10 full seed 0`."""
    sparsity = f"{float(config['sparsity']) * 100:g}%"
    parts = [config["arch"], config["method"], sparsity, config["dataset"], config["mode"]]
    return " ".join([*map(str, parts), f"seed {config['seed']}"])


def final_runs_filter(sweep_id: str | None = None) -> str:
    found = "tags.phase = 'final'"
    return f"{found} and tags.sweep_id = '{sweep_id}'" if sweep_id else found


def save_final_runs_view(tracking_uri: str, experiment: str, sweep_id: str) -> tuple[str, str]:
    """Save the view of one sweep's final runs in its experiment: (experiment id, view key).
    One row per final run, named by what it compares, with `test_top1` and its tags as columns."""
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise LookupError(f"no MLflow experiment {experiment!r} at {tracking_uri}")
    view = {
        "searchFilter": final_runs_filter(sweep_id),
        "orderByKey": f"tags.`{MLFLOW_RUN_NAME}`",
        "orderByAsc": True,
        "startTime": "ALL",
        "lifecycleFilter": "Active",
        "selectedColumns": FINAL_RUN_COLUMNS,
        # wide enough for a final run's name; a width applies to a column of columnOrder only
        "columnOrder": [_RUN_NAME_COLUMN, "runDateAndNestInfo", "duration", *FINAL_RUN_COLUMNS],
        "columnWidths": {_RUN_NAME_COLUMN: 340},
    }
    key = f"final-{sweep_id}"
    client.set_experiment_tag(found.experiment_id, SHARED_VIEW_TAG + key, json.dumps(view))
    return found.experiment_id, key
