"""The `mlflow:` link a finished sweep prints, opened in a real browser against a real
`mlflow ui`: one row per final run, with test_top1 and the tags it is compared by, no clicks."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess

import pytest
from browser_helpers import chromium, free_port, page_text, screenshot, wait_for

from sparse_transfer import console
from sparse_transfer.tracking import SweepRecorder
from sparse_transfer.tracking.views import final_run_name, save_final_runs_view

pytestmark = pytest.mark.timeout(600)

SWEEP = "views-20261203-120000"
FINALS = {  # (method, sparsity, seed): test_top1
    ("dense", 0.0, 0): 81.25,
    ("dense", 0.0, 1): 81.75,
    ("gmp", 0.9, 0): 79.625,
    ("gmp", 0.9, 1): 79.375,
}


def _sweep_runs(uri: str, outbox) -> None:
    """A parent run, two search runs and four final runs, written as a sweep writes them."""
    recorder = SweepRecorder(uri, "views", SWEEP, outbox)
    parent = recorder.parent_run({"spec": "views"})
    for number in range(2):
        key = f"search-{number}"
        tags = {"phase": "search", "method": "gmp", "sparsity": "0.9", "cell": "c"}
        recorder.open_trial(key, parent, tags, {"lr": 0.01}, run_name=f"search/c/{key}")
        recorder.close_trial(key, "FINISHED", metrics={"val_top1": 12.5 + number})
    for (method, sparsity, seed), top1 in FINALS.items():
        config = {
            "arch": "resnet50",
            "method": method,
            "sparsity": sparsity,
            "dataset": "cifar10",
            "mode": "full",
            "seed": seed,
        }
        tags = {**{k: str(v) for k, v in config.items()}, "phase": "final"}
        key = f"final-{method}-{seed}"
        recorder.open_trial(key, parent, tags, {"lr": 0.01}, run_name=final_run_name(config))
        recorder.close_trial(key, "FINISHED", metrics={"test_top1": top1})
    recorder.close_parent(parent)
    assert recorder.drain(120)


def test_printed_mlflow_link_shows_each_final_run_with_test_top1(tmp_path):
    chromium()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _sweep_runs(uri, tmp_path / "outbox.sqlite")
    lines = console.sweep_hints(uri, save_final_runs_view(uri, "views", SWEEP), None)
    command = shlex.split(lines[0].removeprefix("mlflow:"))
    url = lines[1].split("then open", 1)[1].strip()
    port = str(free_port())
    command[command.index(str(console.MLFLOW_PORT))] = port
    url = url.replace(f":{console.MLFLOW_PORT}/", f":{port}/")
    server = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/health")
        text = page_text(url, wait_ms=30_000, width=2200)
        screenshot(url, tmp_path / "mlflow.png", wait_ms=30_000, size="2200,900")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    print(f"screenshot: {tmp_path / 'mlflow.png'}")
    (tmp_path / "page.txt").write_text(text)
    # every final run is a row of its own, named by what it compares, with its test_top1
    for (method, sparsity, seed), top1 in FINALS.items():
        assert f"{top1:g}" in text, text[-3000:]
        assert f"resnet50 {method} {sparsity * 100:g}% cifar10 full seed {seed}" in text
    for column in ("test_top1", "method", "sparsity", "dataset", "mode", "seed"):
        assert column in text
    assert "search/c/" not in text and SWEEP not in text.split("matching runs")[-1]
