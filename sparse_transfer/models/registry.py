"""Architectures as registry entries: a builder plus the name of the classifier to replace."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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


ARCHS: Registry[Arch] = Registry("architecture")


def replace_classifier(model: nn.Module, arch: Arch, num_classes: int) -> nn.Linear:
    """Swap the classifier for a fresh dense one with `num_classes` outputs."""
    *path, last = arch.classifier.split(".")
    parent = model
    for part in path:
        parent = getattr(parent, part)
    old = getattr(parent, last)
    if not isinstance(old, nn.Linear):
        raise TypeError(f"{arch.name}: classifier {arch.classifier!r} is not nn.Linear")
    new = nn.Linear(old.in_features, num_classes)
    setattr(parent, last, new)
    return new
