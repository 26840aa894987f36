"""Full-finetuning throughput, measured side by side in one process.

Two questions, each answered as a ratio of rates measured in the same run:
- do the masks cost throughput? The same model trains with masks (90% global magnitude, masked
  gradients and re-applied weights every step, as in every full-finetuning trial) and without;
- does the data loader keep up? JPEG decoding + the paper's train transforms through a
  DataLoader (workers, pinned memory), against the model's own images/s.
On CUDA the model runs as trials do there: bf16 autocast and channels_last.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sparse_transfer.models import ARCHS
from sparse_transfer.pruning import apply_masks, global_magnitude_masks, prunable_weights
from sparse_transfer.transfer.loop import autocast_dtype, make_optimizer, on_device, train_step

__all__ = ["BenchResult", "run_bench"]


@dataclass(frozen=True)
class BenchResult:
    device: str
    arch: str
    batch_size: int
    masked_images_per_s: float
    dense_images_per_s: float
    loader_images_per_s: float
    workers: int

    def lines(self) -> list[str]:
        model = min(self.masked_images_per_s, self.dense_images_per_s)
        mask_ratio = self.masked_images_per_s / self.dense_images_per_s
        loader = self.loader_images_per_s
        return [
            f"device {self.device}, {self.arch}, batch {self.batch_size}",
            f"full finetuning, masked (90%):   {self.masked_images_per_s:10.1f} images/s",
            f"full finetuning, dense no masks: {self.dense_images_per_s:10.1f} images/s",
            f"  masked / dense:                {mask_ratio:10.3f}",
            f"data loader ({self.workers} workers):       {loader:10.1f} images/s",
            f"  loader / model:                {loader / model:10.3f}"
            "   (>= 1: the loader keeps up)",
        ]


def run_bench(
    arch: str = "resnet50",
    batch_size: int = 32,
    steps: int = 10,
    warmup: int = 2,
    image_size: int = 224,
    workers: int = 4,
    device: str | None = None,
) -> BenchResult:
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    masked = _model_rate(arch, batch_size, steps, warmup, image_size, device, sparsity=0.9)
    dense = _model_rate(arch, batch_size, steps, warmup, image_size, device, sparsity=None)
    loader = _loader_rate(batch_size, steps + warmup, image_size, workers, device)
    return BenchResult(device, arch, batch_size, masked, dense, loader, workers)


def _model_rate(
    arch: str,
    batch_size: int,
    steps: int,
    warmup: int,
    image_size: int,
    device: str,
    sparsity: float | None,
) -> float:
    torch.manual_seed(0)
    spec = ARCHS.get(arch)
    model = on_device(spec.build(100), torch.device(device))
    masks = None
    if sparsity is not None:
        masks = global_magnitude_masks(
            prunable_weights(model, exclude=(spec.classifier,)), sparsity
        )
        apply_masks(model, masks)
    autocast = autocast_dtype(torch.device(device))
    optimizer = make_optimizer(
        model.parameters(), {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}
    )
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    if device == "cuda":
        x = x.to(memory_format=torch.channels_last)
    y = torch.randint(0, 100, (batch_size,), device=device)
    model.train()
    for step in range(warmup + steps):
        if step == warmup:
            _sync(device)
            started = time.perf_counter()
        train_step(model, x, y, optimizer, masks=masks, autocast_dtype=autocast)
    _sync(device)
    return steps * batch_size / (time.perf_counter() - started)


def _loader_rate(
    batch_size: int, batches: int, image_size: int, workers: int, device: str
) -> float:
    """Images/s of the very batch source full-finetuning trials read file datasets through."""
    from sparse_transfer.data.paper import PAPER_DATASETS
    from sparse_transfer.data.source import FileSource
    from sparse_transfer.models.catalog import Preprocessing

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        _write_jpegs(root, count=batch_size * (batches + 1), size=int(image_size * 1.5))
        source = FileSource(
            PAPER_DATASETS.get("image_folder"),
            str(root),
            Preprocessing(input_size=image_size),
            torch.device(device),
            workers,
        )
        stream = source.batches(
            "trainval", train=True, batch_size=batch_size, generator=torch.Generator()
        )
        seen, started = 0, time.perf_counter()
        for index, (images, _) in enumerate(stream):
            if index == 1:  # after worker start-up
                seen, started = 0, time.perf_counter()
            seen += len(images)
        _sync(device)
        return seen / (time.perf_counter() - started)


def _write_jpegs(root: Path, count: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("a", "b"):
            (root / split / label).mkdir(parents=True)
    for index in range(count):
        pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        label = "a" if index % 2 else "b"
        Image.fromarray(pixels).save(root / "train" / label / f"{index}.jpg", quality=90)
    Image.fromarray(pixels).save(root / "test" / "a" / "0.jpg")
    Image.fromarray(pixels).save(root / "test" / "b" / "0.jpg")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()
