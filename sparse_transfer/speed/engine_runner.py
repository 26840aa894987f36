"""Times one ONNX model in an engine's own environment; stdlib and numpy only.

Run as a script by the engine's own Python (DeepSparse lives in `.speed-env`, see
`make speed-env`): one JSON request on stdin, one JSON answer in the file it names (stdout is
the engine's: it may print banners there). The request names the ONNX file, a fixed check
batch and torch's outputs for it (.npy): the engine's outputs are written back, and the
model is timed only when they match. The in-process engines import `time_runs` and
`compare_outputs` from here, so every engine is checked and timed by the same code.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable

os.environ["NM_DISABLE_ANALYTICS"] = "1"  # before deepsparse is imported, always


def time_runs(run: Callable[[], object], warmup: int, repeats: int) -> list[float]:
    """Seconds of each of `repeats` calls of `run`, after `warmup` untimed calls."""
    for _ in range(warmup):
        run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def describe_times(seconds: list[float], batch_size: int) -> dict:
    """images/s (median, min, max over the repeats) and per-batch latency p50/p95 in ms."""
    rates = sorted(batch_size / s for s in seconds)
    ms = sorted(s * 1000 for s in seconds)
    return {
        "images_per_s": statistics.median(rates),
        "images_per_s_min": rates[0],
        "images_per_s_max": rates[-1],
        "latency_ms_p50": statistics.median(ms),
        "latency_ms_p95": _percentile(ms, 0.95),
        "repeats": len(seconds),
    }


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between the closest ranks (numpy's default)."""
    position = (len(values) - 1) * q
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


LOGIT_ATOL = 1e-3
LOGIT_RTOL = 1e-3


def compare_outputs(reference, outputs) -> dict:
    """An engine's logits on the check batch against torch's. They match when
    - every image whose torch top-1 beats its runner-up by more than the logit tolerance has
      the same top-1 (closer calls are ties no engine can be held to), and
    - max |logit - torch logit| <= LOGIT_ATOL + LOGIT_RTOL * max |torch logit|."""
    import numpy as np

    if outputs.shape != reference.shape:
        return {"outputs_match": False, "top1_agreement": 0.0, "max_abs_logit_diff": math.inf}
    diff = float(np.abs(outputs - reference).max())
    tolerance = LOGIT_ATOL + LOGIT_RTOL * float(np.abs(reference).max())
    ordered = np.sort(reference, axis=1)
    decisive = (ordered[:, -1] - ordered[:, -2]) > tolerance
    same = reference.argmax(1) == outputs.argmax(1)
    match = bool(np.isfinite(outputs).all() and diff <= tolerance and same[decisive].all())
    return {
        "outputs_match": match,
        "top1_agreement": float(same.mean()),
        "max_abs_logit_diff": diff,
    }


def run_in_batches(run: Callable, inputs, batch_size: int):
    """Outputs of `inputs` through an engine compiled for one batch size: in chunks, the
    last padded with zeros (each image's output does not depend on the others)."""
    import numpy as np

    outputs = []
    for start in range(0, len(inputs), batch_size):
        chunk = inputs[start : start + batch_size]
        padding = np.zeros((batch_size - len(chunk), *inputs.shape[1:]), dtype=inputs.dtype)
        outputs.append(run(np.concatenate([chunk, padding]))[: len(chunk)])
    return np.concatenate(outputs)


def _deepsparse(request: dict):
    import numpy as np
    from deepsparse import compile_model

    check = np.load(request["check_input"])
    timings = {}
    for index, batch_size in enumerate(request["batch_sizes"]):
        # one compilation per batch size (compiling is slow): the first also runs the check
        compiled = compile_model(
            request["onnx"], batch_size=batch_size, num_cores=request.get("threads")
        )
        if index == 0:
            outputs = run_in_batches(lambda x, c=compiled: c.run([x])[0], check, batch_size)
            np.save(request["check_output"], outputs)
            if not compare_outputs(np.load(request["reference"]), outputs)["outputs_match"]:
                return {}  # wrong: not timed
        shape = (batch_size, *check.shape[1:])
        batch = [np.random.default_rng(0).standard_normal(shape, dtype=np.float32)]
        warmup, repeats = request["warmup"][str(batch_size)], request["repeats"][str(batch_size)]
        seconds = time_runs(lambda c=compiled, b=batch: c.run(b), warmup, repeats)
        timings[str(batch_size)] = describe_times(seconds, batch_size)
    return timings


def _deepsparse_infer(request: dict):
    """Outputs of every input file, in order (linear finetuning's feature extraction)."""
    import numpy as np
    from deepsparse import compile_model

    batch_size = request["batch_size"]
    compiled = compile_model(
        request["onnx"], batch_size=batch_size, num_cores=request.get("threads")
    )
    for source, target in zip(request["inputs"], request["outputs"], strict=True):
        np.save(
            target, run_in_batches(lambda x: compiled.run([x])[0], np.load(source), batch_size)
        )
    return {}


ENGINES = {"deepsparse": _deepsparse, "deepsparse_infer": _deepsparse_infer}


def main() -> int:
    request = json.loads(sys.stdin.read())
    if request.get("probe"):
        import deepsparse

        answer = {"version": deepsparse.__version__}
    else:
        answer = {"timings": ENGINES[request["engine"]](request)}
    with open(request["answer"], "w") as handle:
        json.dump(answer, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())
