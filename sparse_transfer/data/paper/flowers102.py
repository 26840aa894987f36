"""Oxford Flowers-102 (Nilsback & Zisserman 2008): 102 classes, read by torchvision's
`Flowers102` from `imagelabels.mat` and `setid.mat`. As in the paper, trainval = trnid + valid
(2,040), test = tstid (6,149)."""

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

NAME = "flowers102"
LAYOUT = """\
  flowers-102/imagelabels.mat, flowers-102/setid.mat
  flowers-102/jpg/image_00001.jpg, ..."""


def _flowers102():
    from torchvision.datasets import Flowers102

    class _Flowers102(Flowers102):
        # torchvision compares the .mat files with the official md5s; a re-packed copy (or a
        # test fixture) differs byte-wise. scipy reads .mat as plain arrays: presence is enough.
        _file_dict = {key: (name, None) for key, (name, _) in Flowers102._file_dict.items()}

    return _Flowers102


def read(root: Path, split: str) -> tuple[list[str], Samples]:
    reader = _flowers102()
    require(
        NAME,
        root,
        LAYOUT,
        "flowers-102/imagelabels.mat",
        "flowers-102/setid.mat",
        "flowers-102/jpg",
    )
    samples: Samples = []
    for part in ("train", "val") if split == "trainval" else (split,):
        dataset = reader(root, split=part, download=False)
        # torchvision keeps the parsed lists private; torchvision is pinned
        samples += list(zip(map(Path, dataset._image_files), dataset._labels, strict=True))
    return list(reader.classes), samples


# Full finetuning normalizes with these, as the authors' code does (without use_imagenet_stats).
STATS = ChannelStats(
    (0.5133, 0.4148, 0.3383),
    (0.2959, 0.2502, 0.2900),
    f"{AUTHORS_CODE} utils/datasets.py, flowers_get_datasets",
)

PAPER_DATASETS.add(
    NAME,
    PaperDataset(
        NAME,
        102,
        LAYOUT,
        read,
        "flowers",
        (2040, 6149),
        official_val=True,
        stats=STATS,
        description="Oxford Flowers-102",
    ),
)
