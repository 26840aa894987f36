"""Dense-equivalent and sparse FLOPs of a forward pass, counted on the layers that prune."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["count_flops"]


@torch.no_grad()
def count_flops(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(dense, sparse) FLOPs of one image (2 per multiply-accumulate) through every Conv2d and
    Linear; the sparse count skips multiplications by weights that are exactly zero."""
    dense = sparse = 0

    def hook(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal dense, sparse
        weight = module.weight
        if isinstance(module, nn.Conv2d):
            per_output = weight[0].numel()  # in_channels / groups * kh * kw
            outputs = output.numel()
        else:
            per_output = weight.shape[1]
            outputs = output.numel()
        density = float((weight != 0).sum()) / weight.numel()
        dense += 2 * outputs * per_output
        sparse += round(2 * outputs * per_output * density)

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return dense, sparse
