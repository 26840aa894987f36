"""Oxford-IIIT Pets (Parkhi et al. 2012): 37 breeds, the official trainval (3,680) / test
(3,669) split from `annotations/trainval.txt` and `test.txt`, read by torchvision's
`OxfordIIITPet`."""

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

NAME = "pets"
LAYOUT = """\
  oxford-iiit-pet/annotations/trainval.txt, test.txt
                                  (lines: <Breed_name>_<n> <class id 1..37> <species> <breed>)
  oxford-iiit-pet/images/<Breed_name>_<n>.jpg"""


def read(root: Path, split: str) -> tuple[list[str], Samples]:
    from torchvision.datasets import OxfordIIITPet

    base = Path("oxford-iiit-pet")
    require(
        NAME,
        root,
        LAYOUT,
        base / "images",
        base / "annotations/trainval.txt",
        base / f"annotations/{split}.txt",
    )
    dataset = OxfordIIITPet(root, split=split, target_types="category", download=False)
    # Names from trainval: torchvision derives them from whichever split file it read.
    names = dataset if split == "trainval" else OxfordIIITPet(root, split="trainval")
    # torchvision keeps the parsed lists private; torchvision is pinned
    return list(names.classes), list(zip(dataset._images, dataset._labels, strict=True))


# Full finetuning normalizes with these, as the authors' code does (without use_imagenet_stats).
STATS = ChannelStats(
    (0.4807, 0.4432, 0.3949),
    (0.2598, 0.2537, 0.2597),
    f"{AUTHORS_CODE} utils/datasets.py, pets_get_datasets",
)

PAPER_DATASETS.add(
    NAME,
    PaperDataset(
        NAME, 37, LAYOUT, read, "pets", (3680, 3669), stats=STATS, description="Oxford-IIIT Pets"
    ),
)
