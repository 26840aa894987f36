"""Mode `prune`: full finetuning that prunes further, with GMP, during transfer."""

from __future__ import annotations

import pytest

from sparse_transfer.models import ARCHS, load_upstream
from sparse_transfer.pruning import prunable_weights, sparsity_report
from sparse_transfer.pruning.gmp import cubic_sparsity
from sparse_transfer.transfer import TransferJob, run_transfer


def _job(zoo_dir, tmp_path, upstream: str, target: float, epochs: int = 6) -> TransferJob:
    return TransferJob(
        zoo_dir / f"quickstart/{upstream}.pt",
        "digits_5to9",
        "prune",
        "search",
        {"lr": 0.02, "epochs": epochs},
        seed=0,
        feature_cache_dir=tmp_path,
        prune_to=target,
    )


def test_prune_mode_follows_the_cubic_ramp_to_the_target(zoo_dir, tmp_path):
    outcomes = list(run_transfer(_job(zoo_dir, tmp_path, "dense", 0.8)))
    ramp = 4  # two thirds of 6 epochs
    expected = [cubic_sparsity(min(e, ramp), ramp, final=0.8, initial=0.0) for e in range(1, 7)]
    seen = [o.metrics["final_sparsity"] for o in outcomes]
    assert seen == pytest.approx(expected, abs=1e-3)
    assert seen[-1] == pytest.approx(0.8, abs=1e-3)
    assert all(b >= a for a, b in zip(seen, seen[1:], strict=False)), "sparsity never drops"


def test_prune_mode_keeps_what_upstream_pruned(zoo_dir, tmp_path):
    upstream = load_upstream(zoo_dir / "quickstart/gmp_70.pt")
    outcomes = list(run_transfer(_job(zoo_dir, tmp_path, "gmp_70", 0.9)))
    assert outcomes[0].metrics["upstream_sparsity"] == pytest.approx(0.7, abs=1e-3)
    # downstream GMP ranks the whole backbone, the first convolution gmp left dense included
    assert outcomes[-1].metrics["final_sparsity"] == pytest.approx(0.9, abs=1e-3)
    state = outcomes[-1].state()["model"]
    for name, mask in upstream.masks.items():
        if not name.startswith(ARCHS.get("quickstart_cnn").classifier + "."):
            assert not state[name][~mask].any(), f"{name}: an upstream-pruned weight revived"


def test_prune_mode_resumes_with_its_current_masks(zoo_dir, tmp_path):
    job = _job(zoo_dir, tmp_path, "dense", 0.8)
    whole = [o.metrics for o in run_transfer(job)]
    first = run_transfer(job)
    for outcome in first:
        if outcome.epoch == 3:
            state = outcome.state()
            break
    rest = [o.metrics for o in run_transfer(job, {k: v for k, v in state.items()})]
    assert [m["epoch"] for m in rest] == [4, 5, 6]
    assert [m["final_sparsity"] for m in rest] == pytest.approx(
        [m["final_sparsity"] for m in whole[3:]]
    )


def test_prune_mode_model_sparsity_is_measured_on_the_backbone(zoo_dir, tmp_path):
    outcomes = list(run_transfer(_job(zoo_dir, tmp_path, "dense", 0.5, epochs=3)))
    model = load_upstream(zoo_dir / "quickstart/dense.pt").build_model()
    model.load_state_dict(
        {k: v for k, v in outcomes[-1].state()["model"].items() if not k.startswith("fc.")},
        strict=False,
    )
    measured = sparsity_report(prunable_weights(model, exclude=("fc",)))[0]
    assert measured == pytest.approx(0.5, abs=1e-3)
