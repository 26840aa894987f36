"""Checkpoints in every supported format load into the right architecture with identical weights
and sparsity; unsafe, corrupt, non-finite, mis-hashed and mismatched files are refused; and
`sparse-transfer checkpoint inspect` reports them as JSON.

One sparse ResNet-18 (90% by global magnitude, BN statistics randomised so any mix-up of
tensors shows) is written once per format and shared by the tests of this module.
"""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sparse_transfer.cli import app
from sparse_transfer.models import ARCHS, UpstreamCheckpoint, save_upstream
from sparse_transfer.models.catalog import CatalogEntry
from sparse_transfer.models.checkpoint import FORMAT as UPSTREAM_V1
from sparse_transfer.models.checkpoint import file_sha256
from sparse_transfer.models.errors import (
    CheckpointMismatchError,
    ChecksumMismatchError,
    CorruptCheckpointError,
    NonFiniteWeightsError,
    SparsityMismatchError,
    UnsafeCheckpointError,
)
from sparse_transfer.models.formats import FORMATS
from sparse_transfer.models.loading import load_entry
from sparse_transfer.pruning.masks import apply_masks, prunable_weights

SPARSITY = 0.9
NUM_CLASSES = 10
FORMAT_NAMES = [
    "torchvision",
    "safetensors",
    "ist-converted",
    "rigl-tf",
    "str",
    "sparseml",
    UPSTREAM_V1,
]


@pytest.fixture(scope="module")
def reference() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(state dict, masks) of a 90%-sparse ResNet-18 with 10 classes."""
    torch.manual_seed(0)
    model = ARCHS.get("resnet18").build(NUM_CLASSES)
    masks = {}  # exactly 90% of each layer, at random (a global argsort is slow)
    for name, weight in prunable_weights(model).items():
        keep = torch.ones(weight.numel(), dtype=torch.bool)
        keep[torch.randperm(weight.numel())[: round(SPARSITY * weight.numel())]] = False
        masks[name] = keep.view_as(weight)
    apply_masks(model, masks)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for key in state:
        if key.endswith(("running_mean", "running_var", "bn1.bias")):
            state[key] = torch.rand_like(state[key]) + 0.5
    state["fc.bias"] = torch.zeros(NUM_CLASSES)  # STR's classifier has none: keep all equal
    return state, masks


def module_prefixed(state):
    return {f"module.{k}": v for k, v in state.items()}


def wrapped(state, masks):
    """IST-DASLab's WrappedLayer: raw weights (pruned ones NOT zero) plus 0/1 mask buffers."""
    out = {}
    for key, value in state.items():
        if key in masks:
            layer = key.removesuffix(".weight")
            noise = torch.randn_like(value) * (~masks[key])
            out[f"{layer}._layer.weight"] = value + noise
            out[f"{layer}._weight_mask"] = masks[key].float()
        elif key == "fc.bias":
            out["fc._layer.bias"], out["fc._bias_mask"] = value, torch.ones_like(value)
        else:
            out[key] = value
    return out


def to_tf_names(state):
    """torchvision -> the authors' ResnetTF names (the inverse of the RigL rules, by hand)."""
    renames = [
        (r"^conv1\.", "initial_conv.conv."),
        (r"^bn1\.", "initial_conv.bn."),
        (r"^(layer\d)\.(\d+)\.conv(\d)\.", r"\1.block.\2.conv\3.conv."),
        (r"^(layer\d)\.(\d+)\.bn(\d)\.", r"\1.block.\2.conv\3.bn."),
        (r"^(layer\d)\.(\d+)\.downsample\.0\.", r"\1.block.\2.shortcut.conv."),
        (r"^(layer\d)\.(\d+)\.downsample\.1\.", r"\1.block.\2.shortcut.bn."),
    ]
    out = {}
    for key, value in state.items():
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        out[key] = value
    return out


