"""The training loop pieces shared by upstream pretraining, pruning and both transfer modes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import torch
from torch import nn

from sparse_transfer.data.source import index_batches as batches
from sparse_transfer.data.source import normalize, random_shift

if TYPE_CHECKING:  # the pruning methods import this module: no import of theirs at load time
    from sparse_transfer.pruning.masks import Masks

__all__ = [
    "autocast_dtype",
    "batches",
    "evaluate",
    "evaluate_batches",
    "make_optimizer",
    "make_schedule",
    "on_device",
    "normalize",
    "random_shift",
    "train_batches",
    "train_epoch",
    "train_step",
]


def make_optimizer(params, hparams: Mapping) -> torch.optim.SGD:
    return torch.optim.SGD(
        params,
        lr=float(hparams["lr"]),
        momentum=float(hparams["momentum"]),
        weight_decay=float(hparams["weight_decay"]),
    )


def make_schedule(optimizer, hparams: Mapping) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch lr factor: cosine to zero, the paper's x0.1 each third ("step"), or constant."""
    epochs = int(hparams["epochs"])
    kind = hparams["lr_schedule"]

    def factor(epoch: int) -> float:
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        if kind == "step":
            return 0.1 ** (3 * epoch // epochs)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    label_smoothing: float = 0.0,
    masks: Masks | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """One optimizer step; with `masks`, pruned weights stay exactly zero. Returns the loss."""
    with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss = nn.functional.cross_entropy(model(x), y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if masks:
        params = dict(model.named_parameters())
        # Zero the gradients of pruned weights so momentum never builds up there ...
        for name, mask in masks.items():
            if params[name].grad is not None:
                params[name].grad.mul_(mask)
    optimizer.step()
    if masks:
        # ... and re-apply the mask, since weight decay and momentum still move them.
        from sparse_transfer.pruning.masks import apply_masks

        apply_masks(model, masks)
    return loss.detach()


def on_device(model: nn.Module, device: torch.device) -> nn.Module:
    """The model moved to `device`; on a GPU in channels_last, the memory layout cuDNN's
    convolutions run fastest in (batches from `FileSource` arrive in it too)."""
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)
    return model


def autocast_dtype(device: torch.device, precision: str = "bf16") -> torch.dtype | None:
    """The autocast dtype of a spec's `resources.precision`: bf16 mixed precision on GPUs (no
    loss scaling needed, unlike fp16); None (plain fp32) for fp32, and always on CPUs, where
    bf16 autocast is slower than fp32."""
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"unknown precision {precision!r}; valid: bf16, fp32")
    return torch.bfloat16 if precision == "bf16" and device.type == "cuda" else None


def train_batches(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    label_smoothing: float = 0.0,
    masks: Masks | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> float:
    """One pass over `batches` (see `train_step`). Returns the mean loss."""
    model.train()
    total, count = 0.0, 0
    for x, y in batches:
        loss = train_step(
            model,
            x,
            y,
            optimizer,
            label_smoothing=label_smoothing,
            masks=masks,
            autocast_dtype=autocast_dtype,
        )
        total = total + loss.double() * len(y)  # stays on the device: no sync per batch
        count += len(y)
    return float(total) / max(count, 1)


def train_epoch(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    batch_size: int,
    generator: torch.Generator,
    label_smoothing: float = 0.0,
    masks: Masks | None = None,
    augment: bool = False,
) -> float:
    """One pass over in-memory data (see `train_step`). Returns the mean loss."""

    def pairs():
        for index in batches(len(labels), batch_size, generator):
            x = inputs[index]
            yield (random_shift(x, generator) if augment else x), labels[index]

    return train_batches(model, pairs(), optimizer, label_smoothing=label_smoothing, masks=masks)


@torch.no_grad()
def evaluate_batches(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Top-1 and mean per-class accuracy, both in percent."""
    model.eval()
    predicted, expected = [], []
    for x, y in batches:
        with torch.autocast(
            x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None
        ):
            predicted.append(model(x).argmax(1).cpu())
        expected.append(y.cpu())
    predictions, labels = torch.cat(predicted), torch.cat(expected)
    correct = predictions == labels
    per_class = [
        correct[labels == c].float().mean() for c in range(num_classes) if (labels == c).any()
    ]
    return {
        "top1": 100.0 * float(correct.float().mean()),
        "mean_class_acc": 100.0 * float(torch.stack(per_class).mean()),
    }


def evaluate(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> dict[str, float]:
    """`evaluate_batches` over in-memory data."""
    pairs = ((inputs[i], labels[i]) for i in batches(len(labels), 512, None))
    return evaluate_batches(model, pairs, num_classes)
