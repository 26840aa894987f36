"""SUN397 (Xiao et al. 2010): 397 scene classes, the official partition 1 (50 training and
50 test images per class, 19,850 each) that the paper used (its `splits_01`). Read from the
partition files directly: torchvision's `SUN397` has no partitions."""

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

NAME = "sun397"
LAYOUT = """\
  SUN397/ClassName.txt                     (lines: /a/abbey, /b/bakery/shop, ...)
  SUN397/<l>/<class>/sun_<id>.jpg          (the image archive, as torchvision lays it out)
  Partitions/Training_01.txt, Partitions/Testing_01.txt   (lines: /a/abbey/sun_<id>.jpg)"""


def read(root: Path, split: str) -> tuple[list[str], Samples]:
    listing = Path("Partitions") / ("Training_01.txt" if split == "trainval" else "Testing_01.txt")
    require(NAME, root, LAYOUT, "SUN397/ClassName.txt", listing)
    keys = _lines(root / "SUN397/ClassName.txt")  # "/a/abbey"
    index = {key: i for i, key in enumerate(keys)}
    samples: Samples = []
    for line in _lines(root / listing):
        key = line.rsplit("/", 1)[0]
        if key not in index:
            raise DatasetLayoutError(
                f"dataset {NAME!r}: {root / listing} lists {line!r}, whose class {key!r} is "
                "not in SUN397/ClassName.txt"
            )
        samples.append((root / "SUN397" / line.lstrip("/"), index[key]))
    return [key[3:] for key in keys], samples  # "/a/abbey" -> "abbey", as torchvision names it


def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


# Full finetuning normalizes with these, as the authors' code does (without use_imagenet_stats).
STATS = ChannelStats(
    (0.4772, 0.4566, 0.4168),
    (0.2556, 0.2520, 0.2720),
    f"{AUTHORS_CODE} utils/datasets.py, SUN_get_datasets",
)

PAPER_DATASETS.add(
    NAME,
    PaperDataset(
        NAME, 397, LAYOUT, read, "SUN", (19850, 19850), stats=STATS, description="SUN397, split 1"
    ),
)
