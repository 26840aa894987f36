"""Downstream and upstream datasets as registry entries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from sparse_transfer.registry import Registry

__all__ = ["DATASETS", "SPLITS", "Dataset", "Split"]

# train + val = trainval; val is carved from the training data for hyperparameter search,
# test is only ever scored by final runs.
SPLITS = ("train", "val", "trainval", "test")
Split = str


@dataclass(frozen=True)
class Dataset:
    name: str
    num_classes: int
    load: Callable[[Split], tuple[torch.Tensor, torch.Tensor]]  # split -> (images, labels)
    description: str = ""


DATASETS: Registry[Dataset] = Registry("dataset")
