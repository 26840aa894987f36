"""Birdsnap (Berg et al. 2014): 500 North American bird species, images from Flickr.

The paper's split is that of its prepared copy (robust-models-transfer's, 32,677 trainval /
8,171 test images): an image folder, `train/<species>/*`, `test/<species>/*`. When the root
holds one, it is read as such. Otherwise the official distribution is read and split by its
`test_images.txt` (2,443 test images) -- a different split from the paper's, so results on it
carry the dataset variant `birdsnap:official-split` and never join the paper's numbers. Flickr
images go missing over time; listed images absent from disk are skipped with a warning.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

from sparse_transfer.data.paper.image_folder import read_image_folder
from sparse_transfer.data.paper.registry import (
    AUTHORS_CODE,
    PAPER_DATASETS,
    ChannelStats,
    DatasetLayoutError,
    PaperDataset,
    Samples,
    require,
)

NAME = "birdsnap"
LAYOUT = """\
  either the paper's prepared copy:
    train/<species>/*.jpg, test/<species>/*.jpg
  or the official distribution (v1.1) with the images get_birdsnap.py fetched:
    species.txt, images.txt, test_images.txt   (tab-separated, with header lines)
    download/images/<path from images.txt>"""


OFFICIAL_SPLIT = "official-split"


def _prepared(root: Path) -> bool:
    return (root / "train").is_dir() and (root / "test").is_dir()


def variant(root: Path) -> str | None:
    return None if _prepared(root) else OFFICIAL_SPLIT


def read(root: Path, split: str) -> tuple[list[str], Samples]:
    if _prepared(root):
        return read_image_folder(NAME, root, split, LAYOUT)
    require(NAME, root, LAYOUT, "species.txt", "images.txt", "test_images.txt", "download/images")
    species = _rows(root / "species.txt")
    label_of = {int(row["id"]): index for index, row in enumerate(species)}
    with open(root / "test_images.txt") as handle:
        test = {line.strip() for line in list(handle)[1:] if line.strip()}
    samples, missing = [], 0
    for row in _rows(root / "images.txt"):
        if (row["path"] in test) != (split == "test"):
            continue
        path = root / "download" / "images" / row["path"]
        if path.is_file():
            samples.append((path, label_of[int(row["species_id"])]))
        else:
            missing += 1
    if missing:
        warnings.warn(
            f"birdsnap {split}: {missing} listed images are not on disk; skipped", stacklevel=3
        )
    return [row["common"] for row in species], samples


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows:
        raise DatasetLayoutError(f"dataset {NAME!r}: {path} lists nothing")
    return rows


# Full finetuning normalizes with these, as the authors' code does (without use_imagenet_stats).
STATS = ChannelStats(
    (0.4856, 0.4948, 0.4486),
    (0.2233, 0.2213, 0.2586),
    f"{AUTHORS_CODE} utils/datasets.py, birds_get_datasets",
)

PAPER_DATASETS.add(
    NAME,
    PaperDataset(
        NAME,
        500,
        LAYOUT,
        read,
        "birds",
        (32677, 8171),
        stats=STATS,
        variant_of=variant,
        description="Birdsnap, 500 species",
    ),
)
