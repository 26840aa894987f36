"""Small stand-ins for the paper's published checkpoints, written in their exact on-disk layouts.

Each is a real model of the entry's architecture at the sparsity its published file has
(`actual_sparsity` where that is learned), saved as the authors' converted files are:
`{'model_config', 'model_state_dict'}`, every key `module.`-prefixed, and, for the files the
authors' own pruning framework wrote, every Conv/Linear wrapped as `<layer>._layer.weight` with
a `<layer>._weight_mask` buffer (the raw weights under the mask are left non-zero). The key
layouts are written out here by hand from the authors' model definitions, not taken from the
catalog's key rules, so a wrong rule fails:

- `ours`: torchvision's ResNet names, the Distiller-style MobileNetV1 (`model.N`, `fc`);
- `rigl_tf`: ResnetTF (models/external/rigl/resnet.py): `initial_conv.conv`, `layerN.block.i.
  convK.conv|bn`, `shortcut`;
- `str`: STR's models (models/external/str/): the classifier a bias-free 1x1 conv;
- `amc`: mobilenet_amc (models/external/amc/mobilenet_v1.py): `conv1`, `features.i`,
  `classifier.0`.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from sparse_transfer.models import ARCHS
from sparse_transfer.models.catalog import CatalogEntry
from sparse_transfer.pruning import prunable_weights

# The layout each method's published file comes in, and whether the authors' framework wrote it
# (wrapped layers with stored masks) or it was converted from elsewhere (zeros only).
LAYOUT = {"RigL ERK 1x": "rigl_tf", "RigL ERK 5x": "rigl_tf", "STR": "str", "M-FAC": "str"}
WRAPPED = {"AC/DC", "WoodFisher", "M-FAC", "LTH-T", "GMP"}

_RIGL = (
    (r"^conv1\.", "initial_conv.conv."),
    (r"^bn1\.", "initial_conv.bn."),
    (r"^(layer\d)\.(\d+)\.conv(\d)\.", r"\1.block.\2.conv\3.conv."),
    (r"^(layer\d)\.(\d+)\.bn(\d)\.", r"\1.block.\2.conv\3.bn."),
    (r"^(layer\d)\.(\d+)\.downsample\.0\.", r"\1.block.\2.shortcut.conv."),
    (r"^(layer\d)\.(\d+)\.downsample\.1\.", r"\1.block.\2.shortcut.bn."),
)


def _amc_name(key: str) -> str:
    block = re.match(r"^model\.(\d+)\.(.*)$", key)
    if block:
        index = int(block[1])
        return f"conv1.{block[2]}" if index == 0 else f"features.{index - 1}.{block[2]}"
    return re.sub(r"^fc\.", "classifier.0.", key)


def _renamed(key: str, layout: str) -> str:
    if layout == "rigl_tf":
        for pattern, replacement in _RIGL:
            key = re.sub(pattern, replacement, key)
    elif layout == "amc":
        key = _amc_name(key)
    return key


def sparse_model_state(
    entry: CatalogEntry, seed: int = 0
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(state dict in our names, masks) of the entry's architecture with exactly the
    fraction `expected_sparsity` of the measured layers' weights zero, each layer alike."""
    torch.manual_seed(seed)
    model = ARCHS.get(entry.model_arch).build(entry.num_classes)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    measured = prunable_weights(model, exclude=entry.sparsity_excludes)
    masks = {}
    for name in prunable_weights(model):
        weight = state[name]
        keep = torch.ones_like(weight, dtype=torch.bool)
        if name in measured and entry.sparsity > 0:
            pruned = round(entry.expected_sparsity * weight.numel())
            keep.view(-1)[torch.randperm(weight.numel())[:pruned]] = False
        masks[name] = keep
        state[name] = weight * keep
    return state, masks


def write_published(
    path: Path,
    entry: CatalogEntry,
    *,
    layout: str | None = None,
    wrapped: bool | None = None,
    seed: int = 0,
    stale_mask_fraction: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Write `entry`'s published file to `path`; return the weights it holds in our names
    (what loading must produce). `stale_mask_fraction`: that fraction of each stored mask's
    kept weights is set to exactly zero, as in a file whose masks are not its weights'."""
    layout = layout or LAYOUT.get(entry.method, "ours")
    wrapped = entry.method in WRAPPED if wrapped is None else wrapped
    state, masks = sparse_model_state(entry, seed)
    if stale_mask_fraction:
        for name, keep in masks.items():
            kept = keep.view(-1).nonzero().view(-1)
            stale = kept[torch.randperm(kept.numel())[: round(stale_mask_fraction * kept.numel())]]
            state[name].view(-1)[stale] = 0.0
    effective = dict(state)
    classifier = ARCHS.get(entry.model_arch).classifier
    saved: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        layer, _, param = key.rpartition(".")
        if layout == "str" and layer == classifier:
            if param == "bias":  # STR's classifier has none: loading gives it a zero bias
                effective[key] = torch.zeros_like(value)
                continue
            value = value.view(*value.shape, 1, 1)
        if wrapped and f"{layer}.weight" in masks and param in ("weight", "bias"):
            mask = masks[key] if param == "weight" else torch.ones_like(value, dtype=torch.bool)
            mask = mask.view(value.shape).float()
            raw = value + torch.randn_like(value) * (1 - mask)  # non-zero under the mask
            saved[_renamed(f"{layer}._layer.{param}", layout)] = raw
            saved[_renamed(f"{layer}._{param}_mask", layout)] = mask
        else:
            saved[_renamed(key, layout)] = value
    saved = {f"module.{k}": v for k, v in saved.items()}
    container = {"model_config": {"arch": entry.arch, "dataset": "imagenet"}}
    torch.save({**container, "model_state_dict": saved}, path)
    return effective
