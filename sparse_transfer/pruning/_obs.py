"""What the two second-order methods (WoodFisher, M-FAC) share: the gradients their empirical
Fisher is built from, the block layout, and the gradual schedule around their pruning steps.

Optimal Brain Surgeon (Hassibi & Stork, NeurIPS 1992): with the loss locally quadratic in the
Fisher F, removing weight q costs rho_q = w_q^2 / (2 [F^-1]_qq), and the other weights best
compensate with dw = -(w_q / [F^-1]_qq) F^-1 e_q. Both methods prune gradually like GMP: one
pruning step per epoch over the first two thirds of the budget on the cubic schedule of Zhu &
Gupta (`gmp.cubic_sparsity`), finetuning between steps, then finetuning with the masks fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sparse_transfer.pruning._training import all_kept, batch_loss, mask_sparsity, run_epoch
from sparse_transfer.pruning.gmp import cubic_sparsity
from sparse_transfer.pruning.magnitude import finetune
from sparse_transfer.pruning.masks import Masks, apply_masks, prunable_weights
from sparse_transfer.pruning.method import PruneContext
from sparse_transfer.transfer.loop import make_optimizer

Weights = dict[str, nn.Parameter]
PruneStep = Callable[[Masks, float], Masks]  # (current masks, target sparsity) -> new masks


def flat_gradients(
    model: nn.Module, weights: Weights, masks: Masks, ctx: PruneContext, count: int, batch: int
) -> torch.Tensor:
    """`count` gradients of the loss on random mini-batches of `batch` examples, as rows of a
    (count, n_weights) float64 matrix. The model is in eval mode (no BatchNorm statistics move)
    and pruned coordinates are zeroed, so the Fisher only couples weights still present."""
    was_training = model.training
    model.eval()
    rows = []
    for _ in range(count):
        index = torch.randint(len(ctx.labels), (batch,), generator=ctx.generator)
        loss = batch_loss(model, ctx, ctx.inputs[index], ctx.labels[index])
        grads = torch.autograd.grad(loss, list(weights.values()))
        rows.append(
            torch.cat([(g * masks[n]).flatten() for n, g in zip(weights, grads, strict=True)])
        )
    model.train(was_training)
    return torch.stack(rows).double()


@dataclass(frozen=True)
class BlockLayout:
    """Where each weight (all layers flattened in order) sits in a zero-padded vector cut into
    blocks of `size`; blocks never span two layers. Padding has zero gradient and weight."""

    index: torch.Tensor
    size: int
    n_blocks: int

    @classmethod
    def of(cls, weights: Weights, block_size: int | None) -> BlockLayout:
        """block_size None: a single block holding every weight."""
        device = next(iter(weights.values())).device
        total = sum(w.numel() for w in weights.values())
        if block_size is None:
            return cls(torch.arange(total, device=device), total, 1)
        parts, start = [], 0
        for w in weights.values():
            parts.append(torch.arange(start, start + w.numel(), device=device))
            start += -(-w.numel() // block_size) * block_size
        return cls(torch.cat(parts), block_size, start // block_size)

    def blocks(self, flat: torch.Tensor) -> torch.Tensor:
        """(..., n_weights) -> (..., n_blocks, size)"""
        out = flat.new_zeros(*flat.shape[:-1], self.n_blocks * self.size)
        out[..., self.index] = flat
        return out.view(*flat.shape[:-1], self.n_blocks, self.size)

    def unblocks(self, blocked: torch.Tensor) -> torch.Tensor:
        """(..., n_blocks, size) -> (..., n_weights)"""
        return blocked.reshape(*blocked.shape[:-2], -1)[..., self.index]


def flatten(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().flatten() for t in tensors.values()])


@torch.no_grad()
def write_back(weights: Weights, flat: torch.Tensor) -> None:
    start = 0
    for w in weights.values():
        w.copy_(flat[start : start + w.numel()].view_as(w).to(w.dtype))
        start += w.numel()


def unflatten(weights: Weights, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    out, start = {}, 0
    for name, w in weights.items():
        out[name] = flat[start : start + w.numel()].view_as(w)
        start += w.numel()
    return out


def gradual_prune(
    model: nn.Module,
    sparsity: float,
    ctx: PruneContext,
    make_step: Callable[[Weights], PruneStep],
) -> Masks:
    """GMP's loop with a second-order pruning step in place of the magnitude ranking."""
    weights = prunable_weights(model, exclude=ctx.exclude)
    prune_step = make_step(weights)
    ramp = max(1, (2 * ctx.epochs) // 3)
    optimizer = make_optimizer(model.parameters(), ctx.hparams)
    masks = all_kept(weights)
    for epoch in range(ramp):
        target = cubic_sparsity(epoch + 1, ramp, sparsity)
        masks = prune_step(masks, target)
        apply_masks(model, masks)
        record = {"epoch": epoch, "target_sparsity": target, "sparsity": mask_sparsity(masks)}
        if epoch < ctx.epochs:  # with no budget at all, a single one-shot step
            record["train_loss"] = run_epoch(model, ctx, optimizer, masks)
        ctx.log.append(record)
    finetune(model, masks, ctx, epochs=max(ctx.epochs - ramp, 0))
    return masks
