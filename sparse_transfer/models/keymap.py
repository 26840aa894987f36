"""Key rules: how a checkpoint's tensors become the state dict of one of our architectures.

A rule is frozen data on a catalog entry (or a format's defaults) and does nothing where it
does not apply, so an entry can declare "keys may be prefixed `module.`" without branching.
Rules run in order, each on the output of the one before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from sparse_transfer.models.errors import CorruptCheckpointError

__all__ = [
    "AMC_MOBILENET_TO_OURS",
    "MASK_SUFFIX",
    "RIGL_TF_TO_TORCHVISION",
    "Conv1x1ToLinear",
    "FoldSoftThreshold",
    "KeyRule",
    "Rename",
    "StripPrefix",
    "UnwrapMaskedLayers",
    "ZeroBiasIfMissing",
    "apply_rules",
    "split_masks",
]

StateDict = dict[str, torch.Tensor]

# A mask the file stores travels through the rules as `<param>#mask`, so renames reach it too;
# `split_masks` takes them out before the state dict meets the architecture.
MASK_SUFFIX = "#mask"


@dataclass(frozen=True)
class StripPrefix:
    """Drop `prefix` from every key that has it (DataParallel's `module.`)."""

    prefix: str = "module."

    def apply(self, state: StateDict) -> StateDict:
        return _renamed(state, lambda key: key.removeprefix(self.prefix), str(self))


@dataclass(frozen=True)
class Rename:
    """`re.sub(pattern, replacement, key)` on every key."""

    pattern: str
    replacement: str

    def apply(self, state: StateDict) -> StateDict:
        regex = re.compile(self.pattern)
        return _renamed(state, lambda key: regex.sub(self.replacement, key), str(self))


@dataclass(frozen=True)
class UnwrapMaskedLayers:
    """IST-DASLab's `WrappedLayer`: `<layer>._layer.weight` and `<layer>._weight_mask` become
    `<layer>.weight` with the mask multiplied in (likewise `bias` and `_bias_mask`), and the
    mask itself `<layer>.weight#mask`: the authors keep finetuning under that buffer, not under
    the weights' zeros (sparse-imagenet-transfer utils/masking_utils.py:118, the buffer;
    utils/checkpoints.py:128-129, a wrapped file loads into a wrapped model;
    policies/manager.py:175-178, the mask multiplied in after every step)."""

    def apply(self, state: StateDict) -> StateDict:
        out = {k: v for k, v in state.items() if "._layer." not in k and not _is_mask(k)}
        for key in filter(_is_mask, state):
            layer, _, name = key.rpartition("._")
            if f"{layer}._layer.{name.removesuffix('_mask')}" not in state:
                raise CorruptCheckpointError(f"mask {key} has no wrapped tensor to apply to")
        for key, tensor in state.items():
            if "._layer." not in key:
                continue
            layer, _, param = key.partition("._layer.")
            mask = state.get(f"{layer}._{param}_mask")
            if mask is not None:
                if mask.shape != tensor.shape or not _is_binary(mask):
                    raise CorruptCheckpointError(f"mask {layer}._{param}_mask is not a 0/1 mask")
                tensor = tensor * mask.to(tensor.dtype)
                _put(out, f"{layer}.{param}{MASK_SUFFIX}", mask.bool(), str(self))
            _put(out, f"{layer}.{param}", tensor, str(self))
        return out


@dataclass(frozen=True)
class FoldSoftThreshold:
    """STR (Kusupati et al. 2020): the effective weight of a layer with a learned threshold `s`
    is `sign(w) * relu(|w| - sigmoid(s))`; fold it in and drop `<layer>.sparseThreshold`."""

    suffix: str = ".sparseThreshold"

    def apply(self, state: StateDict) -> StateDict:
        out = {k: v for k, v in state.items() if not k.endswith(self.suffix)}
        for key, threshold in state.items():
            if not key.endswith(self.suffix):
                continue
            weight_key = key.removesuffix(self.suffix) + ".weight"
            if weight_key not in out:
                raise CorruptCheckpointError(f"{key} has no weight {weight_key} to threshold")
            w = out[weight_key]
            out[weight_key] = torch.sign(w) * torch.relu(w.abs() - torch.sigmoid(threshold))
        return out


@dataclass(frozen=True)
class Conv1x1ToLinear:
    """A classifier stored as a 1x1 convolution ([C, K, 1, 1], STR) becomes a Linear ([C, K])."""

    key: str = "fc.weight"

    def apply(self, state: StateDict) -> StateDict:
        weight = state.get(self.key)
        if weight is None or weight.dim() != 4 or weight.shape[2:] != (1, 1):
            return state
        out = {**state, self.key: weight.flatten(1)}
        mask = state.get(self.key + MASK_SUFFIX)
        if mask is not None:
            out[self.key + MASK_SUFFIX] = mask.flatten(1)
        return out


@dataclass(frozen=True)
class ZeroBiasIfMissing:
    """A bias-free classifier gets a zero bias: the same function, with our Linear's keys."""

    key: str = "fc.bias"
    weight_key: str = "fc.weight"

    def apply(self, state: StateDict) -> StateDict:
        if self.key in state or self.weight_key not in state:
            return state
        weight = state[self.weight_key]
        return {**state, self.key: torch.zeros(weight.shape[0], dtype=weight.dtype)}


KeyRule = (
    StripPrefix
    | Rename
    | UnwrapMaskedLayers
    | FoldSoftThreshold
    | Conv1x1ToLinear
    | ZeroBiasIfMissing
)

# RigL (Evci et al. 2020) was trained in TensorFlow; the authors' PyTorch port (`ResnetTF`)
# names a bottleneck's conv+BN pairs `convN.conv`/`convN.bn` and the projection `shortcut`.
RIGL_TF_TO_TORCHVISION: tuple[Rename, ...] = (
    Rename(r"^initial_conv\.conv\.", "conv1."),
    Rename(r"^initial_conv\.bn\.", "bn1."),
    Rename(r"^(layer\d)\.block\.(\d+)\.conv(\d)\.conv\.", r"\1.\2.conv\3."),
    Rename(r"^(layer\d)\.block\.(\d+)\.conv(\d)\.bn\.", r"\1.\2.bn\3."),
    Rename(r"^(layer\d)\.block\.(\d+)\.shortcut\.conv\.", r"\1.\2.downsample.0."),
    Rename(r"^(layer\d)\.block\.(\d+)\.shortcut\.bn\.", r"\1.\2.downsample.1."),
)


# The authors' `mobilenet_amc` (sparse-imagenet-transfer models/external/amc/mobilenet_v1.py:
# 65-71, AMC's MobileNetV1): stem `conv1`, blocks `features.0..12`, `classifier.0` a Linear;
# inside a block the same Sequential indices as ours (conv 0, BN 1, conv 3, BN 4).
AMC_MOBILENET_TO_OURS: tuple[Rename, ...] = (
    Rename(r"^conv1\.", "model.0."),
    *(Rename(rf"^features\.{i}\.", f"model.{i + 1}.") for i in range(13)),
    Rename(r"^classifier\.0\.", "fc."),
)


def apply_rules(state: StateDict, rules: tuple[KeyRule, ...]) -> StateDict:
    for rule in rules:
        state = rule.apply(state)
    return state


def split_masks(state: StateDict) -> tuple[StateDict, dict[str, torch.Tensor]]:
    """(the tensors, the stored masks by parameter name) of a state dict after its rules."""
    masks = {k.removesuffix(MASK_SUFFIX): v for k, v in state.items() if k.endswith(MASK_SUFFIX)}
    return {k: v for k, v in state.items() if not k.endswith(MASK_SUFFIX)}, masks


def _renamed(state: StateDict, rename, rule: str) -> StateDict:
    out: StateDict = {}
    for key, tensor in state.items():
        _put(out, rename(key), tensor, rule)
    return out


def _put(out: StateDict, key: str, tensor: torch.Tensor, rule: str) -> None:
    if key in out:
        raise CorruptCheckpointError(f"{rule} maps two tensors onto the key {key!r}")
    out[key] = tensor


def _is_mask(key: str) -> bool:
    return key.endswith(("._weight_mask", "._bias_mask"))


def _is_binary(mask: torch.Tensor) -> bool:
    return mask.dtype == torch.bool or bool(((mask == 0) | (mask == 1)).all())
