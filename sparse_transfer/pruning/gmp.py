"""Gradual magnitude pruning (GMP) with the cubic schedule of Zhu & Gupta.

Zhu & Gupta, "To prune, or not to prune: exploring the efficacy of pruning for model
compression", ICLR Workshop 2018 (arXiv:1710.01878). Sparsity rises from s_i to s_f over n
pruning steps as s_t = s_f + (s_i - s_f) * (1 - t / n)^3: fast at first, while the network has
redundant weights to spare, slowly near the end. As in the paper, every layer is pruned to s_t
at each step (`uniform`: the smallest-magnitude weights within each layer). Which layers: GMP as
STR's baseline, the GMP the paper's upstream models compare with, prunes every one, the first
convolution and the classifier included (RAIVNLab/STR configs/largescale/resnet50-gmp.yaml:25
`conv_type: GMPConv`; models/resnet.py:94-114, with `first_layer_dense` and `last_layer_dense`
off, conv1 and fc are built by the same builder). `global` and `erk` rankings, and keeping a
layer dense, are policy overrides.
The last third of the budget finetunes with the final masks fixed.
"""

from __future__ import annotations

from torch import nn

from sparse_transfer.pruning._training import run_epoch
from sparse_transfer.pruning.magnitude import finetune
from sparse_transfer.pruning.masks import (
    Masks,
    apply_masks,
    magnitude_masks,
    prunable_weights,
)
from sparse_transfer.pruning.method import METHODS, PruneContext
from sparse_transfer.pruning.policy import PruningPolicy
from sparse_transfer.transfer.loop import make_optimizer

__all__ = ["cubic_sparsity"]


def cubic_sparsity(step: int, n_steps: int, final: float, initial: float = 0.0) -> float:
    """Zhu & Gupta's schedule; step 0 is the first pruning step, n_steps reaches `final`."""
    progress = min(max(step / n_steps, 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


class GradualMagnitude:
    name = "gmp"
    policy = PruningPolicy(prune_first_conv=True, prune_classifier=True, distribution="uniform")
    distributions = ("uniform", "global", "erk")

    def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> Masks:
        distribution = ctx.distribution or self.policy.distribution
        ramp = max(1, (2 * ctx.epochs) // 3)
        weights = prunable_weights(model, exclude=ctx.exclude)
        optimizer = make_optimizer(model.parameters(), ctx.hparams)
        masks: Masks = {}
        for epoch in range(ramp):
            target = cubic_sparsity(epoch + 1, ramp, sparsity)
            masks = magnitude_masks(weights, target, distribution)
            apply_masks(model, masks)
            loss = run_epoch(model, ctx, optimizer, masks)
            ctx.log.append({"target_sparsity": target, "train_loss": loss})
        finetune(model, masks, ctx, epochs=ctx.epochs - ramp)
        return masks


METHODS.add("gmp", GradualMagnitude())
