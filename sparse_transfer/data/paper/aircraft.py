"""FGVC-Aircraft (Maji et al. 2013) at the variant level: 100 classes, the official
trainval (6,667) / test (3,333) split, read by torchvision's `FGVCAircraft`."""

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

NAME = "aircraft"
LAYOUT = """\
  fgvc-aircraft-2013b/data/variants.txt
  fgvc-aircraft-2013b/data/images_variant_trainval.txt   (and _test, _train, _val)
  fgvc-aircraft-2013b/data/images/<image id>.jpg"""


def read(root: Path, split: str) -> tuple[list[str], Samples]:
    from torchvision.datasets import FGVCAircraft

    data = Path("fgvc-aircraft-2013b/data")
    require(NAME, root, LAYOUT, data / "variants.txt", data / f"images_variant_{split}.txt")
    dataset = FGVCAircraft(root, split=split, annotation_level="variant", download=False)
    # torchvision keeps the parsed annotation list private; torchvision is pinned
    return list(dataset.classes), [
        (Path(f), label) for f, label in zip(dataset._image_files, dataset._labels, strict=True)
    ]


# Full finetuning normalizes with these, as the authors' code does (without use_imagenet_stats).
STATS = ChannelStats(
    (0.4892, 0.5159, 0.5356),
    (0.2275, 0.2200, 0.2476),
    f"{AUTHORS_CODE} utils/datasets.py, aircraft_get_datasets",
)

PAPER_DATASETS.add(
    NAME,
    PaperDataset(
        NAME,
        100,
        LAYOUT,
        read,
        "aircraft",
        (6667, 3333),
        official_val=True,
        stats=STATS,
        description="FGVC-Aircraft, variant level",
    ),
)