def str_encoded(state, masks, threshold=0.01):
    """STR: raw weights and a learned threshold s; effective w = sign(w)*relu(|w|-sigmoid(s))."""
    s = torch.logit(torch.tensor(threshold))
    out = {}
    for key, value in state.items():
        if key in masks:
            layer = key.removesuffix(".weight")
            small = (torch.rand_like(value) - 0.5) * threshold  # below the threshold
            raw = torch.where(masks[key], value.sign() * (value.abs() + threshold), small)
            out[key] = raw.view(*raw.shape, 1, 1) if key == "fc.weight" else raw
            out[f"{layer}.sparseThreshold"] = s.view(1, 1)
        elif key != "fc.bias":  # a bias-free 1x1-conv classifier
            out[key] = value
    return out


def write(path: Path, fmt: str, state, masks) -> Path:
    if fmt == "torchvision":
        torch.save(state, path)
    elif fmt == "safetensors":
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif fmt == "ist-converted":
        config = {"arch": "resnet18", "dataset": "imagenet"}
        torch.save(
            {"model_config": config, "model_state_dict": module_prefixed(wrapped(state, masks))},
            path,
        )
    elif fmt == "rigl-tf":
        config = {"arch": "resnet50_rigl", "dataset": "imagenet"}
        torch.save({"model_config": config, "model_state_dict": to_tf_names(state)}, path)
    elif fmt == "str":
        str_state = module_prefixed(str_encoded(state, masks))
        torch.save({"state_dict": str_state, "arch": "ResNet18", "best_acc1": 70.0}, path)
    elif fmt == "sparseml":
        torch.save({"state_dict": module_prefixed(state), "epoch": 3, "recipe": "---"}, path)
    elif fmt == UPSTREAM_V1:
        save_upstream(path, UpstreamCheckpoint("resnet18", NUM_CLASSES, state, masks))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory, reference) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("checkpoints")
    state, masks = reference
    return {
        fmt: write(folder / f"{fmt.replace('/', '_')}.bin", fmt, state, masks)
        for fmt in FORMAT_NAMES
    }


def entry(fmt: str, **fields) -> CatalogEntry:
    base = {
        "name": f"test.resnet18_{fmt}",
        "arch": "resnet18",
        "method": "GMP",
        "sparsity": SPARSITY,
        "format": fmt,
        "key_rules": FORMATS.get(fmt).rules,
        "num_classes": NUM_CLASSES,
    }
    return CatalogEntry(**{**base, **fields})


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_every_format_loads_identical_weights_and_sparsity(fmt, files, reference):
    state, masks = reference
    loaded = load_entry(entry(fmt), path=files[fmt])
    got = loaded.model.state_dict()
    assert got.keys() == state.keys()
    for key, expected in state.items():
        if fmt == "str" and key in masks:  # the threshold fold is float arithmetic
            torch.testing.assert_close(got[key], expected, atol=1e-6, rtol=0)
            assert torch.equal(got[key] != 0, masks[key]), key
        else:
            assert torch.equal(got[key], expected), key
    assert loaded.sparsity == pytest.approx(SPARSITY, abs=1e-6)
    assert loaded.per_layer["fc.weight"] == pytest.approx(
        float((~masks["fc.weight"]).float().mean())
    )
    assert loaded.sha256 == file_sha256(files[fmt])


