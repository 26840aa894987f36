"""A downstream dataset as a transfer trial sees it: batches of normalized images on a device.

Two kinds behind one interface, so full and linear finetuning never ask which one they have:

- the packaged quickstart datasets: whole tensors in memory (moved to the device once),
  augmented by a one-pixel random shift;
- file datasets (the paper's 12, image folders): loader workers read raw bytes; the batch is
  decoded and given the paper's transforms (from the upstream checkpoint's preprocessing) on
  the device (`FileSource`), channels_last on a GPU. As in the paper's code, full finetuning
  normalizes with the dataset's own mean/std (`PaperDataset.stats`), linear finetuning with
  the upstream model's (ImageNet's): see `transfer_preprocessing`.

Shuffling and augmentation draw from the trial's generator, whose state is saved with every
epoch, so a resumed trial sees the same batches it would have seen without the crash.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Protocol

import torch

from sparse_transfer.data.paper import PAPER_DATASETS, ImageSplit, PaperDataset
from sparse_transfer.data.paper.batched import BatchTransform, decode, pack, read_raw, unpack
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
    _splits: dict[str, Batch] = field(default_factory=dict, repr=False, init=False)

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
    """Image files read as whole batches: loader workers (started once per split, kept for
    every epoch) only read each image's bytes; decoding and the paper's transforms run on the
    device (`sparse_transfer.data.paper.batched`). On a CPU the workers run that stage too.

    `stage_in_workers`: where decoding and transforms run; None: in the workers on a CPU, in
    the trial's process on a GPU. False on a CPU runs the GPU's arrangement there (tests)."""

    dataset: PaperDataset
    root: str
    preprocessing: Preprocessing
    device: torch.device
    workers: int = 0
    stage_in_workers: bool | None = None
    _loaders: dict[tuple[str, bool, int], tuple[torch.utils.data.DataLoader, BatchPlan]] = field(
        default_factory=dict, repr=False, init=False
    )

    @property
    def name(self) -> str:
        return self.dataset.name

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    def transform(self, train: bool) -> BatchTransform:
        return BatchTransform(self.preprocessing, train)

    def _loader(self, split: str, train: bool, batch_size: int):
        key = (split, train, batch_size)
        if key not in self._loaders:  # opening lists (and checks) every file: once
            images = self.dataset.open(self.root, split)
            transform = self.transform(train)
            on_host = self.stage_in_workers
            if on_host is None:
                on_host = self.device.type == "cpu"
            plan = BatchPlan(len(images), batch_size, train)
            loader = torch.utils.data.DataLoader(
                RawBatches(images, transform if on_host else None),
                batch_size=None,  # items are whole batches
                sampler=plan,
                num_workers=self.workers,
                persistent_workers=self.workers > 0,
            )
            self._loaders[key] = (loader, plan)
        return self._loaders[key]

    def batches(
        self, split: str, *, train: bool, batch_size: int, generator: torch.Generator | None
    ) -> Iterator[Batch]:
        loader, plan = self._loader(split, train, batch_size)
        plan.generator = generator if train else None
        transform = self.transform(train)
        for payload, sources, labels, seed in loader:
            if sources is not None:  # the device stage, here: decode and transform
                images = decode(unpack(*payload), sources, self.name, self.device)
                payload = transform(images, _batch_generator(seed))
            yield payload.to(self.device), labels.to(self.device, non_blocking=True)


class BatchPlan(torch.utils.data.Sampler):
    """Each pass: (indices, seed) per batch, every draw made up front from the trial's
    generator, so the batches are the same however far the workers prefetch. A training
    pass keeps its last partial batch (as the paper's code) unless it holds one image, which
    BatchNorm cannot train on."""

    def __init__(self, size: int, batch_size: int, train: bool) -> None:
        self.size, self.batch_size, self.train = size, batch_size, train
        self.generator: torch.Generator | None = None

    def __iter__(self):
        indices = list(index_batches(self.size, self.batch_size, self.generator))
        if self.train and len(indices) > 1 and len(indices[-1]) == 1:
            indices.pop()
        seeds = [0] * len(indices)
        if self.train:
            seeds = torch.randint(0, 2**62, (len(indices),), generator=self.generator).tolist()
        return iter(zip((i.tolist() for i in indices), seeds, strict=True))


class RawBatches(torch.utils.data.Dataset):
    """A split whose items are whole batches: (indices, seed) -> (raw images `pack`ed, their
    sources, labels, seed); with `transform` (on a CPU) the decoded, transformed batch."""

    def __init__(self, images: ImageSplit, transform: BatchTransform | None) -> None:
        self.images, self.transform = images, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, plan: tuple[list[int], int]):
        indices, seed = plan
        samples = [self.images.samples[i] for i in indices]
        sources = [source if isinstance(source, Path) else None for source, _ in samples]
        labels = torch.tensor([label for _, label in samples])
        raws = [read_raw(source, self.images.dataset) for source, _ in samples]
        if self.transform is None:
            return pack(raws), sources, labels, seed
        decoded = decode(raws, sources, self.images.dataset, torch.device("cpu"))
        return self.transform(decoded, _batch_generator(seed)), None, labels, seed


def _batch_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


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
