"""A SQLite store keeps its artifacts beside its file, whatever directory the driver runs in.

MLflow's SQL store would put a new experiment's artifacts under `./mlruns` of the creating
process's working directory: a study at `sqlite:////data/study/mlflow.db` would leave its report
and checkpoints wherever its driver was started (and the test suite would write into the
checkout it runs from)."""

from __future__ import annotations

from mlflow import MlflowClient

from sparse_transfer.tracking import SweepRecorder
from sparse_transfer.tracking.experiments import artifact_location
from sparse_transfer.tracking.zoo_runs import log_zoo_build


def _files(root):
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def test_a_sweeps_artifacts_land_beside_its_sqlite_store(tmp_path, monkeypatch):
    store, elsewhere = tmp_path / "study", tmp_path / "elsewhere"
    store.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    checkpoint, report = tmp_path / "weights.safetensors", tmp_path / "report.html"
    checkpoint.write_bytes(b"weights"), report.write_text("<html></html>")

    recorder = SweepRecorder(uri, "study", "sweep-1", tmp_path / "outbox.sqlite")
    parent = recorder.parent_run({"spec": "study"})
    recorder.open_trial("final-0", parent, {"phase": "final"}, {"lr": 0.1}, run_name="final")
    recorder.close_trial("final-0", "FINISHED", metrics={"test_top1": 50.0}, artifacts=checkpoint)
    recorder.log_parent_artifact(parent, report)
    recorder.close_parent(parent)
    assert recorder.drain(60)

    assert _files(store / "mlruns" / "study") == ["report.html", "weights.safetensors"]
    assert not list(elsewhere.iterdir())
    experiment = MlflowClient(uri).get_experiment_by_name("study")
    assert experiment.artifact_location == (store / "mlruns" / "study").as_uri()
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_a_zoo_builds_records_land_beside_its_store_and_open_on_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    meta = {
        "name": "gmp-90",
        "method": "gmp",
        "target_sparsity": 0.9,
        "sparsity": 0.9,
        "upstream_val_top1": None,
        "dense_flops": None,
        "sparse_flops": None,
        "arch": "quickstart_cnn",
        "upstream_dataset": "digits",
        "sha256": "0" * 64,
        "params": {},
    }
    log_zoo_build(uri, "zoo", "quickstart", [meta])
    assert _files(store / "mlruns" / "zoo") == ["metadata.json"]
    assert not (tmp_path / "mlruns").exists()
    experiment = MlflowClient(uri).get_experiment_by_name("zoo")
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_each_experiment_of_a_sqlite_store_gets_a_folder_of_its_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert artifact_location("sqlite:///mlflow.db", "q") == (tmp_path / "mlruns" / "q").as_uri()
    uri = "sqlite:////data/s/m.db?timeout=30"
    assert artifact_location(uri, "a/b c") == "file:///data/s/mlruns/a_b_c"
    assert artifact_location(uri, "..") == "file:///data/s/mlruns/_"  # never outside mlruns/
    assert artifact_location("http://mlflow:5000", "q") is None
    assert artifact_location("sqlite:///:memory:", "q") is None
