"""Caltech-256 (Griffin et al. 2007): 257 categories (256 + clutter), read by torchvision's
`Caltech256`. The paper's split: the first 60 images of each category (in file order) train,
the rest test (15,420 / 15,187 images)."""

from __future__ import annotations

from pathlib import Path

from sparse_transfer.data.paper.caltech101 import first_per_class
from sparse_transfer.data.paper.registry import (
    AUTHORS_CODE,
    PAPER_DATASETS,
    ChannelStats,
    PaperDataset,
    Samples,
    require,
)

NAME = "caltech256"
TRAIN_PER_CLASS = 60
LAYOUT = """\
  caltech256/256_ObjectCategories/<NNN>.<category>/<NNN>_0001.jpg, <NNN>_0002.jpg, ..."""


def read(root: Path, split: str) -> tuple[list[str], Samples]:
    from torchvision.datasets import Caltech256

    folder = Path("caltech256/256_ObjectCategories")
    require(NAME, root, LAYOUT, folder)
    dataset = Caltech256(root, download=False)
    files = []
    for label, number in zip(dataset.y, dataset.index, strict=True):
        category = dataset.categories[label]
        # named by the category folder's own number ("001.ak47" -> "001_0001.jpg");
        # torchvision uses the category's position, the same on a complete copy only
        files.append(root / folder / category / f"{category.split('.')[0]}_{number:04d}.jpg")
    chosen = first_per_class(dataset.y, TRAIN_PER_CLASS, split)
    return list(dataset.categories), [(files[i], dataset.y[i]) for i in chosen]


# Full finetuning normalizes with these, as the authors' code does (without use_imagenet_stats).
STATS = ChannelStats(
    (0.5438, 0.5141, 0.4821),
    (0.3077, 0.3044, 0.3163),
    f"{AUTHORS_CODE} utils/datasets.py, caltech256_get_datasets",
)

PAPER_DATASETS.add(
    NAME,
    PaperDataset(
        NAME,
        257,
        LAYOUT,
        read,
        "caltech256",
        (15420, 15187),
        stats=STATS,
        description="Caltech-256, 60 training images per class",
    ),
)
