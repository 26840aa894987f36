"""DeepSparse for real, in its own environment (`make speed-env`; `.ci/run` builds it): the
sparse engine's outputs are checked against torch's, a 95%-sparse ResNet runs faster than its
dense self, and linear features extracted through it match torch's. Under CI=true a missing
environment fails these tests instead of skipping them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from sparse_transfer import metrics as M
from sparse_transfer.models import load_upstream
from sparse_transfer.speed import ENGINES, make_plan, run_speed
from sparse_transfer.speed.engine_runner import compare_outputs
from sparse_transfer.transfer.job import TransferJob
from sparse_transfer.transfer.linear import extract_features, finetune_linear

ZOO = """
name: small_resnet
arch: resnet18
weights: random
num_classes: 100
entries:
  - {method: dense, sparsity: 0.0}
  - {method: magnitude, sparsity: 0.95, policy: {distribution: uniform, prune_first_conv: false}}
storage: STORAGE
"""


@pytest.fixture(autouse=True)
def speed_env():
    why = ENGINES.get("deepsparse").unavailable()
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI runs the DeepSparse engine for real (.ci/run builds it): {why}")
        pytest.skip(why)


@pytest.mark.serial
def test_deepsparse_is_checked_and_a_95_percent_resnet_is_faster_than_dense(tmp_path):
    spec = tmp_path / "zoo_small_resnet.yaml"
    spec.write_text(ZOO.replace("STORAGE", str(tmp_path / "runs")))
    plan = make_plan(8, len(os.sched_getaffinity(0)), warmup=1, repeats=3, latency=False)
    result = run_speed(
        spec,
        tmp_path / "speed",
        engines=["deepsparse"],
        plan=plan,
        overrides=[f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"],
        log=lambda _: None,
    )
    table = result.table
    assert (table["status"] == "ok").all(), result.problems
    assert table["outputs_match"].all()
    sparse = table[table["method"] == "magnitude"].iloc[0]
    assert sparse["speedup_vs_dense_same_engine"] > 1.0, table.to_string()
    assert sparse["flops_speedup"] > 5  # the dense first convolution and classifier cap it


def test_linear_features_through_deepsparse_match_torchs_and_are_cached_apart(zoo_dir, tmp_path):
    upstream_path = Path(zoo_dir) / "quickstart" / "gmp_90.pt"

    def job(engine: str) -> TransferJob:
        return TransferJob(
            upstream_path=upstream_path,
            dataset="digits_5to9",
            mode="linear",
            phase="final",
            hparams={"epochs": 1, "lr": 0.1},
            seed=0,
            feature_cache_dir=tmp_path / "features",
            feature_engine=engine,
        )

    upstream = load_upstream(upstream_path)
    torch_x, torch_y = extract_features(upstream, job("torch"), "test")
    sparse_x, sparse_y = extract_features(upstream, job("deepsparse"), "test")
    assert torch.equal(torch_y, sparse_y)
    agreement = compare_outputs(torch_x.numpy(), sparse_x.numpy())
    assert agreement["max_abs_logit_diff"] <= 1e-3 + 1e-3 * float(torch_x.abs().max())

    first = next(finetune_linear(job("torch")))
    other = next(finetune_linear(job("deepsparse")))
    assert first.metrics[M.FEATURE_CACHE_HIT] == 0.0
    assert other.metrics[M.FEATURE_CACHE_HIT] == 0.0  # the engine is in the key
    assert len(list((tmp_path / "features").glob("*.parquet"))) == 4
