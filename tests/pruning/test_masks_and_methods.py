"""Masks and sparsity accounting, the GMP schedule, and a contract every pruning method meets."""

from __future__ import annotations

import pytest
import torch

from sparse_transfer.data import DATASETS
from sparse_transfer.models import ARCHS
from sparse_transfer.pruning import (
    METHODS,
    PruneContext,
    SparsityDriftError,
    check_sparsity,
    global_magnitude_masks,
    prunable_weights,
    sparsity_report,
)
from sparse_transfer.pruning.gmp import cubic_sparsity
from sparse_transfer.transfer.loop import normalize

# --- global magnitude masks --------------------------------------------------------------------


def hand_made_weights() -> dict[str, torch.Tensor]:
    return {
        "a.weight": torch.tensor([[0.5, -0.1], [2.0, 0.3]]),
        "b.weight": torch.tensor([-0.05, 1.0, -0.2, 0.4, 0.01, -3.0]),
    }


SMALLEST_FIRST = [
    ("b.weight", 4),
    ("b.weight", 0),
    ("a.weight", 1),
    ("b.weight", 2),
    ("a.weight", 3),
    ("b.weight", 3),
    ("a.weight", 0),
    ("b.weight", 1),
    ("a.weight", 2),
    ("b.weight", 5),
]  # |w| = 0.01, 0.05, 0.1, ... 3.0


@pytest.mark.parametrize(("sparsity", "n_pruned"), [(0.0, 0), (0.2, 2), (0.5, 5), (0.8, 8)])
def test_global_magnitude_prunes_smallest_across_layers(sparsity, n_pruned):
    masks = global_magnitude_masks(hand_made_weights(), sparsity)
    got = {
        (name, i) for name, m in masks.items() for i in (~m.flatten()).nonzero().flatten().tolist()
    }
    assert got == set(SMALLEST_FIRST[:n_pruned])
    assert masks["a.weight"].shape == (2, 2) and masks["a.weight"].dtype == torch.bool


def test_global_magnitude_breaks_ties_without_overshooting():
    # |w| = 0.1 three times at the boundary: pruning 2 of 4 must take the 0.05 and one 0.1
    weights = {"a.weight": torch.tensor([0.1, -0.05]), "b.weight": torch.tensor([-0.1, 0.1])}
    masks = global_magnitude_masks(weights, 0.5)
    assert not masks["a.weight"][1]
    assert sum(int((~m).sum()) for m in masks.values()) == 2


@pytest.mark.parametrize("sparsity", [0.1, 0.3, 0.33, 0.5, 0.7, 0.9, 0.99])
def test_global_magnitude_prunes_exactly_round_s_n_even_with_ties(sparsity):
    # 101 weights with heavy ties: a threshold would prune all tied values at once
    weights = {
        "x.weight": torch.tensor([1.0] * 40 + [-1.0] * 10),
        "y.weight": torch.full((51,), 2.0),
    }
    masks = global_magnitude_masks(weights, sparsity)
    n_pruned = sum(int((~m).sum()) for m in masks.values())
    assert n_pruned == round(sparsity * 101)
    # everything pruned has magnitude <= everything kept
    flat_w = torch.cat([w.abs() for w in weights.values()])
    flat_m = torch.cat([m for m in masks.values()])
    if 0 < n_pruned < 101:
        assert flat_w[~flat_m].max() <= flat_w[flat_m].min()


def test_sparsity_report_per_layer():
    weights = {
        "a": torch.tensor([0.0, 1.0, 0.0, 2.0]),
        "b": torch.tensor([[0.0, 0.0], [0.0, 5.0]]),
        "c": torch.ones(2),
    }
    total, per_layer = sparsity_report(weights)
    assert per_layer == {"a": 0.5, "b": 0.75, "c": 0.0}
    assert total == pytest.approx(5 / 10)


def test_check_sparsity_passes_and_raises_on_revived_weight():
    weights = hand_made_weights()
    masks = global_magnitude_masks(weights, 0.5)
    pruned = {n: w * masks[n] for n, w in weights.items()}
    assert check_sparsity(pruned, masks) == pytest.approx(0.5)
    pruned["b.weight"][0] = 1e-8  # a single pruned weight comes back
    with pytest.raises(SparsityDriftError, match="1 pruned weights of b.weight"):
        check_sparsity(pruned, masks)


