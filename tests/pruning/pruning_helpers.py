"""The quickstart setting the pruning tests share: architecture, data, a pruning context."""

from __future__ import annotations

import torch

import sparse_transfer.pruning  # noqa: F401  (before transfer.loop: the registry imports it)
from sparse_transfer.data import DATASETS
from sparse_transfer.models import ARCHS
from sparse_transfer.pruning import PruneContext
from sparse_transfer.transfer.loop import normalize

ARCH = ARCHS.get("quickstart_cnn")
HPARAMS = {
    "lr": 0.01,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "batch_size": 64,
    "label_smoothing": 0.0,
}


def quickstart_data(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """digits_0to4 `split`, normalized with the train split's statistics."""
    dataset = DATASETS.get("digits_0to4")
    train_images, _ = dataset.load("train")
    stats = {"mean": [float(train_images.mean())], "std": [float(train_images.std())]}
    images, labels = dataset.load(split)
    return normalize(images, stats), labels


def context(epochs: int, seed: int = 0) -> PruneContext:
    images, labels = quickstart_data()
    return PruneContext(
        images,
        labels,
        epochs=epochs,
        hparams=dict(HPARAMS),
        generator=torch.Generator().manual_seed(seed),
        exclude=(ARCH.classifier,),
    )
