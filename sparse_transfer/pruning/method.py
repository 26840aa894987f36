"""The one interface every pruning method implements, and what it is given to work with."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from sparse_transfer.pruning.masks import Masks
from sparse_transfer.pruning.policy import PruningPolicy
from sparse_transfer.registry import Registry

__all__ = ["METHODS", "PruneContext", "PruningMethod"]


@dataclass
class PruneContext:
    """The upstream training data and budget a method may use to reach its sparsity."""

    inputs: torch.Tensor
    labels: torch.Tensor
    epochs: int
    hparams: dict  # lr, momentum, weight_decay, batch_size, label_smoothing
    generator: torch.Generator
    exclude: tuple[str, ...] = ()  # modules never pruned (the zoo: from the entry's policy)
    # how sparsity spreads over the layers (`policy.Distribution`); None: the method's default
    distribution: str | None = None
    log: list[dict] = field(default_factory=list)  # per-epoch records a method may leave


class PruningMethod(Protocol):
    name: str
    policy: PruningPolicy  # the published convention: which layers, how sparsity spreads
    distributions: tuple[str, ...]  # the distributions the method can use

    def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> Masks:
        """Prune `model` in place to `sparsity` (fraction of prunable weights) and return masks."""
        ...


METHODS: Registry[PruningMethod] = Registry("pruning method")
