"""AC/DC: Alternating Compressed / DeCompressed training.

Peste, Iofinova, Vladu & Alistarh, "AC/DC: Alternating Compressed/DeCompressed Training of Deep
Neural Networks", NeurIPS 2021 (arXiv:2106.12379). After a dense warm-up, training alternates
between compressed phases (at the start of each, the smallest-magnitude weights are pruned to the
target, globally over every layer, the first convolution and the classifier included, as the
authors' ImageNet configs list them: IST-DASLab/ACDC
configs/neurips/iht_imagenet_resnet50_insta_cosinelr_s90_ep100.yaml:11-21, `modules: [conv1,
layer1.0.conv1, ..., fc]`; the mask is then fixed for the phase) and decompressed
phases (all weights train again; the pruned ones restart from zero). The run ends with a longer
compressed phase, so the result is sparse at exactly the target. One optimizer (and momentum)
spans all phases, as in the paper. The paper's ImageNet plan (100 epochs: 10 warm-up, 5-epoch
phases, the last 15 compressed) is given here in epochs; the defaults suit short budgets.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from sparse_transfer.pruning._training import measured_sparsity, run_epoch
from sparse_transfer.pruning.masks import (
    Masks,
    apply_masks,
    magnitude_masks,
    prunable_weights,
)
from sparse_transfer.pruning.method import METHODS, PruneContext
from sparse_transfer.pruning.policy import PruningPolicy
from sparse_transfer.transfer.loop import make_optimizer

__all__ = ["ACDC", "ACDCParams", "phase_plan"]


class ACDCParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    warmup_epochs: int = Field(1, ge=0, description="dense epochs before the first compression")
    phase_epochs: int = Field(1, ge=1, description="length of each compressed/decompressed phase")
    final_epochs: int = Field(2, ge=1, description="the last, compressed phase")


def phase_plan(epochs: int, params: ACDCParams) -> list[bool]:
    """Per epoch, True where compressed. The final phase and then the warm-up get their length
    first; the alternation (compressed first) fills whatever budget is left between them."""
    final = min(params.final_epochs, epochs)
    warmup = min(params.warmup_epochs, epochs - final)
    middle = epochs - warmup - final
    alternating = [(i // params.phase_epochs) % 2 == 0 for i in range(middle)]
    return [False] * warmup + alternating + [True] * final


class ACDC:
    name = "acdc"
    params_type = ACDCParams
    policy = PruningPolicy(prune_first_conv=True, prune_classifier=True, distribution="global")
    distributions = ("global", "uniform", "erk")

    def __init__(self, params: ACDCParams | None = None) -> None:
        self.params = params or ACDCParams()

    def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> Masks:
        weights = prunable_weights(model, exclude=ctx.exclude)
        distribution = ctx.distribution or self.policy.distribution
        optimizer = make_optimizer(model.parameters(), ctx.hparams)
        masks: Masks | None = None
        for epoch, compressed in enumerate(phase_plan(ctx.epochs, self.params)):
            if not compressed:
                masks = None
            elif masks is None:  # a compressed phase begins: a fresh top-k mask
                masks = magnitude_masks(weights, sparsity, distribution)
                apply_masks(model, masks)
            loss = run_epoch(model, ctx, optimizer, masks)
            ctx.log.append(
                {
                    "epoch": epoch,
                    "phase": "compressed" if compressed else "decompressed",
                    "sparsity": measured_sparsity(model, ctx),
                    "train_loss": loss,
                }
            )
        if masks is None:  # no training budget at all: compress once
            masks = magnitude_masks(weights, sparsity, distribution)
            apply_masks(model, masks)
        return masks


METHODS.add("acdc", ACDC())
