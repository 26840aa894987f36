"""Pieces the pruning methods share: one epoch on the context's data, sparsity, global ranking."""

from __future__ import annotations

import torch
from torch import nn

from sparse_transfer.pruning.masks import (  # noqa: F401  (lowest_scores_masks: shared here)
    Masks,
    lowest_scores_masks,
    prunable_weights,
    sparsity_report,
)
from sparse_transfer.pruning.method import PruneContext
from sparse_transfer.transfer.loop import batches, train_epoch


def run_epoch(
    model: nn.Module,
    ctx: PruneContext,
    optimizer: torch.optim.Optimizer,
    masks: Masks | None = None,
) -> float:
    """One augmented pass over the context's data with its batch size and label smoothing."""
    return train_epoch(
        model,
        ctx.inputs,
        ctx.labels,
        optimizer,
        batch_size=int(ctx.hparams["batch_size"]),
        generator=ctx.generator,
        label_smoothing=float(ctx.hparams.get("label_smoothing", 0.0)),
        masks=masks,
        augment=True,
    )


def batch_loss(
    model: nn.Module, ctx: PruneContext, inputs: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """The training loss (with the context's label smoothing) on the model's device."""
    device = next(model.parameters()).device
    return nn.functional.cross_entropy(
        model(inputs.to(device)),
        labels.to(device),
        label_smoothing=float(ctx.hparams.get("label_smoothing", 0.0)),
    )


def measured_sparsity(model: nn.Module, ctx: PruneContext) -> float:
    """Fraction of exactly-zero prunable weights right now."""
    return sparsity_report(prunable_weights(model, exclude=ctx.exclude))[0]


def mask_sparsity(masks: Masks) -> float:
    total = sum(m.numel() for m in masks.values())
    return sum(int((~m).sum()) for m in masks.values()) / total if total else 0.0


def all_kept(weights: dict[str, torch.Tensor]) -> Masks:
    return {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, ctx: PruneContext) -> None:
    """Re-estimate BatchNorm statistics on the training data (an exact average, no augmentation),
    for weights that moved faster than the running averages followed."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.train()
    device = next(model.parameters()).device
    for index in batches(len(ctx.labels), int(ctx.hparams["batch_size"]), None):
        model(ctx.inputs[index].to(device))
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
