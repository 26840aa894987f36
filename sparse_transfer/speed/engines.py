"""The inference engines timed by `sparse-transfer speed`, behind one small interface.

- torch: the model as the project builds it (the reference every other engine is checked
  against; the dense reference for speed).
- onnxruntime: the dense deployment baseline (it does not exploit unstructured sparsity).
- deepsparse: Neural Magic's sparse CPU engine, the one the paper measured with. It pins
  numpy<2, pydantic<2.8 and onnx<1.15, so it lives in its own environment (`make speed-env`)
  and is run there as a separate process: the ONNX file and a check batch go in, timings and
  the check batch's outputs come back (`engine_runner.py`).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from sparse_transfer.registry import Registry
from sparse_transfer.speed.engine_runner import compare_outputs, describe_times, time_runs

__all__ = ["ENGINES", "Check", "Engine", "EngineRun", "Plan", "speed_env_python"]

SPEED_ENV_VARIABLE = "SPARSE_TRANSFER_SPEED_ENV"
BUILD_COMMAND = "make speed-env"
_RUNNER = Path(__file__).with_name("engine_runner.py")


@dataclass(frozen=True)
class Plan:
    """How each batch size is timed: warm-up calls, then timed repeats."""

    batch_sizes: tuple[int, ...]
    threads: int
    warmup: dict[int, int]
    repeats: dict[int, int]
    timeout_s: float = 1800.0


@dataclass(frozen=True)
class Check:
    """A fixed batch and torch's logits for it: what an engine must reproduce to be timed."""

    inputs: np.ndarray
    reference: np.ndarray

    def passed(self, outputs: np.ndarray) -> bool:
        return compare_outputs(self.reference, outputs)["outputs_match"]


@dataclass
class EngineRun:
    outputs: np.ndarray  # logits of the check batch
    timings: dict[int, dict]  # batch size -> describe_times(...)


class Engine(Protocol):
    name: str

    def unavailable(self) -> str | None:
        """Why this engine cannot run here (and how to fix it), or None when it can."""
        ...

    def run(self, model: nn.Module, onnx_path: Path, check: Check, plan: Plan) -> EngineRun:
        """Outputs of the check batch; then, only if they match torch's, timings at each of
        the plan's batch sizes."""
        ...


def _batch(check: np.ndarray, batch_size: int) -> np.ndarray:
    shape = (batch_size, *check.shape[1:])
    return np.random.default_rng(0).standard_normal(shape, dtype=np.float32)


class TorchEngine:
    name = "torch"

    def unavailable(self) -> str | None:
        return None

    @torch.inference_mode()
    def run(self, model: nn.Module, onnx_path: Path, check: Check, plan: Plan) -> EngineRun:
        previous = torch.get_num_threads()
        torch.set_num_threads(plan.threads)
        try:
            model = model.eval()
            outputs = model(torch.from_numpy(check.inputs)).numpy()
            timings = {}
            for size in plan.batch_sizes if check.passed(outputs) else ():
                batch = torch.from_numpy(_batch(check.inputs, size))
                seconds = time_runs(
                    lambda b=batch: model(b), plan.warmup[size], plan.repeats[size]
                )
                timings[size] = describe_times(seconds, size)
        finally:
            torch.set_num_threads(previous)
        return EngineRun(outputs, timings)


class OnnxRuntimeEngine:
    name = "onnxruntime"

    def unavailable(self) -> str | None:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime)"
        return None

    def run(self, model: nn.Module, onnx_path: Path, check: Check, plan: Plan) -> EngineRun:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = plan.threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        outputs = session.run(None, {name: check.inputs})[0]
        timings = {}
        for size in plan.batch_sizes if check.passed(outputs) else ():
            feed = {name: _batch(check.inputs, size)}
            seconds = time_runs(
                lambda f=feed: session.run(None, f), plan.warmup[size], plan.repeats[size]
            )
            timings[size] = describe_times(seconds, size)
        return EngineRun(outputs, timings)


