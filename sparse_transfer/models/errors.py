"""Why a checkpoint was refused. All are ValueErrors, so callers may catch them as one."""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "ChecksumMismatchError",
    "CheckpointMismatchError",
    "CorruptCheckpointError",
    "NonFiniteWeightsError",
    "SparsityMismatchError",
    "UnsafeCheckpointError",
    "WrongFormatError",
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


class UnsafeCheckpointError(CheckpointError):
    """The file would need arbitrary code (a pickled module or custom class) to load."""


class CorruptCheckpointError(CheckpointError):
    """Truncated, not a checkpoint, or not laid out the way its format says."""


class WrongFormatError(CorruptCheckpointError):
    """The file is of another kind than the declared format (safetensors vs torch.save)."""


class CheckpointMismatchError(CheckpointError):
    """Keys, shapes or dtypes do not match the architecture."""


class ChecksumMismatchError(CheckpointError):
    """The file's sha256 is not the one the catalog declares."""


class NonFiniteWeightsError(CheckpointError):
    """A floating-point tensor holds NaN or Inf."""


class SparsityMismatchError(CheckpointError):
    """The measured sparsity is not the declared one."""
