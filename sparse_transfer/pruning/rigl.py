"""RigL: Rigged Lottery, sparse training with drop-and-grow connectivity updates.

Evci, Gale, Menick, Castro & Elsen, "Rigging the Lottery: Making All Tickets Winners", ICML 2020
(arXiv:1911.11134). Layer densities follow the Erdős–Rényi-Kernel (ERK) distribution, density
proportional to sum(shape) / prod(shape), with layers that would exceed density 1 made dense and
the rest rescaled. Every ΔT optimizer steps, until T_end (75% of training), each layer drops the
fraction α/2 (1 + cos(π t / T_end)) of its active weights with the smallest magnitude and regrows
as many inactive ones with the largest dense-gradient magnitude (new ones start at zero, with zero
momentum), so per-layer counts never change; as in the paper's code, an update step replaces
that step's optimizer step. `training_multiplier` scales the epoch budget (the paper's 1x, 5x).

Layers: as in the paper, the first convolution stays dense and every other layer, the
classifier included, is sparse (ERK); `uniform` is the paper's other distribution.

Starting point: the paper trains from scratch with random masks; here the method starts from a
pretrained model, so by default the initial mask keeps the largest-magnitude weights within each
layer at its ERK density (`init="magnitude"`); `init="random"` gives the paper's random masks.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from sparse_transfer.pruning._training import batch_loss, measured_sparsity
from sparse_transfer.pruning.masks import (
    Masks,
    apply_masks,
    erk_counts,
    layer_prune_counts,
    prunable_weights,
)
from sparse_transfer.pruning.method import METHODS, PruneContext
from sparse_transfer.pruning.policy import PruningPolicy
from sparse_transfer.transfer.loop import batches, make_optimizer, random_shift

__all__ = ["RigL", "RigLParams", "erk_counts", "drop_and_grow"]


class RigLParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    drop_fraction: float = Field(0.3, gt=0, le=1, description="α, the initial drop fraction")
    update_interval: int = Field(4, ge=1, description="ΔT, optimizer steps between updates")
    end_fraction: float = Field(0.75, gt=0, le=1, description="T_end as a fraction of training")
    training_multiplier: float = Field(1.0, gt=0, description="scales the epoch budget")
    init: Literal["magnitude", "random"] = "magnitude"


def drop_and_grow(
    weight: torch.Tensor, mask: torch.Tensor, grad: torch.Tensor, n_update: int
) -> torch.Tensor:
    """One layer's RigL update: the new mask, with as many active weights as before."""
    active = mask.flatten()
    drop_scores = torch.where(active, weight.detach().abs().flatten(), torch.inf)
    kept = active.clone()
    kept[torch.argsort(drop_scores, stable=True)[:n_update]] = False
    # dropped weights may be regrown at once (as in the paper's code); active ones may not
    grow_scores = torch.where(kept, -torch.inf, grad.abs().flatten())
    grown = kept.clone()
    grown[torch.argsort(grow_scores, descending=True, stable=True)[:n_update]] = True
    return grown.view_as(mask)


def _initial_mask(w: torch.Tensor, count: int, init: str, generator: torch.Generator):
    if init == "magnitude":
        scores = w.detach().abs().flatten()
    else:
        scores = torch.rand(w.numel(), generator=generator).to(w.device)
    keep = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
    keep[torch.argsort(scores, descending=True, stable=True)[:count]] = True
    return keep.view_as(w)


class RigL:
    name = "rigl"
    params_type = RigLParams
    policy = PruningPolicy(prune_first_conv=False, prune_classifier=True, distribution="erk")
    distributions = ("erk", "uniform")

    def __init__(self, params: RigLParams | None = None) -> None:
        self.params = params or RigLParams()

    def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> Masks:
        p = self.params
        weights = prunable_weights(model, exclude=ctx.exclude)
        shapes = {n: w.shape for n, w in weights.items()}
        if (ctx.distribution or self.policy.distribution) == "erk":
            counts = erk_counts(shapes, sparsity)
        else:  # uniform: every layer keeps the same fraction
            pruned = layer_prune_counts(shapes, sparsity, "uniform")
            counts = {n: w.numel() - pruned[n] for n, w in weights.items()}
        masks = {n: _initial_mask(w, counts[n], p.init, ctx.generator) for n, w in weights.items()}
        apply_masks(model, masks)
        optimizer = make_optimizer(model.parameters(), ctx.hparams)
        batch_size = int(ctx.hparams["batch_size"])
        epochs = round(ctx.epochs * p.training_multiplier)
        end = int(p.end_fraction * epochs * math.ceil(len(ctx.labels) / batch_size))
        step = 0
        for epoch in range(epochs):
            model.train()
            for index in batches(len(ctx.labels), batch_size, ctx.generator):
                inputs = random_shift(ctx.inputs[index], ctx.generator)
                loss = batch_loss(model, ctx, inputs, ctx.labels[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if 0 < step < end and step % p.update_interval == 0:
                    fraction = p.drop_fraction / 2 * (1 + math.cos(math.pi * step / end))
                    regrown = _update(weights, masks, optimizer, fraction)
                    ctx.log.append({"step": step, "drop_fraction": fraction, "regrown": regrown})
                else:
                    for name, mask in masks.items():
                        weights[name].grad.mul_(mask)
                    optimizer.step()
                apply_masks(model, masks)
                step += 1
            ctx.log.append(
                {
                    "epoch": epoch,
                    "sparsity": measured_sparsity(model, ctx),
                    "layer_active": {n: int(m.sum()) for n, m in masks.items()},
                }
            )
        return masks


@torch.no_grad()
def _update(weights, masks: Masks, optimizer: torch.optim.Optimizer, fraction: float) -> int:
    """Drop and grow in every layer, in place; the dense gradients are in `.grad`."""
    regrown = 0
    for name, w in weights.items():
        new = drop_and_grow(w, masks[name], w.grad, int(fraction * int(masks[name].sum())))
        grown = new & ~masks[name]
        w[grown] = 0.0  # they are zero already; the paper's zero initialisation, explicitly
        momentum = optimizer.state.get(w, {}).get("momentum_buffer")
        if momentum is not None:
            momentum[grown] = 0.0
        masks[name] = new
        regrown += int(grown.sum())
    return regrown


METHODS.add("rigl", RigL())
