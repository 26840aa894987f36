"""What a checkpoint file is: format, architecture and sparsity (`checkpoint inspect`).

Unlike loading for a sweep, inspection may guess: the format from the file's layout, the
architecture from key names and shapes when exactly one registered architecture fits. Given a
catalog entry, it reads the file as that entry does (its format, key rules and architecture)
and sets the measured sparsity beside the entry's label and its published file's actual one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sparse_transfer.models.checkpoint import file_sha256
from sparse_transfer.models.errors import CheckpointMismatchError
from sparse_transfer.models.formats import (
    FORMATS,
    StateDict,
    detect_format,
    is_safetensors,
    read_object,
    state_dict_of,
)
from sparse_transfer.models.keymap import apply_rules, split_masks
from sparse_transfer.models.loading import (
    check_finite,
    check_state_dict,
    check_stored_masks,
    sparsity_of,
)
from sparse_transfer.models.registry import ARCHS
from sparse_transfer.pruning.masks import prunable_weights

__all__ = ["infer_arch", "inspect_checkpoint"]


def inspect_checkpoint(
    path: Path,
    *,
    arch: str | None = None,
    format_name: str | None = None,
    catalog: str | None = None,
) -> dict[str, Any]:
    """A JSON-ready report; raises a CheckpointError on unsafe, corrupt or mismatched files."""
    from sparse_transfer.models.catalog import CATALOG, MASK_TOLERANCE

    path = Path(path)
    entry = CATALOG.get(catalog) if catalog else None
    if entry is not None:
        format_name, arch = format_name or entry.format, arch or entry.model_arch
    fmt = FORMATS.get(format_name) if format_name else None
    obj = read_object(path, fmt)
    if fmt is None:
        fmt = FORMATS.get("safetensors" if is_safetensors(path) else detect_format(obj))
    rules = entry.key_rules if entry is not None else fmt.rules
    state, stored = split_masks(apply_rules(state_dict_of(obj, fmt, path), rules))
    check_finite(state, where=str(path))
    check_stored_masks(
        state, stored, entry.mask_tolerance if entry else MASK_TOLERANCE, where=str(path)
    )
    arch_source = "given"
    if arch is None:
        arch, arch_source = infer_arch(state), "inferred"
    if arch is not None:
        model = _meta_model(arch, state)
        check_state_dict(model, state, where=f"{path} (arch {arch})")
        names = list(prunable_weights(model))
    else:
        arch_source = None
        names = sorted(k for k, v in state.items() if _looks_prunable(k, v))
    if entry is not None:
        names = [n for n in names if not _excluded(n, entry.sparsity_excludes)]
    total, per_layer = sparsity_of({name: state[name] for name in names})
    report = {
        "path": str(path),
        "sha256": file_sha256(path),
        "format": fmt.name,
        "format_source": "given" if format_name else "detected",
        "arch": arch,
        "arch_source": arch_source,
        "num_classes": _num_classes(arch, state) if arch else None,
        "tensors": len(state),
        "prunable_weights": sum(state[name].numel() for name in names),
        "total_sparsity": round(total, 6),
        # as loading says it: a dense file (or a dense catalog entry) has no masks at all
        "mask_source": "none"
        if total == 0 or (entry is not None and entry.sparsity == 0)
        else _mask_source(stored, names, ARCHS.get(arch).classifier if arch else None),
        "layer_sparsity": {name: round(value, 6) for name, value in per_layer.items()},
    }
    if entry is not None:
        report |= {
            "catalog": entry.name,
            "nominal_sparsity": entry.sparsity,
            "actual_sparsity": entry.expected_sparsity,
            "sparsity_within_tolerance": abs(total - entry.expected_sparsity)
            <= entry.sparsity_tolerance,
        }
    return report


def _excluded(name: str, excludes: tuple[str, ...]) -> bool:
    module = name.removesuffix(".weight")
    return any(module == e or module.startswith(f"{e}.") for e in excludes)


def _mask_source(stored: dict, names: list[str], classifier: str | None) -> str:
    """`file` when the file stores a mask (`_weight_mask`) for every layer finetuning masks
    (all but the classifier, which transfer replaces), `zeros` when for none."""
    names = [n for n in names if classifier is None or not n.startswith(f"{classifier}.")]
    from_file = sum(name in stored for name in names)
    return "zeros" if not from_file else "file" if from_file == len(names) else "file+zeros"


def infer_arch(state: StateDict) -> str | None:
    """The one registered architecture whose keys and shapes fit, or None if not exactly one."""
    fits = []
    for name in ARCHS.names():
        if ARCHS.get(name).variant_of is not None:
            continue  # same keys as the architecture it varies; never told apart by them
        try:
            check_state_dict(_meta_model(name, state), state, where=name)
        except (CheckpointMismatchError, KeyError):
            continue
        fits.append(name)
    return fits[0] if len(fits) == 1 else None


def _meta_model(arch: str, state: StateDict) -> torch.nn.Module:
    # Built on the meta device: shapes without memory or initialisation cost.
    with torch.device("meta"):
        return ARCHS.get(arch).build(_num_classes(arch, state))


def _num_classes(arch: str, state: StateDict) -> int:
    weight = state.get(f"{ARCHS.get(arch).classifier}.weight")
    return int(weight.shape[0]) if weight is not None and weight.dim() == 2 else 1000


def _looks_prunable(name: str, tensor: torch.Tensor) -> bool:
    return name.endswith(".weight") and tensor.is_floating_point() and tensor.dim() in (2, 4)
