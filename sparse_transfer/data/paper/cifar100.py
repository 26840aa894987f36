"""CIFAR-100 (Krizhevsky 2009): 100 fine classes, 50,000 train / 10,000 test, from the
"python version" files (`cifar-100-python/train`, `test`, `meta`), read safely as CIFAR-10."""

from __future__ import annotations

from pathlib import Path

from sparse_transfer.data.paper.cifar10 import load_batch, read_batches
from sparse_transfer.data.paper.registry import (
    AUTHORS_CODE,
    PAPER_DATASETS,
    ChannelStats,
    PaperDataset,
    Samples,
    require,
)

NAME = "cifar100"
LAYOUT = """\
  cifar-100-python/train, cifar-100-python/test, cifar-100-python/meta"""


def read(root: Path, split: str) -> tuple[list[str], Samples]:
    base = "cifar-100-python"
    files = [f"{base}/train" if split == "trainval" else f"{base}/test"]
    require(NAME, root, LAYOUT, f"{base}/meta", *files)
    classes = list(load_batch(root / base / "meta", NAME)["fine_label_names"])
    return classes, read_batches(root, files, "fine_labels", NAME)


# Full finetuning normalizes with these, as the authors' code does (without use_imagenet_stats).
STATS = ChannelStats(
    (0.5071, 0.4867, 0.4408),
    (0.2675, 0.2565, 0.2761),
    f"{AUTHORS_CODE} utils/datasets.py, cifar100_get_datasets",
)

PAPER_DATASETS.add(
    NAME,
    PaperDataset(
        NAME, 100, LAYOUT, read, "cifar100", (50000, 10000), stats=STATS, description="CIFAR-100"
    ),
)
