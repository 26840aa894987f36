"""The device-side data path: torchvision's distributions and test transform exactly, the last
partial batch kept, resumed trials seeing the same batches, loaders started once."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision import transforms as T
from torchvision.io import ImageReadMode, decode_image

from sparse_transfer.data.paper import PAPER_DATASETS
from sparse_transfer.data.paper.batched import (
    BatchTransform,
    crop_box,
    decode,
    device_ready,
    pack,
    read_raw,
    unpack,
)
from sparse_transfer.data.paper.registry import DatasetLayoutError
from sparse_transfer.data.source import FileSource
from sparse_transfer.models.catalog import Preprocessing

SIZES = [(300, 200), (120, 260), (64, 64), (40, 500), (500, 40), (333, 251), (90, 91)]


def write_folder(root: Path, count: int, sizes=SIZES) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        h, w = sizes[index % len(sizes)]
        # smooth content (as photos are), so JPEG keeps it and resizing has work to do
        y, x = np.mgrid[0:h, 0:w]
        base = (np.sin(x / 7 + index) + np.cos(y / 5)) * 60 + 128
        pixels = np.stack([base, base[::-1], base.T[:h, :w] if h == w else base * 0.5], -1)
        pixels = (pixels + rng.normal(0, 8, pixels.shape)).clip(0, 255).astype(np.uint8)
        for split in ("train", "test"):
            path = root / split / f"c{index % 2}" / f"{index:03d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path, quality=92)
        paths.append(root / "test" / f"c{index % 2}" / f"{index:03d}.jpg")
    return paths


def decoded(paths: list[Path]) -> list[torch.Tensor]:
    return [decode_image(str(p), mode=ImageReadMode.RGB) for p in paths]


@pytest.mark.parametrize("height,width", [(300, 200), (40, 500), (500, 40), (7, 7), (224, 224)])
def test_crop_boxes_are_torchvisions_draws(height, width):
    image = torch.zeros(3, height, width)
    for seed in range(40):
        torch.manual_seed(seed)
        expected = T.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3])
        assert crop_box(height, width, torch.Generator().manual_seed(seed)) == expected


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_train_batch_equals_torchvisions_transforms_image_by_image(tmp_path, interpolation):
    images = decoded(write_folder(tmp_path, 7))
    pre = Preprocessing(interpolation=interpolation, input_size=96)
    mode = T.InterpolationMode(interpolation)
    reference = T.Compose(
        [
            T.RandomResizedCrop(96, interpolation=mode, antialias=True),
            T.RandomHorizontalFlip(),
            T.ConvertImageDtype(torch.float),
            T.Normalize(pre.mean, pre.std),
        ]
    )
    torch.manual_seed(5)
    expected = torch.stack([reference(image) for image in images])
    batch = BatchTransform(pre, train=True)(images, torch.Generator().manual_seed(5))
    torch.testing.assert_close(batch, expected, atol=1e-6, rtol=0)


class _DeviceKernels(TorchDispatchMode):
    """Counts the operators that would launch a kernel on the images' device: ops on a meta
    tensor that are not views. (`torch.utils._python_dispatch.TorchDispatchMode` and
    `OpOverload.is_view`: private, checked against torch 2.14.1 on 2026-12-04.)"""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        if any(t.device.type == "meta" for t in tensors) and not func.is_view:
            self.count += 1
        return func(*args, **(kwargs or {}))


class _Copies(TorchDispatchMode):
    """Counts copies from the host to the meta device (same private API as above)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        sources = [a for a in args if isinstance(a, torch.Tensor)]
        if isinstance(result, torch.Tensor) and result.device.type == "meta":
            self.count += any(t.device.type == "cpu" for t in sources)
        return result


@pytest.mark.parametrize("train", [True, False])
def test_each_image_launches_two_kernels(train):
    """The host's cost of the device stage grows with its launches per image: to float and
    one antialiased resize; rounding, flips and normalization are launched once per batch."""
    counts = {}
    for n in (8, 16):
        images = [torch.zeros(3, 300, 400, dtype=torch.uint8, device="meta") for _ in range(n)]
        with _DeviceKernels() as kernels:
            BatchTransform(Preprocessing(), train=train)(images, torch.Generator().manual_seed(0))
        counts[n] = kernels.count
    assert (counts[16] - counts[8]) / 8 == 2


