"""Every pruning method runs on the paper's architectures (MobileNetV1, ResNet-50) on CPU.

A smoke of scale, not of quality: a few random 32x32 images, two epochs, and small Fisher
blocks and windows for the second-order methods so the test fits a 24 GiB CI machine
(WoodFisher on ResNet-50 with 16-weight blocks peaks near 14 GB; with 4, near 5 GB)."""

from __future__ import annotations

import pytest
import torch

from sparse_transfer.models import ARCHS
from sparse_transfer.pruning import METHODS, PruneContext, prunable_weights, sparsity_report

pytestmark = pytest.mark.slow

SMALL = {
    "woodfisher": {"block_size": 4, "num_gradients": 2, "fisher_batch_size": 4},
    "mfac": {"block_size": 16, "num_gradients": 2, "fisher_batch_size": 4},
    "str": {"search_steps": 2},
}


@pytest.mark.parametrize("arch_name", ["mobilenetv1", "resnet50"])
@pytest.mark.parametrize("method_name", METHODS.names())
def test_method_prunes_paper_architecture(arch_name, method_name):
    torch.manual_seed(0)
    arch = ARCHS.get(arch_name)
    model = arch.build(4)
    method = METHODS.get(method_name)
    params_type = getattr(method, "params_type", None)
    if params_type is not None and method_name in SMALL:
        method = type(method)(params=params_type(**SMALL[method_name]))
    ctx = PruneContext(
        torch.randn(8, 3, 32, 32),
        torch.randint(0, 4, (8,)),
        2,
        {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 4},
        torch.Generator().manual_seed(0),
        exclude=(arch.classifier,),
    )
    target = 0.0 if method_name == "dense" else 0.8
    masks = method.prune(model, target, ctx)

    weights = prunable_weights(model, exclude=(arch.classifier,))
    assert set(masks) == set(weights), "a mask for every prunable conv/linear weight"
    for name, weight in weights.items():
        assert not weight.detach()[~masks[name]].any(), f"{name}: a pruned weight is non-zero"
    measured = sparsity_report(weights)[0]
    if method_name == "str":  # reaches its own sparsity; it must say exactly which
        assert measured > 0.0
        assert ctx.log[-1]["sparsity"] == pytest.approx(measured, abs=1e-9)
    else:
        assert measured == pytest.approx(target, abs=1e-3)
