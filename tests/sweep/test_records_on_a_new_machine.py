"""A trial in flight when its driver is lost goes on under a driver on another machine: the
epochs it reported before the crash are in the ledger (on shared storage), but their MLflow
records were queued on the lost machine's disk. The new driver queues them again from the
ledger, so the trial's run in MLflow holds every epoch the ledger holds.

Found by tests/sweep/test_s3_double_kill.py, which failed now and then: a trial's
`val_top1` history lacked the epoch reported just before a kill."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from ledger_helpers import bare_search
from mlflow import MlflowClient

from sparse_transfer.config.space import LogUniform
from sparse_transfer.sweep.cells import Cell
from sparse_transfer.sweep.plans import SEARCH

EPOCHS = 5


@pytest.fixture(autouse=True)
def _quiet():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _search(root: Path, **settings):
    cell = Cell("dense", "digits_5to9", "linear", "quickstart_cnn", "dense", 0.0, "x")
    space = {"lr": LogUniform(distribution="loguniform", low=0.001, high=0.2), "epochs": EPOCHS}
    return bare_search(root, [cell], space, **settings)


def test_a_trial_continued_on_a_new_machine_keeps_its_earlier_epochs_in_mlflow(tmp_path):
    # The first driver: its MLflow records never leave its disk (record=False), the ledger
    # keeps the two epochs its trial reported, then the driver is gone.
    first = _search(tmp_path, record=False)
    assert first.suggest("t0") not in (None, "FINISHED")
    for epoch in (1, 2):
        first.record("t0", {"epoch": epoch, "val_top1": 10.0 * epoch})
    first.ledger.close()

    # The new driver, on another machine (a new outbox), continues the trial from epoch 3.
    second = _search(tmp_path, outbox="outbox-of-another-machine")
    config = second.suggest("t1")
    assert config not in (None, "FINISHED"), "the trial in flight was not handed out again"
    result = {}
    for epoch in range(3, EPOCHS + 1):
        result = {"epoch": epoch, "val_top1": 10.0 * epoch}
        second.record("t1", result)
    second.on_trial_complete("t1", result)
    (plan,) = second.plans
    (trial,) = second.studies.trials(plan, SEARCH)
    assert trial.state.name == "COMPLETE"
    assert second.events.recorder.drain(timeout=60)

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("e").experiment_id
    (run,) = client.search_runs([experiment], f"tags.trial_id = '{config['trial']['key']}'")
    history = client.get_metric_history(run.info.run_id, "val_top1")
    assert {m.step: m.value for m in history} == trial.intermediate_values
    epochs = client.get_metric_history(run.info.run_id, "epoch")
    assert sorted(m.step for m in epochs) == list(range(1, EPOCHS + 1))
