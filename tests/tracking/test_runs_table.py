from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from mlflow.entities import RunStatus

from sparse_transfer.analysis import RESULT_COLUMNS
from sparse_transfer.tracking.experiments import find_or_create_experiment
from sparse_transfer.tracking.runs_table import load_final_runs

EXPERIMENT = "sweep-test"


def _child(
    client: mlflow.MlflowClient,
    experiment_id: str,
    parent_id: str,
    tags: dict[str, str],
    top1: float | None,
    status: str = "FINISHED",
) -> str:
    run = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent_id, **tags})
    if top1 is not None:
        client.log_metric(run.info.run_id, "test_top1", top1)
    client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


def _tags(method: str, sparsity: str, dataset: str, seed: str, phase: str) -> dict[str, str]:
    return {
        "phase": phase,
        "arch": "resnet50",
        "mode": "full",
        "method": method,
        "sparsity": sparsity,
        "dataset": dataset,
        "seed": seed,
        "cell": f"{method}-{sparsity}-{dataset}",
        "sweep_id": "sweep-1",
    }


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment_id = find_or_create_experiment(client, uri, EXPERIMENT)
    parent = client.create_run(experiment_id, tags={"phase": "sweep"}).info.run_id
    finals = [
        ("dense", "0.0", "cifar10", "21", 95.0),
        ("dense", "0.0", "cifar10", "22", 95.5),
        ("gmp", "0.9", "cifar10", "21", 93.25),
    ]
    for method, sparsity, dataset, seed, top1 in finals:
        _child(
            client, experiment_id, parent, _tags(method, sparsity, dataset, seed, "final"), top1
        )
    # search-phase trials and a crashed final run must not reach the table
    for seed in ("1", "2"):
        _child(client, experiment_id, parent, _tags("gmp", "0.9", "cifar10", seed, "search"), 50)
    failed = _tags("gmp", "0.95", "cifar10", "21", "final")
    _child(
        client, experiment_id, parent, failed, 10.0, status=RunStatus.to_string(RunStatus.FAILED)
    )
    client.set_terminated(parent)
    find_or_create_experiment(client, uri, "empty-experiment")
    return uri


def test_final_runs_become_the_canonical_table(tracking_uri: str) -> None:
    table = load_final_runs(tracking_uri, EXPERIMENT)
    assert list(table.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert {"run_id", "sweep_id", "cell"} <= set(table.columns)
    table = table.sort_values(["method", "seed"]).reset_index(drop=True)
    assert table["method"].tolist() == ["dense", "dense", "gmp"]
    assert table["seed"].tolist() == ["21", "22", "21"]
    assert table["top1"].tolist() == [95.0, 95.5, 93.25]
    assert table["sparsity"].tolist() == [0.0, 0.0, 0.9]
    assert set(table["arch"]) == {"resnet50"} and set(table["mode"]) == {"full"}
    assert set(table["sweep_id"]) == {"sweep-1"}
    assert table["cell"].tolist()[2] == "gmp-0.9-cifar10"
    assert table["run_id"].nunique() == 3


def test_unknown_experiment_lists_existing_names(tracking_uri: str) -> None:
    with pytest.raises(ValueError, match=r"no MLflow experiment named 'nope'.*'sweep-test'"):
        load_final_runs(tracking_uri, "nope")


def test_experiment_without_final_runs_is_an_error(tracking_uri: str) -> None:
    with pytest.raises(ValueError, match=r"'empty-experiment' \(0 runs in it in all\)"):
        load_final_runs(tracking_uri, "empty-experiment")


def test_pagination_reads_every_page(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from sparse_transfer.tracking import runs_table

    monkeypatch.setattr(runs_table, "_PAGE_SIZE", 1)
    assert len(load_final_runs(tracking_uri, EXPERIMENT)) == 3
