"""Pruning policies: which layers each method prunes and how it spreads sparsity are data on
the method (its published convention), honoured by its pruning, overridable per zoo entry."""

from __future__ import annotations

import pytest
import torch
from pruning_helpers import ARCH, context

from sparse_transfer.config.zoo_spec import ZooEntrySpec
from sparse_transfer.pruning import (
    METHODS,
    PolicyOverride,
    PruningPolicy,
    magnitude_masks,
    prunable_weights,
    resolve_policy,
)
from sparse_transfer.pruning.masks import lowest_scores_masks


def quickstart_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return ARCH.build(5)


# The published convention of each method, written out here (not read from the code), so a
# changed default fails: (prune first conv, prune classifier, distribution). Where a method's
# repository lists its layers, this is that list (the citations are in each method's file).
PUBLISHED = {
    "dense": (False, False, "none"),
    "magnitude": (True, False, "global"),  # the global one-shot baseline
    # STR's GMP baseline: GMPConv everywhere, every layer to the scheduled sparsity
    "gmp": (True, True, "uniform"),
    "acdc": (True, True, "global"),  # ACDC configs/neurips: modules [conv1, ..., fc]
    "rigl": (False, True, "erk"),  # RigL: first layer dense, the last one sparse, ERK
    "str": (True, True, "learned"),  # STR: a threshold per layer, every layer
    "woodfisher": (True, True, "global"),  # WoodFisher configs/resnet50.yaml: [conv1, ..., fc]
    "mfac": (False, True, "global"),
    # LTH-T: pruning_model(..., conv1=False) over nn.Conv2d only: conv1 and fc dense
    "lth": (False, False, "global"),
}


def test_every_registered_method_has_a_published_policy():
    assert set(METHODS.names()) == set(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_the_policy_defaults_of_every_method(name):
    method = METHODS.get(name)
    first_conv, classifier, distribution = PUBLISHED[name]
    assert method.policy == PruningPolicy(
        prune_first_conv=first_conv, prune_classifier=classifier, distribution=distribution
    )
    assert method.policy.distribution in method.distributions
    exclude = method.policy.exclude(ARCH.first_conv, ARCH.classifier)
    assert ("features.0" in exclude) is not first_conv and ("fc" in exclude) is not classifier


def test_each_architecture_names_its_first_convolution():
    from torch import nn

    from sparse_transfer.models import ARCHS

    for name in ARCHS.names():
        arch = ARCHS.get(name)
        model = arch.build(10)
        convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        assert convs[0] == arch.first_conv, name


def _gmp_masks(distribution: str | None):
    model, ctx = quickstart_model(), context(epochs=3)
    ctx.distribution = distribution
    masks = METHODS.get("gmp").prune(model, 0.8, ctx)
    return {n: 1 - float(m.float().mean()) for n, m in masks.items()}


def test_gmp_prunes_every_layer_to_the_scheduled_sparsity():
    per_layer = _gmp_masks(None)  # the method's default: uniform, as Zhu & Gupta
    assert len(per_layer) == 3
    for name, sparsity in per_layer.items():
        assert sparsity == pytest.approx(0.8, abs=1 / 144), name
    ranked = _gmp_masks("global")  # a policy override: one global ranking, layers differ
    assert max(ranked.values()) - min(ranked.values()) > 0.05


def test_uniform_and_erk_counts_per_layer():
    weights = {"a.weight": torch.randn(10, 10), "b.weight": torch.randn(4, 100)}
    uniform = magnitude_masks(weights, 0.5, "uniform")
    assert [int((~m).sum()) for m in uniform.values()] == [50, 200]
    erk = magnitude_masks(weights, 0.5, "erk")
    assert sum(int((~m).sum()) for m in erk.values()) == 250
    assert int((~erk["a.weight"]).sum()) < int((~erk["b.weight"]).sum())
    kept = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    assert lowest_scores_masks(weights, kept, 0.5).keys() == weights.keys()
    with pytest.raises(ValueError, match="'ring'"):
        magnitude_masks(weights, 0.5, "ring")


def test_rigl_keeps_the_first_layer_dense_and_prunes_the_classifier():
    model, ctx = quickstart_model(), context(epochs=1)
    policy = METHODS.get("rigl").policy
    ctx.exclude = policy.exclude(ARCH.first_conv, ARCH.classifier)
    masks = METHODS.get("rigl").prune(model, 0.8, ctx)
    assert "features.0.weight" not in masks and "fc.weight" in masks
    assert (model.features[0].weight != 0).all()
    assert set(prunable_weights(model, exclude=ctx.exclude)) == set(masks)


def test_a_zoo_entry_overrides_the_policy_and_names_a_refused_one():
    entry = ZooEntrySpec(
        method="gmp", sparsity=0.9, policy={"distribution": "global", "prune_classifier": False}
    )
    assert entry.resolved_policy() == PruningPolicy(
        prune_first_conv=True, prune_classifier=False, distribution="global"
    )
    with pytest.raises(ValueError, match="policy.distribution.*'str'.*learned"):
        ZooEntrySpec(method="str", sparsity=0.9, policy={"distribution": "uniform"})
    with pytest.raises(ValueError, match="prune_everything"):
        ZooEntrySpec(method="gmp", sparsity=0.9, policy={"prune_everything": True})
    same = resolve_policy(METHODS.get("rigl"), PolicyOverride())
    assert same == METHODS.get("rigl").policy
