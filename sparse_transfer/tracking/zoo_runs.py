"""MLflow runs for a zoo build: one parent run, one child run per upstream model built."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

from sparse_transfer.tracking.experiments import find_or_create_experiment

__all__ = ["log_zoo_build"]

_METRICS = ("sparsity", "target_sparsity", "upstream_val_top1", "dense_flops", "sparse_flops")


def log_zoo_build(tracking_uri: str, experiment: str, zoo: str, built: list[dict]) -> str:
    """Record the entries a `zoo build` made; returns the parent run id."""
    client = MlflowClient(tracking_uri)
    experiment_id = find_or_create_experiment(client, tracking_uri, experiment)
    parent = client.create_run(
        experiment_id,
        tags={"role": "zoo", "zoo": zoo, "stage": "upstream", MLFLOW_RUN_NAME: f"zoo/{zoo}"},
    )
    parent_id = parent.info.run_id
    for meta in built:
        run = client.create_run(
            experiment_id,
            tags={
                MLFLOW_PARENT_RUN_ID: parent_id,
                MLFLOW_RUN_NAME: meta["name"],
                "stage": "upstream",
                "zoo": zoo,
                "method": meta["method"],
                "sparsity": str(meta["target_sparsity"]),
                "arch": meta["arch"],
                "dataset": meta["upstream_dataset"] or "",
                "weights": meta.get("weights", "trained"),
                "sha256": meta["sha256"],
            },
        )
        run_id = run.info.run_id
        client.log_batch(
            run_id,
            metrics=[Metric(k, float(meta[k]), 0, 0) for k in _METRICS if meta[k] is not None],
            params=[Param(k, str(v)) for k, v in sorted(meta["params"].items())],
            tags=[RunTag("entry", meta["name"])],
        )
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "metadata.json"
            path.write_text(json.dumps(meta, indent=2))
            client.log_artifact(run_id, str(path))
        client.set_terminated(run_id)
    client.set_terminated(parent_id)
    return parent_id
