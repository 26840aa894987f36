"""Load an upstream checkpoint into one of our architectures, or refuse it with the reason.

Checks, in order: the file's sha256 (when declared), a safe read in the declared format, the
key rules, keys matched strictly (the error lists missing AND unexpected keys), shapes, dtypes,
no NaN/Inf, the masks the file stores against its zeros, and the measured sparsity against
the one the entry expects (its published file's, which for learned sparsity is not the label).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from sparse_transfer.models.catalog import CatalogEntry
from sparse_transfer.models.checkpoint import UpstreamCheckpoint
from sparse_transfer.models.errors import (
    CheckpointMismatchError,
    CorruptCheckpointError,
    NonFiniteWeightsError,
    SparsityMismatchError,
)
from sparse_transfer.models.fetch import fetch, verify_sha256
from sparse_transfer.models.formats import StateDict, read_state_dict
from sparse_transfer.models.keymap import apply_rules, split_masks
from sparse_transfer.models.registry import ARCHS
from sparse_transfer.pruning.masks import prunable_weights

__all__ = [
    "LoadedCheckpoint",
    "check_finite",
    "check_stored_masks",
    "check_state_dict",
    "load_entry",
    "measure_sparsity",
    "sparsity_of",
    "to_upstream",
]

# BatchNorm's step counter: absent from old checkpoints (torchvision's own ImageNet weights),
# and not a weight; the model's value is kept when the file has none.
_OPTIONAL_SUFFIXES = (".num_batches_tracked",)


@dataclass
class LoadedCheckpoint:
    entry: CatalogEntry
    model: nn.Module
    path: Path
    sha256: str
    sparsity: float  # measured over the prunable layers, less `entry.sparsity_excludes`
    per_layer: dict[str, float]
    # masks the file stores (`_weight_mask` buffers), by parameter name; the other pruned
    # layers' masks are their zeros
    stored_masks: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def mask_source(self) -> str:
        """Where finetuning masks come from: `file` (every pruned layer's mask is stored),
        `zeros` (none is), `file+zeros`, or `none` (a dense entry)."""
        return mask_source(self.stored_masks, self.model, self.entry)


def load_entry(
    entry: CatalogEntry, *, path: Path | None = None, cache_dir: Path | None = None
) -> LoadedCheckpoint:
    """Fetch (unless `path` is given), verify and load a catalog entry."""
    if path is None:
        if entry.source is None:
            raise ValueError(
                f"catalog entry {entry.name!r} has no source yet (fill in): give a local path "
                "or set its source with catalog.with_source"
            )
        path = fetch(entry.source, sha256=entry.sha256, cache_dir=cache_dir)
    path = Path(path)
    sha256 = verify_sha256(path, entry.sha256)
    state, stored = split_masks(apply_rules(read_state_dict(path, entry.format), entry.key_rules))
    model = ARCHS.get(entry.model_arch).build(entry.num_classes)
    check_state_dict(model, state, where=f"{path} ({entry.name}, arch {entry.model_arch})")
    check_finite(state, where=str(path))
    check_stored_masks(state, stored, entry.mask_tolerance, where=str(path))
    model.load_state_dict(_with_optional(model, state), strict=True)
    total, per_layer = measure_sparsity(model, entry.sparsity_excludes)
    expected = entry.expected_sparsity
    if abs(total - expected) > entry.sparsity_tolerance:
        label = (
            ""
            if entry.actual_sparsity is None
            else f" (the published file's; label {entry.sparsity})"
        )
        raise SparsityMismatchError(
            f"{path}: measured sparsity {total:.4f} is not the declared {expected:.4f}{label} of "
            f"{entry.name!r} (tolerance {entry.sparsity_tolerance}; excluded layers "
            f"{list(entry.sparsity_excludes)})"
        )
    weights = {k: v for k, v in stored.items() if k.endswith(".weight")}
    return LoadedCheckpoint(entry, model, path, sha256, total, per_layer, weights)


def to_upstream(loaded: LoadedCheckpoint) -> UpstreamCheckpoint:
    """A verified catalog checkpoint in the project's upstream format. The masks full
    finetuning keeps fixed are the file's stored ones, else its zeros (a dense entry has none);
    the entry's preprocessing and head travel along, so downstream transforms and the new
    classifier follow the upstream model's authors."""
    entry = loaded.entry
    arch = ARCHS.get(entry.model_arch)
    masks = {}
    if entry.sparsity > 0:
        weights = prunable_weights(loaded.model, exclude=(arch.classifier,))
        masks = {
            name: loaded.stored_masks[name].bool() if name in loaded.stored_masks else w != 0
            for name, w in ((n, w.detach()) for n, w in weights.items())
        }
    metadata = {
        "preprocessing": asdict(entry.preprocessing),
        "catalog": entry.name,
        "method": entry.method,
        "declared_sparsity": entry.sparsity,
        "expected_sparsity": entry.expected_sparsity,
        "measured_sparsity": loaded.sparsity,
        "mask_source": loaded.mask_source,
        "head": entry.head,
        "source_sha256": loaded.sha256,
    }
    state = {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}
    return UpstreamCheckpoint(entry.model_arch, entry.num_classes, state, masks, metadata)


def check_stored_masks(
    state: StateDict, masks: dict[str, torch.Tensor], tolerance: float, *, where: str
) -> None:
    """A stored mask must agree with the weights' zeros: the rules multiplied it in, so no
    pruned weight is left non-zero; refused when more than `tolerance` of the masked weights
    are kept by the mask yet exactly zero (the mask is stale, or belongs to other weights)."""
    kept_zero = total = 0
    for name, mask in masks.items():
        weight = state.get(name)
        if weight is None or weight.shape != mask.shape:
            raise CorruptCheckpointError(f"{where}: stored mask of {name} fits no tensor")
        kept_zero += int(((weight == 0) & mask.bool()).sum())
        total += mask.numel()
    if total and kept_zero / total > tolerance:
        raise CorruptCheckpointError(
            f"{where}: its stored masks keep {kept_zero} weights that are exactly zero "
            f"({kept_zero / total:.4%} of the masked weights; tolerance {tolerance:.4%}): the "
            "masks disagree with the weights' zeros"
        )


def mask_source(stored: dict[str, torch.Tensor], model: nn.Module, entry: CatalogEntry) -> str:
    """Where the finetuning masks of a sparse entry come from: "file", "zeros", "file+zeros"."""
    if entry.sparsity == 0:
        return "none"
    pruned = prunable_weights(model, exclude=(ARCHS.get(entry.model_arch).classifier,))
    from_file = sum(name in stored for name in pruned)
    return "file" if from_file == len(pruned) else "file+zeros" if from_file else "zeros"


def check_state_dict(model: nn.Module, state: StateDict, *, where: str) -> None:
    """Strict key match (both sides listed), then shapes and dtype kinds."""
    expected = model.state_dict()
    missing = sorted(
        k for k in expected.keys() - state.keys() if not k.endswith(_OPTIONAL_SUFFIXES)
    )
    unexpected = sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"{where}: keys do not match the architecture\n"
            f"  in the model, not in the checkpoint ({len(missing)}): {_short(missing)}\n"
            f"  in the checkpoint, not in the model ({len(unexpected)}): {_short(unexpected)}"
        )
    wrong_shape = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    wrong_dtype = [
        f"{k}: checkpoint {state[k].dtype} vs model {v.dtype}"
        for k, v in expected.items()
        if k in state and state[k].is_floating_point() != v.is_floating_point()
    ]
    if wrong_shape or wrong_dtype:
        raise CheckpointMismatchError(
            f"{where}: tensors do not fit the architecture: {_short(wrong_shape + wrong_dtype)}"
        )


