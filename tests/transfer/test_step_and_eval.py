"""The training step without waste (masks prepared once, foreach multiplies, compile), the
precision a spec names, and evaluation only where a result is read."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sparse_transfer.data.features import cache_key
from sparse_transfer.pruning import MaskedParameters, global_magnitude_masks, prunable_weights
from sparse_transfer.transfer import TransferJob, run_transfer
from sparse_transfer.transfer.loop import (
    configure_device,
    effective_precision,
    make_optimizer,
    train_step,
)

HP = {"lr": 0.02, "epochs": 3, "batch_size": 64, "weight_decay": 5e-4, "momentum": 0.9}


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4)
    )


def masked(model: nn.Module, grads: bool = True):
    masks = global_magnitude_masks(prunable_weights(model), 0.9)
    return masks, MaskedParameters(model, masks, grads=grads)


def test_masks_are_prepared_once_in_the_parameters_dtype():
    model = tiny_model().double()
    masks, prepared = masked(model)
    assert all(f.dtype == torch.float64 for f in prepared.factors)
    assert [f.bool().tolist() for f in prepared.factors] == [m.tolist() for m in masks.values()]


def test_applying_prepared_masks_allocates_nothing():
    model = tiny_model()
    _, prepared = masked(model)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    pointers = [p.data_ptr() for p in model.parameters()]
    with torch.profiler.profile(profile_memory=True) as profile:
        prepared.zero_grads()
        prepared.zero_weights()
    names = {e.name for e in profile.events()}
    assert not names & {"aten::to", "aten::_to_copy", "aten::empty", "aten::empty_strided"}
    assert sum(1 for e in profile.events() if e.name == "aten::_foreach_mul_") == 2
    assert [p.data_ptr() for p in model.parameters()] == pointers


def test_transfer_masks_apply_with_one_foreach_multiply_per_step():
    model = tiny_model()
    _, prepared = masked(model, grads=False)
    optimizer = make_optimizer(model.parameters(), HP)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    train_step(model, x, y, optimizer, masks=prepared)
    with torch.profiler.profile() as profile:
        train_step(model, x, y, optimizer, masks=prepared)
    assert sum(1 for e in profile.events() if e.name == "aten::_foreach_mul_") == 1


@pytest.mark.parametrize("nesterov", [False, True])
def test_zeroing_the_weights_alone_trains_the_kept_weights_bit_for_bit_alike(nesterov):
    """Why one multiply is enough when masks never regrow: SGD is elementwise, so masking the
    gradients too changes nothing the model keeps."""
    states = []
    for grads in (True, False):
        model = tiny_model()
        masks, prepared = masked(model, grads=grads)
        prepared.zero_weights()
        optimizer = torch.optim.SGD(
            model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=nesterov
        )
        generator = torch.Generator().manual_seed(2)
        for _ in range(5):
            x = torch.randn(16, 3, 8, 8, generator=generator)
            y = torch.randint(0, 4, (16,), generator=generator)
            train_step(model, x, y, optimizer, masks=prepared)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name


def test_pruned_weights_stay_zero_through_steps_with_momentum_and_decay():
    model = tiny_model()
    masks, prepared = masked(model)
    prepared.zero_weights()
    optimizer = make_optimizer(model.parameters(), HP)
    x, y = torch.randn(16, 3, 8, 8), torch.randint(0, 4, (16,))
    for _ in range(3):
        train_step(model, x, y, optimizer, masks=prepared)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert (params[name][~mask] == 0).all()
        assert (params[name][mask] != 0).all()


def test_compiled_step_trains_like_the_eager_one():
    """resources.compile: torch.compile on the CPU (inductor), masks still held."""
    results = []
    for compiled in (False, True):
        model = tiny_model()
        masks, prepared = masked(model)
        prepared.zero_weights()
        optimizer = make_optimizer(model.parameters(), HP)
        forward = torch.compile(model) if compiled else model
        x, y = (
            torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(1)),
            torch.arange(16) % 4,
        )
        losses = [float(train_step(forward, x, y, optimizer, masks=prepared)) for _ in range(2)]
        results.append(losses)
        params = dict(model.named_parameters())
        assert all((params[n][~m] == 0).all() for n, m in masks.items())
    assert results[0] == pytest.approx(results[1], rel=1e-4)


def test_compile_reaches_full_finetuning(zoo_dir, monkeypatch):
    import sparse_transfer.transfer.full as full_module

    compiled = []
    monkeypatch.setattr(full_module.torch, "compile", lambda m: compiled.append(m) or m)
    job = TransferJob(
        zoo_dir / "quickstart/gmp_90.pt",
        "digits_5to9",
        "full",
        "search",
        {**HP, "epochs": 1},
        seed=0,
        compile=True,
    )
    list(run_transfer(job))
    assert len(compiled) == 1


@pytest.mark.parametrize(
    "precision,fp32", [("fp32-strict", "ieee"), ("fp32", "tf32"), ("bf16", "tf32")]
)
def test_precision_sets_what_fp32_means(precision, fp32):
    before = torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    try:
        configure_device(torch.device("cpu"), precision)
        assert torch.backends.cudnn.conv.fp32_precision == fp32
        assert torch.backends.cuda.matmul.fp32_precision == fp32
    finally:
        torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = (
            before
        )
    with pytest.raises(ValueError, match="fp32-strict"):
        configure_device(torch.device("cpu"), "tf32")


def test_cache_key_names_the_precision_device_and_engine_used():
    assert effective_precision(torch.device("cpu"), "bf16") == "fp32-strict"
    assert effective_precision(torch.device("cuda"), "bf16") == "bf16"
    args = ("sha", "cifar10", "train", {"mean": [0.5]})
    keys = {
        cache_key(*args, precision=p, device_type=d)
        for p, d in [
            ("bf16", "cuda"),
            ("fp32", "cuda"),
            ("fp32-strict", "cuda"),
            ("fp32-strict", "cpu"),
        ]
    }
    keys.add(cache_key(*args, precision="fp32-strict", device_type="cpu", engine="deepsparse"))
    assert len(keys) == 5


@pytest.mark.parametrize("mode", ["full", "linear"])
def test_final_runs_score_the_test_split_at_the_last_epoch_only(zoo_dir, tmp_path, mode):
    def scored(phase, **extra):
        job = TransferJob(
            zoo_dir / "quickstart/gmp_90.pt",
            "digits_5to9",
            mode,
            phase,
            HP,
            seed=0,
            feature_cache_dir=tmp_path,
            **extra,
        )
        prefix = "val" if phase == "search" else "test"
        return [f"{prefix}_top1" in o.metrics for o in run_transfer(job)]

    assert scored("final") == [False, False, True]
    assert scored("final", eval_every=2) == [False, True, True]  # a curve, when asked for
    assert scored("search") == [True, True, True]  # early stopping reads every epoch
