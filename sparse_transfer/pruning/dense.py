"""The dense baseline: nothing pruned. Registered so `dense` is a method like any other."""

from __future__ import annotations

import torch
from torch import nn

from sparse_transfer.pruning.masks import Masks, prunable_weights
from sparse_transfer.pruning.method import METHODS, PruneContext
from sparse_transfer.pruning.policy import PruningPolicy


class Dense:
    name = "dense"
    policy = PruningPolicy(prune_first_conv=False, prune_classifier=False, distribution="none")
    distributions = ("none",)

    def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> Masks:
        if sparsity != 0.0:
            raise ValueError(f"the dense method has sparsity 0.0, not {sparsity}")
        weights = prunable_weights(model, exclude=ctx.exclude)
        return {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}


METHODS.add("dense", Dense())
