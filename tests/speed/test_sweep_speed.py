"""A sweep's own report joins the speed table of its spec only when it was measured on the
sweep's upstream files; another table is not joined, and the report says why."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from sparse_transfer.cli import app
from sparse_transfer.config import dump_spec, load_spec
from sparse_transfer.config.zoo_spec import ZooSpec
from sparse_transfer.speed.measure import add_speedups
from sparse_transfer.speed.weights import default_speed_dir, sweep_speed
from sparse_transfer.zoo import build_zoo, entry_path

ENTRIES = [("dense", 0.0), ("magnitude", 0.9)]


def _sweep(tmp_path):
    zoo = ZooSpec(
        name="tiny",
        arch="quickstart_cnn",
        weights="random",
        num_classes=5,
        entries=[{"method": m, "sparsity": s} for m, s in ENTRIES],
    )
    built = {m["method"]: m for m in build_zoo(zoo, tmp_path / "zoo", log=lambda _: None)}
    raw = {
        "name": "tiny",
        "upstream": [
            {
                "name": m,
                "arch": "quickstart_cnn",
                "method": m,
                "sparsity": s,
                "checkpoint": str(entry_path(tmp_path / "zoo", f"tiny/{zoo.entries[i].entry}")),
            }
            for i, (m, s) in enumerate(ENTRIES)
        ],
        "datasets": ["digits_5to9"],
        "modes": ["linear"],
        "seeds": [0],
        "search_space": {"linear": {"lr": 0.1, "epochs": 1}},
        "storage": str(tmp_path / "runs"),
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    spec = load_spec(tmp_path / "spec.yaml")
    sweep_dir = tmp_path / "runs" / "sweeps" / "tiny-1"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "spec.resolved.yaml").write_text(dump_spec(spec))
    cells = [
        {
            "upstream": u.name,
            "dataset": "digits_5to9",
            "mode": "linear",
            "arch": u.arch,
            "method": u.method,
            "sparsity": u.sparsity,
            "upstream_path": u.checkpoint,
        }
        for u in spec.upstream
    ]
    (sweep_dir / "cells.json").write_text(json.dumps(cells))
    return SimpleNamespace(sweep_dir=sweep_dir), built


def _speed_table(tmp_path, sha_of):
    rows = [
        {
            "upstream": m,
            "arch": "quickstart_cnn",
            "method": m,
            "sparsity": s,
            "engine": "onnxruntime",
            "batch_size": 64,
            "images_per_s": 100.0 / (1 - s),
            "flops_speedup": 1 / (1 - s),
            "status": "ok",
            "weights": "trained",
            "weights_sha256": sha_of(m),
            "source": f"zoo:tiny/{m}",
        }
        for m, s in ENTRIES
    ]
    folder = default_speed_dir(str(tmp_path / "runs"), "tiny")
    folder.mkdir(parents=True, exist_ok=True)
    add_speedups(pd.DataFrame(rows)).to_csv(folder / "speed.csv", index=False)


def test_a_sweep_joins_its_own_upstreams_speed(tmp_path):
    state, built = _sweep(tmp_path)
    assert sweep_speed(state) == {}  # no speed table: nothing to join
    _speed_table(tmp_path, lambda method: built[method]["sha256"])
    found = sweep_speed(state)
    speed = found["speed"].set_index("method")
    assert abs(speed.loc["magnitude", "speedup"] - 10.0) < 1e-9
    assert "same sha256" in found["speed_note"]


def test_speed_of_other_weights_is_not_joined_and_the_report_says_why(tmp_path):
    state, _ = _sweep(tmp_path)
    _speed_table(tmp_path, lambda method: "0" * 64)
    found = sweep_speed(state)
    assert found["speed"].empty
    assert found["speed_note"].startswith("Not joined:") and "never joined" in found["speed_note"]


def test_a_sweep_refuses_speed_only_random_weights_before_any_trial(tmp_path):
    """The speed demonstration's weights are random: `sparse-transfer speed` times them, a
    sweep refuses them by name (built or not), and a report over them does not break."""
    from sparse_transfer.analysis.study import _zoo_accuracies
    from sparse_transfer.storage import Storage
    from sparse_transfer.sweep.upstream import PreflightError, resolve_upstreams

    handle, _ = _sweep(tmp_path)
    spec = load_spec(handle.sweep_dir / "spec.resolved.yaml")
    store = Storage(str(tmp_path / "runs"))
    with pytest.raises(PreflightError, match=r"upstream\[0\] \(dense\):.*random weights"):
        resolve_upstreams(spec, store, log=lambda _: None)
    assert set(resolve_upstreams(spec, store, log=lambda _: None, speed_only=True)) == {
        "dense",
        "magnitude",
    }
    # a random entry has no upstream accuracy; the report's join skips it
    assert (
        _zoo_accuracies({"upstream": [{"zoo": "tiny/dense"}], "zoo_dir": str(tmp_path / "zoo")})
        == {}
    )

    # the shipped demonstration, not built in this storage: refused, naming the zoo spec
    done = CliRunner().invoke(
        app,
        ["sweep", "sweeps/speed_demo.yaml", "--dry-run", "--set", f"storage={tmp_path / 'new'}"],
    )
    assert done.exit_code == 2, done.output
    assert "zoo_speed_demo_resnet50.yaml builds random weights for speed only" in done.output
    assert "Traceback" not in done.output
    assert not (tmp_path / "new" / "sweeps").exists()
