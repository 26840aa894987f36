"""A small CNN for the offline quickstart world (8x8 handwritten digits)."""

from __future__ import annotations

from torch import nn

from sparse_transfer.models.registry import ARCHS, Arch

__all__ = ["QuickstartCNN"]


class QuickstartCNN(nn.Module):
    """Conv-BN-ReLU x3 + global pooling + linear head; ~25k weights, all prunable."""

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()

        def block(c_in: int, c_out: int) -> list[nn.Module]:
            return [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]

        self.features = nn.Sequential(
            *block(1, width),
            *block(width, 2 * width),
            nn.MaxPool2d(2),
            *block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.fc(self.features(x))


ARCHS.add(
    "quickstart_cnn",
    Arch("quickstart_cnn", QuickstartCNN, "fc", (1, 8, 8), first_conv="features.0"),
)