@pytest.mark.parametrize(
    "interpolation,input_size,resize_size",
    [("bilinear", 224, 256), ("bicubic", 224, 256), ("bilinear", 300, 256)],  # last: padded
)
def test_test_transform_is_exact(tmp_path, interpolation, input_size, resize_size):
    sizes = [*SIZES, (256, 300)]  # the last is already at its resized size: not resampled
    images = decoded(write_folder(tmp_path, len(sizes), sizes))
    pre = Preprocessing(
        interpolation=interpolation, input_size=input_size, resize_size=resize_size
    )
    reference = T.Compose(
        [
            T.Resize(resize_size, T.InterpolationMode(interpolation), antialias=True),
            T.CenterCrop(input_size),
            T.ConvertImageDtype(torch.float),
            T.Normalize(pre.mean, pre.std),
        ]
    )
    batch = BatchTransform(pre, train=False)(images, None)
    torch.testing.assert_close(batch, torch.stack([reference(i) for i in images]), atol=0, rtol=0)


def test_raw_reading_keeps_jpeg_bytes_and_decodes_the_rest(tmp_path):
    jpeg = write_folder(tmp_path, 1)[0]
    png = tmp_path / "x.png"
    Image.new("L", (5, 4), 77).save(png)
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (6, 3), (0, 50, 100, 0)).save(cmyk)
    array = np.full((32, 32, 3), 9, np.uint8)
    raws = [read_raw(s, "d") for s in (jpeg, png, cmyk, array)]
    assert raws[0].dim() == 1 and raws[1].shape == (3, 4, 5) and raws[3].shape == (3, 32, 32)
    assert raws[2].shape == (3, 3, 6)  # nvJPEG's batch would refuse CMYK: decoded on the host
    images = decode(raws, [jpeg, png, cmyk, None], "d", torch.device("cpu"))
    assert [i.shape[0] for i in images] == [3, 3, 3, 3]
    assert images[2].shape == (3, 3, 6)


def test_only_baseline_jpegs_are_left_for_the_devices_batched_decoder(tmp_path):
    """nvJPEG decodes baseline JPEGs as one batch in hardware; anything else it decodes one
    by one with a host stage in the trial's process. The loader worker decodes those instead,
    to the same pixels."""
    pixels = np.random.default_rng(0).integers(0, 255, (40, 60, 3), np.uint8)
    files = {
        "baseline": dict(quality=90),
        "progressive": dict(quality=90, progressive=True),
        "optimized": dict(quality=90, optimize=True),  # still baseline: custom Huffman tables
        "gray": dict(quality=90),
        "exif": dict(quality=90, exif=b"Exif\x00\x00" + b"x" * 300),  # a segment to skip
    }
    for name, options in files.items():
        image = Image.fromarray(pixels).convert("L" if name == "gray" else "RGB")
        image.save(tmp_path / f"{name}.jpg", **options)
    raws = {p.stem: read_raw(p, "d") for p in sorted(tmp_path.glob("*.jpg"))}
    assert {k: v.dim() for k, v in raws.items()} == {
        "baseline": 1,
        "exif": 1,
        "gray": 1,
        "optimized": 1,
        "progressive": 3,
    }
    progressive = tmp_path / "progressive.jpg"
    expected = decode_image(str(progressive), mode=ImageReadMode.RGB)
    assert torch.equal(raws["progressive"], expected)
    (got,) = decode([raws["progressive"]], [progressive], "d", torch.device("cpu"))
    assert torch.equal(got, expected)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff\xd8",
        b"\xff\xd8\xff\xe0\x00",  # a segment cut short
        b"\xff\xd8\xff\xe0\x00\x04ab\xff\xc0\x00\x11\x08",  # a frame header cut short
        b"\xff\xd8junk",
        b"\x89PNG\r\n",
    ],
)
def test_a_broken_or_foreign_header_is_never_left_for_the_device(data):
    assert device_ready(data) is False


