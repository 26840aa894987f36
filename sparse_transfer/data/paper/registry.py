"""The paper's downstream datasets as registry entries: read a local root, give image splits.

Separate from `sparse_transfer.data.DATASETS`, whose entries hold whole tensors: these are
image files on disk, decoded one at a time by a DataLoader.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from sparse_transfer.data.registry import SPLITS
from sparse_transfer.registry import Registry

__all__ = [
    "AUTHORS_CODE",
    "PAPER_DATASETS",
    "ChannelStats",
    "DatasetLayoutError",
    "ImageSplit",
    "PaperDataset",
    "Samples",
    "require",
]

ImageSource = Path | np.ndarray  # a file, or an HxWx3 uint8 array (CIFAR keeps pixels inline)
Samples = list[tuple[ImageSource, int]]
VAL_EVERY = 5  # when a dataset has no official val split, every 5th image of a class is val


AUTHORS_CODE = "IST-DASLab/sparse-imagenet-transfer"  # the paper's code, cited on each entry


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and std of a dataset's RGB images in [0, 1], and where they are from."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    source: str


class DatasetLayoutError(FileNotFoundError):
    """A dataset root is not laid out as expected; the message says what is missing."""


@dataclass(frozen=True)
class PaperDataset:
    name: str
    num_classes: int  # of the complete dataset
    layout: str  # the expected files under the root, shown when something is missing
    # (root, split) -> (class names, samples); split is "trainval" or "test", and also
    # "train"/"val" when the dataset has official ones (official_val=True)
    read: Callable[[Path, str], tuple[list[str], Samples]]
    paper_name: str  # the `dset` of the paper's raw results
    paper_sizes: tuple[int, int] | None = None  # (trainval, test) images in the paper
    official_val: bool = False
    description: str = ""
    # The dataset's own statistics: full finetuning normalizes with them (the paper's code
    # does); linear finetuning keeps the upstream model's (ImageNet's). None: the upstream's.
    stats: ChannelStats | None = None
    # root -> None when it holds the paper's copy, else the name of the variant it holds
    # (Birdsnap's official split): results on a variant never pass for the paper's dataset
    variant_of: Callable[[Path], str | None] | None = None

    def open(self, root: str | Path, split: str, transform: Callable | None = None):
        """One split as a torch Dataset of (transformed RGB image, label)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {SPLITS}")
        root = _local(root)
        if not root.is_dir():
            raise DatasetLayoutError(_message(self.name, root, self.layout, [str(root)]))
        if split in ("train", "val") and not self.official_val:
            classes, samples = self.read(root, "trainval")
            samples = carve_val(samples, split)
        else:
            classes, samples = self.read(root, split)
        missing = [str(s) for s, _ in samples if isinstance(s, Path) and not s.is_file()]
        if missing:
            shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
            raise DatasetLayoutError(
                _message(self.name, root, self.layout, [f"{len(missing)} listed images: {shown}"])
            )
        return ImageSplit(self.name, split, classes, samples, transform)

    def variant(self, root: str | Path) -> str | None:
        """None when `root` holds the paper's copy; else the variant it holds."""
        return None if self.variant_of is None else self.variant_of(_local(root))

    def label(self, root: str | Path) -> str:
        """The name results on `root` carry: `birdsnap`, or `birdsnap:official-split`."""
        variant = self.variant(root)
        return self.name if variant is None else f"{self.name}:{variant}"


def _local(root: str | Path) -> Path:
    if str(root).startswith("s3://"):
        from sparse_transfer.data.remote import local_root  # imports this module

        return local_root(root)  # synced once per node, then read from local disk
    return Path(root)


class ImageSplit(torch.utils.data.Dataset):
    def __init__(
        self,
        dataset: str,
        split: str,
        classes: Sequence[str],
        samples: Samples,
        transform: Callable | None = None,
    ) -> None:
        self.dataset, self.split = dataset, split
        self.classes = list(classes)
        self.samples = samples
        self.transform = transform

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        source, label = self.samples[index]
        if isinstance(source, np.ndarray):
            image = Image.fromarray(source).convert("RGB")
        else:
            try:
                with Image.open(source) as raw:  # some datasets hold grayscale or CMYK files
                    image = raw.convert("RGB")
            except (OSError, SyntaxError) as err:  # PIL's errors for truncated or bad files
                raise DatasetLayoutError(
                    f"dataset {self.dataset!r}: {source} is not a readable image: {err}"
                ) from None
        return (self.transform(image) if self.transform else image), label


def carve_val(samples: Samples, split: str) -> Samples:
    """Deterministic per-class carve of trainval: every VAL_EVERY-th image of a class is val."""
    seen: dict[int, int] = {}
    train, val = [], []
    for source, label in samples:
        seen[label] = seen.get(label, 0) + 1
        (val if seen[label] % VAL_EVERY == 0 else train).append((source, label))
    return val if split == "val" else train


def require(name: str, root: Path, layout: str, *relative: str | Path) -> None:
    """Raise DatasetLayoutError naming every missing path under `root`."""
    missing = [str(root / p) for p in relative if not (root / p).exists()]
    if missing:
        raise DatasetLayoutError(_message(name, root, layout, missing))


def _message(name: str, root: Path, layout: str, missing: list[str]) -> str:
    return (
        f"dataset {name!r}: {root} is not laid out as expected.\n"
        f"expected under the root:\n{layout}\n"
        f"missing: {', '.join(missing)}"
    )


PAPER_DATASETS: Registry[PaperDataset] = Registry("paper dataset")
