"""M-FAC: matrix-free inverse-Fisher-vector products for Optimal Brain Surgeon pruning.

Frantar, Kurtic & Alistarh, "M-FAC: Efficient Matrix-Free Approximations of Second-Order
Information", NeurIPS 2021 (arXiv:2107.03356). F = λI + (1/m) Σ g_i gᵢᵀ over a sliding window
of the last m gradients is never formed: with v_i = F_{i-1}⁻¹ g_i (F_0 = λI),
F⁻¹x = x/λ - Σ_i (v_iᵀx) v_i / (m + gᵢᵀv_i), and each v_i = Σ_j B_ij g_j is a combination of
the window's gradients whose coefficients follow the paper's recursion from the m×m Gram
matrix GGᵀ. Adding a gradient (the dynamic algorithm) replaces the oldest one and updates one
row of the Gram matrix in O(md); the coefficients are then recomputed from it in O(m³) (the
paper's O(m²) reordering trick is not needed at these m). diag(F⁻¹) follows from the same
coefficients, giving the OBS statistic ρ_q = w_q² / (2 [F⁻¹]_qq), and the update is the sum of
the pruned weights' single-weight OBS updates, δw = -F⁻¹ Σ_q (w_q / [F⁻¹]_qq) e_q: one
inverse-Fisher-vector product. By default the Fisher spans the whole network (one block), the
paper's matrix-free setting; `block_size` gives its blocked variant, with the same block layout
as WoodFisher but still matrix-free within each block. Pruning is gradual with the cubic
schedule and finetuning between steps (as WoodFisher); the window is refilled with m fresh
mini-batch gradients (eval mode) at each pruning step.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from sparse_transfer.pruning._obs import (
    BlockLayout,
    Weights,
    flat_gradients,
    flatten,
    gradual_prune,
    unflatten,
    write_back,
)
from sparse_transfer.pruning._training import lowest_scores_masks
from sparse_transfer.pruning.masks import Masks
from sparse_transfer.pruning.method import METHODS, PruneContext
from sparse_transfer.pruning.policy import PruningPolicy

__all__ = ["InverseFisherWindow", "MFAC", "MFACParams"]


class MFACParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    num_gradients: int = Field(64, ge=1, description="m, the sliding window's length")
    fisher_batch_size: int = Field(8, ge=1, description="examples averaged into each gradient")
    damp: float = Field(1e-5, gt=0, description="λ, the dampening added to the Fisher")
    block_size: int | None = Field(None, ge=1, description="None: one block, the whole network")


class InverseFisherWindow:
    """F⁻¹ of the last `window` gradients, per block, without forming F or F⁻¹."""

    def __init__(self, window: int, n_blocks: int, size: int, damp: float, device=None) -> None:
        self.m, self.damp, self.added = window, damp, 0
        kw = {"dtype": torch.float64, "device": device}
        self.grads = torch.zeros(window, n_blocks, size, **kw)
        self.gram = torch.zeros(n_blocks, window, window, **kw)
        self._coefficients: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def add(self, g: torch.Tensor) -> None:
        """Replace the oldest gradient by `g` (n_blocks, size): one Gram row, O(md)."""
        slot = self.added % self.m
        self.grads[slot] = g
        row = torch.einsum("wbs,bs->bw", self.grads, self.grads[slot])
        self.gram[:, slot, :] = row
        self.gram[:, :, slot] = row
        self.added += 1
        self._coefficients = None

    def coefficients(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(window order oldest first, B with v_i = Σ_j B_ij g_j, denominators m + gᵢᵀv_i)."""
        if self._coefficients is None:
            n = min(self.added, self.m)
            order = (torch.arange(n, device=self.grads.device) + self.added - n) % self.m
            gram = self.gram[:, order][:, :, order]
            b = torch.zeros_like(gram)
            denominator = torch.zeros(gram.shape[:2], dtype=gram.dtype, device=gram.device)
            for i in range(n):
                b[:, i, i] = 1.0 / self.damp
                if i:  # v_i = g_i/λ - Σ_{j<i} (v_jᵀg_i) v_j / (m + g_jᵀv_j)
                    dots = torch.einsum("bjk,bk->bj", b[:, :i], gram[:, :, i])
                    weights = dots / denominator[:, :i]
                    b[:, i] -= torch.einsum("bj,bjk->bk", weights, b[:, :i])
                denominator[:, i] = self.m + torch.einsum("bk,bk->b", b[:, i], gram[:, :, i])
            self._coefficients = (order, b, denominator)
        return self._coefficients

    def ifvp(self, x: torch.Tensor) -> torch.Tensor:
        """F⁻¹x for x shaped (n_blocks, size), in O(md + m²) per block."""
        order, b, denominator = self.coefficients()
        grads = self.grads[order]
        v_dot_x = torch.einsum("bij,bj->bi", b, torch.einsum("nbs,bs->bn", grads, x))
        combination = torch.einsum("bij,bi->bj", b, v_dot_x / denominator)
        return x / self.damp - torch.einsum("bj,jbs->bs", combination, grads)

    def diagonal(self) -> torch.Tensor:
        """diag(F⁻¹) = 1/λ - Σ_i v_i² / (m + gᵢᵀv_i), shaped (n_blocks, size)."""
        order, b, denominator = self.coefficients()
        v = torch.einsum("bij,jbs->bis", b, self.grads[order])
        return 1.0 / self.damp - (v**2 / denominator.unsqueeze(-1)).sum(dim=1)


class MFAC:
    name = "mfac"
    params_type = MFACParams
    # the authors' (IST-DASLab) convention, shared with AC/DC: one global ranking over every
    # layer but the first convolution, the classifier included
    policy = PruningPolicy(prune_first_conv=False, prune_classifier=True, distribution="global")
    distributions = ("global", "uniform", "erk")

    def __init__(self, params: MFACParams | None = None) -> None:
        self.params = params or MFACParams()

    def prune(self, model: nn.Module, sparsity: float, ctx: PruneContext) -> Masks:
        return gradual_prune(model, sparsity, ctx, lambda w: self._step_for(model, w, ctx))

    def _step_for(self, model: nn.Module, weights: Weights, ctx: PruneContext):
        p = self.params
        layout = BlockLayout.of(weights, p.block_size)

        def step(masks: Masks, target: float) -> Masks:
            grads = flat_gradients(
                model, weights, masks, ctx, p.num_gradients, p.fisher_batch_size
            )
            window = InverseFisherWindow(
                p.num_gradients, layout.n_blocks, layout.size, p.damp, grads.device
            )
            for g in layout.blocks(grads):
                window.add(g)
            w = flatten(weights).double()
            diagonal = layout.unblocks(window.diagonal())
            new_masks = lowest_scores_masks(
                unflatten(weights, w**2 / (2 * diagonal)),
                masks,
                target,
                ctx.distribution or self.policy.distribution,
            )
            pruned = ~flatten(new_masks)
            newly = pruned & flatten(masks)
            scaled = torch.where(newly, w / diagonal, 0.0)
            delta = -layout.unblocks(window.ifvp(layout.blocks(scaled)))
            write_back(weights, torch.where(pruned, 0.0, w + delta))
            return new_masks

        return step


METHODS.add("mfac", MFAC())
