"""CIFAR-100 (Krizhevsky 2009): 100 fine classes, 50,000 train / 10,000 test, from the
"python version" files (`cifar-100-python/train`, `test`, `meta`), read safely as CIFAR-10."""

from __future__ import annotations

from pathlib import Path

from sparse_transfer.data.paper.cifar10 import load_batch, read_batches
from sparse_transfer.data.paper.registry import PAPER_DATASETS, PaperDataset, Samples, require

NAME = "cifar100"
LAYOUT = """\
  cifar-100-python/train, cifar-100-python/test, cifar-100-python/meta"""


def read(root: Path, split: str) -> tuple[list[str], Samples]:
    base = "cifar-100-python"
    files = [f"{base}/train" if split == "trainval" else f"{base}/test"]
    require(NAME, root, LAYOUT, f"{base}/meta", *files)
    classes = list(load_batch(root / base / "meta", NAME)["fine_label_names"])
    return classes, read_batches(root, files, "fine_labels", NAME)


PAPER_DATASETS.add(
    NAME,
    PaperDataset(NAME, 100, LAYOUT, read, "cifar100", (50000, 10000), description="CIFAR-100"),
)
