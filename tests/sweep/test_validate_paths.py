"""`validate` looks at the files a spec names, in seconds: each dataset's layout under its root
and each upstream's checkpoint file; S3 paths when credentials allow, else it says so."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from dataset_fixtures import BUILDERS
from s3_helpers import s3_server
from sweep_helpers import CLI, REPO
from typer.testing import CliRunner

from sparse_transfer.cli import app
from sparse_transfer.config import load_spec
from sparse_transfer.models.catalog import CATALOG

SPEC = REPO / "sweeps" / "paper_resnet50_full.yaml"
TWO = "datasets=[cifar10,dtd]"
s3 = pytest.fixture(s3_server)


def _validate(*sets: str) -> tuple[int, str, str]:
    args = ["validate", str(SPEC)] + [a for item in sets for a in ("--set", item)]
    done = CliRunner().invoke(app, args)
    return done.exit_code, done.stdout, done.stderr


def _checkpoints(root: Path) -> list[str]:
    names = [CATALOG.get(u.catalog).name for u in load_spec(SPEC).upstream]
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / f"{name}.pth").write_bytes(b"not read by validate")
    return names


def test_missing_local_roots_are_named_with_their_key_and_path():
    started = time.monotonic()
    done = subprocess.run(
        [*CLI, "validate", str(SPEC), "--set", "data_root=/nonexistent"]
        + ["--set", "checkpoint_root=/nonexistent"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert time.monotonic() - started < 60  # seconds, not a dataset scan
    assert done.returncode == 1, done.stdout
    assert ": ok (" not in done.stdout
    assert "error: " in done.stderr
    assert "data_root: /nonexistent/cifar10 does not exist" in done.stderr
    assert "checkpoint_root: /nonexistent/resnet50.dense.pth does not exist" in done.stderr


def test_laid_out_roots_pass_and_a_wrong_layout_is_described(tmp_path):
    data, checkpoints = tmp_path / "data", tmp_path / "ckpt"
    for dataset in ("cifar10", "dtd"):
        BUILDERS[dataset](data / dataset)
    names = _checkpoints(checkpoints)
    sets = (TWO, f"data_root={data}", f"checkpoint_root={checkpoints}")
    code, out, err = _validate(*sets)
    assert code == 0, err
    assert f"{SPEC}: ok (" in out and "not checked" not in out

    (checkpoints / f"{names[3]}.pth").unlink()
    for path in sorted((data / "dtd").rglob("*.txt")):
        path.unlink()
    code, out, err = _validate(*sets)
    assert code == 1
    assert f"checkpoint_root: {checkpoints / names[3]}.pth does not exist" in err
    assert "data_root: dataset 'dtd'" in err and "expected under the root" in err


def test_s3_roots_are_checked_with_credentials(s3, tmp_path):
    BUILDERS["cifar10"](tmp_path / "cifar10")
    s3.upload_tree(tmp_path / "cifar10", "datasets/cifar10")
    names = _checkpoints(tmp_path / "ckpt")
    s3.upload_tree(tmp_path / "ckpt", "ckpt")
    s3.client.delete_object(Bucket="datasets-bucket", Key=f"ckpt/{names[0]}.pth")
    code, out, err = _validate(
        TWO, f"data_root={s3.uri('datasets')}", f"checkpoint_root={s3.uri('ckpt')}"
    )
    assert code == 1
    assert "not checked" not in out
    assert "data_root: s3://datasets-bucket/datasets/dtd" in err and "nothing there" in err
    assert f"checkpoint_root: s3://datasets-bucket/ckpt/{names[0]}.pth" in err
    assert "cifar10" not in err and f"{names[1]}.pth" not in err


def test_s3_roots_without_credentials_are_said_to_be_unchecked(monkeypatch, tmp_path):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    code, out, err = _validate(TWO)
    assert code == 0, err
    assert "not checked (no S3 credentials): data_root s3://my-bucket/datasets" in out
    assert "checkpoint_root s3://my-bucket/sparse-imagenet-checkpoints (20 paths" in out
