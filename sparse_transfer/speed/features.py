"""Linear finetuning's feature extraction through DeepSparse (`resources.feature_engine:
deepsparse`): the paper's training speedup. The frozen backbone is exported to ONNX once and
every batch goes through the engine in its own environment, in one process."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from sparse_transfer.speed.engines import DeepSparseEngine, speed_env_python
from sparse_transfer.speed.export import export_onnx

__all__ = ["FEATURE_ENGINES", "extract_with_deepsparse"]

FEATURE_ENGINES = ("torch", "deepsparse")


def extract_with_deepsparse(
    backbone: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    input_shape: tuple[int, ...],
    batch_size: int,
    threads: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) of every batch, the features computed by DeepSparse."""
    why = DeepSparseEngine().unavailable()
    if why:
        raise RuntimeError(f"resources.feature_engine: deepsparse: {why}")
    with tempfile.TemporaryDirectory(prefix="features-") as folder:
        root = Path(folder)
        onnx_path = export_onnx(backbone, input_shape, root / "backbone.onnx")
        inputs, outputs, labels = [], [], []
        for index, (x, y) in enumerate(batches):
            inputs.append(str(root / f"in{index}.npy"))
            outputs.append(str(root / f"out{index}.npy"))
            np.save(inputs[-1], x.detach().cpu().float().numpy())
            labels.append(y.cpu())
        request = {
            "engine": "deepsparse_infer",
            "onnx": str(onnx_path),
            "inputs": inputs,
            "outputs": outputs,
            "batch_size": batch_size,
            "threads": threads,
            "answer": str(root / "answer.json"),
        }
        failure = DeepSparseEngine._call(speed_env_python(), request, timeout_s=24 * 3600)
        if failure is not None:
            raise RuntimeError(f"resources.feature_engine: deepsparse failed: {failure}")
        json.loads((root / "answer.json").read_text())
        features = [torch.from_numpy(np.load(path)) for path in outputs]
    return torch.cat(features), torch.cat(labels)
