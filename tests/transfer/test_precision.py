"""resources.precision: bf16 autocast on a GPU only when the spec says bf16 (the default);
fp32 never autocasts; the CPU always trains in fp32. The job carries the choice to the
transfer code, and every trial's MLflow run records it as the tag `precision`."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from mlflow import MlflowClient

import sparse_transfer.transfer.full as full_module
import sparse_transfer.transfer.linear as linear_module
from sparse_transfer.sweep.callbacks import MlflowTrials
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


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_every_trial_run_is_tagged_with_its_precision(tmp_path, precision):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recorder = SweepRecorder(uri, "precision", "s1")
    parent = recorder.parent_run({})
    callback = MlflowTrials(recorder, parent, "abc", "search", told=lambda tags: False)
    settings = {
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
        "precision": precision,
    }
    callback.on_trial_start(0, [], SimpleNamespace(trial_id="t1", config={"trial": settings}))
    (run,) = MlflowClient(uri).search_runs([recorder.experiment_id], "tags.trial_id = 't1'")
    assert run.data.tags["precision"] == precision


def test_a_dataset_variant_the_trial_reports_becomes_the_runs_dataset_tag(tmp_path):
    """birdsnap read from the official split: the trial reports `birdsnap:official-split`
    and its run's `dataset` tag says so (the paper's copy keeps the plain name)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    recorder = SweepRecorder(uri, "variant", "s1")
    callback = MlflowTrials(recorder, recorder.parent_run({}), "abc", "final", lambda t: False)
    for trial_id, reported in (("t1", "birdsnap:official-split"), ("t2", "birdsnap")):
        settings = {
            **dict.fromkeys(("method", "arch", "cell", "upstream"), "x"),
            **{"sparsity": 0.9, "dataset": "birdsnap", "mode": "full", "seed": 0},
            **{"phase": "final", "hparams": HP},
        }
        trial = SimpleNamespace(trial_id=trial_id, config={"trial": settings})
        callback.on_trial_start(0, [], trial)
        callback.on_trial_result(
            0, [], trial, {"epoch": 1, "test_top1": 50.0, "dataset": reported}
        )
    runs = MlflowClient(uri).search_runs([recorder.experiment_id])
    tags = {
        r.data.tags["trial_id"]: r.data.tags["dataset"] for r in runs if "trial_id" in r.data.tags
    }
    assert tags == {"t1": "birdsnap:official-split", "t2": "birdsnap"}