def test_a_broken_jpeg_is_named_by_the_worker_that_reads_it(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x00" * 40)
    with pytest.raises(DatasetLayoutError, match="broken.jpg"):
        read_raw(broken, "d")


def source(root: Path, workers: int = 0, size: int = 32) -> FileSource:
    return FileSource(
        PAPER_DATASETS.get("image_folder"),
        str(root),
        Preprocessing(input_size=size, resize_size=size + 4),
        torch.device("cpu"),
        workers,
    )


def test_last_partial_batch_is_kept_unless_it_is_one_image(tmp_path):
    write_folder(tmp_path, 10)
    files = source(tmp_path)
    g = torch.Generator().manual_seed(0)
    sizes = [len(y) for _, y in files.batches("trainval", train=True, batch_size=4, generator=g)]
    assert sizes == [4, 4, 2]  # the project used to drop the last 2 (drop_last=True)
    sizes = [len(y) for _, y in files.batches("trainval", train=True, batch_size=3, generator=g)]
    assert sizes == [3, 3, 3]  # a last batch of one image would break BatchNorm's training
    sizes = [len(y) for _, y in files.batches("test", train=False, batch_size=3, generator=None)]
    assert sizes == [3, 3, 3, 1]


def test_resumed_generator_sees_the_same_batches_with_workers(tmp_path):
    write_folder(tmp_path, 10)
    g = torch.Generator().manual_seed(3)

    def epoch(files, generator):
        return [
            (x.clone(), y.clone())
            for x, y in files.batches("trainval", train=True, batch_size=4, generator=generator)
        ]

    first = source(tmp_path, workers=2)
    epoch(first, g)
    saved = g.get_state()
    second_epoch = epoch(first, g)
    resumed = torch.Generator()
    resumed.set_state(saved)
    again = epoch(source(tmp_path, workers=0), resumed)
    assert len(again) == len(second_epoch) == 3
    for (x, y), (x2, y2) in zip(second_epoch, again, strict=True):
        torch.testing.assert_close(x, x2, atol=0, rtol=0)
        assert torch.equal(y, y2)
    loader = first._loaders["trainval", True, 4][0]
    assert loader.persistent_workers  # one start per split, not one per epoch


def test_test_split_matches_the_pil_path_closely(tmp_path):
    """The old path decoded and resized with PIL; the new one is torchvision's tensor path.
    They differ by rounding only (the README states the measured difference)."""
    from sparse_transfer.data.paper import paper_transform

    write_folder(tmp_path, 7)
    pre = Preprocessing(input_size=32, resize_size=36)
    old = PAPER_DATASETS.get("image_folder").open(
        tmp_path, "test", paper_transform(pre, train=False)
    )
    expected = torch.stack([old[i][0] for i in range(len(old))])
    got = torch.cat(
        [x for x, _ in source(tmp_path).batches("test", train=False, batch_size=4, generator=None)]
    )
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    difference = ((got - expected) * std * 255).abs()
    assert float(difference.mean()) < 1.5


def test_a_worker_hands_over_a_batch_as_two_tensors_that_unpack_to_its_images(tmp_path):
    """Each tensor a worker returns crosses the process boundary on its own: one per image
    made the trial's process spend about a third of a millisecond per image receiving them."""
    jpeg = write_folder(tmp_path, 1)[0]
    progressive = tmp_path / "progressive.jpg"
    Image.open(jpeg).save(progressive, progressive=True)
    array = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)  # read as a permuted view
    raws = [read_raw(s, "d") for s in (jpeg, progressive, array, jpeg)]
    flat, table = pack(raws)
    assert flat.dim() == 1 and table.shape == (4, 4)
    unpacked = unpack(flat, table)
    assert [u.shape for u in unpacked] == [r.shape for r in raws]
    assert all(torch.equal(u, r) for u, r in zip(unpacked, raws, strict=True))
    assert all(u.is_contiguous() for u in unpacked)  # as nvJPEG needs its inputs


def test_images_decoded_on_the_host_reach_the_device_in_one_copy():
    """CIFAR's arrays arrive decoded: 256 of them were 256 host-to-device copies a batch."""
    arrays = [torch.full((3, 32, 32), i, dtype=torch.uint8) for i in range(16)]
    with _Copies() as copies:
        images = decode(arrays, [None] * 16, "d", torch.device("meta"))
    assert copies.count == 1
    assert [i.shape for i in images] == [a.shape for a in arrays]
    assert all(i.device.type == "meta" for i in images)


def mixed_folder(root: Path) -> None:
    """Baseline JPEGs, plus a progressive JPEG and a PNG, which the workers decode."""
    paths = write_folder(root, 9)
    for split in ("train", "test"):
        Image.open(paths[0]).save(root / split / "c0" / "p.jpg", progressive=True)
        Image.open(paths[1]).save(root / split / "c1" / "q.png")


@pytest.mark.parametrize("workers", [0, 1])
def test_the_gpus_arrangement_gives_the_same_batches_as_the_cpus(tmp_path, workers):
    """On a GPU the workers only read bytes and the trial's process decodes and transforms;
    run here on the CPU (`stage_in_workers=False`), that arrangement gives the batches the
    CPU's own (everything in the workers) gives."""
    mixed_folder(tmp_path)
    in_workers = source(tmp_path, workers)
    in_trial = replace(in_workers, stage_in_workers=False)
    for split, train in (("trainval", True), ("test", False)):
        batches = []
        for files in (in_workers, in_trial):
            g = torch.Generator().manual_seed(11) if train else None
            batches.append(list(files.batches(split, train=train, batch_size=4, generator=g)))
        assert len(batches[0]) == len(batches[1]) == 3
        for (x, y), (x2, y2) in zip(*batches, strict=True):
            torch.testing.assert_close(x, x2, atol=0, rtol=0)
            assert torch.equal(y, y2)
    loader = in_trial._loaders["trainval", True, 4][0]
    assert loader.dataset.transform is None  # the workers only read
