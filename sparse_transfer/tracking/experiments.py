"""Finding or creating a sweep's MLflow experiment, with its artifacts beside its store.

MLflow's SQL store puts a new experiment's artifacts under `./mlruns` of whatever directory the
creating process happens to run in, so a study whose spec names `sqlite:////data/study/mlflow.db`
would scatter its reports and checkpoints over the working directories of its drivers. For a
SQLite store this project creates the experiment with its artifacts in `mlruns/<experiment>/`
next to the database file (for the default `sqlite:///mlflow.db`, under `./mlruns`). A tracking
server decides for itself (`--artifacts-destination`).
"""

from __future__ import annotations

import re
from pathlib import Path

from mlflow import MlflowClient

__all__ = ["EXPERIMENT_TAGS", "RUNS_KIND", "artifact_location", "find_or_create_experiment"]

# "Machine learning" makes MLflow 3's UI open an experiment on its runs table, not on the
# GenAI overview (traces, token usage).
RUNS_KIND = {"mlflow.experimentKind": "custom_model_development"}
# A sweep's experiment: its kind and a description of how to read it.
EXPERIMENT_TAGS = {
    **RUNS_KIND,
    "mlflow.note.content": (
        "sparse-transfer sweeps: one parent run per sweep, one child run per trial. "
        "Reported accuracies come from the final runs only: filter with "
        "`tags.phase = 'final'`, group by `tags.method` and `tags.sparsity`, and compare "
        "`test_top1` per `tags.dataset` and `tags.mode`. One cell's search: "
        "`tags.phase = 'search' and tags.cell = '<upstream>/<dataset>/<mode>'`."
    ),
}


def artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """`mlruns/<experiment>/` beside a SQLite store's file, as a file URI (the name made safe
    for a folder); None for any other store."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    database = Path(tracking_uri.removeprefix("sqlite:///").partition("?")[0])
    if database.name in ("", ":memory:"):
        return None
    folder = re.sub(r"[^A-Za-z0-9._-]", "_", experiment).lstrip(".") or "_"
    return (database.resolve().parent / "mlruns" / folder).as_uri()


def find_or_create_experiment(
    client: MlflowClient, tracking_uri: str, name: str, tags: dict[str, str] = RUNS_KIND
) -> str:
    """The id of experiment `name`, created (with `tags`) if it does not exist yet."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    return client.create_experiment(
        name, artifact_location=artifact_location(tracking_uri, name), tags=tags
    )
