"""The paper's 12 downstream datasets (plus a generic image folder), from local roots or S3.

`PAPER_DATASETS.get(name).open(root, split, transform)` gives a torch Dataset of
(image, label); `split` is one of `SPLITS` ("train", "val", "trainval", "test"). trainval and
test are the paper's splits; train/val are the official ones where the dataset has them
(aircraft, dtd, flowers102), otherwise a fixed per-class carve of trainval (every 5th image
of a class is val). Nothing is downloaded from the internet: a root not laid out as expected gives
a `DatasetLayoutError` naming the dataset, the expected layout and what is missing.

A root may also be an `s3://` prefix: it is synced once per node into the cache
(`sparse_transfer.data.remote`). Sweeps read these datasets through
`sparse_transfer.data.source.FileSource` (workers read bytes; `batched` decodes and applies
the paper's transforms, from the upstream checkpoint's preprocessing, on the device).
`num_classes` is the full dataset's; `len(split.classes)` is what a partial copy on disk holds.

torchvision is imported where a dataset is read, not with this package: every Ray worker
imports it, and a worker that starts after a lost node should not wait for torchvision's
datasets when it trains on other data.
"""

from sparse_transfer.data.paper import (  # noqa: F401  (each registers itself)
    aircraft,
    birdsnap,
    caltech101,
    caltech256,
    cars,
    cifar10,
    cifar100,
    dtd,
    flowers102,
    food101,
    image_folder,
    pets,
    sun397,
)
from sparse_transfer.data.paper.registry import (
    PAPER_DATASETS,
    DatasetLayoutError,
    ImageSplit,
    PaperDataset,
)
from sparse_transfer.data.paper.transforms import paper_transform

__all__ = [
    "PAPER_DATASETS",
    "DatasetLayoutError",
    "ImageSplit",
    "PaperDataset",
    "paper_transform",
]
