"""ResNet-18 and ResNet-50 with torchvision's layer names (`conv1`, `bn1`, `layer1..4`, `fc`),
and `resnet50_tf`, the stem the authors ran RigL's TensorFlow-trained weights in.

The paper's ResNet-50 checkpoints (dense, GMP, AC/DC, WoodFisher, STR, LTH-T) were trained in
PyTorch with these very names; RigL's TensorFlow-derived names are mapped onto them by the
catalog entry's key rules (`keymap.RIGL_TF_TO_TORCHVISION`). ResNet-18 exists so tests can
exercise every checkpoint format in a fraction of the time.
"""

from __future__ import annotations

from torch import nn

from sparse_transfer.models.registry import ARCHS, Arch

__all__ = ["build_resnet18", "build_resnet50", "build_resnet50_tf"]


def build_resnet18(num_classes: int) -> nn.Module:
    from torchvision.models import resnet18  # on use: see sparse_transfer.data.paper

    return resnet18(weights=None, num_classes=num_classes)


def build_resnet50(num_classes: int) -> nn.Module:
    from torchvision.models import resnet50

    return resnet50(weights=None, num_classes=num_classes)


def build_resnet50_tf(num_classes: int) -> nn.Module:
    """ResNet-50 whose first max-pool pools as TensorFlow's `SAME` does: one zero row and column
    after the input (bottom, right), then no padding; torchvision pads one on every side, which
    shifts the pooling grid by a pixel. As the authors' `ResnetTF` (sparse-imagenet-transfer
    models/external/rigl/resnet.py:95-96: `ZeroPad2d((0,1,0,1))`, `MaxPool2d(3, stride=2,
    padding=0)`). The pool has no weights, so the state dict is torchvision's: after ReLU every
    input is >= 0, so a zero pad never wins a max it should not."""
    model = build_resnet50(num_classes)
    model.maxpool = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.MaxPool2d(3, stride=2, padding=0))
    return model


ARCHS.add("resnet18", Arch("resnet18", build_resnet18, "fc", (3, 224, 224), first_conv="conv1"))
ARCHS.add("resnet50", Arch("resnet50", build_resnet50, "fc", (3, 224, 224), first_conv="conv1"))
ARCHS.add(
    "resnet50_tf",
    Arch(
        "resnet50_tf",
        build_resnet50_tf,
        "fc",
        (3, 224, 224),
        first_conv="conv1",
        variant_of="resnet50",
    ),
)
