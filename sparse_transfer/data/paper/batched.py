"""The paper's transforms on whole batches, on the training device.

The host only reads each image's bytes (`read_raw`); decoding (nvJPEG through
`torchvision.io.decode_jpeg` on a GPU, libjpeg-turbo on a CPU), cropping, resizing, flipping
and normalizing run as one batch on the device (`BatchTransform`). The same code runs on a
CPU, where the loader workers run it instead of the trial's process.

Only baseline JPEGs (8-bit, one or three components) are left for the device: they are what
nvJPEG decodes as one batch on the GPU's hardware decoder. Any other file (a progressive JPEG,
CMYK, PNG) is decoded by the loader worker that reads it: nvJPEG would decode it one image at
a time with a Huffman stage on the host, in the trial's own process (torchvision's
`decode_jpegs_cuda`, read on 2026-12-04), on the training loop's critical path.

The distributions are torchvision's, drawn from a generator the caller seeds: for each image
in order, `RandomResizedCrop.get_params` (scale (0.08, 1), ratio (3/4, 4/3), ten tries, then
the centre fallback) and then `RandomHorizontalFlip`'s draw, exactly as torchvision's own
tensor transforms draw them, so one seed gives the same crops through either path. Resizing is
torchvision's: antialiased, in float, rounded to 8 bits; the test transform is its Resize +
CenterCrop. Both give torchvision's transforms' results exactly (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sparse_transfer.data.paper.registry import DatasetLayoutError, ImageSource
from sparse_transfer.models.catalog import Preprocessing

__all__ = ["BatchTransform", "crop_box", "decode", "device_ready", "pack", "read_raw", "unpack"]

JPEG_MAGIC = b"\xff\xd8"
BASELINE = 0xC0  # SOF0: baseline DCT, Huffman coded
# Every start-of-frame marker (SOF0-SOF15 less DHT, JPG and DAC, which share the range).
FRAME_MARKERS = set(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
SCALE = (0.08, 1.0)
RATIO = (3 / 4, 4 / 3)
LOG_RATIO = tuple(float(v) for v in torch.log(torch.tensor(RATIO)))  # float32, as torchvision


def read_raw(source: ImageSource, dataset: str) -> torch.Tensor:
    """What the host does per image: a baseline JPEG's bytes (1-d uint8), else the decoded
    image (3-d uint8 CHW): arrays held inline (CIFAR), progressive or CMYK JPEGs, PNG/GIF."""
    if isinstance(source, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(source)).permute(2, 0, 1)
    try:
        data = Path(source).read_bytes()
    except OSError as err:
        raise DatasetLayoutError(f"dataset {dataset!r}: cannot read {source}: {err}") from None
    if device_ready(data):
        return torch.frombuffer(bytearray(data), dtype=torch.uint8)
    if data[:2] == JPEG_MAGIC:
        return _decode_one(torch.frombuffer(bytearray(data), dtype=torch.uint8), source, dataset)
    return _decode_with_pil(source, dataset)


def device_ready(data: bytes) -> bool:
    """Whether `data` is a baseline JPEG of 8-bit samples and one or three components, read
    from its frame header (the first start-of-frame segment)."""
    if data[:2] != JPEG_MAGIC:
        return False
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return False  # not a marker where one must be: leave it to a decoder's error
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in FRAME_MARKERS:
            header = data[at + 4 : at + 10]  # precision, height, width, components
            eight_bit = len(header) == 6 and header[0] == 8
            return marker == BASELINE and eight_bit and header[5] in (1, 3)
        at += 2 + int.from_bytes(data[at + 2 : at + 4], "big")
    return False


def _decode_with_pil(source: Path, dataset: str) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(source) as raw:  # some datasets hold grayscale, CMYK or PNG files
            pixels = np.asarray(raw.convert("RGB"))
    except (OSError, SyntaxError) as err:  # PIL's errors for truncated or bad files
        raise DatasetLayoutError(
            f"dataset {dataset!r}: {source} is not a readable image: {err}"
        ) from None
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


def pack(raws: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's raw images as one flat uint8 tensor and a table of their shapes (one row per
    image: (1, bytes, 0, 0) for a JPEG's bytes, (3, C, H, W) for a decoded image). A loader
    worker hands the trial's process two tensors per batch, not one per image: each tensor
    crosses the process boundary as its own shared-memory segment, and receiving 256 of them
    costs the trial's process over ten times what two cost (benchmarks/gpu.py)."""
    table = torch.tensor(
        [[1, r.numel(), 0, 0] if r.dim() == 1 else [3, *r.shape] for r in raws], dtype=torch.long
    )
    return torch.cat([r.reshape(-1) for r in raws]), table


def unpack(flat: torch.Tensor, table: torch.Tensor) -> list[torch.Tensor]:
    """`pack`'s images again, as views of `flat`."""
    rows = table.tolist()
    sizes = [row[1] if row[0] == 1 else row[1] * row[2] * row[3] for row in rows]
    pieces = flat.split(sizes)
    return [p if row[0] == 1 else p.view(row[1:]) for p, row in zip(pieces, rows, strict=True)]


