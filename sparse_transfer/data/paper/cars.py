"""Stanford Cars (Krause et al. 2013): 196 classes, the official train (8,144) / test (8,041)
split from the devkit's .mat annotations, read by torchvision's `StanfordCars`."""

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

NAME = "cars"
LAYOUT = """\
  stanford_cars/devkit/cars_meta.mat, stanford_cars/devkit/cars_train_annos.mat
  stanford_cars/cars_test_annos_withlabels.mat
  stanford_cars/cars_train/<fname>.jpg, stanford_cars/cars_test/<fname>.jpg"""


def read(root: Path, split: str) -> tuple[list[str], Samples]:
    from torchvision.datasets import StanfordCars

    base = Path("stanford_cars")
    needed = {
        "trainval": (base / "devkit/cars_train_annos.mat", base / "cars_train"),
        "test": (base / "cars_test_annos_withlabels.mat", base / "cars_test"),
    }[split]
    require(NAME, root, LAYOUT, base / "devkit/cars_meta.mat", *needed)
    dataset = StanfordCars(root, split="train" if split == "trainval" else "test")
    # torchvision keeps the parsed annotation list private; torchvision is pinned
    return [str(c) for c in dataset.classes], [(Path(f), int(c)) for f, c in dataset._samples]


# Full finetuning normalizes with these, as the authors' code does (without use_imagenet_stats).
STATS = ChannelStats(
    (0.4513, 0.4354, 0.4358),
    (0.2900, 0.2880, 0.2951),
    f"{AUTHORS_CODE} utils/datasets.py, cars_get_datasets",
)

PAPER_DATASETS.add(
    NAME,
    PaperDataset(
        NAME, 196, LAYOUT, read, "cars", (8144, 8041), stats=STATS, description="Stanford Cars"
    ),
)
