"""ONNX export of any model the project builds, and the check that a file is an ONNX model."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "OPSET", "check_onnx", "export_onnx"]

INPUT_NAME, OUTPUT_NAME = "input", "logits"
# Opset 13 with the TorchScript exporter: what DeepSparse 1.8 reads (its onnx is 1.14), and
# the dynamo exporter's graphs are not what its sparse kernels were built to match.
OPSET = 13


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
    """`model` in eval mode as ONNX with a dynamic batch dimension; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(2, *input_shape)
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of dynamo; chosen on purpose above
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            opset_version=OPSET,
            dynamo=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    check_onnx(path)
    return path


def check_onnx(path: str | Path) -> None:
    """Raise ValueError unless `path` is a well-formed ONNX model."""
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as err:  # onnx raises its own and protobuf's errors
        raise ValueError(f"{path} is not a valid ONNX model: {err}") from None
