"""Credentials never reach a file (issue 11): a real sweep (`sparse-transfer sweep`, local
Ray, storage on a moto S3 server, MLflow SQLite) runs with sentinel AWS credentials in its
environment; afterwards no file under the Ray session directory, the storage (its local
mirror and every object in the bucket), the MLflow store or the logs holds any of them.
The trials still had the credentials: they wrote their state to S3 with them.

The CLI also turns Ray usage stats and MLflow telemetry off unless the user turns them on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from s3_helpers import BUCKET, s3_server
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
SENTINELS = {
    "AWS_ACCESS_KEY_ID": "AKIASENTINELKEYID7Q3",
    "AWS_SECRET_ACCESS_KEY": "SentinelSecretAccessKeyNeverOnDisk0042",
    "AWS_SESSION_TOKEN": "SentinelSessionTokenNeverOnDisk0042",
}


@pytest.fixture
def s3(monkeypatch, tmp_path):
    yield from s3_server(monkeypatch, tmp_path)


@pytest.fixture
def ray_tmp():
    # Ray's socket paths must stay under 108 characters: a short folder, not pytest's tmp_path.
    path = Path(tempfile.mkdtemp(prefix="st-ray-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _tiny_spec(tmp_path: Path, zoo_dir: Path, storage: str) -> Path:
    raw = {
        "name": "secrets",
        "upstream": [
            {
                "name": "dense",
                "arch": "quickstart_cnn",
                "method": "dense",
                "sparsity": 0.0,
                "zoo": "quickstart/dense",
            }
        ],
        "datasets": ["digits_5to9"],
        "modes": ["linear"],
        "seeds": [0],
        "search_space": {
            "linear": {"lr": {"distribution": "loguniform", "low": 0.02, "high": 0.2}, "epochs": 1}
        },
        "search": {"trials_per_cell": 1, "max_concurrent_trials": 1},
        "early_stopping": {"scheduler": "none"},
        "storage": storage,
        "zoo_dir": str(zoo_dir),
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "secrets"},
    }
    path = tmp_path / "secrets.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _holding_a_sentinel(root: Path) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {k}" for k, v in SENTINELS.items() if v.encode() in data]
    return found


@pytest.mark.slow
def test_a_sweep_writes_no_credential_anywhere(s3, zoo_dir, tmp_path, ray_tmp):
    spec = _tiny_spec(tmp_path, zoo_dir, s3.uri("runs"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update(SENTINELS, PYTHONPATH=str(REPO), RAY_TMPDIR=str(ray_tmp))
    log = tmp_path / "sweep.log"
    with open(log, "w") as out:
        done = subprocess.run(
            [sys.executable, "-m", "sparse_transfer.cli", "sweep", str(spec)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    assert done.returncode == 0, log.read_text()[-4000:]
    sessions = list(ray_tmp.glob("ray/session_2*"))
    assert sessions and list(sessions[0].glob("logs/runtime_env_agent*.log")), "no Ray logs"
    # The trials wrote their feature files to S3 (linear cells), so they had the credentials.
    keys = [o["Key"] for p in _pages(s3) for o in p.get("Contents", [])]
    assert [k for k in keys if "/features/" in k and k.endswith(".parquet")], keys
    in_bucket = [
        f"s3://{BUCKET}/{key}: {name}"
        for key in keys
        for name, value in SENTINELS.items()
        if value.encode() in s3.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    ]
    # tmp_path holds the log, the MLflow store and the storage's local mirror (the cache).
    assert in_bucket + _holding_a_sentinel(ray_tmp) + _holding_a_sentinel(tmp_path) == []


def _pages(s3):
    return s3.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)


def test_the_cli_turns_telemetry_off_unless_the_user_turns_it_on(monkeypatch, tmp_path):
    from ray._common.usage.usage_lib import usage_stats_enabled

    from sparse_transfer.cli import app

    spec = tmp_path / "missing.yaml"
    for name in (
        "RAY_USAGE_STATS_ENABLED",
        "MLFLOW_DISABLE_TELEMETRY",
        "SPARSE_TRANSFER_TELEMETRY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/config.json of the machine's user
    assert usage_stats_enabled()  # Ray's own default
    CliRunner().invoke(app, ["validate", str(spec)])
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "0" and not usage_stats_enabled()
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"

    for name in ("RAY_USAGE_STATS_ENABLED", "MLFLOW_DISABLE_TELEMETRY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("SPARSE_TRANSFER_TELEMETRY", "1")
    CliRunner().invoke(app, ["validate", str(spec)])
    assert "RAY_USAGE_STATS_ENABLED" not in os.environ and usage_stats_enabled()
    assert "MLFLOW_DISABLE_TELEMETRY" not in os.environ

    monkeypatch.delenv("SPARSE_TRANSFER_TELEMETRY")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "1")  # the user's own choice is kept
    CliRunner().invoke(app, ["validate", str(spec)])
    assert os.environ["RAY_USAGE_STATS_ENABLED"] == "1"
    assert os.environ["MLFLOW_DISABLE_TELEMETRY"] == "true"
