"""Inference speed of upstream models: ONNX export, engines (torch, onnxruntime, DeepSparse in
its own environment), checked outputs, timings, and speed.csv."""

from __future__ import annotations

from sparse_transfer.speed.engines import ENGINES, Plan
from sparse_transfer.speed.measure import SPEED_COLUMNS
from sparse_transfer.speed.run import SpeedResult, default_threads, make_plan, run_speed

__all__ = [
    "ENGINES",
    "SPEED_COLUMNS",
    "Plan",
    "SpeedResult",
    "default_threads",
    "make_plan",
    "run_speed",
]
