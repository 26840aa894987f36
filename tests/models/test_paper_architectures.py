"""The paper's architectures and its checkpoint catalog.

ResNet-50 and MobileNetV1 are checked on the meta device (shapes, no weights), so their size
costs nothing: parameter counts, the authors' layer names, and the key rules that map RigL's
and STR's names onto ours.
"""

from __future__ import annotations

import csv
import re

import pytest
import torch

from sparse_transfer.models import ARCHS, replace_classifier
from sparse_transfer.models.catalog import CATALOG, CatalogEntry
from sparse_transfer.models.formats import FORMATS
from sparse_transfer.models.keymap import apply_rules
from sparse_transfer.models.loading import check_state_dict
from sparse_transfer.reference import RAW_RESULTS

PAPER_ARCHS = ("resnet18", "resnet50", "mobilenetv1")


def meta_model(arch: str, num_classes: int = 1000) -> torch.nn.Module:
    with torch.device("meta"):
        return ARCHS.get(arch).build(num_classes)


@pytest.mark.parametrize(
    ("arch", "parameters"),
    # torchvision's published counts for ResNet-18/50; MobileNetV1 1.0: 4.2M (Howard et al.)
    [("resnet18", 11_689_512), ("resnet50", 25_557_032), ("mobilenetv1", 4_231_976)],
)
def test_parameter_counts(arch, parameters):
    assert sum(p.numel() for p in meta_model(arch).parameters()) == parameters
    assert ARCHS.get(arch).input_shape == (3, 224, 224) and ARCHS.get(arch).classifier == "fc"


@pytest.mark.parametrize("arch", PAPER_ARCHS)
@pytest.mark.parametrize("num_classes", [2, 37, 397])
def test_the_classifier_is_replaced_for_any_number_of_classes(arch, num_classes):
    model = meta_model(arch)
    head = replace_classifier(model, ARCHS.get(arch), num_classes)
    assert model.fc is head and head.out_features == num_classes


def test_mobilenetv1_runs_and_ends_in_a_1024_wide_linear():
    model = ARCHS.get("mobilenetv1").build(5).eval()
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 5)
    assert model.fc.in_features == 1024
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert len(depthwise) == 13 and all(m.groups == m.in_channels for m in depthwise)


def test_mobilenetv1_keys_are_the_authors_layer_names():
    """model.0 = stem conv+BN; model.1..13 = depthwise (0, BN 1) + pointwise (3, BN 4); fc."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    expected = ["model.0.0.weight", *(f"model.0.1.{p}" for p in bn)]
    for i in range(1, 14):
        expected += [f"model.{i}.0.weight", *(f"model.{i}.1.{p}" for p in bn)]
        expected += [f"model.{i}.3.weight", *(f"model.{i}.4.{p}" for p in bn)]
    expected += ["fc.weight", "fc.bias"]
    assert list(meta_model("mobilenetv1").state_dict()) == expected


def _tf_named(state: dict) -> dict:
    """torchvision ResNet-50 keys in the authors' ResnetTF names, written out by hand."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"^conv1\.", "initial_conv.conv.", key)
        key = re.sub(r"^bn1\.", "initial_conv.bn.", key)
        key = re.sub(r"^(layer\d)\.(\d+)\.conv(\d)\.", r"\1.block.\2.conv\3.conv.", key)
        key = re.sub(r"^(layer\d)\.(\d+)\.bn(\d)\.", r"\1.block.\2.conv\3.bn.", key)
        key = re.sub(r"^(layer\d)\.(\d+)\.downsample\.0\.", r"\1.block.\2.shortcut.conv.", key)
        key = re.sub(r"^(layer\d)\.(\d+)\.downsample\.1\.", r"\1.block.\2.shortcut.bn.", key)
        out[f"module.{key}"] = value
    return out


def test_rigl_names_map_onto_every_resnet50_tensor():
    model = meta_model("resnet50")
    tf_state = _tf_named(model.state_dict())
    assert any(k.startswith("module.layer3.block.5.conv2.bn.") for k in tf_state)
    mapped = apply_rules(tf_state, CATALOG.get("resnet50.rigl_erk5x_90").key_rules)
    check_state_dict(model, mapped, where="resnet50 from RigL names")


def test_str_mobilenetv1_with_a_1x1_conv_classifier_fits_after_its_rules():
    model = meta_model("mobilenetv1")
    state = {f"module.{k}": v for k, v in model.state_dict().items() if k != "fc.bias"}
    state["module.fc.weight"] = torch.empty(1000, 1024, 1, 1, device="meta")
    mapped = apply_rules(state, CATALOG.get("mobilenetv1.str_90").key_rules)
    check_state_dict(model, mapped, where="mobilenetv1 from STR")
    assert mapped["fc.weight"].shape == (1000, 1024) and mapped["fc.bias"].shape == (1000,)


# --- the catalog ---------------------------------------------------------------------------


def _paper_pairs(arch: str) -> set[tuple[str, float]]:
    pairs = set()
    for mode in ("full", "linear"):
        with open(RAW_RESULTS / f"{arch}_{mode}.csv", newline="") as handle:
            for row in csv.DictReader(handle):
                pairs.add((row["model"].strip(), float(row["sparsity"])))
    return pairs


@pytest.mark.parametrize("arch", ["resnet50", "mobilenetv1"])
def test_the_catalog_holds_exactly_the_papers_method_sparsity_pairs(arch):
    entries = [CATALOG.get(n) for n in CATALOG.names() if CATALOG.get(n).arch == arch]
    in_paper = {(e.method, e.sparsity) for e in entries if e.in_paper_results}
    assert in_paper == _paper_pairs(arch)
    assert len(in_paper) == len([e for e in entries if e.in_paper_results])  # one entry each


def test_the_entries_beyond_the_papers_raw_results():
    extra = {n for n in CATALOG.names() if not CATALOG.get(n).in_paper_results}
    assert extra == {
        "resnet50.gmp_80", "resnet50.gmp_90", "resnet50.gmp_95", "resnet50.gmp_98",
        "resnet50.acdc_98", "resnet50.woodfisher_98", "resnet50.tv_in1k", "resnet18.tv_in1k",
    }  # fmt: skip


@pytest.mark.parametrize("name", CATALOG.names())
def test_every_entry_is_consistent_data(name):
    entry: CatalogEntry = CATALOG.get(name)
    assert entry.arch in ARCHS and entry.format in FORMATS
    assert name.startswith(f"{entry.arch}.") and 0.0 <= entry.sparsity < 1.0
    assert (
        entry.key_rules[: len(FORMATS.get(entry.format).rules)] == FORMATS.get(entry.format).rules
    )
    assert entry.source is None or re.match(r"^(s3://|https://|/)", entry.source)
    bicubic = entry.method.startswith("RigL")
    assert entry.preprocessing.interpolation == ("bicubic" if bicubic else "bilinear")
    assert entry.preprocessing.input_size == 224 and entry.preprocessing.resize_size == 256


def test_torchvision_weights_are_urls_as_data_and_the_rest_wait_for_a_source():
    assert CATALOG.get("resnet50.tv_in1k").source == (
        "https://download.pytorch.org/models/resnet50-0676ba61.pth"
    )
    assert CATALOG.get("resnet18.tv_in1k").format == "torchvision"
    assert CATALOG.get("resnet50.ltht_90").source is None
    assert CATALOG.get("resnet50.ltht_90").published_at is None  # never published
    assert "seafile" in CATALOG.get("mobilenetv1.mfac_89").published_at
