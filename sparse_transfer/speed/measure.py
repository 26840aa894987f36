"""Measure every upstream model on every engine: export, check against torch, then time.

An engine is timed only when its outputs on a fixed batch of CHECK_IMAGES images match
torch's (`engine_runner.compare_outputs`: same top-1 wherever torch's is decisive, and max abs
logit difference within LOGIT_ATOL + LOGIT_RTOL * max |torch logit|). An engine that
disagrees is reported as wrong, and not timed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from sparse_transfer.analysis.results import is_dense
from sparse_transfer.models import ARCHS, load_upstream
from sparse_transfer.models.flops import count_flops
from sparse_transfer.speed.cpu import cpu_flags, cpu_model
from sparse_transfer.speed.engine_runner import LOGIT_ATOL, LOGIT_RTOL, compare_outputs
from sparse_transfer.speed.engines import ENGINES, Check, Plan
from sparse_transfer.speed.export import export_onnx
from sparse_transfer.speed.upstreams import SpeedUpstream

__all__ = [
    "CHECK_IMAGES",
    "LOGIT_ATOL",
    "LOGIT_RTOL",
    "SPEED_COLUMNS",
    "add_speedups",
    "compare_outputs",
    "measure_upstream",
]

CHECK_IMAGES = 8

SPEED_COLUMNS = [
    "upstream",
    "arch",
    "method",
    "sparsity",
    "engine",
    "batch_size",
    "threads",
    "images_per_s",
    "images_per_s_min",
    "images_per_s_max",
    "latency_ms_p50",
    "latency_ms_p95",
    "speedup_vs_dense_same_engine",
    "speedup_vs_onnxruntime_dense",
    "flops_speedup",
    "outputs_match",
    "top1_agreement",
    "max_abs_logit_diff",
    "warmup",
    "repeats",
    "status",  # ok | wrong (outputs disagree: not timed) | failed | unavailable
    "error",
    "note",
    "weights",  # trained | random (speed only)
    "weights_sha256",
    "source",
    "cpu",
    "cpu_flags",
]


def measure_upstream(
    upstream: SpeedUpstream,
    engines: list[str],
    plan: Plan,
    onnx_dir: Path,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """The rows of one upstream: one per engine and batch size (one per engine when it was
    not timed). A failing step becomes rows with status `failed` and the error."""
    base = {
        "upstream": upstream.name,
        "arch": upstream.arch,
        "method": upstream.method,
        "sparsity": upstream.sparsity,
        "threads": plan.threads,
        "source": upstream.source,
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
    }
    if upstream.error:
        return [_failed(base, engine, upstream.error) for engine in engines]
    step = "load"
    try:
        checkpoint = load_upstream(upstream.path)
        model = checkpoint.build_model().eval()
        base["weights"] = checkpoint.metadata.get("weights", "trained")
        base["weights_sha256"] = checkpoint.sha256
        shape = ARCHS.get(checkpoint.arch).input_shape
        step = "flops"
        dense_flops, sparse_flops = count_flops(model, shape)
        base["flops_speedup"] = dense_flops / sparse_flops if sparse_flops else math.nan
        step = "export"
        onnx_path = export_onnx(model, shape, onnx_dir / f"{_file_name(upstream.name)}.onnx")
    except Exception as err:  # any model the project builds: report it, go on to the next
        message = f"upstream {upstream.name!r}, step {step!r}: {_first_line(err)}"
        return [_failed(base, engine, message) for engine in engines]
    check = np.random.default_rng(1234).standard_normal((CHECK_IMAGES, *shape), dtype=np.float32)
    with torch.inference_mode():
        check = Check(check, model(torch.from_numpy(check)).numpy())
    rows = []
    for name in engines:
        rows += _measure_engine(base, name, model, onnx_path, check, plan, log)
    return rows


def _measure_engine(base, name, model, onnx_path, check: Check, plan, log) -> list[dict]:
    engine = ENGINES.get(name)
    why = engine.unavailable()
    if why:
        return [{**base, "engine": name, "status": "unavailable", "note": why}]
    log(f"speed {base['upstream']}: {name}")
    try:
        run = engine.run(model, onnx_path, check, plan)
    except Exception as err:
        message = f"upstream {base['upstream']!r}, step '{name} run': {_first_line(err)}"
        return [_failed(base, name, message)]
    agreement = compare_outputs(check.reference, run.outputs)
    if not agreement["outputs_match"]:
        note = (
            f"outputs differ from torch's (top-1 agreement {agreement['top1_agreement']:.2f}, "
            f"max abs logit difference {agreement['max_abs_logit_diff']:.3g}): not timed"
        )
        return [{**base, **agreement, "engine": name, "status": "wrong", "note": note}]
    return [
        {
            **base,
            **agreement,
            **run.timings[size],
            "engine": name,
            "batch_size": size,
            "warmup": plan.warmup[size],
            "status": "ok",
        }
        for size in plan.batch_sizes
    ]


def _first_line(err: Exception) -> str:
    """The exception's first line: exporters append whole graphs to their messages."""
    lines = str(err).strip().splitlines() or [""]
    return f"{type(err).__name__}: {lines[0][:500]}"


def _failed(base: dict, engine: str, message: str) -> dict:
    return {**base, "engine": engine, "status": "failed", "error": message}


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def add_speedups(table: pd.DataFrame) -> pd.DataFrame:
    """Speedups against the dense upstream of the same arch (same engine and batch size, and
    onnxruntime's dense rate). Where there is no such reference they stay empty and `note`
    says why."""
    table = table.reindex(columns=SPEED_COLUMNS).copy()
    for column in ("error", "note", "status", "weights", "weights_sha256", "source"):
        table[column] = table[column].astype(object)
    ok = table["status"] == "ok"
    dense = table[ok & table["method"].map(lambda m: isinstance(m, str) and is_dense(m))]
    rate = dense.groupby(["arch", "engine", "batch_size"])["images_per_s"].median()
    for index, row in table[ok].iterrows():
        key = (row["arch"], row["engine"], row["batch_size"])
        notes = []
        if key in rate.index:
            table.at[index, "speedup_vs_dense_same_engine"] = row["images_per_s"] / rate[key]
        else:
            notes.append(
                f"no dense upstream of {row['arch']} measured on {row['engine']} at batch "
                f"{row['batch_size']:g}: no speedup vs dense"
            )
        ort = (row["arch"], "onnxruntime", row["batch_size"])
        if ort in rate.index:
            table.at[index, "speedup_vs_onnxruntime_dense"] = row["images_per_s"] / rate[ort]
        else:
            notes.append(f"no onnxruntime dense {row['arch']} at this batch size")
        if notes:
            table.at[index, "note"] = "; ".join(notes)
    return table
