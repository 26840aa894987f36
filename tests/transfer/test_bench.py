"""The throughput benchmark measures both comparisons in one run (numbers are not asserted:
timing belongs in benchmarks, not tests)."""

from __future__ import annotations

from typer.testing import CliRunner

from sparse_transfer.cli import app
from sparse_transfer.transfer.bench import run_bench


def test_bench_reports_masked_dense_and_loader_rates():
    result = run_bench(
        "resnet18", batch_size=2, steps=1, warmup=1, image_size=64, workers=0, device="cpu"
    )
    assert result.masked_images_per_s > 0 and result.dense_images_per_s > 0
    assert result.loader_images_per_s > 0
    text = "\n".join(result.lines())
    assert "masked / dense" in text and "loader / model" in text


def test_bench_command_prints_the_ratios():
    output = CliRunner().invoke(
        app,
        [
            "bench",
            "--arch",
            "resnet18",
            "--batch-size",
            "2",
            "--steps",
            "1",
            "--image-size",
            "64",
            "--workers",
            "0",
        ],
    )
    assert output.exit_code == 0, output.output
    assert "masked / dense" in output.output
