"""STR: Soft Threshold weight Reparameterization, registered as `str`.

Kusupati, Ramanujan, Somani, Wortsman, Jain, Kakade & Farhadi, "Soft Threshold Weight
Reparameterization for Learnable Sparsity", ICML 2020 (arXiv:2002.03231). Each prunable layer
uses sign(W) * ReLU(|W| - sigmoid(s_l)) in place of W (a torch parametrization), with one
learnable threshold parameter s_l per layer, trained by SGD alongside the weights and under weight
decay λ_s, which pulls s_l towards 0 and so raises the threshold: sparsity grows during training
and is learned per layer, not imposed, so STR does not hit a target exactly. At the end the
soft-thresholded weights are baked into the plain parameters (the parametrization removed), and
masks = weights != 0; the achieved sparsity is reported exactly (the last `ctx.log` record's
`sparsity`), and `sparsity_tolerance` says how far from the target it may land.

Beyond the paper, which tunes s_init and λ by hand for each target and trains from scratch:
- s_init (same for every layer, as in the paper) defaults to the threshold that prunes
  `start_fraction` of the target globally at the start, so that sparsity grows from there;
- with `threshold_weight_decay=None`, λ_s is calibrated by bisection on log λ_s (more decay,
  more sparsity), each candidate running the whole budget from the same start and batches, until
  the achieved sparsity is within `tolerance` of the target; the closest run is kept;
- BatchNorm statistics are re-estimated on the training data after baking: over a short budget
  the thresholds move the weights faster than the running averages follow.
"""

from __future__ import annotations

import copy
import math

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from torch.nn.utils import parametrize

from sparse_transfer.pruning._training import (
    mask_sparsity,
    measured_sparsity,
    recalibrate_batchnorm,
    run_epoch,
)
from sparse_transfer.pruning.masks import Masks, masks_from_zeros, prunable_weights
from sparse_transfer.pruning.method import METHODS, PruneContext
from sparse_transfer.pruning.policy import PruningPolicy
from sparse_transfer.transfer.loop import make_optimizer

__all__ = ["STR", "STRParams", "SoftThreshold"]


class STRParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    s_init: float | None = Field(None, description="None: prune start_fraction*target at first")
    start_fraction: float = Field(0.5, ge=0, lt=1, description="of the target, pruned at start")
    threshold_weight_decay: float | None = Field(None, ge=0, description="λ on s; None: calibrate")
    tolerance: float = Field(0.005, gt=0, description="calibration stops this close to the target")
    search_steps: int = Field(12, ge=1, description="at most this many runs of the budget")


class SoftThreshold(nn.Module):
    """The parametrization W -> sign(W) * ReLU(|W| - sigmoid(s)) with a learnable s."""

    def __init__(self, s_init: float, like: torch.Tensor) -> None:
        super().__init__()
        self.s = nn.Parameter(torch.tensor(s_init, dtype=like.dtype, device=like.device))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.sign(weight) * torch.relu(weight.abs() - torch.sigmoid(self.s))


class STR:
    name = "str"
    params_type = STRParams
    # STR's code gives every layer, the first convolution and the classifier included, a
    # learnable threshold: the per-layer sparsity is learned
    policy = PruningPolicy(prune_first_conv=True, prune_classifier=True, distribution="learned")
    distributions = ("learned",)
    sparsity_tolerance = 0.02  # how far from the target STR may land on the quickstart task

    def __init__(self, params: STRParams | None = None) -> None:
        self.params = params or STRParams()

    def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> Masks:
        p = self.params
        s_init = _logit(_magnitude_quantile(model, ctx, p.start_fraction * sparsity))
        s_init = s_init if p.s_init is None else p.s_init
        start = ctx.generator.get_state()
        if p.threshold_weight_decay is not None:
            best = self._run(model, s_init, p.threshold_weight_decay, ctx)
            search = [{"threshold_weight_decay": best[3], "sparsity": best[2]}]
        else:
            best, search = self._calibrate(model, s_init, sparsity, ctx, start)
        trained, records, achieved, decay = best
        model.load_state_dict(trained.state_dict())
        ctx.log.extend(records)
        ctx.log.append(
            {
                "search": search,
                "s_init": s_init,
                "threshold_weight_decay": decay,
                "sparsity": achieved,
            }
        )
        return masks_from_zeros(prunable_weights(model, exclude=ctx.exclude))

    def _calibrate(self, model, s_init: float, sparsity: float, ctx: PruneContext, start):
        """Bisection on log λ_s: more decay on s, higher thresholds, more sparsity."""
        low, high = math.log(1e-6), math.log(10.0)
        best, search = None, []
        for _ in range(self.params.search_steps):
            ctx.generator.set_state(start)  # every candidate sees the same batches
            run = self._run(model, s_init, math.exp((low + high) / 2), ctx)
            search.append({"threshold_weight_decay": run[3], "sparsity": run[2]})
            if best is None or abs(run[2] - sparsity) < abs(best[2] - sparsity):
                best = run
            if abs(run[2] - sparsity) <= self.params.tolerance:
                break
            low, high = ((low + high) / 2, high) if run[2] < sparsity else (low, (low + high) / 2)
        return best, search

    def _run(self, model: nn.Module, s_init: float, decay: float, ctx: PruneContext):
        """The whole budget on a copy of `model`: (trained copy, epoch log, sparsity, λ_s)."""
        trial = copy.deepcopy(model)
        weights = _weights(trial, ctx)
        thresholds = {}
        for name, w in weights.items():
            module = trial.get_submodule(name.rpartition(".")[0])
            parametrize.register_parametrization(module, "weight", SoftThreshold(s_init, w))
            thresholds[name] = module.parametrizations.weight[0].s
        threshold_ids = {id(s) for s in thresholds.values()}
        groups = [
            {"params": [q for q in trial.parameters() if id(q) not in threshold_ids]},
            {"params": list(thresholds.values()), "weight_decay": decay},
        ]
        optimizer = make_optimizer(groups, ctx.hparams)
        records = []
        for epoch in range(ctx.epochs):
            loss = run_epoch(trial, ctx, optimizer)
            records.append(
                {
                    "epoch": epoch,
                    "train_loss": loss,
                    "sparsity": measured_sparsity(trial, ctx),
                    "thresholds": {
                        n: float(torch.sigmoid(s.detach())) for n, s in thresholds.items()
                    },
                }
            )
        for name in weights:  # bake sign(W) ReLU(|W| - sigmoid(s)) into the plain weight
            module = trial.get_submodule(name.rpartition(".")[0])
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        recalibrate_batchnorm(trial, ctx)
        return trial, records, mask_sparsity(masks_from_zeros(_weights(trial, ctx))), decay


def _magnitude_quantile(model: nn.Module, ctx: PruneContext, fraction: float) -> float:
    magnitudes = torch.sort(
        torch.cat([w.detach().abs().flatten() for w in _weights(model, ctx).values()])
    ).values
    return float(magnitudes[min(round(fraction * len(magnitudes)), len(magnitudes) - 1)])


def _weights(model: nn.Module, ctx: PruneContext) -> dict[str, torch.Tensor]:
    return prunable_weights(model, exclude=ctx.exclude)


def _logit(p: float) -> float:
    p = min(max(p, 1e-8), 1 - 1e-6)
    return math.log(p / (1 - p))


METHODS.add("str", STR())
