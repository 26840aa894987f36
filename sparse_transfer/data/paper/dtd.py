"""DTD, the Describable Textures Dataset (Cimpoi et al. 2014): 47 classes, split 1, read by
torchvision's `DTD`. As in the paper, trainval = train1 + val1 (3,760), test = test1 (1,880)."""

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

NAME = "dtd"
PARTITION = 1
LAYOUT = """\
  dtd/dtd/labels/train1.txt, val1.txt, test1.txt   (lines: <class>/<image>.jpg)
  dtd/dtd/images/<class>/<image>.jpg"""


def read(root: Path, split: str) -> tuple[list[str], Samples]:
    from torchvision.datasets import DTD

    parts = {"trainval": ("train", "val"), "train": ("train",), "val": ("val",)}
    labels = Path("dtd/dtd/labels")
    official = parts.get(split, (split,))
    require(
        NAME, root, LAYOUT, "dtd/dtd/images", *(labels / f"{p}{PARTITION}.txt" for p in official)
    )
    # Classes from the image folders, not from one split file, so every split agrees.
    classes = sorted(p.name for p in (root / "dtd/dtd/images").iterdir() if p.is_dir())
    index = {name: i for i, name in enumerate(classes)}
    samples: Samples = []
    for part in official:
        dataset = DTD(root, split=part, partition=PARTITION, download=False)
        # torchvision keeps the parsed file list private; torchvision is pinned
        samples += [(Path(f), index[Path(f).parent.name]) for f in dataset._image_files]
    return classes, samples


# Full finetuning normalizes with these, as the authors' code does (without use_imagenet_stats).
STATS = ChannelStats(
    (0.5322, 0.4734, 0.4251),
    (0.2642, 0.2530, 0.2613),
    f"{AUTHORS_CODE} utils/transfer/dtd.py, DTD",
)

PAPER_DATASETS.add(
    NAME,
    PaperDataset(
        NAME,
        47,
        LAYOUT,
        read,
        "dtd",
        (3760, 1880),
        official_val=True,
        stats=STATS,
        description="Describable Textures, split 1",
    ),
)