def decode(
    raws: list[torch.Tensor], sources: list[ImageSource], dataset: str, device: torch.device
) -> list[torch.Tensor]:
    """Every image as uint8 CHW RGB on `device`; JPEGs decoded in one batched call."""
    from torchvision.io import ImageReadMode, decode_jpeg

    jpegs = [i for i, r in enumerate(raws) if r.dim() == 1]
    decoded = [i for i, r in enumerate(raws) if r.dim() == 3]
    out = list(raws)
    for i, image in zip(decoded, _to_device([raws[i] for i in decoded], device), strict=True):
        out[i] = image
    if not jpegs:
        return out
    try:
        decoded = decode_jpeg([raws[i] for i in jpegs], mode=ImageReadMode.RGB, device=device)
    except RuntimeError:  # one bad file (or a CMYK one nvJPEG refuses): one at a time
        decoded = [_decode_one(raws[i], sources[i], dataset, device) for i in jpegs]
    for i, image in zip(jpegs, decoded, strict=True):
        out[i] = image
    return out


def _to_device(images: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Images decoded on the host (CIFAR's arrays, a worker's decodes) on `device`, moved in
    one copy, not one per image."""
    if not images or device.type == "cpu":
        return images
    flat = torch.cat([image.reshape(-1) for image in images]).to(device, non_blocking=True)
    pieces = flat.split([image.numel() for image in images])
    return [piece.view(image.shape) for piece, image in zip(pieces, images, strict=True)]


def _decode_one(
    raw: torch.Tensor, source: ImageSource, dataset: str, device: torch.device | None = None
) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_jpeg

    device = device or torch.device("cpu")

    try:
        return decode_jpeg(raw, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return _decode_with_pil(source, dataset).to(device)


def crop_box(
    height: int, width: int, generator: torch.Generator | None
) -> tuple[int, int, int, int]:
    """(top, left, h, w): torchvision's `RandomResizedCrop.get_params`, drawing the same
    numbers in the same order from `generator`."""
    area = height * width
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(*SCALE, generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(*LOG_RATIO, generator=generator).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = torch.randint(0, height - h + 1, size=(1,), generator=generator).item()
            left = torch.randint(0, width - w + 1, size=(1,), generator=generator).item()
            return int(top), int(left), h, w
    in_ratio = width / height
    if in_ratio < min(RATIO):
        w, h = width, int(round(width / min(RATIO)))
    elif in_ratio > max(RATIO):
        h, w = height, int(round(height * max(RATIO)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@dataclass(frozen=True)
class BatchTransform:
    """The paper's train or test transform of a decoded batch, then normalization: a float
    NCHW batch (channels_last on a GPU, where cuDNN runs fastest).

    Each image costs the host two kernel launches (to float, one antialiased resize);
    rounding, flips and normalization run once per batch. The results are torchvision's
    `resized_crop` + flip and `resize` + `center_crop`, which resize in float and round to
    uint8 (tested equal), without their per-image checks and casts: about a third of their
    host time per image (benchmarks/gpu.py).
    """

    preprocessing: Preprocessing
    train: bool

    def __call__(
        self, images: list[torch.Tensor], generator: torch.Generator | None
    ) -> torch.Tensor:
        batch = self._train(images, generator) if self.train else self._test(images)
        pre, device = self.preprocessing, batch.device
        mean = torch.tensor(pre.mean, device=device).view(1, -1, 1, 1)
        std = torch.tensor(pre.std, device=device).view(1, -1, 1, 1)
        batch = (batch / 255 - mean) / std  # as ToTensor + Normalize
        if device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def _train(self, images: list[torch.Tensor], generator: torch.Generator | None):
        """Crops as float 0-255 values, each rounded as torchvision's uint8 result is."""
        pre = self.preprocessing
        size = [pre.input_size, pre.input_size]
        crops, flipped = [], []
        for index, image in enumerate(images):
            top, left, h, w = crop_box(image.shape[-2], image.shape[-1], generator)
            crop = image[None, :, top : top + h, left : left + w].float()
            crops.append(
                torch.nn.functional.interpolate(
                    crop, size, mode=pre.interpolation, align_corners=False, antialias=True
                )
            )
            if torch.rand(1, generator=generator) < 0.5:
                flipped.append(index)
        batch = torch.cat(crops).round_().clamp_(0, 255)
        if flipped:
            chosen = torch.tensor(flipped, device=batch.device)
            batch[chosen] = batch[chosen].flip(-1)
        return batch

    def _test(self, images: list[torch.Tensor]) -> torch.Tensor:
        """torchvision's Resize(resize_size) + CenterCrop(input_size), each image resized in
        float and rounded as torchvision's uint8 result is, then cropped."""
        pre = self.preprocessing
        crops = []
        for image in images:
            height, width = image.shape[-2:]
            size = _resized_shape(height, width, pre.resize_size)
            resized = image[None].float()
            if size != (height, width):  # torchvision returns an image of that size as is
                resized = torch.nn.functional.interpolate(
                    resized, size, mode=pre.interpolation, align_corners=False, antialias=True
                )
            crops.append(_center_crop(resized, pre.input_size))
        return torch.cat(crops).round_().clamp_(0, 255)


def _resized_shape(height: int, width: int, short: int) -> tuple[int, int]:
    """torchvision's `Resize(short)` output size: the shorter side to `short`."""
    if width <= height:
        return int(short * height / width), short
    return short, int(short * width / height)


def _center_crop(batch: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision's `center_crop` (a view; padded with zeros where the image is smaller)."""
    height, width = batch.shape[-2:]
    if size > height or size > width:
        from torchvision.transforms import functional as F

        return F.center_crop(batch, [size, size])
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    return batch[..., top : top + size, left : left + size]
