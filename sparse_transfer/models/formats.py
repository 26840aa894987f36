"""Checkpoint formats: where a file keeps its state dict, and the quirks of its key names.

Loading for a sweep reads a file in the format its catalog entry declares, never one guessed
from the file name. `detect_format` exists for `sparse-transfer checkpoint inspect` only, which
is handed files nobody has catalogued yet.

Every read is safe: `torch.load(weights_only=True)` (plain tensors and containers, nothing
else is unpickled) or safetensors. A file that needs arbitrary code to load -- a pickled
`nn.Module`, a custom class, a `__reduce__` payload -- is refused and never executed.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sparse_transfer.models.checkpoint import FORMAT as UPSTREAM_V1
from sparse_transfer.models.errors import CorruptCheckpointError, UnsafeCheckpointError
from sparse_transfer.models.keymap import (
    RIGL_TF_TO_TORCHVISION,
    Conv1x1ToLinear,
    FoldSoftThreshold,
    KeyRule,
    StateDict,
    StripPrefix,
    UnwrapMaskedLayers,
    ZeroBiasIfMissing,
)
from sparse_transfer.registry import Registry

__all__ = [
    "DETECTION_ORDER",
    "FORMATS",
    "Format",
    "StateDict",
    "detect_format",
    "is_safetensors",
    "read_object",
    "read_state_dict",
    "state_dict_of",
]


@dataclass(frozen=True)
class Format:
    name: str
    description: str
    # key of the state dict in the file's top-level dict; None: the file *is* the state dict
    container: str | None
    # key rules every file of this format needs; a catalog entry copies them and may add more
    rules: tuple[KeyRule, ...]
    detect: Callable[[Any], bool]  # for `checkpoint inspect` only
    safetensors: bool = False


FORMATS: Registry[Format] = Registry("checkpoint format")


def _tensors(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(v, torch.Tensor) for v in obj.values())
    )


def _container(obj: Any, key: str) -> dict:
    return obj.get(key) if isinstance(obj, dict) and isinstance(obj.get(key), dict) else {}


def _any_key(obj: dict, pattern: str) -> bool:
    regex = re.compile(pattern)
    return any(regex.search(str(k)) for k in obj)


def _is_str(obj: Any) -> bool:
    state = _container(obj, "state_dict")
    fc = [v for k, v in state.items() if str(k).endswith("fc.weight")]
    return _any_key(state, r"sparseThreshold$") or any(v.dim() == 4 for v in fc)


for _format in (
    Format(
        UPSTREAM_V1,
        "this project's own zoo format (sparse_transfer.models.checkpoint)",
        "state_dict",
        (),
        lambda obj: isinstance(obj, dict) and obj.get("format") == UPSTREAM_V1,
    ),
    Format(
        "rigl-tf",
        "RigL's TensorFlow checkpoints as converted by IST-DASLab: the converted container, "
        "with ResnetTF layer names mapped onto torchvision's",
        "model_state_dict",
        (StripPrefix("module."), UnwrapMaskedLayers(), *RIGL_TF_TO_TORCHVISION),
        lambda obj: _any_key(_container(obj, "model_state_dict"), r"^(module\.)?initial_conv\."),
    ),
    Format(
        "ist-converted",
        "IST-DASLab's common format for the paper's checkpoints: {'model_config', "
        "'model_state_dict'}, keys maybe prefixed 'module.', pruned layers maybe wrapped as "
        "'<layer>._layer.weight' with a '<layer>._weight_mask' buffer",
        "model_state_dict",
        (StripPrefix("module."), UnwrapMaskedLayers()),
        lambda obj: isinstance(obj, dict) and "model_state_dict" in obj,
    ),
    Format(
        "str",
        "STR's released checkpoints (RAIVNLab/STR): {'state_dict', ...}, keys prefixed "
        "'module.', learned thresholds '<layer>.sparseThreshold', a 1x1-conv classifier",
        "state_dict",
        (StripPrefix("module."), FoldSoftThreshold(), Conv1x1ToLinear(), ZeroBiasIfMissing()),
        _is_str,
    ),
    Format(
        "sparseml",
        "SparseML / SparseZoo PyTorch exports: {'state_dict', 'epoch', ...}, keys maybe "
        "prefixed 'module.'",
        "state_dict",
        (StripPrefix("module."),),
        lambda obj: isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict),
    ),
    Format(
        "torchvision",
        "a plain state dict, as torchvision publishes its ImageNet weights",
        None,
        (),
        _tensors,
    ),
    Format(
        "safetensors",
        "a safetensors file holding a plain state dict",
        None,
        (),
        lambda obj: False,  # recognised from the file's header, see is_safetensors
        safetensors=True,
    ),
):
    FORMATS.add(_format.name, _format)

# Most specific first: a converted RigL file is also a converted file, an STR file also has
# a 'state_dict' like a SparseML export.
DETECTION_ORDER = (UPSTREAM_V1, "rigl-tf", "ist-converted", "str", "sparseml", "torchvision")


def is_safetensors(path: Path) -> bool:
    """By content: an 8-byte little-endian header length, then a JSON object."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    (length,) = struct.unpack("<Q", head[:8])
    return 0 < length <= Path(path).stat().st_size - 8


