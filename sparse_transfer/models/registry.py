"""Architectures as registry entries: a builder plus the name of the classifier to replace."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

from sparse_transfer.registry import Registry

__all__ = ["ARCHS", "Arch", "replace_classifier"]


@dataclass(frozen=True)
class Arch:
    name: str
    build: Callable[[int], nn.Module]  # num_classes -> model
    classifier: str  # attribute path of the final nn.Linear, e.g. "fc"
    input_shape: tuple[int, int, int]  # (channels, height, width)
    first_conv: str  # module name of the first convolution (pruning policies may keep it dense)
    # the architecture whose state dict this one shares, when it only computes differently
    # (`resnet50_tf`); `checkpoint inspect` never guesses a variant from keys alone
    variant_of: str | None = None


ARCHS: Registry[Arch] = Registry("architecture")


Head = Literal["linear", "conv1x1"]


def replace_classifier(
    model: nn.Module, arch: Arch, num_classes: int, head: Head = "linear"
) -> nn.Linear:
    """Swap the classifier for a fresh dense one with `num_classes` outputs.

    `linear`: nn.Linear with bias and PyTorch's default init. `conv1x1`: the head STR's models
    end in (sparse-imagenet-transfer models/external/str/STR_resnet.py:117 and
    STR_mobilenet.py:48, `builder.conv1x1`; builder.py:36-39 `bias=False`, 148-150
    `kaiming_normal_(mode="fan_in", nonlinearity="relu")`). On the pooled 1x1 feature map a
    bias-free 1x1 conv is a bias-free Linear, and fan-in is the same for both shapes, so it is
    built as one: the same function and init, with the Linear's keys every consumer expects."""
    *path, last = arch.classifier.split(".")
    parent = model
    for part in path:
        parent = getattr(parent, part)
    old = getattr(parent, last)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"{arch.name}: classifier {arch.classifier!r} is not nn.Linear")
    if head not in ("linear", "conv1x1"):
        raise ValueError(f"{arch.name}: unknown head {head!r}; valid: linear, conv1x1")
    new = nn.Linear(old.in_features, num_classes, bias=head == "linear")
    if head == "conv1x1":
        nn.init.kaiming_normal_(new.weight, mode="fan_in", nonlinearity="relu")
    setattr(parent, last, new)
    return new