# --- refusals, on a small model (the quickstart CNN) so they cost milliseconds -----------


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """(state, masks, torchvision-format file) of a 50%-sparse quickstart CNN, 5 classes."""
    torch.manual_seed(1)
    model = ARCHS.get("quickstart_cnn").build(5)
    masks = {}
    for name, weight in prunable_weights(model).items():
        keep = torch.ones(weight.numel(), dtype=torch.bool)
        keep[torch.randperm(weight.numel())[: weight.numel() // 2]] = False
        masks[name] = keep.view_as(weight)
    apply_masks(model, masks)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("small") / "small.pth"
    torch.save(state, path)
    return state, masks, path


def small_entry(fmt: str = "torchvision", **fields) -> CatalogEntry:
    base = {"arch": "quickstart_cnn", "num_classes": 5, "sparsity": 0.5, "name": "test.small"}
    return entry(fmt, **{**base, **fields})


def test_the_declared_format_is_used_never_the_file_name(small, tmp_path):
    state, masks, path = small
    misleading = tmp_path / "weights.safetensors"
    misleading.write_bytes(path.read_bytes())
    assert load_entry(small_entry(), path=misleading).sparsity == pytest.approx(0.5, abs=0.01)
    converted = tmp_path / "converted.pth"
    torch.save({"model_config": {}, "model_state_dict": wrapped(state, masks)}, converted)
    assert load_entry(small_entry("ist-converted"), path=converted)
    with pytest.raises(
        CorruptCheckpointError, match=r"not tensors: \['model_config', 'model_state_dict'\]"
    ):
        load_entry(small_entry("torchvision"), path=converted)
    with pytest.raises(CorruptCheckpointError, match="keeps its weights under 'state_dict'"):
        load_entry(small_entry("sparseml"), path=converted)


class Payload:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (open, (str(self.target), "w"))


@pytest.mark.parametrize("how", ["legacy pickle", "torch.save zip", "pickled nn.Module"])
def test_a_checkpoint_that_needs_code_is_refused_and_never_executed(how, tmp_path):
    created = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    if how == "legacy pickle":
        path.write_bytes(pickle.dumps({"state_dict": Payload(created)}, protocol=2))
    elif how == "torch.save zip":
        torch.save({"model_state_dict": {"w": torch.ones(1)}, "x": Payload(created)}, path)
    else:
        torch.save(ARCHS.get("quickstart_cnn").build(2), path)
    for fmt in ("ist-converted", "torchvision"):
        with pytest.raises(UnsafeCheckpointError, match="refused.*not unpickled"):
            load_entry(small_entry(fmt), path=path)
    assert not created.exists()
    result = CliRunner().invoke(app, ["checkpoint", "inspect", str(path)])
    assert result.exit_code == 1 and "refused" in result.output
    assert not created.exists()


def test_a_truncated_file_is_refused_as_corrupt(small, tmp_path):
    state, _, path = small
    from safetensors.torch import save_file

    save_file(state, str(tmp_path / "whole.safetensors"))
    for fmt, whole in (("torchvision", path), ("safetensors", tmp_path / "whole.safetensors")):
        data = whole.read_bytes()
        truncated = tmp_path / f"truncated_{fmt}"
        truncated.write_bytes(data[: len(data) // 2])
        with pytest.raises(CorruptCheckpointError, match="truncated|not a readable safetensors"):
            load_entry(small_entry(fmt), path=truncated)


def test_nan_or_inf_is_refused_naming_the_tensor(small, tmp_path):
    state, _, _ = small
    for bad in (float("nan"), float("inf")):
        poisoned = {**state, "features.3.weight": state["features.3.weight"].clone()}
        poisoned["features.3.weight"][0, 0, 0, 0] = bad
        torch.save(poisoned, tmp_path / "poisoned.pth")
        with pytest.raises(NonFiniteWeightsError, match=r"NaN or Inf: features\.3\.weight"):
            load_entry(small_entry(), path=tmp_path / "poisoned.pth")


def test_the_declared_sha256_is_verified(small):
    path = small[2]
    assert load_entry(small_entry(sha256=file_sha256(path)), path=path)
    with pytest.raises(ChecksumMismatchError, match="is not the declared 0000"):
        load_entry(small_entry(sha256="0" * 64), path=path)


def test_wrong_architecture_lists_missing_and_unexpected_keys(small):
    with pytest.raises(CheckpointMismatchError) as err:
        load_entry(small_entry(arch="resnet18"), path=small[2])
    missing, unexpected = str(err.value).split("in the checkpoint, not in the model")
    assert "in the model, not in the checkpoint" in missing and "conv1.weight" in missing
    assert "features.0.weight" in unexpected and "conv1.weight" not in unexpected


def test_an_extra_key_is_listed_as_unexpected(small, tmp_path):
    torch.save({**small[0], "head.scale": torch.ones(1)}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointMismatchError, match=r"not in the model \(1\): head\.scale"):
        load_entry(small_entry(), path=tmp_path / "extra.pth")


def test_wrong_shapes_and_dtypes_are_refused(small, tmp_path):
    with pytest.raises(CheckpointMismatchError, match=r"fc.weight: checkpoint \(5, 64\)"):
        load_entry(small_entry(num_classes=7), path=small[2])
    torch.save({**small[0], "fc.bias": torch.zeros(5, dtype=torch.int64)}, tmp_path / "int.pth")
    with pytest.raises(CheckpointMismatchError, match="fc.bias: checkpoint torch.int64"):
        load_entry(small_entry(), path=tmp_path / "int.pth")


def test_the_declared_sparsity_is_checked(small):
    with pytest.raises(
        SparsityMismatchError, match="measured sparsity 0.50.. is not the declared"
    ):
        load_entry(small_entry(sparsity=0.8), path=small[2])
    # what is measured is data on the entry: here the classifier is left out
    loaded = load_entry(small_entry(sparsity_excludes=("fc",)), path=small[2])
    assert "fc.weight" not in loaded.per_layer and "features.0.weight" in loaded.per_layer


def test_a_mask_that_is_not_zero_one_is_refused(small, tmp_path):
    state, masks, _ = small
    bad = wrapped(state, masks)
    bad["features.0._weight_mask"] = bad["features.0._weight_mask"] * 0.5
    torch.save({"model_config": {}, "model_state_dict": bad}, tmp_path / "bad_mask.pth")
    with pytest.raises(CorruptCheckpointError, match="features.0._weight_mask is not a 0/1"):
        load_entry(small_entry("ist-converted"), path=tmp_path / "bad_mask.pth")


def test_an_entry_without_a_source_says_fill_in():
    with pytest.raises(ValueError, match="no source yet \\(fill in\\)"):
        load_entry(entry("ist-converted"))


# --- sparse-transfer checkpoint inspect ---------------------------------------------------


def inspect(*args: str):
    return CliRunner().invoke(app, ["checkpoint", "inspect", *args])


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_inspect_detects_the_format_infers_the_arch_and_reports_sparsity(fmt, files, reference):
    _, masks = reference
    result = inspect(str(files[fmt]))
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["format"] == fmt and report["format_source"] == "detected"
    assert report["arch"] == "resnet18" and report["arch_source"] == "inferred"
    assert report["num_classes"] == NUM_CLASSES
    assert report["total_sparsity"] == pytest.approx(SPARSITY, abs=1e-6)
    assert set(report["layer_sparsity"]) == set(masks)
    assert report["sha256"] == file_sha256(files[fmt])


def test_inspect_with_given_arch_and_format(files):
    result = inspect(str(files["sparseml"]), "--arch", "resnet18", "--format", "sparseml")
    report = json.loads(result.stdout)
    assert report["arch_source"] == "given" and report["format_source"] == "given"


def test_inspect_refuses_a_wrong_arch_a_truncated_file_and_unknown_names(files, tmp_path):
    result = inspect(str(files["torchvision"]), "--arch", "mobilenetv1")
    assert result.exit_code == 1 and "keys do not match" in result.output
    (tmp_path / "cut.pth").write_bytes(files["ist-converted"].read_bytes()[:100_000])
    result = inspect(str(tmp_path / "cut.pth"))
    assert result.exit_code == 1 and "truncated" in result.output
    result = inspect(str(files["torchvision"]), "--format", "onnx")
    assert result.exit_code == 1 and "unknown checkpoint format 'onnx'" in result.output
    result = inspect(str(tmp_path / "absent.pth"))
    assert result.exit_code == 1 and "does not exist" in result.output


def test_inspect_without_a_fitting_arch_reports_all_weight_matrices(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"encoder.weight": torch.tensor([[0.0, 1.0], [0.0, 0.0]])}, path)
    report = json.loads(inspect(str(path)).stdout)
    assert report["arch"] is None and report["total_sparsity"] == 0.75


def test_checkpoint_list_shows_the_catalog_with_fill_in_sources():
    result = CliRunner().invoke(app, ["checkpoint", "list"])
    assert result.exit_code == 0
    assert re.search(
        r"resnet50\.acdc_95\s+AC/DC\s+95%\s+ist-converted\s+<checkpoint_root>/resnet50\.acdc_95",
        result.output,
    )
    assert "https://download.pytorch.org/models/resnet50-0676ba61.pth" in result.output
