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

from sparse_transfer.models.archive import check_archive
from sparse_transfer.models.checkpoint import FORMAT as UPSTREAM_V1
from sparse_transfer.models.errors import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    WrongFormatError,
)
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
    "sniff",
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


def sniff(path: Path) -> str | None:
    """What a file holds, from its first bytes: "safetensors" (an 8-byte header length, then
    a JSON object), "torch" (a torch.save zip, or a legacy pickle), or None (neither)."""
    with open(path, "rb") as handle:
        head = handle.read(9)
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    # zip's magic, or pickle's PROTO opcode with a protocol torch writes
    if head[:4] == b"PK\x03\x04" or head[:1] == b"\x80" and head[1:2] in b"\x02\x03\x04\x05":
        return "torch"
    return None


def is_safetensors(path: Path) -> bool:
    return sniff(path) == "safetensors"


def read_object(path: Path, fmt: Format | None = None) -> Any:
    """The file's contents, read safely; a safetensors file gives its state dict. A file of
    another kind than `fmt`'s is refused naming the kind it is."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    kind = sniff(path)
    if kind is None:
        # Never quote the bytes: the file may be anything (/proc/self/environ, a key file).
        raise CorruptCheckpointError(
            f"{path}: not a checkpoint: neither a torch.save file (zip or pickle) nor safetensors"
        )
    if fmt is not None and fmt.safetensors != (kind == "safetensors"):
        raise WrongFormatError(f"{path}: read as format {fmt.name!r}, but {_kind_of(path, kind)}")
    if kind == "safetensors":
        return _read_safetensors(path)
    return _torch_load(path)


def _torch_load(path: Path) -> Any:
    with open(path, "rb") as handle:
        zipped = handle.read(4) == b"PK\x03\x04"
    if zipped:
        check_archive(path)
    try:
        # A file object, not the path: torch.load would pick a reader by the file's name.
        with open(path, "rb") as handle:
            return torch.load(handle, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling fails in many types; sort them by what they mean
        raise _load_error(path, str(err), type(err).__name__) from None


def _kind_of(path: Path, kind: str) -> str:
    if kind == "safetensors":
        return "it is a safetensors file (format 'safetensors')"
    try:
        return f"it is a torch.save file (detected format {detect_format(_torch_load(path))!r})"
    except (CorruptCheckpointError, UnsafeCheckpointError):
        return "it is a torch.save file, not safetensors"


def _load_error(path: Path, message: str, kind: str) -> CorruptCheckpointError:
    refused = re.search(r"GLOBAL (\S+?)(?: whose| was|\s|$)", message)
    if refused:
        return UnsafeCheckpointError(
            f"{path}: refused, loading it would call {refused.group(1)}, which is not a "
            "plain tensor or container; it was not unpickled. Re-save its state_dict (or "
            "convert it to safetensors) where its code is trusted."
        )
    if "Weights only load failed" in message and "Unsupported operand" not in message:
        return UnsafeCheckpointError(
            f"{path}: refused, loading it would need more than plain tensors "
            f"({_unsafe_reason(message)}); it was not unpickled. Re-save its state_dict (or "
            "convert it to safetensors) where its code is trusted."
        )
    detail = _unsafe_reason(message) if "Weights only" in message else message
    return CorruptCheckpointError(
        f"{path}: corrupt: not a readable checkpoint (truncated or damaged torch file): "
        f"{kind}: {detail.splitlines()[0] if detail else 'no detail'}"
    )


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

    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
    if length > path.stat().st_size - 8:
        raise CorruptCheckpointError(
            f"{path}: corrupt safetensors file: its header declares {length} bytes, more than "
            f"the file holds ({path.stat().st_size} bytes)"
        )
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, json.JSONDecodeError, ValueError) as err:
        raise CorruptCheckpointError(f"{path}: not a readable safetensors file: {err}") from None


def _unsafe_reason(message: str) -> str:
    """The line of torch's weights-only error that says what was refused (not its
    "please file an issue" preamble)."""
    for line in message.splitlines():
        line = line.strip()
        if line and not line.startswith(("Weights only load failed", "Please file", "Check the")):
            return line.split(" Please use")[0]
    return "a global outside torch's weights-only allowlist"
