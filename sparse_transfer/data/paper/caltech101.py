"""Caltech-101 (Fei-Fei et al. 2004): 101 categories (BACKGROUND_Google left out), read by
torchvision's `Caltech101`. The paper's split: the first 30 images of each category (in file
order) train, the rest test (3,030 / 5,647 images)."""

from __future__ import annotations

from pathlib import Path

from sparse_transfer.data.paper.registry import (
    AUTHORS_CODE,
    PAPER_DATASETS,
    ChannelStats,
    PaperDataset,
    Samples,
    require,
)

NAME = "caltech101"
TRAIN_PER_CLASS = 30
LAYOUT = """\
  caltech101/101_ObjectCategories/<category>/image_0001.jpg, image_0002.jpg, ...
  (BACKGROUND_Google/ is expected there too, and left out)"""


def first_per_class(labels: list[int], per_class: int, split: str) -> list[int]:
    """Indices of the first `per_class` images of each class (trainval) or of the rest."""
    seen: dict[int, int] = {}
    chosen = []
    for index, label in enumerate(labels):
        seen[label] = seen.get(label, 0) + 1
        if (seen[label] <= per_class) == (split == "trainval"):
            chosen.append(index)
    return chosen


def read(root: Path, split: str) -> tuple[list[str], Samples]:
    from torchvision.datasets import Caltech101

    folder = Path("caltech101/101_ObjectCategories")
    require(NAME, root, LAYOUT, folder / "BACKGROUND_Google")
    dataset = Caltech101(root, target_type="category", download=False)
    files = [
        root / folder / dataset.categories[label] / f"image_{number:04d}.jpg"
        for label, number in zip(dataset.y, dataset.index, strict=True)
    ]
    chosen = first_per_class(dataset.y, TRAIN_PER_CLASS, split)
    return list(dataset.categories), [(files[i], dataset.y[i]) for i in chosen]


# Full finetuning normalizes with these, as the authors' code does (without use_imagenet_stats).
STATS = ChannelStats(
    (0.5413, 0.5063, 0.4693),
    (0.3115, 0.3090, 0.3183),
    f"{AUTHORS_CODE} utils/datasets.py, caltech101_get_datasets",
)

PAPER_DATASETS.add(
    NAME,
    PaperDataset(
        NAME,
        101,
        LAYOUT,
        read,
        "caltech101",
        (3030, 5647),
        stats=STATS,
        description="Caltech-101, 30 training images per class",
    ),
)
