"""What one transfer trial trains, and what it reports each epoch."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import torch

from sparse_transfer.config.spec import HYPERPARAMETERS
from sparse_transfer.data.source import BatchSource, open_source

__all__ = ["EpochOutcome", "TransferJob"]


@dataclass(frozen=True)
class TransferJob:
    upstream_path: Path
    dataset: str
    mode: str  # "full" | "linear"
    phase: str  # "search": train on train, score val; "final": train on trainval, score test
    hparams: dict
    seed: int
    feature_cache_dir: Path | None = None
    storage: object | None = None  # a sparse_transfer.storage.Storage holding shared features
    device: str = "cpu"
    prune_to: float | None = None  # mode "prune": the sparsity to reach during finetuning
    prune_ramp: float = 2 / 3  # ... over this fraction of the epochs
    data_root: str | None = None  # file datasets: a local root or s3:// prefix
    loader_workers: int = 0  # DataLoader worker processes (file datasets)
    max_batches: int | None = None  # a dry run: at most this many batches per pass
    precision: str = "bf16"  # resources.precision: bf16, fp32 (TF32 on GPUs) or fp32-strict
    compile: bool = False  # resources.compile: torch.compile the model for training
    eval_every: int | None = None  # final runs: score the test split every n epochs too
    feature_engine: str = "torch"  # resources.feature_engine: linear features by torch/DeepSparse

    def __post_init__(self) -> None:
        object.__setattr__(self, "hparams", {**HYPERPARAMETERS, **self.hparams})

    @property
    def splits(self) -> tuple[str, str]:
        return ("train", "val") if self.phase == "search" else ("trainval", "test")

    @property
    def eval_prefix(self) -> str:
        return "val" if self.phase == "search" else "test"

    def scores_at(self, epoch: int) -> bool:
        """Whether an epoch scores its held-out split: every epoch of a search trial (early
        stopping reads them); a final run's last epoch only, unless `eval_every` asks for a
        curve, since the report reads only the last."""
        epochs = int(self.hparams["epochs"])
        if self.phase == "search" or epoch == epochs:
            return True
        return self.eval_every is not None and epoch % self.eval_every == 0

    def source(self, preprocessing: Mapping) -> BatchSource:
        return open_source(
            self.dataset,
            self.data_root,
            preprocessing,
            self.device,
            self.loader_workers,
            mode=self.mode,
        )

    def dataset_label(self) -> str:
        """The dataset's name as results carry it: with the variant its root holds, when that
        is not the paper's copy (`birdsnap:official-split`)."""
        from sparse_transfer.data.paper import PAPER_DATASETS

        if self.dataset in PAPER_DATASETS and self.data_root is not None:
            return PAPER_DATASETS.get(self.dataset).label(self.data_root)
        return self.dataset

    def limit(self, batches: Iterator) -> Iterator:
        """All batches, or the first `max_batches` of them in a dry run."""
        return batches if self.max_batches is None else islice(batches, self.max_batches)


@dataclass
class EpochOutcome:
    epoch: int  # 1-based
    metrics: dict[str, float]
    state: Callable[[], dict] = field(repr=False)  # everything needed to resume after this epoch
    done: bool = False


def seeded_generator(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
