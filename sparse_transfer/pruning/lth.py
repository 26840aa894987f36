"""Lottery tickets by iterative magnitude pruning with rewinding (LTH-T).

Chen, Frankle, Chang, Liu, Zhang, Carbin & Wang, "The Lottery Tickets Hypothesis for Supervised
and Self-supervised Pre-training in Computer Vision Models", CVPR 2021 (arXiv:2012.06908), on
Frankle & Carbin (ICLR 2019) and Frankle et al.'s rewinding (ICML 2020). Each of k rounds trains
the current sparse network on the upstream task, prunes the fraction p = 1 - (1 - s)^(1/k) of the
remaining weights by global magnitude, and rewinds everything (surviving weights, BatchNorm,
classifier) to the rewind point: the pretrained weights (`rewind_epoch=0`, LTH-T's setting) or
a snapshot after that many epochs of the first round. After k rounds the sparsity is exactly
the target. The ticket (masks + rewound weights) is then trained once more with the masks
fixed, on the budget left, so the method returns trained sparse weights like the others.

Budget: `ticket_fraction` of ctx.epochs (at least) trains the final ticket, the rest is split
equally among the k rounds; the paper trains fully in every round and prunes 20% per round over
many more rounds, which `rounds` and `ticket_fraction` allow at a larger budget.
"""

from __future__ import annotations

import copy

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from sparse_transfer.pruning._training import all_kept, lowest_scores_masks, mask_sparsity
from sparse_transfer.pruning.magnitude import finetune
from sparse_transfer.pruning.masks import Masks, apply_masks, prunable_weights
from sparse_transfer.pruning.method import METHODS, PruneContext
from sparse_transfer.pruning.policy import PruningPolicy

__all__ = ["LTH", "LTHParams"]


class LTHParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rounds: int = Field(2, ge=1, description="k, the pruning rounds")
    rewind_epoch: int = Field(0, ge=0, description="0: rewind to the pretrained weights")
    ticket_fraction: float = Field(0.5, gt=0, le=1, description="of the budget, for the ticket")


class LTH:
    name = "lth"
    params_type = LTHParams
    # Chen et al. prune the convolutions only, by one global magnitude ranking, and skip the
    # first: VITA-Group/CV_LTH_Pre-training main_imp_imagenet.py:229
    # `pruning_model(model.module, args.percent, False)` (conv1=False), pruning_utils.py:15-34
    # (nn.Conv2d only, `name == 'conv1'` skipped). So conv1 and the classifier stay dense.
    policy = PruningPolicy(prune_first_conv=False, prune_classifier=False, distribution="global")
    distributions = ("global", "uniform", "erk")

    def __init__(self, params: LTHParams | None = None) -> None:
        self.params = params or LTHParams()

    def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> Masks:
        k = self.params.rounds
        per_round = int(ctx.epochs * (1.0 - self.params.ticket_fraction)) // k
        rewind_epoch = min(self.params.rewind_epoch, per_round)
        weights = prunable_weights(model, exclude=ctx.exclude)
        masks = all_kept(weights)
        snapshot = copy.deepcopy(model.state_dict())
        for r in range(k):
            if r == 0 and rewind_epoch:  # late rewinding: the snapshot comes from training
                finetune(model, masks, ctx, epochs=rewind_epoch)
                snapshot = copy.deepcopy(model.state_dict())
            finetune(model, masks, ctx, epochs=per_round - rewind_epoch)
            target = 1.0 - (1.0 - sparsity) ** ((r + 1) / k)
            scores = {name: w.detach().abs() for name, w in weights.items()}
            masks = lowest_scores_masks(
                scores, masks, target, ctx.distribution or self.policy.distribution
            )
            model.load_state_dict(snapshot)
            apply_masks(model, masks)
            ctx.log.append(
                {"round": r, "target_sparsity": target, "sparsity": mask_sparsity(masks)}
            )
        # the ticket trains from the rewind point like every round, plus what the split left
        finetune(
            model, masks, ctx, epochs=ctx.epochs - per_round - (k - 1) * (per_round - rewind_epoch)
        )
        return masks


METHODS.add("lth", LTH())
