"""infra/mlflow/start-server.sh: the command line it builds, and a real server it starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "infra" / "mlflow" / "start-server.sh"


def test_script_is_valid_bash():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_script_binds_localhost_and_serves_artifacts_by_default_in_its_text():
    text = SCRIPT.read_text()
    assert 'host="${MLFLOW_HOST:-127.0.0.1}"' in text
    assert "--serve-artifacts" in text and "--artifacts-destination" in text


def run_with_fake_mlflow(tmp_path: Path, env: dict[str, str], *args: str) -> list[str]:
    """The arguments the script hands to `mlflow` (a stand-in that prints them)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "mlflow"
    fake.write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    out = subprocess.run(
        ["bash", str(SCRIPT), *args],
        env={**clean, "HOME": str(tmp_path), "PATH": f"{bin_dir}:{clean['PATH']}", **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.splitlines()


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_defaults_are_local_sqlite_and_localhost(tmp_path):
    argv = run_with_fake_mlflow(tmp_path, {})
    assert argv[0] == "server"
    assert option(argv, "--host") == "127.0.0.1"
    assert option(argv, "--port") == "5000"
    assert option(argv, "--backend-store-uri") == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert option(argv, "--artifacts-destination") == f"{tmp_path}/mlflow/artifacts"
    assert "--serve-artifacts" in argv and "--app-name" not in argv
    assert (tmp_path / "mlflow").is_dir()  # SQLite's folder is created


def test_settings_come_from_the_environment(tmp_path):
    env = {
        "MLFLOW_BACKEND_STORE_URI": "postgresql://mlflow@db.internal:5432/mlflow",
        "MLFLOW_ARTIFACTS_DESTINATION": "s3://bucket/mlflow",
        "MLFLOW_HOST": "0.0.0.0",
        "MLFLOW_PORT": "8080",
        "MLFLOW_APP_NAME": "basic-auth",
    }
    argv = run_with_fake_mlflow(tmp_path, env, "--workers", "2")
    assert option(argv, "--backend-store-uri") == env["MLFLOW_BACKEND_STORE_URI"]
    assert option(argv, "--artifacts-destination") == "s3://bucket/mlflow"
    assert (option(argv, "--host"), option(argv, "--port")) == ("0.0.0.0", "8080")
    assert option(argv, "--app-name") == "basic-auth"
    assert argv[-2:] == ["--workers", "2"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_server_starts_and_stores_uploaded_artifacts_at_the_destination(tmp_path):
    from mlflow import MlflowClient

    port = free_port()
    artifacts = tmp_path / "artifact-store"  # stands in for s3://bucket/mlflow
    env = {
        **os.environ,
        "HOME": str(tmp_path),
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "MLFLOW_PORT": str(port),
        "MLFLOW_ARTIFACTS_DESTINATION": str(artifacts),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    server = subprocess.Popen(
        ["bash", str(SCRIPT), "--workers", "1"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert server.poll() is None, "the server exited"
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.5)
        client = MlflowClient(tracking_uri=uri)
        run = client.create_run(client.create_experiment("infra-test"))
        (tmp_path / "report.html").write_text("<p>report</p>")
        client.log_artifact(run.info.run_id, str(tmp_path / "report.html"))
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied, no S3 client
        assert [p.name for p in artifacts.rglob("report.html")] == ["report.html"]
        assert (tmp_path / "mlflow" / "mlflow.db").is_file()
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
