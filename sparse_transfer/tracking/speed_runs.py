"""MLflow runs for `sparse-transfer speed`: one parent run, one child run per measurement
(upstream x engine x batch size)."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from sparse_transfer.tracking.experiments import RUNS_KIND, find_or_create_experiment

__all__ = ["log_speed"]

_METRICS = (
    "images_per_s",
    "images_per_s_min",
    "images_per_s_max",
    "latency_ms_p50",
    "latency_ms_p95",
    "speedup_vs_dense_same_engine",
    "speedup_vs_onnxruntime_dense",
    "flops_speedup",
    "top1_agreement",
    "max_abs_logit_diff",
)
_TAGS = ("upstream", "arch", "method", "sparsity", "engine", "batch_size", "threads", "cpu")
_MORE_TAGS = ("status", "weights", "weights_sha256", "source", "cpu_flags", "outputs_match")


def log_speed(tracking_uri: str, experiment: str, table: pd.DataFrame, meta: dict) -> str:
    """Record a speed table; returns the parent run id. Rows without numbers (failed, wrong,
    unavailable) are runs too, marked FAILED, so nothing measured is missing from MLflow."""
    client = MlflowClient(tracking_uri)
    experiment_id = find_or_create_experiment(client, tracking_uri, experiment)
    # an experiment made elsewhere (the UI, another tool) may lack the kind that opens runs
    for key, value in RUNS_KIND.items():
        client.set_experiment_tag(experiment_id, key, value)
    parent = client.create_run(
        experiment_id,
        tags={"role": "speed", "spec": meta["spec_name"], MLFLOW_RUN_NAME: "speed"},
    ).info.run_id
    for row in table.to_dict("records"):
        tags = {k: _text(row.get(k)) for k in (*_TAGS, *_MORE_TAGS)}
        name = f"{row['upstream']}/{row['engine']}/b{_text(row.get('batch_size'))}"
        run = client.create_run(
            experiment_id,
            tags={**tags, MLFLOW_PARENT_RUN_ID: parent, MLFLOW_RUN_NAME: name, "role": "speed"},
        ).info.run_id
        metrics = [
            Metric(k, float(row[k]), 0, 0) for k in _METRICS if _number(row.get(k)) is not None
        ]
        notes = [RunTag(k, str(row[k])[:5000]) for k in ("error", "note") if _text(row.get(k))]
        client.log_batch(run, metrics=metrics, tags=notes)
        client.set_terminated(run, "FINISHED" if row["status"] == "ok" else "FAILED")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "speed.json"
        path.write_text(json.dumps(meta, indent=2, default=str))
        client.log_artifact(parent, str(path))
        csv = Path(folder) / "speed.csv"
        table.to_csv(csv, index=False)
        client.log_artifact(parent, str(csv))
    client.set_terminated(parent)
    return parent


def _number(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _text(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return f"{value:g}"
    return str(value)
