"""The printed optuna-dashboard command opens a snapshot: the dashboard's delete button cannot
reach the ledger, the search studies have their objective named, the final studies are not
offered as studies to pick a best trial from."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import urllib.request

import optuna
import pytest
from browser_helpers import chromium, free_port, page_text, wait_for

from sparse_transfer import console
from sparse_transfer.sweep.ledger import LEDGER_FILE, Ledger
from sparse_transfer.sweep.snapshot import SNAPSHOT_FILE, write_dashboard_snapshot

pytestmark = pytest.mark.timeout(600)


def _ledger(sweep_dir):
    """Two cells' search and final studies, as a sweep leaves them."""
    ledger = Ledger(sweep_dir, None, (), "snap-1")
    for cell in ("gmp-90/cifar10/full", "dense/cifar10/full"):
        search = ledger.study(cell)
        for lr in (0.01, 0.1):
            trial = search.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1, log=True)})
            search.tell(trial, 70 + lr * 10)
        final = ledger.study(cell, final=True)
        for seed in (0, 1):
            trial = final.ask()
            trial.set_user_attr("seed", seed)
            final.tell(trial, 80.0 + seed)
    ledger.close()
    return sweep_dir / LEDGER_FILE


def test_snapshot_holds_the_search_studies_with_their_objective_named(tmp_path):
    ledger = _ledger(tmp_path)
    before = ledger.read_bytes()
    snapshot = write_dashboard_snapshot(ledger, tmp_path / SNAPSHOT_FILE, "val_top1")
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(snapshot))
    )
    studies = {s.study_name: s for s in optuna.get_all_study_summaries(storage)}
    assert sorted(studies) == ["snap-1/dense/cifar10/full", "snap-1/gmp-90/cifar10/full"]
    for name in studies:
        study = optuna.load_study(study_name=name, storage=storage)
        assert study.metric_names == ["val_top1"]
        assert len(study.trials) == 2 and "lr" in study.best_trial.params
    assert ledger.read_bytes() == before  # reading it wrote nothing


def test_the_dashboards_delete_button_cannot_reach_the_ledger(tmp_path):
    ledger = _ledger(tmp_path)
    before = ledger.read_bytes()
    snapshot = write_dashboard_snapshot(ledger, tmp_path / SNAPSHOT_FILE, "val_top1")
    (hint,) = [
        line for line in console.sweep_hints("sqlite:///x.db", None, snapshot) if "optuna:" in line
    ]
    command = shlex.split(hint.removeprefix("optuna:"))
    assert str(snapshot.resolve()) in command and str(ledger.resolve()) not in command
    port = str(free_port())
    command[command.index(str(console.DASHBOARD_PORT))] = port
    server = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        studies = json.loads(wait_for(f"{base}/api/studies"))["study_summaries"]
        assert len(studies) == 2
        study_id = studies[0]["study_id"]
        if chromium_available():
            text = page_text(f"{base}/dashboard/studies/{study_id}", wait_ms=20_000)
            assert "val_top1" in text, text[-2000:]
            assert "Objective 0" not in text
        request = urllib.request.Request(f"{base}/api/studies/{study_id}", method="DELETE")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status in (200, 204)
        left = json.loads(wait_for(f"{base}/api/studies"))["study_summaries"]
        assert len(left) == 1  # the snapshot lost a study
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    assert ledger.read_bytes() == before  # the ledger did not


def chromium_available() -> bool:
    chromium()  # skips (or fails on CI) without a browser
    return True
