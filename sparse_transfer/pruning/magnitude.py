"""One-shot global magnitude pruning followed by finetuning with the masks fixed.

Han, Pool, Tran & Dally, "Learning both Weights and Connections for Efficient Neural Networks",
NeurIPS 2015: remove the smallest-magnitude weights, then retrain the survivors. Global ranking
(all layers together) is the variant the sparse-transfer paper's baselines use.
"""

from __future__ import annotations

from torch import nn

from sparse_transfer.pruning._training import run_epoch
from sparse_transfer.pruning.masks import (
    Masks,
    apply_masks,
    global_magnitude_masks,
    prunable_weights,
)
from sparse_transfer.pruning.method import METHODS, PruneContext
from sparse_transfer.transfer.loop import make_optimizer


class Magnitude:
    name = "magnitude"

    def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> Masks:
        masks = global_magnitude_masks(prunable_weights(model, exclude=ctx.exclude), sparsity)
        apply_masks(model, masks)
        finetune(model, masks, ctx, epochs=ctx.epochs)
        return masks


def finetune(model: nn.Module, masks: Masks, ctx: PruneContext, *, epochs: int) -> None:
    optimizer = make_optimizer(model.parameters(), ctx.hparams)
    for _ in range(epochs):
        ctx.log.append({"train_loss": run_epoch(model, ctx, optimizer, masks)})


METHODS.add("magnitude", Magnitude())
