"""A final run's MLflow record closed from the ledger alone (its epochs' records lost in a
crash) still carries its test scores."""

from __future__ import annotations

from mlflow import MlflowClient

from sparse_transfer.storage import Storage
from sparse_transfer.sweep.events import TrialEvents
from sparse_transfer.sweep.ledger import Ledger
from sparse_transfer.tracking import SweepRecorder


def test_a_final_run_closed_from_the_ledger_records_its_test_score(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recorder = SweepRecorder(uri, "e", "s", tmp_path / "outbox")
    ledger = Ledger(tmp_path, None, (), "s")
    events = TrialEvents(
        recorder,
        ledger,
        parent_run_id=recorder.parent_run({}),
        commit="",
        store=Storage(str(tmp_path / "store")),
        sweep_id="s",
        totals={"final": 1},
        metric="val_top1",
    )
    config = {
        "method": "gmp",
        "sparsity": 0.9,
        "arch": "a",
        "dataset": "d",
        "mode": "linear",
        "cell": "u/d/linear",
        "seed": 0,
        "phase": "final",
        "upstream": "u",
        "hparams": {"epochs": 4, "lr": 0.1},
    }
    events.started("c0000-final-00000", config)
    outcome = {"epoch": 4, "test_top1": 71.5, "test_mean_class_acc": 70.0}
    events.told("c0000-final-00000", "final", "COMPLETE", outcome, quiet=True)
    assert recorder.drain(timeout=120)
    (run,) = [
        r
        for r in MlflowClient(uri).search_runs(
            [recorder.experiment_id], "tags.trial_id = 'c0000-final-00000'"
        )
    ]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_top1"] == 71.5
    ledger.close()
