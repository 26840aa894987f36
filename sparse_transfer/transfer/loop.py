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
    from sparse_transfer.pruning.masks import MaskedParameters, Masks

__all__ = [
    "PRECISIONS",
    "autocast_dtype",
    "configure_device",
    "effective_precision",
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


# bf16: autocast to bfloat16 on a GPU, TF32 for what stays fp32; fp32: no autocast, but TF32
# convolutions and matmuls on a GPU (torch's default for cuDNN convolutions on Ampere and
# later: 10-bit mantissas); fp32-strict: IEEE fp32 throughout, as the paper's authors trained.
PRECISIONS = ("bf16", "fp32", "fp32-strict")


def make_optimizer(
    params, hparams: Mapping, device: torch.device | None = None
) -> torch.optim.SGD:
    """SGD; on a GPU fused into one kernel per step (the same update, fewer launches)."""
    return torch.optim.SGD(
        params,
        lr=float(hparams["lr"]),
        momentum=float(hparams["momentum"]),
        weight_decay=float(hparams["weight_decay"]),
        fused=True if device is not None and device.type == "cuda" else None,
    )


def make_schedule(optimizer, hparams: Mapping) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-epoch lr factor: cosine to zero, the authors' step schedule, or constant.

    `authors_step`: x0.1 after 0-indexed epochs E//3 and 2E//3, so 51/50/49 of 150 epochs run
    at lr, lr/10, lr/100. The authors' ExponentialLR(gamma=0.1) with `epochs: [50, 50, 150]`
    (sparse-imagenet-transfer configs/imagenet_transfer.yaml:12-14, mobilenet_full_net_transfer
    .yaml:12-14, imagenet_transfer_preextract.yaml:11-13) steps in on_epoch_end when
    `(epoch - 50) % 50 == 0` (policies/trainers.py:134-137): after 0-indexed epochs 50, 100."""
    epochs = int(hparams["epochs"])
    kind = hparams["lr_schedule"]
    boundaries = (epochs // 3, 2 * epochs // 3)

    def factor(epoch: int) -> float:
        if kind == "cosine":
            return 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        if kind == "authors_step":
            return 0.1 ** sum(epoch > b for b in boundaries)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _prepared(model: nn.Module, masks: Masks) -> MaskedParameters | None:
    from sparse_transfer.pruning.masks import MaskedParameters  # see the TYPE_CHECKING import

    return MaskedParameters(model, masks) if masks else None


def train_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    label_smoothing: float = 0.0,
    masks: MaskedParameters | Masks | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """One optimizer step; with `masks`, pruned weights stay exactly zero. Returns the loss."""
    if isinstance(masks, dict):
        masks = _prepared(model, masks)
    with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        loss = nn.functional.cross_entropy(model(x), y, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if masks is not None:
        masks.zero_grads()
    optimizer.step()
    if masks is not None:
        masks.zero_weights()
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
    loss scaling needed, unlike fp16); None (no autocast) for fp32 and fp32-strict, and always
    on CPUs, where bf16 autocast is slower than fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return torch.bfloat16 if precision == "bf16" and device.type == "cuda" else None


def effective_precision(device: torch.device, precision: str) -> str:
    """The arithmetic a precision really gives on this device: a CPU computes in IEEE fp32
    whatever the spec says."""
    autocast_dtype(device, precision)  # validates
    return precision if device.type == "cuda" else "fp32-strict"


def configure_device(device: torch.device, precision: str = "bf16") -> None:
    """What fp32 means on this device (TF32 allowed, or IEEE for fp32-strict), and on a GPU
    cuDNN's autotuner: a trial's input shapes repeat, so the fastest kernels are found once."""
    autocast_dtype(device, precision)  # validates
    fp32 = "ieee" if precision == "fp32-strict" else "tf32"
    torch.backends.cudnn.conv.fp32_precision = fp32
    torch.backends.cuda.matmul.fp32_precision = fp32
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def train_batches(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    label_smoothing: float = 0.0,
    masks: MaskedParameters | Masks | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> float:
    """One pass over `batches` (see `train_step`). Returns the mean loss."""
    if isinstance(masks, dict):  # prepared once for the pass, not once per step
        masks = _prepared(model, masks)
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
