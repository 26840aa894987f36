"""Pruning methods, one file each behind the `PruningMethod` protocol; masks and accounting."""

from sparse_transfer.pruning import acdc as _acdc  # noqa: F401  (each import registers)
from sparse_transfer.pruning import dense as _dense  # noqa: F401
from sparse_transfer.pruning import gmp as _gmp  # noqa: F401
from sparse_transfer.pruning import lth as _lth  # noqa: F401
from sparse_transfer.pruning import magnitude as _magnitude  # noqa: F401
from sparse_transfer.pruning import mfac as _mfac  # noqa: F401
from sparse_transfer.pruning import rigl as _rigl  # noqa: F401
from sparse_transfer.pruning import soft_threshold as _soft_threshold  # noqa: F401
from sparse_transfer.pruning import woodfisher as _woodfisher  # noqa: F401
from sparse_transfer.pruning.masks import (
    MaskedParameters,
    Masks,
    SparsityDriftError,
    apply_masks,
    check_sparsity,
    global_magnitude_masks,
    magnitude_masks,
    masks_from_zeros,
    prunable_weights,
    sparsity_report,
)
from sparse_transfer.pruning.method import METHODS, PruneContext, PruningMethod
from sparse_transfer.pruning.policy import PolicyOverride, PruningPolicy, resolve_policy

__all__ = [
    "METHODS",
    "MaskedParameters",
    "Masks",
    "PruneContext",
    "PolicyOverride",
    "PruningMethod",
    "PruningPolicy",
    "SparsityDriftError",
    "apply_masks",
    "check_sparsity",
    "global_magnitude_masks",
    "magnitude_masks",
    "masks_from_zeros",
    "prunable_weights",
    "resolve_policy",
    "sparsity_report",
]
