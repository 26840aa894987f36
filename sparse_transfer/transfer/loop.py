"""The training loop pieces shared by upstream pretraining, pruning and both transfer modes."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from sparse_transfer.pruning.masks import Masks, apply_masks

__all__ = [
    "train_step",
    "batches",
    "evaluate",
    "make_optimizer",
    "make_schedule",
    "normalize",
    "random_shift",
    "train_epoch",
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


def normalize(images: torch.Tensor, preprocessing: Mapping) -> torch.Tensor:
    mean = torch.tensor(preprocessing["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing["std"]).view(1, -1, 1, 1)
    return (images - mean) / std


def random_shift(
    images: torch.Tensor, generator: torch.Generator, pixels: int = 1
) -> torch.Tensor:
    """Random translation by up to `pixels` (pad + crop): the small-image RandomResizedCrop."""
    n, _, h, w = images.shape
    padded = nn.functional.pad(images, [pixels] * 4)
    dy, dx = torch.randint(0, 2 * pixels + 1, (2,), generator=generator).tolist()
    return padded[:, :, dy : dy + h, dx : dx + w]


def batches(n: int, batch_size: int, generator: torch.Generator | None):
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


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
        apply_masks(model, masks)
    return loss.detach()


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
    model.train()
    total, count = 0.0, 0
    for index in batches(len(labels), batch_size, generator):
        x = inputs[index]
        if augment:
            x = random_shift(x, generator)
        loss = train_step(
            model, x, labels[index], optimizer, label_smoothing=label_smoothing, masks=masks
        )
        total += float(loss) * len(index)
        count += len(index)
    return total / max(count, 1)


@torch.no_grad()
def evaluate(
    model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, num_classes: int
) -> dict[str, float]:
    """Top-1 and mean per-class accuracy, both in percent."""
    model.eval()
    predictions = torch.cat([model(inputs[i]).argmax(1) for i in batches(len(labels), 512, None)])
    correct = predictions == labels
    per_class = [
        correct[labels == c].float().mean() for c in range(num_classes) if (labels == c).any()
    ]
    return {
        "top1": 100.0 * float(correct.float().mean()),
        "mean_class_acc": 100.0 * float(torch.stack(per_class).mean()),
    }
