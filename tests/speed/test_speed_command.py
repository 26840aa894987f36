"""`sparse-transfer speed` end to end on the quickstart's small CNN with torch and onnxruntime:
speed.csv, checked outputs, speedups, MLflow runs; and bad input (an upstream that cannot be
exported, an engine process that crashes, an exporter that writes no model) named by upstream
and step while the other upstreams' rows are kept."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from mlflow import MlflowClient
from typer.testing import CliRunner

from sparse_transfer.cli import app
from sparse_transfer.models import ARCHS, Arch, UpstreamCheckpoint, save_upstream
from sparse_transfer.models.quickstart_cnn import QuickstartCNN
from sparse_transfer.speed import ENGINES, make_plan
from sparse_transfer.speed.measure import SPEED_COLUMNS, measure_upstream
from sparse_transfer.speed.upstreams import SpeedUpstream

REQUIRED = [
    "upstream",
    "arch",
    "method",
    "sparsity",
    "engine",
    "batch_size",
    "threads",
    "images_per_s",
    "images_per_s_min",
    "images_per_s_max",
    "latency_ms_p50",
    "latency_ms_p95",
    "speedup_vs_dense_same_engine",
    "speedup_vs_onnxruntime_dense",
    "flops_speedup",
    "outputs_match",
]


class SpectralCNN(QuickstartCNN):
    """A model ONNX opset 13 cannot express (an FFT in its forward pass)."""

    def forward(self, x):
        return self.fc(self.features(torch.fft.fft2(x).real))


@pytest.fixture
def spectral_arch(monkeypatch):
    arch = Arch("spectral_cnn", SpectralCNN, "fc", (1, 8, 8), first_conv="features.0")
    monkeypatch.setitem(ARCHS._entries, "spectral_cnn", arch)
    return arch


def _crashing_engine_env(root: Path) -> Path:
    """An engine environment whose process answers the probe, then dies of SIGSEGV."""
    python = root / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(
        f"#!{sys.executable}\n"
        "import json, os, signal, sys\n"
        "request = json.loads(sys.stdin.read())\n"
        "if request.get('probe'):\n"
        "    open(request['answer'], 'w').write('{}')\n"
        "    sys.exit(0)\n"
        "os.kill(os.getpid(), signal.SIGSEGV)\n"
    )
    python.chmod(0o755)
    return root


def test_speed_command_end_to_end(zoo_dir, tmp_path, spectral_arch, monkeypatch):
    broken = tmp_path / "spectral.pt"
    save_upstream(broken, UpstreamCheckpoint("spectral_cnn", 5, SpectralCNN(5).state_dict(), {}))
    monkeypatch.setenv("SPARSE_TRANSFER_SPEED_ENV", str(_crashing_engine_env(tmp_path / "env")))
    entries = [("dense", "dense", 0.0), ("gmp_90", "gmp", 0.9)]
    spec = {
        "name": "speed-small",
        "upstream": [
            *(
                {
                    "name": n,
                    "arch": "quickstart_cnn",
                    "method": m,
                    "sparsity": s,
                    "zoo": f"quickstart/{n}",
                }
                for n, m, s in entries
            ),
            {
                "name": "spectral",
                "arch": "spectral_cnn",
                "method": "dense",
                "sparsity": 0.0,
                "checkpoint": str(broken),
            },
        ],
        "datasets": ["digits_5to9"],
        "modes": ["linear"],
        "seeds": [0],
        "search_space": {"linear": {"lr": 0.1, "epochs": 1}},
        "storage": str(tmp_path / "runs"),
        "zoo_dir": str(zoo_dir),
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    out = tmp_path / "speed"
    args = [
        "speed",
        str(spec_file),
        "--out",
        str(out),
        "--engines",
        "torch,onnxruntime",
        "--engines",
        "deepsparse",
        "--batch-size",
        "16",
        "--repeats",
        "3",
        "--warmup",
        "1",
        "--threads",
        "1",
    ]
    done = CliRunner().invoke(app, args)
    assert done.exit_code == 1, done.output  # failures are reported, not hidden
    table = pd.read_csv(out / "speed.csv")
    assert set(REQUIRED) <= set(table.columns) and list(table.columns) == SPEED_COLUMNS

    ok = table[table["status"] == "ok"]
    assert set(zip(ok["upstream"], ok["engine"], ok["batch_size"], strict=True)) == {
        (n, e, b) for n, *_ in entries for e in ("torch", "onnxruntime") for b in (16, 1)
    }
    assert ok["outputs_match"].all() and (ok["max_abs_logit_diff"] < 1e-3).all()
    assert (ok["images_per_s_min"] <= ok["images_per_s"]).all()
    assert (ok["images_per_s"] <= ok["images_per_s_max"]).all()
    assert (ok["latency_ms_p50"] <= ok["latency_ms_p95"]).all() and (ok["threads"] == 1).all()
    assert ok["speedup_vs_dense_same_engine"].notna().all()
    assert ok["speedup_vs_onnxruntime_dense"].notna().all()
    dense = ok[ok["upstream"] == "dense"]
    assert (dense["speedup_vs_dense_same_engine"] == 1.0).all()
    assert (ok.loc[ok["upstream"] == "gmp_90", "flops_speedup"] > 5).all()
    assert ok["cpu"].str.len().gt(0).all() and ok["weights_sha256"].str.len().eq(64).all()

    crashed = table[(table["engine"] == "deepsparse") & (table["upstream"] != "spectral")]
    assert len(crashed) == 2 and (crashed["status"] == "failed").all()
    assert not crashed["outputs_match"].any()
    assert crashed["error"].str.contains("step 'deepsparse run'").all()
    assert "upstream 'gmp_90', step 'deepsparse run'" in done.output
    assert "exit code -11" in done.output  # SIGSEGV, as the engine process died

    spectral = table[table["upstream"] == "spectral"]
    assert (spectral["status"] == "failed").all() and len(spectral) == 3
    assert spectral["error"].str.contains("upstream 'spectral', step 'export'").all()

    meta = json.loads((out / "speed.json").read_text())
    assert meta["logit_atol"] == 1e-3 and meta["cpu_flags"] == ok["cpu_flags"].iloc[0]
    client = MlflowClient(spec["tracking"]["uri"])
    experiment = client.get_experiment_by_name("speed-speed-small")
    runs = client.search_runs([experiment.experiment_id], "tags.role = 'speed'")
    measured = [r for r in runs if r.data.tags.get("engine")]
    assert len(measured) == len(table)
    one = next(r for r in measured if r.data.tags["status"] == "ok")
    for tag in ("upstream", "method", "sparsity", "engine", "batch_size", "threads", "cpu"):
        assert one.data.tags[tag], tag
    assert one.data.metrics["images_per_s"] > 0


def test_an_exporter_that_writes_no_model_is_named_with_upstream_and_step(
    zoo_dir, tmp_path, monkeypatch
):
    def garbage(model, args, path, **kwargs):
        Path(path).write_bytes(b"\x00not a model")

    monkeypatch.setattr(torch.onnx, "export", garbage)
    upstream = SpeedUpstream(
        "dense", "quickstart_cnn", "dense", 0.0, "zoo", zoo_dir / "quickstart" / "dense.pt"
    )
    plan = make_plan(4, 1, warmup=0, repeats=1)
    rows = measure_upstream(upstream, ["onnxruntime"], plan, tmp_path, log=lambda _: None)
    assert [r["status"] for r in rows] == ["failed"]
    assert "upstream 'dense', step 'export'" in rows[0]["error"]
    assert "is not a valid ONNX model" in rows[0]["error"]


def test_a_missing_engine_environment_is_unavailable_with_the_command_to_build_it(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("SPARSE_TRANSFER_SPEED_ENV", str(tmp_path / "nothing"))
    why = ENGINES.get("deepsparse").unavailable()
    assert "make speed-env" in why and str(tmp_path / "nothing") in why


def test_an_unknown_engine_is_refused_with_the_known_ones(tmp_path):
    done = CliRunner().invoke(app, ["speed", os.devnull, "--engines", "tensorrt"])
    assert done.exit_code == 2
    assert "unknown speed engine 'tensorrt'" in done.output and "deepsparse" in done.output
