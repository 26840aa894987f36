"""The GPU path, measured side by side in one run: the one command to run on a GPU node.

    python benchmarks/gpu.py                      # on a GPU: the full table (a few minutes)
    python benchmarks/gpu.py --device cpu         # this project's CPU: host cost and masks
    python benchmarks/gpu.py --device cpu --quick --table --workers 1
                                                  # the same, small, then the GPU table's code
                                                  # at tiny sizes (the test suite runs it)

Every ratio compares rates measured in this run, on the same generated data:
- model steps: dense vs 90%-masked ResNet-50 and MobileNetV1 in fp32-strict, fp32 (TF32) and
  bf16 (images/s, ms/step, MFU from the measured FLOPs of a forward and backward), torch.compile
  on/off, the eval forward;
- the loader alone, old path (PIL decode + transforms in DataLoader workers) vs new
  (`FileSource`: workers read bytes, the device decodes and transforms), on CIFAR-size arrays and
  0.2 MP and 0.8 MP JPEGs; end to end through `FileSource`; two trials sharing one GPU;
- a verdict per dataset kind and the projected GPU-hours of each sweeps/paper_*.yaml.
On a CPU it prints the host cost per training image (what would stay on the host when
training on a GPU: the old path's whole PIL pipeline vs the new path's byte reading), and the
masked/dense step ratio, each on a line of its own for scripts to read.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sparse_transfer.config import load_spec, max_epochs  # noqa: E402
from sparse_transfer.data.paper import PAPER_DATASETS, paper_transform  # noqa: E402
from sparse_transfer.data.paper.batched import (  # noqa: E402
    BatchTransform,
    crop_box,
    decode,
    read_raw,
    unpack,
)
from sparse_transfer.data.source import FileSource, RawBatches  # noqa: E402
from sparse_transfer.models import ARCHS  # noqa: E402
from sparse_transfer.models.catalog import Preprocessing  # noqa: E402
from sparse_transfer.pruning import (  # noqa: E402
    MaskedParameters,
    global_magnitude_masks,
    prunable_weights,
)
from sparse_transfer.transfer.loop import (  # noqa: E402
    autocast_dtype,
    configure_device,
    make_optimizer,
    on_device,
    train_step,
)

# Dense peak TFLOPS by device name (NVIDIA datasheets, SXM): (fp32, tf32, bf16).
PEAKS = {"H100": (67.0, 494.7, 989.4), "H200": (67.0, 494.7, 989.4), "A100": (19.5, 156, 312)}
# Which generated images stand for each paper dataset (their typical stored resolution).
KINDS = {"cifar10": "cifar", "cifar100": "cifar", "aircraft": "0.8MP", "cars": "0.8MP"}
KINDS["sun397"] = "0.8MP"
SIZES = {"0.2MP": (375, 500), "0.8MP": (768, 1024)}
HP = {"lr": 0.01, "momentum": 0.9, "weight_decay": 5e-4}


@dataclass(frozen=True)
class Sizes:
    """The table's sizes: a GPU's, or the smallest that runs every row (the suite's CPU run,
    which keeps the table's code from rotting where no GPU is)."""

    batch: int
    image: int  # the model rows' input side
    steps: int  # timed steps per model row, after `warmup`
    warmup: int
    loader_batches: int  # timed batches per loader row, after the first
    compile_arch: str
    cifar_arrays: int


TABLE = Sizes(batch=256, image=224, steps=30, warmup=10, loader_batches=30,
              compile_arch="resnet50", cifar_arrays=4096)  # fmt: skip
TINY = Sizes(batch=4, image=112, steps=3, warmup=1, loader_batches=4,
             compile_arch="resnet18", cifar_arrays=64)  # fmt: skip


@dataclass
class Config:
    device: torch.device
    quick: bool
    workers: int

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def sizes(self) -> Sizes:
        return TINY if self.quick else TABLE


# -- data ---------------------------------------------------------------------------------------


def write_jpegs(root: Path, count: int, size: tuple[int, int]) -> None:
    """Photo-like JPEGs (smooth gradients plus noise, quality 90) in an image folder."""
    rng = np.random.default_rng(0)
    h, w = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    for index in range(count):
        base = np.sin(x / (17 + index % 5)) * 50 + np.cos(y / 23) * 50 + 128
        pixels = np.stack([base, np.roll(base, index, 0), base[::-1]], -1)
        pixels = (pixels + rng.normal(0, 12, pixels.shape)).clip(0, 255).astype(np.uint8)
        for split in ("trainval", "test"):
            path = root / ("train" if split == "trainval" else "test") / f"c{index % 4}"
            path.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(path / f"{index:05d}.jpg", quality=90)


def make_data(folder: Path, config: Config) -> dict[str, Path]:
    count = 24 if config.quick else (1024 if config.cuda else 128)
    roots = {}
    for kind, size in SIZES.items():
        roots[kind] = folder / kind
        write_jpegs(roots[kind], count if kind == "0.2MP" else count // 2, size)
    return roots


def time_per_image(run, images: int, repeats: int) -> float:
    """Seconds per image, the best of `repeats` (the least disturbed by other load)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best / images


def host_costs(root: Path, config: Config) -> dict:
    """Host seconds per training image, one process with one thread (as in a DataLoader
    worker), the same JPEGs: the old path's, the new one's (`new`) and the new one's parts."""
    pre = Preprocessing()
    old = PAPER_DATASETS.get("image_folder").open(
        root, "trainval", paper_transform(pre, train=True)
    )
    split = PAPER_DATASETS.get("image_folder").open(root, "trainval")
    n = len(split)
    repeats = 2 if config.quick else 3
    old_s = time_per_image(lambda: [old[i] for i in range(n)], n, repeats)
    raw = RawBatches(split, None)  # what a worker does for a GPU trial: read the bytes
    plan = (list(range(n)), 0)
    read_s = time_per_image(lambda: raw[plan], n, repeats)
    # the trial's process takes each batch from a worker, draws the crops and launches the
    # transform's kernels
    functional_s, launch_s = dispatch_costs(root, config)
    receive_s = receive_cost(split, config)
    return {
        "old": old_s,
        "new": read_s + receive_s + launch_s,
        "split": split,
        "receive": receive_s,
        "launch": launch_s,
        "functional": functional_s,
    }


class _TensorPerImage(RawBatches):
    """A worker's batch as one tensor per image (as before `pack`)."""

    def __getitem__(self, plan):
        (flat, table), sources, labels, seed = super().__getitem__(plan)
        return [image.clone() for image in unpack(flat, table)], sources, labels, seed


def receive_cost(split, config: Config, packed: bool = True, batch: int = 256) -> float:
    """Seconds per image the trial's process spends taking a batch of read bytes from a
    loader worker (and unpacking it), with the worker ahead of it (every batch ready)."""
    batches = 3 if config.quick else 10
    plan = ([i % len(split) for i in range(batch)], 0)
    loader = torch.utils.data.DataLoader(
        (RawBatches if packed else _TensorPerImage)(split, None),
        batch_size=None,
        sampler=[plan] * (batches + 1),
        num_workers=1,
        prefetch_factor=batches + 1,
    )
    stream = iter(loader)
    next(stream)
    time.sleep(batches * batch * 0.2e-3 + 1.0)  # the worker reads every batch meanwhile
    started = time.perf_counter()
    for _ in range(batches):
        payload, _, _, _ = next(stream)
        if packed:
            unpack(*payload)
    seconds = time.perf_counter() - started
    del stream  # the worker's shutdown is not part of a batch
    return seconds / (batches * batch)


def meta_batch(root: Path, size: int = 256) -> list[torch.Tensor]:
    """A training batch of the folder's image shapes (repeated) on the meta device, where
    running the transform is all its Python and dispatch and no kernel."""
    split = PAPER_DATASETS.get("image_folder").open(root, "trainval")
    sources = [s for s, _ in split.samples]
    raws = [read_raw(s, "b") for s in sources]
    shapes = [image.shape for image in decode(raws, sources, "b", torch.device("cpu"))]
    return [
        torch.empty(shapes[i % len(shapes)], dtype=torch.uint8, device="meta") for i in range(size)
    ]


def dispatch_costs(root: Path, config: Config) -> tuple[float, float]:
    """Host seconds per training image to launch the device stage (a batch of 256, meta
    device): torchvision's `resized_crop` and flip image by image, vs `BatchTransform`."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as F

    pre = Preprocessing()
    images = meta_batch(root)
    size, mode = [pre.input_size] * 2, InterpolationMode(pre.interpolation)

    def torchvision_functional():
        generator, out = torch.Generator().manual_seed(0), []
        for image in images:
            top, left, h, w = crop_box(image.shape[-2], image.shape[-1], generator)
            image = F.resized_crop(image, top, left, h, w, size, mode, antialias=True)
            out.append(image.flip(-1) if torch.rand(1, generator=generator) < 0.5 else image)
        torch.stack(out).float()

    def batch_transform():
        BatchTransform(pre, train=True)(images, torch.Generator().manual_seed(0))

    repeats = 2 if config.quick else 5
    return (
        time_per_image(torchvision_functional, len(images), repeats),
        time_per_image(batch_transform, len(images), repeats),
    )


def test_transform_deviation(root: Path) -> float:
    """Mean |new - old| of the test transform in 8-bit levels (torchvision tensor resize vs
    PIL resize of the same JPEGs)."""
    pre = Preprocessing()
    old = PAPER_DATASETS.get("image_folder").open(root, "test", paper_transform(pre, train=False))
    split = PAPER_DATASETS.get("image_folder").open(root, "test")
    n = min(len(split), 32)
    expected = torch.stack([old[i][0] for i in range(n)])
    raws = [read_raw(s, "b") for s, _ in split.samples[:n]]
    got = BatchTransform(pre, train=False)(
        decode(raws, [s for s, _ in split.samples[:n]], "b", torch.device("cpu")), None
    )
    std = torch.tensor(pre.std).view(1, 3, 1, 1)
    return float(((got - expected) * std * 255).abs().mean())


def loader_rate(source_batches, batches: int, sync) -> float:
    """Images/s after the first batch (worker start-up is paid once per trial now)."""
    seen, started = 0, None
    for index, (images, _) in enumerate(source_batches):
        if index == 1:
            sync()
            seen, started = 0, time.perf_counter()
        seen += len(images)
        if index >= batches:
            break
    sync()
    return seen / (time.perf_counter() - started) if started else float("nan")


def old_loader(root: Path | None, arrays, config: Config, batch: int):
    """Today's path before this change: PIL decode + transforms in DataLoader workers."""
    pre = Preprocessing()
    transform = paper_transform(pre, train=True)
    if arrays is not None:
        from sparse_transfer.data.paper.registry import ImageSplit

        data = ImageSplit("cifar", "trainval", ["a"], [(a, 0) for a in arrays], transform)
    else:
        data = PAPER_DATASETS.get("image_folder").open(root, "trainval", transform)
    while True:  # a new DataLoader each epoch, as the old FileSource built one
        loader = torch.utils.data.DataLoader(
            data,
            batch_size=batch,
            shuffle=True,
            drop_last=True,
            num_workers=config.workers,
            pin_memory=config.cuda,
        )
        if len(loader) == 0:
            raise ValueError(f"{len(data)} images make no batch of {batch}")
        for images, labels in loader:
            yield images.to(config.device, non_blocking=True), labels


def new_loader(root: Path | None, arrays, config: Config, batch: int):
    pre = Preprocessing()
    if arrays is not None:
        from sparse_transfer.data.paper.registry import ImageSplit

        split = ImageSplit("cifar", "trainval", ["a"], [(a, 0) for a in arrays])

        class Arrays:
            name, num_classes = "cifar", 1

            def open(self, root, name):
                return split

        source = FileSource(Arrays(), "", pre, config.device, config.workers)  # type: ignore[arg-type]
    else:
        source = FileSource(
            PAPER_DATASETS.get("image_folder"), str(root), pre, config.device, config.workers
        )
    generator = torch.Generator().manual_seed(0)
    while True:
        yield from source.batches("trainval", train=True, batch_size=batch, generator=generator)


# -- model steps ----------------------------------------------------------------------------


def build(arch: str, config: Config, sparsity: float | None, compiled: bool = False):
    torch.manual_seed(0)
    spec = ARCHS.get(arch)
    model = on_device(spec.build(100), config.device)
    masks = None
    if sparsity:
        masks = MaskedParameters(  # as full finetuning keeps them
            model,
            global_magnitude_masks(prunable_weights(model, exclude=(spec.classifier,)), sparsity),
            grads=False,
        )
        masks.zero_weights()
    forward = torch.compile(model) if compiled else model
    return model, forward, masks


def step_flops(model, x) -> float:
    """FLOPs of one training step (forward + backward), counted by torch on this batch."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def timed_steps(runs: list, x, y, steps: int, warmup: int, sync) -> list[float]:
    """Median seconds per step of each (forward, optimizer, masks, autocast) in `runs`,
    interleaved step by step so that any load on the machine falls on all of them alike."""
    for forward, optimizer, masks, autocast in runs:
        forward.train()
        for _ in range(warmup):
            train_step(forward, x, y, optimizer, masks=masks, autocast_dtype=autocast)
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(steps):
        for index, (forward, optimizer, masks, autocast) in enumerate(runs):
            sync()
            started = time.perf_counter()
            train_step(forward, x, y, optimizer, masks=masks, autocast_dtype=autocast)
            sync()
            times[index].append(time.perf_counter() - started)
    return [float(np.median(t)) for t in times]


def inputs(config: Config, batch: int, size: int):
    x = torch.randn(batch, 3, size, size, device=config.device)
    if config.cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, 100, (batch,), device=config.device)


def masked_dense(
    arch: str, config: Config, batch: int, size: int, precision: str, steps: tuple[int, int]
):
    """(dense, masked) seconds per step, interleaved; `steps`: (timed, warm-up)."""
    configure_device(config.device, precision)
    autocast = autocast_dtype(config.device, precision)
    x, y = inputs(config, batch, size)
    runs = []
    for sparsity in (None, 0.9):
        model, forward, masks = build(arch, config, sparsity)
        runs.append(
            (forward, make_optimizer(model.parameters(), HP, config.device), masks, autocast)
        )
    return timed_steps(runs, x, y, *steps, _sync(config))


def eval_rate(arch: str, config: Config, batch: int, precision: str) -> float:
    configure_device(config.device, precision)
    autocast = autocast_dtype(config.device, precision)
    model, _, _ = build(arch, config, None)
    model.eval()
    x, _ = inputs(config, batch, config.sizes.image)
    sync = _sync(config)
    timed = 2 * config.sizes.steps // 3
    with (
        torch.no_grad(),
        torch.autocast(config.device.type, autocast, enabled=autocast is not None),
    ):
        for _ in range(config.sizes.warmup):
            model(x)
        sync()
        started = time.perf_counter()
        for _ in range(timed):
            model(x)
        sync()
    return timed * batch / (time.perf_counter() - started)


def head_rate(arch: str, config: Config, batch: int = 64) -> float:
    """Images/s of a linear head's SGD steps on cached features (the linear specs' training:
    bound by per-step overhead, not arithmetic)."""
    from torch import nn

    model = ARCHS.get(arch).build(100)
    width = next(m for m in reversed(list(model.modules())) if isinstance(m, nn.Linear))
    head = nn.Linear(width.in_features, 100).to(config.device)
    features = torch.randn(batch, width.in_features, device=config.device)
    labels = torch.randint(0, 100, (batch,), device=config.device)
    optimizer = make_optimizer(head.parameters(), HP, config.device)
    steps = 20 if config.quick else 200
    (seconds,) = timed_steps(
        [(head, optimizer, None, None)], features, labels, steps, steps // 10, _sync(config)
    )
    return batch / seconds


def _sync(config: Config):
    return torch.cuda.synchronize if config.cuda else (lambda: None)


# -- projection -----------------------------------------------------------------------------


def image_steps(spec_path: Path) -> list[dict]:
    """Per (arch, mode, dataset kind, sparse?): training and eval image-steps of a paper spec,
    for the new path (test split scored once per final run) and the old (every epoch)."""
    spec = load_spec(spec_path)
    rows = []
    for upstream in spec.upstream:
        for dataset in spec.datasets:
            sizes = PAPER_DATASETS.get(dataset).paper_sizes or (0, 0)
            trainval, test = sizes
            for mode in spec.modes:
                space = spec.space(mode, dataset)
                epochs = max_epochs(space)
                seeds = len(spec.seeds)
                row = {
                    "arch": upstream.arch,
                    "mode": mode,
                    "kind": KINDS.get(dataset, "0.2MP"),
                    "sparse": upstream.sparsity > 0,
                    "gpu": spec.resources_for(dataset).gpu or 1.0,
                    "precision": spec.resources_for(dataset).precision,
                }
                train = seeds * epochs * trainval  # images through the model (or the head)
                eval_new, eval_old = seeds * test, seeds * epochs * test
                if spec.searches:  # an upper bound: early stopping ends most trials early
                    trials = spec.search.trials_per_cell
                    train += trials * epochs * trainval * 4 // 5
                    eval_new += trials * epochs * trainval // 5
                    eval_old += trials * epochs * trainval // 5
                if mode == "linear":  # the backbone runs once per upstream and dataset
                    eval_new = eval_old = trainval + test
                row.update(train=train, eval_new=eval_new, eval_old=eval_old)
                rows.append(row)
    return rows


def project(rows: list[dict], rates) -> tuple[float, float]:
    """(new, old) device-hours: image-steps / measured rate, times the GPUs a trial holds."""
    new = old = 0.0
    for r in rows:
        step_new, step_old, ev_new, ev_old = rates(r)
        new += r["gpu"] * (r["train"] / step_new + r["eval_new"] / ev_new) / 3600
        old += r["gpu"] * (r["train"] / step_old + r["eval_old"] / ev_old) / 3600
    return new, old


# -- the run --------------------------------------------------------------------------------


def run_cpu(config: Config) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # DataLoader workers run so
    with tempfile.TemporaryDirectory() as folder:
        roots = make_data(Path(folder), config)
        old_total = new_total = 0.0
        print("host stage per training image (one process, same JPEGs)")
        costs = {kind: host_costs(root, config) for kind, root in roots.items()}
        for kind, cost in costs.items():
            old_total, new_total = old_total + cost["old"], new_total + cost["new"]
            print(
                f"  {kind} JPEG: old (PIL decode+transforms) {cost['old'] * 1e3:7.2f} ms, "
                "new (read bytes, hand them over, launch the device stage) "
                f"{cost['new'] * 1e3:7.3f} ms"
            )
        packed = costs["0.8MP"]["receive"]
        apart = receive_cost(costs["0.8MP"]["split"], config, packed=False)
        print(
            "handing a batch of 256 read JPEGs (0.8MP) from a worker to the trial, per image:\n"
            f"  a tensor per image {apart * 1e3:.3f} ms, packed {packed * 1e3:.3f} ms "
            f"({packed / apart:.2f}x)"
        )
        functional_s, batch_s = costs["0.2MP"]["functional"], costs["0.2MP"]["launch"]
        print(
            "launching the device stage's transforms per image (meta device: Python and "
            f"dispatch):\n  torchvision resized_crop + flip {functional_s * 1e3:.3f} ms, "
            f"BatchTransform {batch_s * 1e3:.3f} ms ({batch_s / functional_s:.2f}x)"
        )
        deviation = test_transform_deviation(roots["0.2MP"])
        print(f"test transform, new vs PIL: mean |difference| {deviation:.3f} of 255 levels")
    torch.set_num_threads(threads)
    print(f"host cost per image new/old: {new_total / old_total:.3f}")
    arch, batch, size = ("resnet18", 4, 64) if config.quick else ("resnet50", 8, 224)
    steps = (3, 1) if config.quick else (8, 2)
    dense, masked = masked_dense(arch, config, batch, size, "fp32-strict", steps)
    print(
        f"{arch} batch {batch} at {size}px, CPU fp32: dense {dense * 1e3:.0f} ms/step, "
        f"90% masked {masked * 1e3:.0f} ms/step"
    )
    print(f"masked/dense: {dense / masked:.3f}")
    specs = sorted((ROOT / "sweeps").glob("paper_*.yaml"))
    print("image-steps per paper spec (new path: test split once per final run; linear: the")
    print("  backbone's forward once per upstream and dataset, heads trained on cached features)")
    for path in specs:
        rows = image_steps(path)
        train = sum(r["train"] for r in rows)
        print(
            f"  {path.stem}: train {train / 1e6:,.1f}M, eval "
            f"{sum(r['eval_new'] for r in rows) / 1e6:,.1f}M "
            f"(old: {sum(r['eval_old'] for r in rows) / 1e6:,.1f}M)"
        )
    print("GPU table: not measured on this device (run without --device cpu on a GPU)")


def row(name: str, seconds: float, batch: int, flops: float | None, peak: float | None) -> str:
    rate = batch / seconds
    mfu = f"{flops / seconds / (peak * 1e12) * 100:5.1f}%" if flops and peak else "    -"
    return f"  {name:<38} {rate:9.0f} img/s {seconds * 1e3:8.1f} ms/step  MFU {mfu}"


def device_name(config: Config) -> str:
    return torch.cuda.get_device_name() if config.cuda else f"CPU ({os.cpu_count()} cores)"


def run_table(config: Config) -> None:
    """The table. On a CPU (`--table`, tiny sizes) it runs the same code as a check: its
    numbers say nothing of a GPU."""
    name = device_name(config)
    peaks = next((p for k, p in PEAKS.items() if k in name), None)
    sizes, batch = config.sizes, config.sizes.batch
    print(f"device: {name}, torch {torch.__version__}, loader workers {config.workers}")
    if not config.cuda:
        print("  (the GPU table's code at tiny sizes on a CPU: a check, not a measurement)")
    model_rates: dict[tuple, float] = {}
    print("training steps (dense vs 90% masked; images/s, ms/step, MFU)")
    for arch in ARCH_NAMES:
        model, _, _ = build(arch, config, None)
        flops = step_flops(model, inputs(config, batch, sizes.image)[0])
        del model
        for index, precision in enumerate(PRECISIONS):
            steps = (sizes.steps, sizes.warmup)
            dense, masked = masked_dense(arch, config, batch, sizes.image, precision, steps)
            peak = peaks[index] if peaks else None
            model_rates[arch, precision, False] = batch / dense
            model_rates[arch, precision, True] = batch / masked
            print(row(f"{arch} {precision} dense", dense, batch, flops, peak))
            print(row(f"{arch} {precision} masked", masked, batch, flops, peak))
            print(f"  {arch} {precision} masked/dense: {dense / masked:.3f}")
    compiled_rows(config)
    evals = {(a, p): eval_rate(a, config, batch, p) for a in ARCH_NAMES for p in PRECISIONS}
    for (arch, precision), rate in evals.items():
        print(f"  eval forward {arch} {precision}: {rate:9.0f} img/s")
    with tempfile.TemporaryDirectory() as folder:
        roots = make_data(Path(folder), config)
        loaders = gpu_loaders(config, batch, roots)
        end_to_end(config, batch, roots)
    shared(config)
    verdicts(model_rates, loaders)
    heads = {arch: head_rate(arch, config) for arch in ARCH_NAMES}
    for arch, rate in heads.items():
        print(f"  linear head steps on cached features ({arch}, batch 64): {rate:9.0f} img/s")
    projections(model_rates, evals, loaders, heads)


ARCH_NAMES = ("resnet50", "mobilenetv1")
PRECISIONS = ("fp32-strict", "fp32", "bf16")


def compiled_rows(config: Config) -> None:
    """torch.compile on/off, 90% masked, bf16 (as `resources.compile: true` trains)."""
    sizes = config.sizes
    configure_device(config.device, "bf16")
    autocast = autocast_dtype(config.device, "bf16")
    x, y = inputs(config, sizes.batch, sizes.image)
    runs = []
    for compiled in (False, True):
        model, forward, masks = build(sizes.compile_arch, config, 0.9, compiled)
        optimizer = make_optimizer(model.parameters(), HP, config.device)
        runs.append((forward, optimizer, masks, autocast))
    eager, compiled_s = timed_steps(runs, x, y, sizes.steps, sizes.warmup, _sync(config))
    arch = sizes.compile_arch
    print(row(f"{arch} bf16 masked, eager", eager, sizes.batch, None, None))
    print(row(f"{arch} bf16 masked, torch.compile", compiled_s, sizes.batch, None, None))


def gpu_loaders(config: Config, batch: int, roots: dict[str, Path]) -> dict:
    """(old, new) loader images/s per dataset kind."""
    out = {}
    print(f"loader alone, {config.workers} workers (old: PIL in workers; new: bytes + device)")
    rng = np.random.default_rng(0)
    arrays = [
        rng.integers(0, 255, (32, 32, 3), np.uint8) for _ in range(config.sizes.cifar_arrays)
    ]
    for kind in ("cifar", *SIZES):
        root, data = roots.get(kind), (arrays if kind == "cifar" else None)
        batches = config.sizes.loader_batches
        old = loader_rate(old_loader(root, data, config, batch), batches, _sync(config))
        new = loader_rate(new_loader(root, data, config, batch), batches, _sync(config))
        out[kind] = (old, new)
        print(
            f"  {kind:<6} old {old:8.0f} img/s   new {new:8.0f} img/s   new/old {new / old:5.2f}"
        )
    return out


def end_to_end(config: Config, batch: int, roots: dict[str, Path]) -> None:
    print("end to end through FileSource (resnet50 bf16, 90% masked)")
    configure_device(config.device, "bf16")
    autocast, sync = autocast_dtype(config.device, "bf16"), _sync(config)
    for kind in SIZES:
        model, forward, masks = build("resnet50", config, 0.9)
        optimizer = make_optimizer(model.parameters(), HP, config.device)
        source = new_loader(roots[kind], None, config, batch)
        seen, started = 0, time.perf_counter()
        for index, (x, y) in enumerate(source):
            if index == 2:  # after the workers' start and cuDNN's autotuning
                sync()
                seen, started = 0, time.perf_counter()
            train_step(forward, x, y % 100, optimizer, masks=masks, autocast_dtype=autocast)
            seen += len(y)
            if index >= 2 + config.sizes.loader_batches:
                break
        sync()
        print(f"  {kind}: {seen / (time.perf_counter() - started):8.0f} img/s")


def shared(config: Config) -> None:
    """Two trials on one device: two processes stepping at once, their summed rate."""
    command = [sys.executable, __file__, "--step-worker", "--device", config.device.type]
    command += ["--quick"] if config.quick else []
    alone = float(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    together = sum(float(p.communicate()[0]) for p in procs)
    if not config.cuda:
        mps = "n/a on a CPU"
    elif os.environ.get("CUDA_MPS_PIPE_DIRECTORY"):
        mps = "on"
    else:
        mps = "unknown (see infra/README.md)"
    print(
        f"two trials sharing one device (resnet50 bf16 masked, batch {step_batch(config)}; "
        f"MPS {mps}): {together:.0f} img/s together vs {alone:.0f} alone "
        f"({together / alone:.2f}x)"
    )


def step_batch(config: Config) -> int:
    return min(64, config.sizes.batch)


def step_worker(config: Config) -> None:
    """One trial's training steps, alone in its process; prints its images/s."""
    configure_device(config.device, "bf16")
    batch = step_batch(config)
    model, forward, masks = build("resnet50", config, 0.9)
    x, y = inputs(config, batch, config.sizes.image)
    optimizer = make_optimizer(model.parameters(), HP, config.device)
    autocast = autocast_dtype(config.device, "bf16")
    steps, warmup = (config.sizes.steps, config.sizes.warmup)
    (seconds,) = timed_steps(
        [(forward, optimizer, masks, autocast)], x, y, 4 * steps // 3, warmup, _sync(config)
    )
    print(batch / seconds)


def verdicts(model_rates, loaders) -> None:
    print("verdict per dataset kind (resnet50 bf16 masked training)")
    model = model_rates["resnet50", "bf16", True]
    for kind, (old, new) in loaders.items():
        bound = "GPU-bound" if new >= model else "loader-bound"
        print(
            f"  {kind}: model {model:.0f} img/s, new loader {new:.0f}, old {old:.0f}: {bound}"
            f" (old path: {'GPU' if old >= model else 'host'}-bound)"
        )


def projections(model_rates, evals, loaders, heads) -> None:
    print("projected GPU-hours per paper spec, from the rows above (new path vs old path)")
    for path in sorted((ROOT / "sweeps").glob("paper_*.yaml")):
        rows = image_steps(path)
        for precision in ("spec", "bf16"):

            def rates(r, precision=precision):
                p = r["precision"] if precision == "spec" else precision
                model = model_rates[r["arch"], p, r["sparse"]]
                old_loader, new_loader = loaders[r["kind"]]
                ev = evals[r["arch"], p]
                return (
                    min(model, new_loader),
                    min(model, old_loader),
                    min(ev, new_loader),
                    min(ev, old_loader),
                )

            new, old = project(rows, rates)
            label = rows[0]["precision"] if precision == "spec" else "bf16"
            print(
                f"  {path.stem} ({label}): {new:8.1f} GPU-h new, {old:8.1f} old, "
                f"new/old {new / old:.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default=None)
    parser.add_argument("--quick", action="store_true", help="small sizes (the test suite)")
    parser.add_argument(
        "--table",
        action="store_true",
        help="on a CPU with --quick: run the GPU table's code too, at tiny sizes (a check)",
    )
    parser.add_argument("--workers", type=int, default=7, help="loader workers")
    parser.add_argument("--step-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here")
    if args.table and device.type == "cpu" and not args.quick:
        parser.error("--table on a CPU needs --quick: the GPU table's sizes take hours there")
    config = Config(device, args.quick, args.workers)
    if args.step_worker:
        step_worker(config)
        return
    started = time.perf_counter()
    if config.cuda:
        run_table(config)
    else:
        run_cpu(config)
        if args.table:
            run_table(config)
    print(f"benchmark time: {time.perf_counter() - started:.0f} s on {device.type}")


if __name__ == "__main__":
    main()
