"""`sparse-transfer zoo build`: entries built as Ray tasks, logged to MLflow, reused."""

from __future__ import annotations

import json

import pytest
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from sparse_transfer.cli import app
from sparse_transfer.models import load_upstream

pytestmark = pytest.mark.slow


def test_zoo_build_logs_entries_and_reuses_them(ray_runtime, tmp_path):
    spec = {
        "name": "tiny",
        "arch": "quickstart_cnn",
        "dataset": "digits_0to4",
        "pretrain_epochs": 2,
        "prune_epochs": 2,
        "entries": [
            {"method": "dense", "sparsity": 0.0},
            {"method": "rigl", "sparsity": 0.8, "params": {"update_interval": 5}},
            {"method": "magnitude", "sparsity": 0.8},
        ],
        "storage": str(tmp_path / "runs"),
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "zoo"},
    }
    path = tmp_path / "zoo_tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    first = CliRunner().invoke(app, ["zoo", "build", str(path)])
    assert first.exit_code == 0, first.output

    zoo = tmp_path / "runs" / "zoo" / "tiny"
    for entry, target in (("dense", 0.0), ("rigl_80", 0.8), ("magnitude_80", 0.8)):
        meta = json.loads((zoo / f"{entry}.json").read_text())
        assert abs(meta["sparsity"] - target) < 1e-3
        assert meta["sha256"] == load_upstream(zoo / f"{entry}.pt").sha256
        if target:
            assert meta["sparse_flops"] < meta["dense_flops"]
        else:
            assert meta["sparse_flops"] == meta["dense_flops"]
    assert json.loads((zoo / "rigl_80.json").read_text())["params"] == {"update_interval": 5}

    client = MlflowClient(spec["tracking"]["uri"])
    experiment = client.get_experiment_by_name("zoo")
    runs = client.search_runs([experiment.experiment_id], "tags.stage = 'upstream'")
    children = [r for r in runs if r.data.tags.get("role") != "zoo"]
    assert sorted((r.data.tags["method"], r.data.tags["sparsity"]) for r in children) == [
        ("dense", "0.0"),
        ("magnitude", "0.8"),
        ("rigl", "0.8"),
    ]
    assert all(r.data.tags["arch"] == "quickstart_cnn" for r in children)

    mtime = (zoo / "rigl_80.pt").stat().st_mtime_ns
    second = CliRunner().invoke(app, ["zoo", "build", str(path)])
    assert second.exit_code == 0, second.output
    assert "nothing built" in second.output
    assert (zoo / "rigl_80.pt").stat().st_mtime_ns == mtime


def test_zoo_spec_errors_name_the_key(tmp_path):
    path = tmp_path / "zoo_bad.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "bad",
                "arch": "quickstart_cnn",
                "dataset": "digits_0to4",
                "pretrain_epochs": 1,
                "prune_epochs": 1,
                "entries": [
                    {"method": "rigl", "sparsity": 0.8, "params": {"no_such": 1}},
                    {"method": "prune_harder", "sparsity": 0.8},
                ],
            }
        )
    )
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1
    assert "entries[0]" in result.output and "no_such" in result.output
    assert "entries[1]" in result.output and "prune_harder" in result.output


@pytest.mark.parametrize("prune_classifier", [False, True])
def test_a_zoo_spec_overrides_the_methods_policy(tmp_path, prune_classifier):
    """magnitude keeps the classifier dense by default; an entry's policy prunes it, and the
    metadata records the policy the entry was built with."""
    from sparse_transfer.config.zoo_spec import ZooSpec
    from sparse_transfer.zoo import build_zoo

    spec = ZooSpec.model_validate(
        {
            "name": "clf",
            "arch": "quickstart_cnn",
            "dataset": "digits_0to4",
            "pretrain_epochs": 1,
            "prune_epochs": 1,
            "entries": [
                {
                    "method": "magnitude",
                    "sparsity": 0.8,
                    **({"policy": {"prune_classifier": True}} if prune_classifier else {}),
                }
            ],
        }
    )
    (meta,) = build_zoo(spec, tmp_path, log=lambda _: None)
    upstream = load_upstream(tmp_path / "clf" / "magnitude_80.pt")
    assert ("fc.weight" in upstream.masks) is prune_classifier
    assert bool((upstream.state_dict["fc.weight"] == 0).any()) is prune_classifier
    assert ("fc.weight" in meta["per_layer_sparsity"]) is prune_classifier
    assert abs(meta["sparsity"] - 0.8) < 1e-3
    assert meta["policy"] == {
        "prune_first_conv": True,
        "prune_classifier": prune_classifier,
        "distribution": "global",
    }
