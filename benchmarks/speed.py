"""The speed that sparsity buys on this CPU, measured side by side in one run (not a test).

    .venv/bin/python benchmarks/speed.py                  # needs `make speed-env` (DeepSparse)
    .venv/bin/python benchmarks/speed.py --batch-size 64 --repeats 5 --images 640

- ResNet-50 at 90% and 95%, and MobileNetV1 at 90%, against their dense selves on DeepSparse at
  batch 64 (goal: >= 2.5x at 95% for ResNet-50), and the dense ONNX Runtime rate as the
  deployment baseline. The models are the speed demonstration's (sweeps/zoo_speed_demo_*.yaml):
  random weights pruned by magnitude per layer, first convolution and classifier dense. Every
  engine's outputs are checked against torch's before it is timed.
- Linear finetuning's feature extraction (`resources.feature_engine`) of ResNet-50 95% on
  `--images` images: DeepSparse against torch, end to end (DeepSparse's ONNX export and
  compilation included), as a ratio.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from sparse_transfer.models import ARCHS, load_upstream
from sparse_transfer.speed import make_plan, run_speed
from sparse_transfer.speed.cpu import cpu_flags, cpu_model
from sparse_transfer.speed.features import extract_with_deepsparse

os.environ["NM_DISABLE_ANALYTICS"] = "1"

ZOO = """
name: bench_{arch}
arch: {arch}
weights: random
entries:
  - {{method: dense, sparsity: 0.0}}
{sparse}
storage: {storage}
tracking: {{uri: "sqlite:///{storage}/mlflow.db"}}
"""
ENTRY = (
    "  - {{method: magnitude, sparsity: {s}, "
    "policy: {{distribution: uniform, prune_first_conv: false}}}}"
)


def _zoo(root: Path, arch: str, sparsities: list[float]) -> Path:
    path = root / f"zoo_bench_{arch}.yaml"
    sparse = "\n".join(ENTRY.format(s=s) for s in sparsities)
    path.write_text(ZOO.format(arch=arch, sparse=sparse, storage=root / "runs"))
    return path


def _engines(root: Path, arch: str, sparsities: list[float], args) -> None:
    plan = make_plan(args.batch_size, args.threads, warmup=2, repeats=args.repeats, latency=False)
    started = time.perf_counter()
    result = run_speed(
        _zoo(root, arch, sparsities),
        root / f"speed_{arch}",
        engines=["onnxruntime", "deepsparse"],
        plan=plan,
        log=lambda _: None,
    )
    table = result.table
    for line in result.problems:
        print(f"  PROBLEM {line}")
    ok = table[table["status"] == "ok"]
    for row in ok.sort_values(["engine", "sparsity"]).itertuples(index=False):
        print(
            f"  {arch} {row.sparsity * 100:>4g}% {row.engine:<11} batch {row.batch_size:g}: "
            f"{row.images_per_s:7.1f} img/s (min {row.images_per_s_min:.1f}, max "
            f"{row.images_per_s_max:.1f}), {row.speedup_vs_dense_same_engine:.2f}x its dense, "
            f"{row.speedup_vs_onnxruntime_dense:.2f}x ONNX Runtime dense, FLOPs "
            f"{row.flops_speedup:.2f}x"
        )
    print(f"  ({time.perf_counter() - started:.0f}s)")


def _features(root: Path, args) -> None:
    """ResNet-50 95% backbone: torch vs DeepSparse over the same images, end to end."""
    entry = root / "runs" / "zoo" / "bench_resnet50" / "magnitude_95.pt"
    upstream = load_upstream(entry)
    arch = ARCHS.get(upstream.arch)
    backbone = upstream.build_model().eval()
    backbone.fc = torch.nn.Identity()
    generator = torch.Generator().manual_seed(0)
    batches = [
        (torch.randn(args.batch_size, *arch.input_shape, generator=generator), torch.zeros(1))
        for _ in range(args.images // args.batch_size)
    ]
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with torch.inference_mode():
        reference = torch.cat([backbone(x) for x, _ in batches])
    torch_s = time.perf_counter() - started
    started = time.perf_counter()
    features, _ = extract_with_deepsparse(
        backbone, iter(batches), arch.input_shape, args.batch_size, threads=args.threads
    )
    sparse_s = time.perf_counter() - started
    diff = float((features - reference).abs().max())
    images = len(batches) * args.batch_size
    print(
        f"  ResNet-50 95% features of {images} images: torch {torch_s:.1f}s "
        f"({images / torch_s:.1f} img/s), DeepSparse {sparse_s:.1f}s ({images / sparse_s:.1f} "
        f"img/s, export and compilation included): {torch_s / sparse_s:.2f}x faster; max abs "
        f"feature difference {diff:.2g}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--images", type=int, default=640)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()} ({cpu_flags()}), {args.threads} threads")
    with tempfile.TemporaryDirectory(prefix="speed-bench-") as folder:
        root = Path(folder)
        print("DeepSparse vs its dense self, batch", args.batch_size)
        _engines(root, "resnet50", [0.9, 0.95], args)
        _engines(root, "mobilenetv1", [0.9], args)
        print("Linear-feature extraction (resources.feature_engine)")
        _features(root, args)


if __name__ == "__main__":
    main()
