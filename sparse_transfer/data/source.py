"""A downstream dataset as a transfer trial sees it: batches of normalized images on a device.

Two kinds behind one interface, so full and linear finetuning never ask which one they have:

- the packaged quickstart datasets: whole tensors in memory (moved to the device once),
  augmented by a one-pixel random shift;
- file datasets (the paper's 12, image folders): decoded by DataLoader workers with the paper's
  transforms (`paper_transform`, from the upstream checkpoint's preprocessing), pinned memory
  and channels_last batches when the device is a GPU. As in the paper's code, full finetuning
  normalizes with the dataset's own mean/std (`PaperDataset.stats`), linear finetuning with
  the upstream model's (ImageNet's): see `transfer_preprocessing`.

Shuffling and augmentation draw from the trial's generator, whose state is saved with every
epoch, so a resumed trial sees the same batches it would have seen without the crash.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Protocol

import torch

from sparse_transfer.data.paper import PAPER_DATASETS, PaperDataset, paper_transform
from sparse_transfer.data.registry import DATASETS, Dataset
from sparse_transfer.models.catalog import Preprocessing

__all__ = [
    "BatchSource",
    "FileSource",
    "TensorSource",
    "open_source",
    "to_preprocessing",
    "transfer_preprocessing",
]

Batch = tuple[torch.Tensor, torch.Tensor]
EVAL_BATCH = 512  # in-memory evaluation: big chunks, no augmentation


class BatchSource(Protocol):
    name: str
    num_classes: int

    def batches(
        self, split: str, *, train: bool, batch_size: int, generator: torch.Generator | None
    ) -> Iterator[Batch]:
        """One pass over `split`: shuffled and augmented when `train`, in order otherwise."""
        ...


def open_source(
    name: str,
    root: str | None,
    preprocessing: Mapping,
    device: torch.device | str = "cpu",
    workers: int = 0,
    mode: str = "full",
) -> BatchSource:
    """The dataset `name` (from either registry) for a model with this preprocessing,
    normalized as transfer `mode` (full, prune, linear) does."""
    device = torch.device(device)
    if name in PAPER_DATASETS:
        if root is None:
            raise ValueError(f"dataset {name!r} is read from image files: it needs a root")
        dataset = PAPER_DATASETS.get(name)
        pre = transfer_preprocessing(dataset, to_preprocessing(preprocessing), mode)
        return FileSource(dataset, root, pre, device, workers)
    return TensorSource(DATASETS.get(name), preprocessing, device)


def transfer_preprocessing(dataset: PaperDataset, upstream: Preprocessing, mode: str):
    """The upstream model's preprocessing, with the dataset's own mean/std in full finetuning
    (and prune): the paper's code normalizes so unless `use_imagenet_stats`, which only its
    linear finetuning sets. Linear features keep the upstream's (ImageNet's) normalization."""
    if mode == "linear" or dataset.stats is None:
        return upstream
    return replace(upstream, mean=dataset.stats.mean, std=dataset.stats.std)


def to_preprocessing(metadata: Mapping) -> Preprocessing:
    """A checkpoint's preprocessing metadata as `Preprocessing`; missing fields default."""
    known = {f.name for f in fields(Preprocessing)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in metadata.items()}
    return Preprocessing(**{k: v for k, v in values.items() if k in known})


@dataclass
class TensorSource:
    dataset: Dataset
    preprocessing: Mapping
    device: torch.device
    _splits: dict[str, Batch] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.dataset.name

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def _split(self, split: str) -> Batch:
        if split not in self._splits:
            images, labels = self.dataset.load(split)
            images = normalize(images, self.preprocessing)
            self._splits[split] = (images.to(self.device), labels.to(self.device))
        return self._splits[split]

    def batches(
        self, split: str, *, train: bool, batch_size: int, generator: torch.Generator | None
    ) -> Iterator[Batch]:
        images, labels = self._split(split)
        if not train:
            batch_size, generator = max(batch_size, EVAL_BATCH), None
        for index in index_batches(len(labels), batch_size, generator):
            x = images[index]
            if train:
                x = random_shift(x, generator)
            yield x, labels[index]


@dataclass
class FileSource:
    dataset: PaperDataset
    root: str
    preprocessing: Preprocessing
    device: torch.device
    workers: int = 0
    _splits: dict[tuple[str, bool], torch.utils.data.Dataset] = field(
        default_factory=dict, repr=False
    )

    @property
    def name(self) -> str:
        return self.dataset.name

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def _split(self, split: str, train: bool) -> torch.utils.data.Dataset:
        if (split, train) not in self._splits:  # opening lists (and checks) every file: once
            transform = paper_transform(self.preprocessing, train=train)
            self._splits[split, train] = self.dataset.open(self.root, split, transform)
        return self._splits[split, train]

    def batches(
        self, split: str, *, train: bool, batch_size: int, generator: torch.Generator | None
    ) -> Iterator[Batch]:
        cuda = self.device.type == "cuda"
        data = self._split(split, train)
        loader = torch.utils.data.DataLoader(
            data,
            batch_size=batch_size,
            shuffle=train,
            # a last training batch of one image would break BatchNorm; shuffled, nothing is lost
            drop_last=train and len(data) > batch_size,
            generator=generator if train else None,
            num_workers=self.workers,
            pin_memory=cuda,
            persistent_workers=False,
        )
        for images, labels in loader:
            images = images.to(self.device, non_blocking=True)
            if cuda:  # convolutions run fastest on NHWC tensors with cuDNN
                images = images.contiguous(memory_format=torch.channels_last)
            yield images, labels.to(self.device, non_blocking=True)


def normalize(images: torch.Tensor, preprocessing: Mapping) -> torch.Tensor:
    mean = torch.tensor(preprocessing["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(preprocessing["std"]).view(1, -1, 1, 1)
    return (images - mean) / std


def random_shift(
    images: torch.Tensor, generator: torch.Generator | None, pixels: int = 1
) -> torch.Tensor:
    """Random translation by up to `pixels` (pad + crop): the small-image RandomResizedCrop."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, [pixels] * 4)
    dy, dx = torch.randint(0, 2 * pixels + 1, (2,), generator=generator).tolist()
    return padded[:, :, dy : dy + h, dx : dx + w]


def index_batches(n: int, batch_size: int, generator: torch.Generator | None):
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]
