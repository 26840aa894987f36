"""Food-101 (Bossard et al. 2014): 101 classes, the official train (75,750) / test (25,250)
split from `meta/train.txt` and `meta/test.txt` (torchvision's `Food101` reads the same split
from the .json twins of these files)."""

from __future__ import annotations

from pathlib import Path

from sparse_transfer.data.paper.registry import (
    AUTHORS_CODE,
    PAPER_DATASETS,
    ChannelStats,
    DatasetLayoutError,
    PaperDataset,
    Samples,
    require,
)

NAME = "food101"
LAYOUT = """\
  food-101/meta/classes.txt, food-101/meta/train.txt, food-101/meta/test.txt
                                  (lines of train/test: <class>/<image id>)
  food-101/images/<class>/<image id>.jpg"""


def read(root: Path, split: str) -> tuple[list[str], Samples]:
    meta = Path("food-101/meta")
    listing = meta / ("train.txt" if split == "trainval" else "test.txt")
    require(NAME, root, LAYOUT, meta / "classes.txt", listing, "food-101/images")
    classes = _lines(root / meta / "classes.txt")
    index = {name: i for i, name in enumerate(classes)}
    samples: Samples = []
    for line in _lines(root / listing):
        name = line.split("/", 1)[0]
        if name not in index:
            raise DatasetLayoutError(
                f"dataset {NAME!r}: {root / listing} lists {line!r}, whose class {name!r} is "
                "not in meta/classes.txt"
            )
        samples.append((root / "food-101/images" / f"{line}.jpg", index[name]))
    return classes, samples


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


# Full finetuning normalizes with these, as the authors' code does (without use_imagenet_stats).
STATS = ChannelStats(
    (0.5566, 0.4378, 0.3193),
    (0.2589, 0.2622, 0.2630),
    f"{AUTHORS_CODE} utils/transfer/food_101.py, FOOD101",
)

PAPER_DATASETS.add(
    NAME,
    PaperDataset(
        NAME, 101, LAYOUT, read, "food101", (75750, 25250), stats=STATS, description="Food-101"
    ),
)
