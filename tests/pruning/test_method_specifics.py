"""What makes each pruning method itself, checked where a look-alike would fail: GMP's cubic
schedule, AC/DC's phases, RigL's ERK and drop-and-grow, WoodFisher's and M-FAC's second-order
algebra, STR's learned thresholds, LTH's rewinding."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from pruning_helpers import ARCH, context
from torch import nn

from sparse_transfer.pruning import METHODS, prunable_weights, sparsity_report
from sparse_transfer.pruning import acdc as acdc_module
from sparse_transfer.pruning import gmp as gmp_module
from sparse_transfer.pruning import lth as lth_module
from sparse_transfer.pruning.acdc import ACDC, ACDCParams, phase_plan
from sparse_transfer.pruning.gmp import cubic_sparsity
from sparse_transfer.pruning.lth import LTH, LTHParams
from sparse_transfer.pruning.mfac import InverseFisherWindow
from sparse_transfer.pruning.rigl import RigL, RigLParams, drop_and_grow, erk_counts
from sparse_transfer.pruning.soft_threshold import STR, SoftThreshold
from sparse_transfer.pruning.woodfisher import joint_obs_update, woodbury_inverse


def quickstart_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return ARCH.build(5)


def backbone(model: nn.Module) -> dict[str, torch.Tensor]:
    return prunable_weights(model, exclude=(ARCH.classifier,))


def n_weights(model: nn.Module) -> int:
    return sum(w.numel() for w in backbone(model).values())


# --- GMP ---------------------------------------------------------------------------------------


def test_gmp_sparsity_per_epoch_follows_the_cubic_schedule(monkeypatch):
    seen = []
    real_run_epoch = gmp_module.run_epoch

    def spy(model, *args, **kwargs):  # the sparsity each ramp epoch trains at
        seen.append(sparsity_report(backbone(model))[0])
        return real_run_epoch(model, *args, **kwargs)

    monkeypatch.setattr(gmp_module, "run_epoch", spy)
    model, ctx = quickstart_model(), context(epochs=6)
    METHODS.get("gmp").prune(model, 0.8, ctx)
    ramp = 4  # two thirds of 6 epochs
    schedule = [cubic_sparsity(step, ramp, 0.8) for step in range(1, ramp + 1)]
    assert seen == pytest.approx(schedule, abs=1 / n_weights(model))
    assert [r["target_sparsity"] for r in ctx.log[:ramp]] == pytest.approx(schedule)
    assert seen[0] > 0.8 / 2, "cubic: most of the pruning happens in the first step"


# --- AC/DC -------------------------------------------------------------------------------------


def test_acdc_phase_plan_warms_up_alternates_and_ends_compressed():
    params = ACDCParams(warmup_epochs=2, phase_epochs=2, final_epochs=3)
    c, d = True, False
    assert phase_plan(10, params) == [d, d, c, c, d, d, c, c, c, c]
    for epochs in range(1, 12):
        assert phase_plan(epochs, params)[-1] is True, epochs


def test_acdc_sparsity_alternates_by_phase():
    model, ctx = quickstart_model(), context(epochs=6)
    masks = METHODS.get("acdc").prune(model, 0.8, ctx)
    assert [r["phase"][0] for r in ctx.log] == ["d", "c", "d", "c", "c", "c"]
    for record in ctx.log:
        if record["phase"] == "compressed":
            assert record["sparsity"] == pytest.approx(0.8, abs=1e-3)
        else:  # decompressed: every weight trains again, the pruned ones back from zero
            assert record["sparsity"] < 0.01
    assert sparsity_report(backbone(model))[0] == pytest.approx(0.8, abs=1e-3)
    assert set(masks) == set(backbone(model))


def test_acdc_recomputes_the_mask_at_each_compressed_phase(monkeypatch):
    dense_before = []  # sparsity of the weights each compressed phase computes its top-k from
    real_masks = acdc_module.magnitude_masks

    def spy(weights, sparsity, distribution):
        dense_before.append(sparsity_report(weights)[0])
        return real_masks(weights, sparsity, distribution)

    monkeypatch.setattr(acdc_module, "magnitude_masks", spy)
    model, ctx = quickstart_model(), context(epochs=4)
    ACDC(ACDCParams(warmup_epochs=0, phase_epochs=1, final_epochs=2)).prune(model, 0.8, ctx)
    assert [r["phase"][0] for r in ctx.log] == ["c", "d", "c", "c"]
    # one top-k per compressed phase, each from weights the decompressed phase made dense again
    assert len(dense_before) == 2 and max(dense_before) < 0.01


# --- RigL --------------------------------------------------------------------------------------


def test_erk_counts_are_exact_proportional_and_cap_dense_layers():
    shapes = {
        "small.weight": torch.Size([4, 1, 3, 3]),
        "mid.weight": torch.Size([32, 16, 3, 3]),
        "big.weight": torch.Size([64, 32, 3, 3]),
        "fc.weight": torch.Size([10, 64]),
    }
    # 10% of 23716 weights kept = 2372. ERK's raw density sum(shape)/prod(shape) would give
    # `small` and then `fc` a density above 1: both become dense, and the other two share the
    # remaining 2372 - 36 - 640 = 1696 in proportion to sum(shape) = 54 and 102, i.e.
    # 587.08 and 1108.92, rounded to the exact total by largest remainder.
    counts = erk_counts(shapes, 0.9)
    assert counts == {"small.weight": 36, "mid.weight": 587, "big.weight": 1109, "fc.weight": 640}
    assert sum(erk_counts(shapes, 0.5).values()) == round(0.5 * 23716)
    assert erk_counts(shapes, 0.0) == {n: math.prod(s) for n, s in shapes.items()}


def test_drop_and_grow_drops_smallest_active_and_grows_largest_gradient_inactive():
    weight = torch.tensor([5.0, 4.0, 0.1, 3.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    mask = torch.tensor([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], dtype=torch.bool)
    grad = torch.tensor([9.0, 9.0, 0.0, 9.0, 0.5, 0.1, 0.2, 3.0, 0.3, 2.0])
    new = drop_and_grow(weight, mask, grad, n_update=2)
    # drops |w| = 0.1 and 2.0; regrows the two inactive positions of largest |grad| (7, 9), not
    # the active ones with larger gradients
    assert new.nonzero().flatten().tolist() == [0, 1, 3, 7, 9]
    assert int(new.sum()) == int(mask.sum())
    # a dropped weight may come straight back when its gradient is among the largest
    grad[4] = 10.0
    assert drop_and_grow(weight, mask, grad, n_update=2).nonzero().flatten().tolist() == [
        0,
        1,
        3,
        4,
        7,
    ]


def test_rigl_keeps_erk_counts_while_rewiring():
    model, ctx = quickstart_model(), context(epochs=3)
    masks = METHODS.get("rigl").prune(model, 0.8, ctx)
    counts = erk_counts({n: w.shape for n, w in backbone(model).items()}, 0.8)
    assert {n: int(m.sum()) for n, m in masks.items()} == counts
    epochs = [r for r in ctx.log if "epoch" in r]
    updates = [r for r in ctx.log if "step" in r]
    assert len(epochs) == 3 and all(r["layer_active"] == counts for r in epochs)
    assert updates and sum(r["regrown"] for r in updates) > 0, "connections moved"
    end = int(0.75 * 3 * math.ceil(len(ctx.labels) / 64))
    for r in updates:  # every ΔT steps until T_end, with the cosine-decayed drop fraction
        assert 0 < r["step"] < end and r["step"] % 4 == 0
        assert r["drop_fraction"] == pytest.approx(
            0.15 * (1 + math.cos(math.pi * r["step"] / end))
        )
    assert sparsity_report(backbone(model))[0] == pytest.approx(0.8, abs=1e-3)


def test_rigl_training_multiplier_scales_the_budget():
    model, ctx = quickstart_model(), context(epochs=1)
    RigL(RigLParams(training_multiplier=3)).prune(model, 0.8, ctx)
    assert len([r for r in ctx.log if "epoch" in r]) == 3


# --- WoodFisher --------------------------------------------------------------------------------


def test_woodbury_inverse_equals_explicit_block_inverses():
    torch.manual_seed(0)
    m, n_blocks, size, damp = 12, 3, 5, 1e-2
    grads = torch.randn(m, n_blocks, size, dtype=torch.float64)
    inverse = woodbury_inverse(grads, damp)
    for b in range(n_blocks):
        fisher = damp * torch.eye(size, dtype=torch.float64) + grads[:, b].T @ grads[:, b] / m
        torch.testing.assert_close(inverse[b], torch.linalg.inv(fisher), rtol=1e-8, atol=1e-8)


def linear_regression(d: int = 8, n: int = 64):
    """Squared loss of a linear model: the loss is exactly quadratic with Hessian XᵀX/n, which
    the Fisher built from the gradients x_i equals (the Gaussian likelihood's Fisher)."""
    torch.manual_seed(0)
    x = torch.randn(n, d, dtype=torch.float64) @ torch.randn(d, d, dtype=torch.float64)
    w_star = torch.randn(d, dtype=torch.float64)
    model = nn.Linear(d, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(w_star)

    def loss_increase(w: torch.Tensor) -> float:
        with torch.no_grad():
            model.weight.copy_(w)
            return float(0.5 * ((model(x).squeeze(1) - x @ w_star) ** 2).mean())

    return x, w_star, loss_increase


def test_woodfisher_update_lowers_the_loss_increase_of_pruning():
    x, w, loss_increase = linear_regression()
    inverse = woodbury_inverse(x.unsqueeze(1), damp=1e-9)[0]  # one block, m = n gradients
    rho = w**2 / (2 * inverse.diagonal())
    pruned = torch.zeros(len(w), dtype=torch.bool)
    pruned[torch.argsort(rho)[:3]] = True
    updated = w + joint_obs_update(w.unsqueeze(0), inverse.unsqueeze(0), pruned.unsqueeze(0))[0]
    assert updated[pruned].abs().max() < 1e-9, "the update itself removes the pruned weights"
    with_update = loss_increase(torch.where(pruned, 0.0, updated))
    without_update = loss_increase(torch.where(pruned, 0.0, w))
    assert with_update < without_update
    # and it is OBS's optimum: ½ w_Qᵀ ([F⁻¹]_QQ)⁻¹ w_Q
    w_q = w[pruned]
    optimum = 0.5 * w_q @ torch.linalg.solve(inverse[pruned][:, pruned], w_q)
    assert with_update == pytest.approx(float(optimum), rel=1e-5)


@pytest.mark.parametrize("method", ["woodfisher", "mfac"])
def test_second_order_one_shot_beats_magnitude_on_the_loss(pretrained, method):
    """Pruned in one shot (no budget) from a trained model, the OBS update leaves a lower
    training loss than magnitude pruning, by a wide margin."""
    losses = {}
    for name in (method, "magnitude"):
        model, ctx = copy.deepcopy(pretrained), context(epochs=0)
        METHODS.get(name).prune(model, 0.7, ctx)
        model.eval()
        with torch.no_grad():
            losses[name] = float(nn.functional.cross_entropy(model(ctx.inputs), ctx.labels))
    assert losses[method] < 0.5 * losses["magnitude"]


# --- M-FAC -------------------------------------------------------------------------------------


def explicit_inverse(grads: torch.Tensor, damp: float, m: int) -> torch.Tensor:
    eye = torch.eye(grads.shape[1], dtype=grads.dtype)
    return torch.linalg.inv(damp * eye + grads.T @ grads / m)


@pytest.mark.parametrize("added", [5, 8, 13])  # window not yet full, just full, slid past
def test_mfac_inverse_fisher_vector_products_equal_the_explicit_inverse(added):
    torch.manual_seed(0)
    m, n_blocks, size, damp = 8, 2, 30, 1e-2
    grads = torch.randn(added, n_blocks, size, dtype=torch.float64)
    window = InverseFisherWindow(m, n_blocks, size, damp)
    for g in grads:
        window.add(g)
    vectors = torch.randn(n_blocks, size, dtype=torch.float64)
    products, diagonal = window.ifvp(vectors), window.diagonal()
    for b in range(n_blocks):
        inverse = explicit_inverse(grads[-m:, b], damp, m)  # the last m gradients only
        torch.testing.assert_close(products[b], inverse @ vectors[b], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(diagonal[b], inverse.diagonal(), rtol=1e-4, atol=1e-4)


def test_mfac_single_weight_obs_update_reaches_the_obs_loss():
    x, w, loss_increase = linear_regression()
    window = InverseFisherWindow(len(x), 1, len(w), damp=1e-9)
    for g in x:
        window.add(g.view(1, -1))
    diagonal = window.diagonal()[0]
    q = int(torch.argmin(w**2 / (2 * diagonal)))
    unit = torch.zeros_like(w)
    unit[q] = w[q] / diagonal[q]
    updated = w - window.ifvp(unit.view(1, -1))[0]
    assert abs(updated[q]) < 1e-6 * abs(w[q])
    updated[q] = 0.0
    assert loss_increase(updated) == pytest.approx(float(w[q] ** 2 / (2 * diagonal[q])), rel=1e-5)
    plain = w.clone()
    plain[q] = 0.0
    assert loss_increase(updated) < loss_increase(plain)


# --- STR ---------------------------------------------------------------------------------------


def test_soft_threshold_shrinks_and_learns_its_threshold():
    threshold = SoftThreshold(math.log(0.5 / 0.5), torch.zeros(1))  # sigmoid(0) = 0.5
    w = torch.tensor([-2.0, -0.3, 0.0, 0.4, 1.5])
    out = threshold(w)
    assert out.tolist() == pytest.approx([-1.5, 0.0, 0.0, 0.0, 1.0])
    out.pow(2).sum().backward()  # d/ds = -2 sigmoid'(0) (1.5 + 1.0)
    assert float(threshold.s.grad) == pytest.approx(-1.25)


def test_str_learns_thresholds_and_reports_what_it_reached():
    model, ctx = quickstart_model(), context(epochs=3)
    masks = METHODS.get("str").prune(model, 0.8, ctx)
    epochs, final = ctx.log[:-1], ctx.log[-1]
    measured = sparsity_report(backbone(model))[0]
    assert final["sparsity"] == measured, "reported exactly"
    assert abs(measured - 0.8) <= STR.sparsity_tolerance
    initial = 1 / (1 + math.exp(-final["s_init"]))  # the same for every layer
    first, last = epochs[0]["thresholds"], epochs[-1]["thresholds"]
    assert all(t > initial for t in last.values()), "decay on s_l raised the thresholds"
    assert len({round(t, 6) for t in last.values()}) == len(last), "one threshold per layer"
    assert first != last, "the thresholds moved during training"
    assert epochs[0]["sparsity"] < epochs[-1]["sparsity"], "sparsity grew during training"
    # the calibration kept the run closest to the target
    closest = min(final["search"], key=lambda r: abs(r["sparsity"] - 0.8))
    assert closest["sparsity"] == measured
    # plain parameters again, and masks are exactly the zeros
    assert not any("parametrizations" in name for name, _ in model.named_parameters())
    assert all(torch.equal(masks[n], w != 0) for n, w in backbone(model).items())


# --- LTH ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("rewind_epoch", [0, 1])
def test_lth_rewinds_survivors_to_the_snapshot_each_round(monkeypatch, rewind_epoch):
    starts = []  # the weights each training run starts from
    real_finetune = lth_module.finetune

    def spy(model, masks, ctx, *, epochs):
        starts.append({n: w.detach().clone() for n, w in backbone(model).items()})
        return real_finetune(model, masks, ctx, epochs=epochs)

    monkeypatch.setattr(lth_module, "finetune", spy)
    model, ctx = quickstart_model(), context(epochs=12)
    pretrained = {n: w.detach().clone() for n, w in backbone(model).items()}
    params = LTHParams(rounds=3, rewind_epoch=rewind_epoch, ticket_fraction=0.25)
    LTH(params).prune(model, 0.8, ctx)
    # late rewinding trains once more before the snapshot: the second run starts from it
    snapshot = pretrained if rewind_epoch == 0 else starts[1]
    after_rewinds = starts[2:] if rewind_epoch else starts[1:]
    assert len(after_rewinds) == 3, "rounds 2 and 3, and the ticket, start after a rewind"
    previous_pruned = 0
    for start in after_rewinds:
        pruned = sum(int((w == 0).sum()) for w in start.values())
        assert pruned > previous_pruned
        previous_pruned = pruned
        for name, w in start.items():
            survivors = w != 0
            assert torch.equal(w[survivors], snapshot[name][survivors]), name
    assert not torch.equal(starts[-1]["features.3.weight"], backbone(model)["features.3.weight"])
    targets = [1 - 0.2 ** (r / 3) for r in (1, 2, 3)]
    assert [r["sparsity"] for r in ctx.log if "round" in r] == pytest.approx(targets, abs=1e-3)
    assert sparsity_report(backbone(model))[0] == pytest.approx(0.8, abs=1e-3)


def test_lth_prunes_a_fixed_fraction_of_the_remaining_weights_per_round():
    model, ctx = quickstart_model(), context(epochs=3)
    LTH(LTHParams(rounds=4)).prune(model, 0.9, ctx)
    remaining = [1.0] + [1 - r["sparsity"] for r in ctx.log if "round" in r]
    fractions = [b / a for a, b in zip(remaining, remaining[1:], strict=False)]
    assert fractions == pytest.approx([0.1**0.25] * 4, abs=1e-3)
