"""One-shot global magnitude pruning followed by finetuning with the masks fixed.

Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient Neural Networks",
NeurIPS 2015: remove the smallest-magnitude weights, then retrain the survivors. Han et al. set
per-layer thresholds by hand; the default here is the global ranking (all layers together,
first convolution included, classifier dense) of the one-shot baselines in the later literature
(e.g. Blalock et al. 2020); `uniform` and `erk` are there as policy overrides.
"""

from __future__ import annotations

from torch import nn

from sparse_transfer.pruning._training import run_epoch
from sparse_transfer.pruning.masks import (
    Masks,
    apply_masks,
    magnitude_masks,
    prunable_weights,
)
from sparse_transfer.pruning.method import METHODS, PruneContext
from sparse_transfer.pruning.policy import PruningPolicy
from sparse_transfer.transfer.loop import make_optimizer


class Magnitude:
    name = "magnitude"
    policy = PruningPolicy(prune_first_conv=True, prune_classifier=False, distribution="global")
    distributions = ("global", "uniform", "erk")

    def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> Masks:
        weights = prunable_weights(model, exclude=ctx.exclude)
        masks = magnitude_masks(weights, sparsity, ctx.distribution or self.policy.distribution)
        apply_masks(model, masks)
        finetune(model, masks, ctx, epochs=ctx.epochs)
        return masks


def finetune(model: nn.Module, masks: Masks, ctx: PruneContext, *, epochs: int) -> None:
    optimizer = make_optimizer(model.parameters(), ctx.hparams)
    for _ in range(epochs):
        ctx.log.append({"train_loss": run_epoch(model, ctx, optimizer, masks)})


METHODS.add("magnitude", Magnitude())
