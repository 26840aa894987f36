"""`sparse-transfer speed`: every upstream of a spec on every engine, into DIR/speed.csv."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from sparse_transfer.speed.cpu import cpu_flags, cpu_model
from sparse_transfer.speed.engine_runner import LOGIT_ATOL, LOGIT_RTOL
from sparse_transfer.speed.engines import ENGINES, Plan
from sparse_transfer.speed.measure import CHECK_IMAGES, add_speedups, measure_upstream
from sparse_transfer.speed.upstreams import resolve_spec
from sparse_transfer.speed.weights import default_speed_dir

__all__ = ["SpeedResult", "default_threads", "format_speed", "make_plan", "run_speed"]

SPEED_FILE = "speed.csv"
META_FILE = "speed.json"
LATENCY_BATCH = 1


@dataclass
class SpeedResult:
    table: pd.DataFrame
    csv: Path
    problems: list[str]  # one line per upstream or engine that has no numbers, and why


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def make_plan(
    batch_size: int, threads: int, *, warmup: int, repeats: int, latency: bool = True
) -> Plan:
    """`batch_size` for throughput and, with `latency`, batch 1 for latency: one call is
    short there, so it gets more warm-up calls and repeats (4x) for a stable p95."""
    sizes = [batch_size] + ([LATENCY_BATCH] if latency and batch_size != LATENCY_BATCH else [])
    warmups = {size: warmup if size == batch_size else 2 * warmup for size in sizes}
    counts = {size: repeats if size == batch_size else 4 * repeats for size in sizes}
    return Plan(tuple(sizes), threads, warmups, counts)


def run_speed(
    spec: Path,
    out: Path | None,
    *,
    engines: list[str] | None,
    plan: Plan,
    overrides: list[str] | None = None,
    experiment: str | None = None,
    log: Callable[[str], None] = print,
) -> SpeedResult:
    """Measure, then write DIR/speed.csv, DIR/speed.json and one MLflow run per measurement.
    DIR is `out`, else <storage>/speed/<spec name>: where the spec's sweeps look for it."""
    names = engines or ENGINES.names()
    for name in names:
        ENGINES.get(name)  # an unknown engine fails before anything is built
    resolved = resolve_spec(Path(spec), overrides or [], log=log)
    out = out or default_speed_dir(resolved.storage, resolved.name)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = []
    for upstream in resolved.upstreams:
        rows += measure_upstream(upstream, names, plan, out / "onnx", log=log)
    table = add_speedups(pd.DataFrame(rows))
    csv = out / SPEED_FILE
    table.to_csv(csv, index=False)
    meta = {
        "spec": str(spec),
        "spec_name": resolved.name,
        "engines": names,
        "plan": asdict(plan),
        "check_images": CHECK_IMAGES,
        "logit_atol": LOGIT_ATOL,
        "logit_rtol": LOGIT_RTOL,
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "seconds": time.perf_counter() - started,
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    from sparse_transfer.tracking import default_tracking_uri
    from sparse_transfer.tracking.speed_runs import log_speed

    log_speed(
        default_tracking_uri(resolved.tracking_uri),
        experiment or f"speed-{resolved.name}",
        table,
        meta,
    )
    return SpeedResult(table, csv, problems(table))


def problems(table: pd.DataFrame) -> list[str]:
    """Why each row without numbers has none (failed, wrong, unavailable), once each."""
    lines = []
    for row in table[table["status"] != "ok"].itertuples(index=False):
        why = row.error if isinstance(row.error, str) and row.error else row.note
        lines.append(f"{row.upstream} on {row.engine}: {row.status}: {why}")
    for row in table[table["status"] == "ok"].itertuples(index=False):
        if isinstance(row.note, str) and row.note.startswith("no dense upstream"):
            lines.append(f"{row.upstream} on {row.engine}: {row.note}")
    return list(dict.fromkeys(lines))


def format_speed(table: pd.DataFrame) -> str:
    """The measured rows as a fixed-width text table for the terminal."""
    from sparse_transfer import console

    headers = [
        "upstream",
        "engine",
        "batch",
        "img/s (min-max)",
        "p50 ms",
        "vs dense",
        "vs ORT",
        "FLOPs",
    ]
    rows = [
        [
            str(r.upstream),
            str(r.engine),
            f"{r.batch_size:g}",
            f"{r.images_per_s:.1f} ({r.images_per_s_min:.1f}-{r.images_per_s_max:.1f})",
            f"{r.latency_ms_p50:.1f}",
            _times(r.speedup_vs_dense_same_engine),
            _times(r.speedup_vs_onnxruntime_dense),
            _times(r.flops_speedup),
        ]
        for r in table[table["status"] == "ok"].itertuples(index=False)
    ]
    return console.table(headers, rows, right=set(range(2, len(headers))))


def _times(value: float) -> str:
    return "-" if pd.isna(value) else f"{value:.2f}x"
