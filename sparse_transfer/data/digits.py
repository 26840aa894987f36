"""The offline quickstart world: scikit-learn's handwritten digits (real 8x8 scans, shipped inside
the package, 1,797 images), cut into an upstream task and two downstream tasks with other labels.

- `digits_0to4`: upstream pretraining, classify digits 0-4.
- `digits_5to9`: downstream, classify digits 5-9 (classes disjoint from upstream).
- `digits_5to9_parity`: downstream, odd vs even among digits 5-9 (a different label set again).
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from sparse_transfer.data.registry import DATASETS, SPLITS, Dataset

__all__ = ["TEST_FRACTION", "VAL_FRACTION"]

TEST_FRACTION = 0.3
VAL_FRACTION = 0.2
_SPLIT_SEED = 0  # splits are part of the dataset, never of a trial


@cache
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return (bunch.images / 16.0).astype(np.float32), bunch.target.astype(np.int64)


@cache
def _split_indices(digits: tuple[int, ...]) -> dict[str, np.ndarray]:
    from sklearn.model_selection import train_test_split

    _, targets = _digits()
    index = np.flatnonzero(np.isin(targets, digits))
    trainval, test = train_test_split(
        index, test_size=TEST_FRACTION, stratify=targets[index], random_state=_SPLIT_SEED
    )
    train, val = train_test_split(
        trainval, test_size=VAL_FRACTION, stratify=targets[trainval], random_state=_SPLIT_SEED
    )
    return {"train": train, "val": val, "trainval": trainval, "test": test}


def _loader(digits: tuple[int, ...], label_of: dict[int, int]):
    def load(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {SPLITS}")
        images, targets = _digits()
        index = _split_indices(digits)[split]
        labels = np.array([label_of[int(t)] for t in targets[index]], dtype=np.int64)
        return torch.from_numpy(images[index]).unsqueeze(1), torch.from_numpy(labels)

    return load


def _register(name: str, digits: tuple[int, ...], label_of: dict[int, int], doc: str) -> None:
    num_classes = len(set(label_of.values()))
    DATASETS.add(name, Dataset(name, num_classes, _loader(digits, label_of), doc))


_register("digits_0to4", (0, 1, 2, 3, 4), {d: d for d in range(5)}, "digits 0-4, 5 classes")
_register(
    "digits_5to9", (5, 6, 7, 8, 9), {d: d - 5 for d in range(5, 10)}, "digits 5-9, 5 classes"
)
_register(
    "digits_5to9_parity",
    (5, 6, 7, 8, 9),
    {d: d % 2 for d in range(5, 10)},
    "digits 5-9, odd vs even",
)
