"""The project's own upstream checkpoint format, loaded safely (`weights_only=True`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sparse_transfer.models.archive import check_archive
from sparse_transfer.models.registry import ARCHS

__all__ = ["FORMAT", "UpstreamCheckpoint", "file_sha256", "load_upstream", "save_upstream"]

FORMAT = "sparse-transfer/upstream-v1"


@dataclass
class UpstreamCheckpoint:
    arch: str
    num_classes: int
    state_dict: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]  # parameter name -> bool tensor, True = kept
    metadata: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""

    def build_model(self) -> nn.Module:
        model = ARCHS.get(self.arch).build(self.num_classes)
        missing, unexpected = model.load_state_dict(self.state_dict, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"checkpoint does not match architecture {self.arch!r}: "
                f"missing keys {missing}, unexpected keys {unexpected}"
            )
        return model


def save_upstream(path: Path, checkpoint: UpstreamCheckpoint) -> str:
    """Write atomically and return the file's sha256 (the entry's content hash)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "arch": checkpoint.arch,
        "num_classes": checkpoint.num_classes,
        "state_dict": {k: v.detach().cpu() for k, v in checkpoint.state_dict.items()},
        "masks": {k: v.detach().cpu().bool() for k, v in checkpoint.masks.items()},
        "metadata": checkpoint.metadata,
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return file_sha256(path)


def load_upstream(path: str | Path) -> UpstreamCheckpoint:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"upstream checkpoint {path} does not exist")
    with open(path, "rb") as handle:
        zipped = handle.read(4) == b"PK\x03\x04"
    if zipped:
        check_archive(path)  # a zip bomb is refused before torch inflates it
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling errors come in many types
        raise ValueError(f"{path}: not a loadable checkpoint (weights only): {err}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} checkpoint")
    for name, tensor in payload["state_dict"].items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise ValueError(f"{path}: tensor {name!r} holds NaN or Inf")
    return UpstreamCheckpoint(
        arch=payload["arch"],
        num_classes=int(payload["num_classes"]),
        state_dict=payload["state_dict"],
        masks=payload["masks"],
        metadata=payload.get("metadata", {}),
        sha256=file_sha256(path),
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
