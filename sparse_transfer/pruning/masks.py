"""Masks and sparsity accounting: which weights are prunable, how sparse they are, keep them so."""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "Masks",
    "SparsityDriftError",
    "apply_masks",
    "check_sparsity",
    "global_magnitude_masks",
    "masks_from_zeros",
    "prunable_weights",
    "sparsity_report",
]

Masks = dict[str, torch.Tensor]  # parameter name -> bool tensor, True = kept


class SparsityDriftError(RuntimeError):
    """A trial's weights no longer have the sparsity of the upstream model they came from."""


def prunable_weights(
    model: nn.Module, *, exclude: tuple[str, ...] = ()
) -> dict[str, nn.Parameter]:
    """Weights of every Conv and Linear layer, except modules whose name starts with `exclude`."""
    out = {}
    for module_name, module in model.named_modules():
        if exclude and module_name.startswith(exclude):
            continue
        if isinstance(module, nn.Conv2d | nn.Linear):
            out[f"{module_name}.weight"] = module.weight
    return out


def global_magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float) -> Masks:
    """Keep the largest-magnitude weights over all layers together; exactly round(s*n) pruned."""
    flat = torch.cat([w.detach().abs().flatten() for w in weights.values()])
    n_prune = round(sparsity * flat.numel())
    keep = torch.ones_like(flat, dtype=torch.bool)
    if n_prune > 0:
        # argsort (not a threshold) so ties cannot make the count drift from the target
        keep[torch.argsort(flat, stable=True)[:n_prune]] = False
    masks, start = {}, 0
    for name, w in weights.items():
        masks[name] = keep[start : start + w.numel()].view_as(w).clone()
        start += w.numel()
    return masks


def masks_from_zeros(weights: dict[str, torch.Tensor]) -> Masks:
    return {name: w.detach() != 0 for name, w in weights.items()}


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Masks) -> None:
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].device, params[name].dtype))


def sparsity_report(weights: dict[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
    """(total sparsity, per-layer sparsity) as fractions of exactly-zero weights."""
    zeros = {name: int((w == 0).sum()) for name, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    per_layer = {name: zeros[name] / w.numel() for name, w in weights.items()}
    return (sum(zeros.values()) / total if total else 0.0), per_layer


def check_sparsity(weights: dict[str, torch.Tensor], masks: Masks) -> float:
    """Measured sparsity; raises if any pruned weight became non-zero."""
    for name, mask in masks.items():
        revived = int((weights[name].detach()[~mask.to(weights[name].device)] != 0).sum())
        if revived:
            raise SparsityDriftError(
                f"{revived} pruned weights of {name} are non-zero: the mask did not hold"
            )
    return sparsity_report(weights)[0]
