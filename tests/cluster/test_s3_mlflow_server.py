"""A sweep whose storage is S3 (a local moto server) and whose tracking is a real `mlflow server`
process (SQLite backend, artifacts proxied into the same S3). The driver is killed mid-search
and the sweep resumed from S3 in a fresh process with an empty local cache: every trial is in
MLflow exactly once, and the final checkpoints are readable through the server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
from mlflow import MlflowClient
from moto.server import ThreadedMotoServer
from safetensors.torch import load_file
from sweep_helpers import CLI, kill_when, small_spec, start_sweep

from sparse_transfer.config import dump_spec

pytestmark = pytest.mark.slow

BUCKET = "studies"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def s3(monkeypatch):
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
    client.create_bucket(Bucket=BUCKET)
    yield port, client
    server.stop()


@pytest.fixture
def mlflow_server(s3, tmp_path):
    s3_port, _ = s3
    port = _free_port()
    env = {**os.environ, **CREDENTIALS, "MLFLOW_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_port}"}
    server_log = open(tmp_path / "mlflow-server.log", "w")  # noqa: SIM115 (lives with the server)
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("mlflow")),
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            f"s3://{BUCKET}/mlflow",
            "--serve-artifacts",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=server_log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            break
        except OSError:
            assert process.poll() is None, (tmp_path / "mlflow-server.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "mlflow server did not come up"
            time.sleep(1)
    yield uri
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=30)
    server_log.close()


def _runs(uri: str, experiment: str, phase: str | None = None, status: str | None = None):
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    runs = client.search_runs([found.experiment_id], max_results=1000)
    runs = [r for r in runs if r.data.tags.get("role") != "sweep"]
    if phase:
        runs = [r for r in runs if r.data.tags.get("phase") == phase]
    if status:
        runs = [r for r in runs if r.info.status == status]
    return runs


def test_s3_sweep_with_mlflow_server_resumes_from_s3(s3, mlflow_server, tmp_path):
    s3_port, client = s3
    storage = f"s3://{BUCKET}/study?endpoint_override=127.0.0.1:{s3_port}&scheme=http"
    spec = small_spec(
        tmp_path,
        None,
        storage=storage,
        tracking={"uri": mlflow_server, "experiment": "s3study"},
        search={"trials_per_cell": 3, "max_concurrent_trials": 2},
    )
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(dump_spec(spec))
    env = {
        **os.environ,
        **CREDENTIALS,
        "PYTHONUNBUFFERED": "1",
        "SPARSE_TRANSFER_CACHE": str(tmp_path / "cache-first"),
    }
    log = tmp_path / "sweep.log"
    driver = start_sweep(spec_file, log, env, tmp_path)
    kill_when(driver, lambda: len(_runs(mlflow_server, "s3study", "search", "FINISHED")) >= 4, log)

    listed = client.list_objects_v2(Bucket=BUCKET, Prefix="study/sweeps/", Delimiter="/")
    (prefix,) = [p["Prefix"] for p in listed["CommonPrefixes"]]
    sweep_id = prefix.rstrip("/").rsplit("/", 1)[1]
    location = (
        f"s3://{BUCKET}/study/sweeps/{sweep_id}?endpoint_override=127.0.0.1:{s3_port}&scheme=http"
    )
    # A fresh process on a "new machine": an empty local cache, everything comes from S3.
    fresh = {**env, "SPARSE_TRANSFER_CACHE": str(tmp_path / "cache-second")}
    resume_log = tmp_path / "resume.log"  # kept for diagnosis
    try:
        with open(resume_log, "w") as log:
            resumed = subprocess.run(
                [*CLI, "resume", location],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=fresh,
                cwd=tmp_path,
                timeout=300,
            )
    except subprocess.TimeoutExpired:
        pytest.fail("resume from S3 hung:\n" + resume_log.read_text()[-4000:])
    output = resume_log.read_text()
    assert resumed.returncode == 0, output[-6000:]

    runs = [r for r in _runs(mlflow_server, "s3study") if r.data.tags["sweep_id"] == sweep_id]
    trial_ids = [r.data.tags["trial_id"] for r in runs]
    assert len(trial_ids) == len(set(trial_ids)), "a trial has two MLflow runs"
    assert sum(r.data.tags["phase"] == "search" for r in runs) == 4 * 3
    finals = [r for r in runs if r.data.tags["phase"] == "final"]
    assert len(finals) == 4 * 2
    assert {r.info.status for r in runs} == {"FINISHED"}

    # Final checkpoints are artifacts served by the tracking server (stored in S3).
    mlflow = MlflowClient(mlflow_server)
    for run in finals[:2]:
        local = mlflow.download_artifacts(
            run.info.run_id, "checkpoint/weights.safetensors", str(tmp_path / run.info.run_id)
        )
        assert load_file(local)  # the final run's weights, read back through the server
        epochs = [m.step for m in mlflow.get_metric_history(run.info.run_id, "epoch")]
        assert max(epochs) == int(run.data.params["epochs"])
    keys = {
        o["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
        for o in page.get("Contents", [])
    }
    assert any(k.startswith("mlflow/") and k.endswith("weights.safetensors") for k in keys)
    # The study's durable files are in S3: zoo, features, the ledger, report.
    base = f"study/sweeps/{sweep_id}/"
    for expected in (
        "study/zoo/quickstart/dense.pt",
        base + "state.json",
        base + "report/summary.csv",
    ):
        assert expected in keys, expected
    assert any(k.startswith("study/features/") and k.endswith(".parquet") for k in keys)
    assert any(k.startswith(base + "ledger/") for k in keys), "no ledger segments in S3"
    left = sorted(k for k in keys if k.startswith(base + "tune-"))
    assert not left, f"Tune's folders left behind: {left[:5]}"
    assert not any(k.startswith(base + "trial_state/") for k in keys), "told trials' state left"
    # The resumed process built nothing itself: its zoo came from S3, not from a new build.
    assert "zoo quickstart: pretrained" not in output
