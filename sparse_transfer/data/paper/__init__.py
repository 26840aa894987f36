"""The paper's 12 downstream datasets (plus a generic image folder), read from local roots.

`PAPER_DATASETS.get(name).open(root, split, transform)` gives a torch Dataset of
(image, label); `split` is one of `SPLITS` ("train", "val", "trainval", "test"). trainval and
test are the paper's splits; train/val are the official ones where the dataset has them
(aircraft, dtd, flowers102), otherwise a fixed per-class carve of trainval (every 5th image
of a class is val). Nothing is ever downloaded: a root that is not laid out as expected gives
a `DatasetLayoutError` naming the dataset, the expected layout and what is missing.

Wiring to the sweep (for the lead): unlike the quickstart `DATASETS` (tensors in memory),
these are files decoded per item. A sweep spec would name the dataset and its root, e.g.
`datasets: [{name: cars, root: /data/cars}]` (roots per node, or an `s3://` prefix once S3
sync exists); a trial builds
    transform = paper_transform(entry.preprocessing, train=True)   # entry: the upstream
    data = PAPER_DATASETS.get(name).open(root, "train", transform)
and wraps it in a DataLoader (workers, pinned memory); the linear-probe feature cache keys
on (upstream sha256, dataset, split, preprocessing) exactly as for the quickstart world,
computing features with `paper_transform(..., train=False)`. `num_classes` is the full
dataset's; `len(split.classes)` is what a partial copy on disk holds.
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