def read_object(path: Path, fmt: Format | None = None) -> Any:
    """The file's contents, read safely; a safetensors file gives its state dict."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if fmt is not None and fmt.safetensors or fmt is None and is_safetensors(path):
        return _read_safetensors(path)
    try:
        # A file object, not the path: torch.load would pick a reader by the file's name.
        with open(path, "rb") as handle:
            return torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling fails in many types; sort them by what they mean
        message = str(err)
        if "Weights only load failed" in message:
            reason = _unsafe_reason(message)
            raise UnsafeCheckpointError(
                f"{path}: refused, loading it would need more than plain tensors ({reason}); "
                "it was not unpickled. Re-save its state_dict (or convert it to safetensors) "
                "where its code is trusted."
            ) from None
        raise CorruptCheckpointError(
            f"{path}: not a readable checkpoint (truncated or not a torch file): "
            f"{type(err).__name__}: {message.splitlines()[0] if message else 'no detail'}"
        ) from None


def read_state_dict(path: Path, format_name: str) -> StateDict:
    """The state dict of a file in `format_name`, before any key rule."""
    fmt = FORMATS.get(format_name)
    return state_dict_of(read_object(path, fmt), fmt, path)


def state_dict_of(obj: Any, fmt: Format, path: Path | str) -> StateDict:
    state = obj
    if fmt.container is not None:
        if not isinstance(obj, dict) or fmt.container not in obj:
            found = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
            raise CorruptCheckpointError(
                f"{path}: a {fmt.name!r} checkpoint keeps its weights under "
                f"{fmt.container!r}; found {found}"
            )
        state = obj[fmt.container]
    if not isinstance(state, dict):
        raise CorruptCheckpointError(f"{path}: expected a state dict, found {type(state)}")
    bad = sorted(str(k) for k, v in state.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise CorruptCheckpointError(f"{path}: state dict entries that are not tensors: {bad}")
    return dict(state)


def detect_format(obj: Any) -> str:
    """The format an already-read object looks like (for `checkpoint inspect` only)."""
    for name in DETECTION_ORDER:
        if FORMATS.get(name).detect(obj):
            return name
    kind = sorted(map(str, obj))[:10] if isinstance(obj, dict) else type(obj).__name__
    raise CorruptCheckpointError(
        f"unrecognised checkpoint layout (top level: {kind}); pass --format, one of "
        f"{', '.join(FORMATS.names())}"
    )


def _read_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, json.JSONDecodeError, ValueError) as err:
        raise CorruptCheckpointError(f"{path}: not a readable safetensors file: {err}") from None


def _unsafe_reason(message: str) -> str:
    for line in message.splitlines():
        if "WeightsUnpickler error" in line or "Unsupported" in line:
            return line.strip().split(" Please use")[0]
    return "a global outside torch's weights-only allowlist"