def speed_env_python() -> Path:
    """The Python of the DeepSparse environment: $SPARSE_TRANSFER_SPEED_ENV, else .speed-env
    in the working directory, else in the project's checkout."""
    candidates = [Path(".speed-env"), Path(__file__).resolve().parents[2] / ".speed-env"]
    if os.environ.get(SPEED_ENV_VARIABLE):
        candidates = [Path(os.environ[SPEED_ENV_VARIABLE])]
    for folder in candidates:
        if (folder / "bin" / "python").is_file():
            return folder / "bin" / "python"
    return candidates[0] / "bin" / "python"


def engine_env() -> dict[str, str]:
    # The engine's environment has its own packages: nothing of ours may shadow them.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["NM_DISABLE_ANALYTICS"] = "1"
    return env


class DeepSparseEngine:
    name = "deepsparse"

    def unavailable(self) -> str | None:
        python = speed_env_python()
        if not python.is_file():
            return (
                f"the DeepSparse environment is missing ({python.parent.parent}); build it "
                f"with `{BUILD_COMMAND}` (or point {SPEED_ENV_VARIABLE} at one)"
            )
        return _probe(python)

    def run(self, model: nn.Module, onnx_path: Path, check: Check, plan: Plan) -> EngineRun:
        with tempfile.TemporaryDirectory() as folder:
            names = ("check.npy", "reference.npy", "out.npy", "answer.json")
            paths = {k: str(Path(folder) / k) for k in names}
            np.save(paths["check.npy"], check.inputs)
            np.save(paths["reference.npy"], check.reference)
            request = {
                "engine": self.name,
                "onnx": str(onnx_path),
                "check_input": paths["check.npy"],
                "reference": paths["reference.npy"],
                "check_output": paths["out.npy"],
                "answer": paths["answer.json"],
                "batch_sizes": list(plan.batch_sizes),
                "threads": plan.threads,
                "warmup": {str(k): v for k, v in plan.warmup.items()},
                "repeats": {str(k): v for k, v in plan.repeats.items()},
            }
            failure = self._call(speed_env_python(), request, plan.timeout_s)
            if failure is not None:
                raise RuntimeError(failure)
            answer = json.loads(Path(paths["answer.json"]).read_text())
            outputs = np.load(paths["out.npy"])
        return EngineRun(outputs, {int(k): v for k, v in answer["timings"].items()})

    @staticmethod
    def _call(python: Path, request: dict, timeout_s: float) -> str | None:
        """None when the runner succeeded; else what went wrong, from its stderr."""
        try:
            done = subprocess.run(
                [str(python), str(_RUNNER)],
                input=json.dumps(request),
                capture_output=True,
                text=True,
                env=engine_env(),
                timeout=timeout_s,
            )
        except subprocess.TimeoutExpired:
            return f"no answer within {timeout_s:.0f}s"
        except OSError as err:
            return str(err)
        if done.returncode != 0 or not Path(request["answer"]).is_file():
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            return f"exit code {done.returncode}: " + (lines[-1] if lines else "(no message)")
        return None


@cache
def _probe(python: Path) -> str | None:
    """Why the environment of `python` cannot run DeepSparse, or None; once per process
    (importing DeepSparse takes seconds, and every upstream asks)."""
    with tempfile.TemporaryDirectory() as folder:
        answer = Path(folder) / "answer.json"
        failure = DeepSparseEngine._call(python, {"probe": True, "answer": str(answer)}, 300)
    if failure is not None:
        return f"the DeepSparse environment {python.parent.parent} is broken: {failure}"
    return None


ENGINES: Registry[Engine] = Registry("speed engine")
ENGINES.add("torch", TorchEngine())
ENGINES.add("onnxruntime", OnnxRuntimeEngine())
ENGINES.add("deepsparse", DeepSparseEngine())
