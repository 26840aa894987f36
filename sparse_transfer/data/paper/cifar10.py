"""CIFAR-10 (Krizhevsky 2009): 10 classes, 50,000 train / 10,000 test, from the "python
version" batches torchvision also reads (`cifar-10-batches-py/`).

The batches are pickles. torchvision unpickles them with the full unpickler and relies on an
md5 check against the official archive for safety; a re-packed copy fails that check. Here
they are read with an unpickler that admits plain data and numpy arrays only, so a tampered
file is refused, never executed, whatever its checksum.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from sparse_transfer.data.paper.registry import (
    AUTHORS_CODE,
    PAPER_DATASETS,
    ChannelStats,
    DatasetLayoutError,
    PaperDataset,
    Samples,
    require,
)

NAME = "cifar10"
LAYOUT = """\
  cifar-10-batches-py/data_batch_1 ... data_batch_5, test_batch, batches.meta"""

_NUMPY_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("_codecs", "encode"),  # how Python 3 writes bytes into a protocol-2 pickle
}


class _PlainDataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not plain data")


def load_batch(path: Path, dataset: str = NAME) -> dict:
    try:
        with open(path, "rb") as handle:
            data = _PlainDataUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
        raise DatasetLayoutError(
            f"dataset {dataset!r}: {path} is not a CIFAR batch: {err}"
        ) from None
    if not isinstance(data, dict):
        raise DatasetLayoutError(f"dataset {dataset!r}: {path} is not a CIFAR batch")
    return data


def read_batches(root: Path, files: list[str], label_key: str, dataset: str = NAME) -> Samples:
    samples: Samples = []
    for path in (root / f for f in files):
        batch = load_batch(path, dataset)
        images = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        images = images.transpose(0, 2, 3, 1)  # HWC, as PIL wants
        samples.extend(zip(images, map(int, batch[label_key]), strict=True))
    return samples


def read(root: Path, split: str) -> tuple[list[str], Samples]:
    base = "cifar-10-batches-py"
    files = (
        [f"{base}/data_batch_{i}" for i in range(1, 6)]
        if split == "trainval"
        else [f"{base}/test_batch"]
    )
    require(NAME, root, LAYOUT, f"{base}/batches.meta", *files)
    classes = list(load_batch(root / base / "batches.meta")["label_names"])
    return classes, read_batches(root, files, "labels")


# Full finetuning normalizes with these, as the authors' code does (without use_imagenet_stats).
STATS = ChannelStats(
    (0.4914, 0.4822, 0.4465),
    (0.2023, 0.1994, 0.2010),
    f"{AUTHORS_CODE} utils/datasets.py, cifar10_get_datasets",
)

PAPER_DATASETS.add(
    NAME,
    PaperDataset(
        NAME, 10, LAYOUT, read, "cifar10", (50000, 10000), stats=STATS, description="CIFAR-10"
    ),
)
