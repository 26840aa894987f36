"""Masks and sparsity accounting: which weights are prunable, how sparse they are, keep them so."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = [
    "MaskedParameters",
    "Masks",
    "SparsityDriftError",
    "apply_masks",
    "check_sparsity",
    "erk_counts",
    "global_magnitude_masks",
    "layer_prune_counts",
    "lowest_scores_masks",
    "magnitude_masks",
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
    """Weights of every Conv and Linear layer, except the modules named in `exclude` and the
    modules inside them (`fc` excludes `fc` and `fc.x`, never `fc2`)."""
    out = {}
    for module_name, module in model.named_modules():
        if any(module_name == e or module_name.startswith(f"{e}.") for e in exclude):
            continue
        if isinstance(module, nn.Conv2d | nn.Linear):
            out[f"{module_name}.weight"] = module.weight
    return out


def global_magnitude_masks(weights: dict[str, torch.Tensor], sparsity: float) -> Masks:
    """Keep the largest-magnitude weights over all layers together; exactly round(s*n) pruned."""
    return magnitude_masks(weights, sparsity, "global")


def magnitude_masks(
    weights: dict[str, torch.Tensor], sparsity: float, distribution: str = "global"
) -> Masks:
    """Keep the largest-magnitude weights, ranked over all layers together (`global`) or
    within each layer at its share of the sparsity (`uniform`: every layer at `sparsity`;
    `erk`: Erdős–Rényi-Kernel densities)."""
    scores = {name: w.detach().abs() for name, w in weights.items()}
    kept = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
    return lowest_scores_masks(scores, kept, sparsity, distribution)


def layer_prune_counts(
    shapes: dict[str, torch.Size], sparsity: float, distribution: str
) -> dict[str, int] | None:
    """Weights to prune in each layer; None for `global`, where the layers compete."""
    if distribution == "global":
        return None
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    if distribution == "uniform":
        return {name: round(sparsity * n) for name, n in sizes.items()}
    if distribution == "erk":
        return {name: sizes[name] - c for name, c in erk_counts(shapes, sparsity).items()}
    raise ValueError(
        f"unknown sparsity distribution {distribution!r}; valid: global, uniform, erk"
    )


def lowest_scores_masks(
    scores: dict[str, torch.Tensor], masks: Masks, sparsity: float, distribution: str = "global"
) -> Masks:
    """Prune those already pruned, then the lowest scores: exactly round(s*n) weights over all
    layers (`global`), or each layer's count (`layer_prune_counts`). Argsort (not a threshold)
    so ties cannot make the count drift from the target."""
    counts = layer_prune_counts({n: s.shape for n, s in scores.items()}, sparsity, distribution)
    ranked = {
        n: torch.where(masks[n], s.detach(), -torch.inf).flatten() for n, s in scores.items()
    }
    if counts is None:  # one ranking over every layer
        flat = torch.cat(list(ranked.values()))
        keep, start, out = _keep_all_but(flat, round(sparsity * flat.numel())), 0, {}
        for name, score in scores.items():
            out[name] = keep[start : start + score.numel()].view_as(score).clone()
            start += score.numel()
        return out
    return {n: _keep_all_but(ranked[n], counts[n]).view_as(s) for n, s in scores.items()}


def _keep_all_but(flat: torch.Tensor, n_prune: int) -> torch.Tensor:
    keep = torch.ones_like(flat, dtype=torch.bool)
    if n_prune > 0:
        keep[torch.argsort(flat, stable=True)[:n_prune]] = False
    return keep


def erk_counts(shapes: dict[str, torch.Size], sparsity: float) -> dict[str, int]:
    """Active weights per layer under ERK (Evci et al. 2020): density proportional to
    sum(shape) / prod(shape), layers that would exceed density 1 made dense and the rest
    rescaled; the counts sum to exactly round((1 - s) * n)."""
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: sum(shape) / sizes[name] for name, shape in shapes.items()}
    active = round((1.0 - sparsity) * sum(sizes.values()))
    dense: set[str] = set()
    while True:
        sparse = [name for name in shapes if name not in dense]
        if not sparse:
            break
        scale = (active - sum(sizes[n] for n in dense)) / sum(raw[n] * sizes[n] for n in sparse)
        top = max(raw[n] for n in sparse)
        if scale * top <= 1.0:
            break
        dense.update(n for n in sparse if raw[n] == top)  # the paper's fix, densest first
    exact = {n: float(sizes[n]) if n in dense else scale * raw[n] * sizes[n] for n in shapes}
    counts = {n: math.floor(exact[n]) for n in shapes}
    # the largest remainders take the few weights that rounding left over
    short = active - sum(counts.values())
    for n in sorted((n for n in shapes if n not in dense), key=lambda n: counts[n] - exact[n]):
        if short > 0 and counts[n] < sizes[n]:
            counts[n], short = counts[n] + 1, short - 1
    return counts


def masks_from_zeros(weights: dict[str, torch.Tensor]) -> Masks:
    return {name: w.detach() != 0 for name, w in weights.items()}


class MaskedParameters:
    """Masks prepared once for a model: each in its parameter's dtype and on its device, so
    keeping pruned weights at zero is one in-place foreach multiply over all of them, with no
    tensor allocated per step (a bool mask multiplied in converts to a new float tensor).

    `grads=False` when masks never regrow (transfer: a pruned weight stays pruned). Then
    zeroing the weights after each step is enough: SGD's update (momentum, weight decay) is
    elementwise, so the kept weights never see the pruned gradients, and the momentum that
    builds up at pruned positions only ever meets a weight that is zeroed again
    (tests/transfer/test_step_and_eval.py checks the kept weights are bit for bit the same).
    Methods that regrow weights (RigL) keep `grads=True`: a regrown weight starts without
    momentum."""

    def __init__(self, model: nn.Module, masks: Masks, *, grads: bool = True) -> None:
        params = dict(model.named_parameters())
        self.masks, self.grads = masks, grads
        self.params = [params[name] for name in masks]
        self.factors = [
            mask.to(param.device, param.dtype)
            for param, mask in zip(self.params, masks.values(), strict=True)
        ]

    @torch.no_grad()
    def zero_grads(self) -> None:
        """Zero the gradients of pruned weights, so momentum never builds up there."""
        if not self.grads:
            return
        pairs = [
            (p.grad, f)
            for p, f in zip(self.params, self.factors, strict=True)
            if p.grad is not None
        ]
        if pairs:
            grads, factors = zip(*pairs, strict=True)
            torch._foreach_mul_(list(grads), list(factors))  # checked on torch 2.14, 2026-12

    @torch.no_grad()
    def zero_weights(self) -> None:
        """Zero the pruned weights again: weight decay and momentum still move them."""
        if self.params:
            torch._foreach_mul_(self.params, self.factors)


def apply_masks(model: nn.Module, masks: Masks) -> None:
    MaskedParameters(model, masks).zero_weights()


def sparsity_report(weights: dict[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
    """(total sparsity, per-layer sparsity) as fractions of exactly-zero weights."""
    zeros = {name: int((w == 0).sum()) for name, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    per_layer = {name: zeros[name] / w.numel() for name, w in weights.items()}
    return (sum(zeros.values()) / total if total else 0.0), per_layer


def check_sparsity(weights: dict[str, torch.Tensor], masks: Masks) -> float:
    """Measured sparsity of the masked layers (those the upstream method's policy pruned: a
    layer it left dense has no mask); raises if any pruned weight became non-zero."""
    for name, mask in masks.items():
        revived = int((weights[name].detach()[~mask.to(weights[name].device)] != 0).sum())
        if revived:
            raise SparsityDriftError(
                f"{revived} pruned weights of {name} are non-zero: the mask did not hold"
            )
    return sparsity_report({name: weights[name] for name in masks})[0]
