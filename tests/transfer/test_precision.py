"""resources.precision: bf16 autocast on a GPU only when the spec says bf16 (the default);
fp32 never autocasts; the CPU always trains in fp32. The job carries the choice to the
transfer code, and every trial's MLflow run records it as the tag `precision`."""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient

import sparse_transfer.transfer.full as full_module
import sparse_transfer.transfer.linear as linear_module
from sparse_transfer.storage import Storage
from sparse_transfer.sweep.events import TrialEvents
from sparse_transfer.sweep.ledger import Ledger
from sparse_transfer.tracking import SweepRecorder
from sparse_transfer.transfer import TransferJob, run_transfer
from sparse_transfer.transfer.loop import autocast_dtype

HP = {"lr": 0.02, "epochs": 1, "batch_size": 64}
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def test_autocast_only_for_bf16_on_a_gpu():
    assert autocast_dtype(CUDA, "bf16") is torch.bfloat16
    assert autocast_dtype(CUDA, "fp32") is None
    assert autocast_dtype(CPU, "bf16") is None and autocast_dtype(CPU, "fp32") is None
    assert autocast_dtype(CUDA) is torch.bfloat16  # the default keeps today's behaviour
    with pytest.raises(ValueError, match="fp16"):
        autocast_dtype(CUDA, "fp16")


@pytest.mark.parametrize("mode", ["full", "linear"])
@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_the_job_asks_for_its_precision(zoo_dir, tmp_path, monkeypatch, mode, precision):
    """The transfer code asks `autocast_dtype` with the job's precision (observed on the real
    function), so on a GPU an fp32 job never autocasts."""
    seen = []
    module = full_module if mode == "full" else linear_module

    def observed(device, precision="bf16"):
        seen.append(precision)
        return autocast_dtype(device, precision)

    monkeypatch.setattr(module, "autocast_dtype", observed)
    job = TransferJob(
        zoo_dir / "quickstart/gmp_90.pt",
        "digits_5to9",
        mode,
        "search",
        HP,
        seed=0,
        feature_cache_dir=tmp_path / "features",
        precision=precision,
    )
    list(run_transfer(job))
    assert seen and set(seen) == {precision}


def _events(tmp_path, uri: str, experiment: str) -> TrialEvents:
    recorder = SweepRecorder(uri, experiment, "s1")
    return TrialEvents(
        recorder,
        Ledger(tmp_path, None, (), "s1"),
        parent_run_id=recorder.parent_run({}),
        commit="abc",
        store=Storage(str(tmp_path / "store")),
        sweep_id="s1",
        totals={"search": 1, "final": 2},
        metric="val_top1",
    )


def _settings(**changes) -> dict:
    return {
        "method": "gmp",
        "sparsity": 0.9,
        "arch": "quickstart_cnn",
        "dataset": "digits_5to9",
        "mode": "full",
        "cell": "gmp_90/digits_5to9/full",
        "seed": 0,
        "phase": "search",
        "upstream": "gmp_90",
        "hparams": HP,
        **changes,
    }


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_every_trial_run_is_tagged_with_its_precision(tmp_path, precision):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    events = _events(tmp_path, uri, "precision")
    events.started("t1", _settings(precision=precision))
    events.recorder.drain()  # records go through the outbox
    (run,) = MlflowClient(uri).search_runs([events.recorder.experiment_id], "tags.trial_id = 't1'")
    assert run.data.tags["precision"] == precision


def test_a_dataset_variant_the_trial_reports_becomes_the_runs_dataset_tag(tmp_path):
    """birdsnap read from the official split: the trial reports `birdsnap:official-split`
    and its run's `dataset` tag says so (the paper's copy keeps the plain name)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    events = _events(tmp_path, uri, "variant")
    for key, reported in (("t1", "birdsnap:official-split"), ("t2", "birdsnap")):
        events.started(key, _settings(dataset="birdsnap", phase="final", cell="x/birdsnap/full"))
        outcome = {"epoch": 1, "test_top1": 50.0, "dataset": reported}
        events.told(key, "final", "COMPLETE", outcome)
    events.recorder.drain()
    runs = MlflowClient(uri).search_runs([events.recorder.experiment_id])
    tags = {
        r.data.tags["trial_id"]: r.data.tags["dataset"] for r in runs if "trial_id" in r.data.tags
    }
    assert tags == {"t1": "birdsnap:official-split", "t2": "birdsnap"}
