"""Full and linear finetuning from zoo upstreams: masks hold, resume is exact, features cache."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch

import sparse_transfer.transfer.full as full_module
from sparse_transfer.data.features import cache_key, cached_features
from sparse_transfer.models import load_upstream
from sparse_transfer.pruning import SparsityDriftError
from sparse_transfer.transfer import TransferJob, run_transfer
from sparse_transfer.transfer.linear import extract_features

FULL_HP = {"lr": 0.02, "epochs": 2, "batch_size": 64, "weight_decay": 5e-4, "momentum": 0.9}


@pytest.fixture(scope="module")
def gmp_90(zoo_dir):
    return zoo_dir / "quickstart/gmp_90.pt"


def full_job(path, phase="search", **hparams) -> TransferJob:
    return TransferJob(path, "digits_5to9", "full", phase, {**FULL_HP, **hparams}, seed=0)


def backbone_masks(path):
    upstream = load_upstream(path)
    return {n: m for n, m in upstream.masks.items() if not n.startswith("fc.")}, upstream


def backbone_sparsity(masks) -> float:
    """What the upstream pruned outside its classifier: the metadata's `sparsity` also counts
    the classifier (the quickstart policy prunes it), which transfer replaces."""
    return sum(int((~m).sum()) for m in masks.values()) / sum(m.numel() for m in masks.values())


# --- full finetuning ---------------------------------------------------------------------------


def test_full_keeps_pruned_weights_zero_every_epoch(gmp_90):
    masks, upstream = backbone_masks(gmp_90)
    pruned = sum(int((~m).sum()) for m in masks.values())
    assert pruned > 0.85 * sum(m.numel() for m in masks.values()), "the upstream is really sparse"
    outcomes = list(run_transfer(full_job(gmp_90, epochs=3)))
    assert [o.epoch for o in outcomes] == [1, 2, 3]
    assert [o.done for o in outcomes] == [False, False, True]
    for outcome in outcomes:
        state = outcome.state()["model"]
        for name, mask in masks.items():
            assert (state[name][~mask] == 0).all(), f"epoch {outcome.epoch}: {name} revived"
        m = outcome.metrics
        assert m["final_sparsity"] == pytest.approx(backbone_sparsity(masks), abs=1e-9)
        assert m["upstream_sparsity"] == m["final_sparsity"]
        assert 0.0 <= m["val_top1"] <= 100.0
        assert "test_top1" not in m
    # the kept weights did train: finetuning is not a no-op that trivially keeps zeros
    last = outcomes[-1].state()["model"]
    changed = [not torch.equal(last[n], upstream.state_dict[n]) for n in masks]
    assert all(changed)


def test_full_final_phase_scores_test_split(gmp_90):
    outcomes = list(run_transfer(full_job(gmp_90, phase="final", epochs=1)))
    metrics = outcomes[-1].metrics
    assert 0.0 <= metrics["test_top1"] <= 100.0
    assert "test_mean_class_acc" in metrics
    assert "val_top1" not in metrics


def test_full_fails_loudly_when_masks_do_not_hold(gmp_90, monkeypatch):
    original = full_module.train_batches

    def train_without_masks(*args, **kwargs):
        kwargs["masks"] = None  # as if the trainer forgot to keep pruned weights at zero
        return original(*args, **kwargs)

    monkeypatch.setattr(full_module, "train_batches", train_without_masks)
    with pytest.raises(SparsityDriftError, match="the mask did not hold"):
        list(run_transfer(full_job(gmp_90, epochs=1)))


def test_full_refuses_an_upstream_whose_zeros_do_not_match_its_masks(gmp_90, tmp_path):
    payload = torch.load(gmp_90, weights_only=True)
    name = next(n for n, m in payload["masks"].items() if not n.startswith("fc.") and (~m).any())
    payload["state_dict"][name][~payload["masks"][name]] = 0.5
    broken = tmp_path / "broken.pt"
    torch.save(payload, broken)
    with pytest.raises(SparsityDriftError):
        next(iter(run_transfer(full_job(broken, epochs=1))))


def test_resume_matches_an_uninterrupted_run(gmp_90):
    job = full_job(gmp_90, epochs=4)
    uninterrupted = [o.metrics for o in run_transfer(job)]
    again = [o.metrics for o in run_transfer(job)]
    assert again == uninterrupted, "CPU training with a fixed seed is deterministic"

    first_two = run_transfer(job)
    *_, outcome = itertools.islice(first_two, 2)
    assert outcome.epoch == 2
    # state() shares storage with the live model; a checkpoint is a copy
    state = copy.deepcopy(outcome.state())
    del first_two

    resumed = list(run_transfer(job, resume=state))
    assert [o.epoch for o in resumed] == [3, 4]
    assert [o.metrics for o in resumed] == uninterrupted[2:]


# --- linear finetuning -------------------------------------------------------------------------


def linear_job(path, cache_dir, **hparams) -> TransferJob:
    hp = {"lr": 0.1, "epochs": 2, "batch_size": 64, **hparams}
    return TransferJob(
        path, "digits_5to9", "linear", "search", hp, seed=0, feature_cache_dir=cache_dir
    )


def mtimes(cache_dir) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in cache_dir.glob("*.parquet")}


def test_linear_computes_then_reuses_cached_features(gmp_90, zoo_dir, tmp_path):
    cache = tmp_path / "features"
    first = list(run_transfer(linear_job(gmp_90, cache)))
    assert all(o.metrics["feature_cache_hit"] == 0.0 for o in first)
    written = mtimes(cache)
    assert len(written) == 2, "one parquet file per split (train, val)"
    assert not list(cache.glob(".*.tmp")), "no temporary files are left behind"

    second = list(run_transfer(linear_job(gmp_90, cache, lr=0.03, weight_decay=1e-4)))
    assert all(o.metrics["feature_cache_hit"] == 1.0 for o in second)
    assert mtimes(cache) == written
    assert second[-1].metrics["val_top1"] != first[-1].metrics["val_top1"] or (
        second[-1].metrics["train_loss"] != first[-1].metrics["train_loss"]
    ), "a different config trained a different head"

    # the cache holds exactly what a fresh extraction gives, under the documented key
    upstream = load_upstream(gmp_90)
    keys = set()
    for split in ("train", "val"):
        key = cache_key(
            upstream.sha256,
            "digits_5to9",
            split,
            upstream.metadata["preprocessing"],
            precision="fp32-strict",  # what a CPU computes, whatever the spec's precision
            device_type="cpu",
            engine="torch",
        )
        keys.add(f"{key}.parquet")
        x, y, hit = cached_features(cache, key, lambda: pytest.fail("cache missed"))
        fresh_x, fresh_y = extract_features(upstream, linear_job(gmp_90, cache), split)
        assert hit and torch.equal(x, fresh_x) and torch.equal(y, fresh_y), split
    assert keys == set(written)

    # another upstream: its own cache entries, computed afresh
    dense = list(run_transfer(linear_job(zoo_dir / "quickstart/dense.pt", cache)))
    assert dense[-1].metrics["feature_cache_hit"] == 0.0
    assert set(written) < set(mtimes(cache))
    assert len(mtimes(cache)) == 4
    dense_sha = load_upstream(zoo_dir / "quickstart/dense.pt").sha256
    assert dense_sha != upstream.sha256
    preprocessing = upstream.metadata["preprocessing"]
    where = {"precision": "bf16", "device_type": "cuda"}
    assert cache_key(dense_sha, "digits_5to9", "val", preprocessing, **where) != cache_key(
        upstream.sha256, "digits_5to9", "val", preprocessing, **where
    )


def test_linear_reports_backbone_sparsity(gmp_90, tmp_path):
    outcome = list(run_transfer(linear_job(gmp_90, tmp_path, epochs=1)))[-1]
    expected = backbone_sparsity(backbone_masks(gmp_90)[0])
    assert outcome.metrics["final_sparsity"] == pytest.approx(expected, abs=1e-9)
    assert 0.0 <= outcome.metrics["val_top1"] <= 100.0


def test_linear_needs_a_cache_dir(gmp_90):
    with pytest.raises(ValueError, match="feature cache"):
        list(run_transfer(linear_job(gmp_90, None)))


def test_unknown_mode_is_refused(gmp_90):
    job = TransferJob(gmp_90, "digits_5to9", "partial", "search", {}, seed=0)
    with pytest.raises(ValueError, match="valid: full, linear"):
        run_transfer(job)
