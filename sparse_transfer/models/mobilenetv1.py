"""MobileNetV1 (Howard et al. 2017, width 1.0) with the layer names of the paper's checkpoints.

The AC/DC, M-FAC and STR MobileNetV1 checkpoints the paper used (IST-DASLab's converted files)
come from a Distiller-style model whose parameters are named:

    model.0.0.weight            stem: 3x3 conv, 3 -> 32, stride 2 (model.0.1 is its BatchNorm)
    model.{i}.0.weight          i = 1..13: 3x3 depthwise conv (groups = channels), BN model.{i}.1
    model.{i}.3.weight          i = 1..13: 1x1 pointwise conv, BN model.{i}.4
    fc.weight, fc.bias          the classifier, Linear(1024, num_classes)

`model.14` is the global average pool (no parameters). The originals used `AvgPool2d(7)`,
which is the same thing at 224x224 input; an adaptive pool keeps other sizes usable.
STR's MobileNetV1 has the same body names but a 1x1-conv classifier without bias; the STR
format's key rules turn that into this `fc` (see `keymap.Conv1x1ToLinear`).
"""

from __future__ import annotations

import torch
from torch import nn

from sparse_transfer.models.registry import ARCHS, Arch

__all__ = ["MobileNetV1"]

# (output channels, stride) of the 13 depthwise-separable blocks
_BLOCKS = (
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
)


def _conv_bn_relu(c_in: int, c_out: int, kernel: int, stride: int, groups: int = 1):
    return [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Sequential(*_conv_bn_relu(3, 32, 3, 2))]
        c_in = 32
        for c_out, stride in _BLOCKS:
            layers.append(
                nn.Sequential(
                    *_conv_bn_relu(c_in, c_in, 3, stride, groups=c_in),
                    *_conv_bn_relu(c_in, c_out, 1, 1),
                )
            )
            c_in = c_out
        layers.append(nn.AdaptiveAvgPool2d(1))
        self.model = nn.Sequential(*layers)
        self.fc = nn.Linear(c_in, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.model(x), 1))


ARCHS.add(
    "mobilenetv1", Arch("mobilenetv1", MobileNetV1, "fc", (3, 224, 224), first_conv="model.0.0")
)