def check_finite(state: StateDict, *, where: str) -> None:
    bad = [k for k, v in state.items() if v.is_floating_point() and not _finite(v)]
    if bad:
        raise NonFiniteWeightsError(f"{where}: tensors holding NaN or Inf: {_short(sorted(bad))}")


def measure_sparsity(
    model: nn.Module, excludes: tuple[str, ...] = ()
) -> tuple[float, dict[str, float]]:
    weights = {k: w.detach() for k, w in prunable_weights(model, exclude=excludes).items()}
    return sparsity_of(weights)


def sparsity_of(weights: dict[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
    """(total, per-layer) fractions of exact zeros: `pruning.masks.sparsity_report`'s
    definition, counted with count_nonzero (no boolean copy of a 25M-weight model)."""
    zeros = {name: w.numel() - int(torch.count_nonzero(w)) for name, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    per_layer = {name: zeros[name] / w.numel() for name, w in weights.items()}
    return (sum(zeros.values()) / total if total else 0.0), per_layer


def _finite(tensor: torch.Tensor) -> bool:
    # One reduction instead of a boolean copy: a NaN or Inf anywhere makes the sum non-finite.
    # A finite tensor whose sum overflows gets the exact elementwise check.
    return bool(torch.isfinite(tensor.sum())) or bool(torch.isfinite(tensor).all())


def _with_optional(model: nn.Module, state: StateDict) -> StateDict:
    current = model.state_dict()
    filled = {k: current[k] for k in current.keys() - state.keys()}
    return {**state, **filled}


def _short(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "") or "none"