# --- the GMP schedule --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "n", "final", "initial"),
    [
        (0, 10, 0.9, 0.0),
        (1, 10, 0.9, 0.0),
        (5, 10, 0.9, 0.0),
        (9, 10, 0.9, 0.0),
        (3, 4, 0.7, 0.2),
        (2, 6, 0.5, 0.1),
    ],
)
def test_cubic_sparsity_follows_zhu_gupta(step, n, final, initial):
    expected = final + (initial - final) * (1 - step / n) ** 3
    assert cubic_sparsity(step, n, final, initial) == pytest.approx(expected)


def test_cubic_sparsity_endpoints_and_monotone():
    n, final = 12, 0.9
    values = [cubic_sparsity(t, n, final) for t in range(n + 1)]
    assert values[0] == pytest.approx(0.0)
    assert values[-1] == pytest.approx(final)
    assert all(b > a for a, b in zip(values, values[1:], strict=False))
    # fast first, slow last: the first step adds more sparsity than the last one
    assert values[1] - values[0] > values[-1] - values[-2]
    assert cubic_sparsity(n + 5, n, final) == pytest.approx(final)  # clamped past the end


# --- every registered pruning method -----------------------------------------------------------

ARCH = ARCHS.get("quickstart_cnn")
HPARAMS = {
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "batch_size": 64,
    "label_smoothing": 0.0,
}


def target_for(method: str) -> float:
    return 0.0 if method == "dense" else 0.8


def prune(method: str, seed: int = 0):
    dataset = DATASETS.get("digits_0to4")
    images, labels = dataset.load("train")
    stats = {"mean": [float(images.mean())], "std": [float(images.std())]}
    torch.manual_seed(seed)
    model = ARCH.build(dataset.num_classes)
    ctx = PruneContext(
        normalize(images, stats),
        labels,
        epochs=3,
        hparams=dict(HPARAMS),
        generator=torch.Generator().manual_seed(seed),
        exclude=(ARCH.classifier,),
    )
    masks = METHODS.get(method).prune(model, target_for(method), ctx)
    return model, masks


@pytest.fixture(scope="module", params=METHODS.names())
def pruned(request):
    return request.param, prune(request.param)


def test_method_hits_target_sparsity(pruned):
    method, (model, masks) = pruned
    weights = prunable_weights(model, exclude=(ARCH.classifier,))
    assert set(masks) == set(weights), "masks cover exactly the prunable backbone weights"
    measured, _ = sparsity_report(weights)
    assert abs(measured - target_for(method)) <= 1e-3
    mask_sparsity = sum(int((~m).sum()) for m in masks.values()) / sum(
        m.numel() for m in masks.values()
    )
    assert abs(mask_sparsity - target_for(method)) <= 1e-3


def test_method_never_prunes_the_classifier(pruned):
    _, (model, masks) = pruned
    assert not any(name.startswith(ARCH.classifier + ".") for name in masks)
    assert (model.fc.weight != 0).all()


def test_method_masks_hold(pruned):
    _, (model, masks) = pruned
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert (params[name][~mask] == 0).all(), f"{name}: pruned weights are not zero"
    check_sparsity({n: params[n] for n in masks}, masks)


def test_method_is_deterministic_for_a_seed(pruned):
    method, (model, masks) = pruned
    model_again, masks_again = prune(method)
    for name in masks:
        assert torch.equal(masks[name], masks_again[name]), name
    for (name, a), b in zip(
        model.state_dict().items(), model_again.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_dense_refuses_nonzero_sparsity():
    model = ARCH.build(5)
    ctx = PruneContext(
        torch.zeros(1, 1, 8, 8), torch.zeros(1, dtype=torch.long), 1, HPARAMS, torch.Generator()
    )
    with pytest.raises(ValueError, match="sparsity 0.0"):
        METHODS.get("dense").prune(model, 0.5, ctx)
