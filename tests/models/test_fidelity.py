"""The paper's published checkpoints load and run as their authors ran them.

Catalog entries of the paper's raw results are written in their published layout at the
sparsity their file has (tests/published_checkpoints.py), then loaded for a sweep, read by
`checkpoint inspect --catalog` and converted by the paper spec's preflight. The references
here (STR's release table, the authors' ResnetTF, STR's classifier) are written out from the
authors' code and READMEs, not read from ours.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from published_checkpoints import write_published
from torch import nn
from typer.testing import CliRunner

from sparse_transfer.models import ARCHS, replace_classifier
from sparse_transfer.models.catalog import CATALOG
from sparse_transfer.models.errors import CorruptCheckpointError
from sparse_transfer.models.inspection import inspect_checkpoint
from sparse_transfer.models.loading import load_entry, to_upstream

PAPER_ENTRIES = [n for n in CATALOG.names() if CATALOG.get(n).in_paper_results]

# RAIVNLab/STR README.md, "STR Sparse Models": the sparsity of each released file, against
# the paper's label for it (its raw results' `sparsity`).
STR_RELEASE_TABLE = {
    "resnet50.str_80": (0.8, 0.8127),
    "resnet50.str_90": (0.9, 0.9023),
    "resnet50.str_95": (0.95, 0.9515),
    "resnet50.str_98": (0.98, 0.9805),
    "mobilenetv1.str_75": (0.75, 0.7528),
    "mobilenetv1.str_90": (0.9, 0.8901),
}


def test_str_entries_expect_the_release_tables_sparsity_and_keep_the_papers_label():
    for name, (label, actual) in STR_RELEASE_TABLE.items():
        entry = CATALOG.get(name)
        assert (entry.sparsity, entry.actual_sparsity) == (label, actual), name
    learned = {n for n in CATALOG.names() if CATALOG.get(n).actual_sparsity is not None}
    lth = {n for n in learned if CATALOG.get(n).method == "LTH-T"}
    assert learned - lth == set(STR_RELEASE_TABLE)
    # LTH-T prunes 20% of the remaining conv weights per round, conv1 and fc dense
    for name in lth:
        entry = CATALOG.get(name)
        assert entry.sparsity_excludes == ("conv1", "fc")
        assert any(abs(entry.actual_sparsity - (1 - 0.8**k)) < 1e-4 for k in range(1, 20))


def _mask_source(entry) -> str:
    from published_checkpoints import WRAPPED

    return "none" if entry.sparsity == 0 else "file" if entry.method in WRAPPED else "zeros"


# Kept short: one MobileNetV1 entry per method and layout here (the MobileNetV1 spec's whole
# upstream list converts in test_every_upstream_of_a_paper_spec_...); of ResNet-50's 100 MB
# files, those whose loading differs from MobileNetV1's: RigL's variant and names, STR's
# learned sparsity and head, LTH-T's dense conv1 and fc (slow). The others differ from these
# only in their sparsity, which the catalog tests check as data.
_CHECKED = {
    "mobilenetv1.dense": False,
    "mobilenetv1.acdc_75": False,
    "mobilenetv1.mfac_89": False,
    "mobilenetv1.str_90": False,
    "resnet50.rigl_erk1x_80": True,
    "resnet50.str_80": True,
    "resnet50.ltht_90": True,
}


def _entries(names):
    return [
        pytest.param(n, marks=pytest.mark.slow) if _CHECKED[n] else n
        for n in names
        if n in _CHECKED
    ]


@pytest.mark.parametrize("name", _entries(PAPER_ENTRIES))
def test_every_paper_entry_loads_from_its_published_file(name, tmp_path):
    entry = CATALOG.get(name)
    path = tmp_path / f"{name}.pth"
    effective = write_published(path, entry)
    loaded = load_entry(entry, path=path)
    assert loaded.sparsity == pytest.approx(entry.expected_sparsity, abs=1e-4)
    with torch.device("meta"):
        assert repr(loaded.model) == repr(ARCHS.get(entry.model_arch).build(1000))
    state = loaded.model.state_dict()
    for key, value in effective.items():
        assert torch.equal(state[key], value), key
    assert loaded.mask_source == _mask_source(entry)
    upstream = to_upstream(loaded)
    assert upstream.arch == entry.model_arch and upstream.metadata["head"] == entry.head
    assert upstream.metadata["mask_source"] == _mask_source(entry)
    assert upstream.metadata["declared_sparsity"] == entry.sparsity  # the label joins results
    report = inspect_checkpoint(path, catalog=name)
    assert report["arch"] == entry.model_arch and report["sparsity_within_tolerance"]
    assert report["total_sparsity"] == pytest.approx(entry.expected_sparsity, abs=1e-4)
    assert (report["nominal_sparsity"], report["actual_sparsity"]) == (
        entry.sparsity,
        entry.expected_sparsity,
    )


def test_checkpoint_inspect_catalog_shows_actual_and_nominal_sparsity_and_mask_source(tmp_path):
    from sparse_transfer.cli import app

    path = tmp_path / "str_90.pth"
    write_published(path, CATALOG.get("mobilenetv1.str_90"))
    result = CliRunner().invoke(
        app, ["checkpoint", "inspect", str(path), "--catalog", "mobilenetv1.str_90"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["nominal_sparsity"] == 0.9 and report["actual_sparsity"] == 0.8901
    assert report["total_sparsity"] == pytest.approx(0.8901, abs=1e-4)
    assert report["mask_source"] == "zeros" and report["arch"] == "mobilenetv1"


@pytest.mark.parametrize("layout", ["str", "amc"])
def test_mobilenetv1_entries_read_each_layout_the_authors_get_model_builds(layout, tmp_path):
    """`mobilenet`, `mobilenet_str` (M-FAC's files: "compatible with the model definitions in
    the STR repository") and `mobilenet_amc` (sparse-imagenet-transfer models/__init__.py:
    12-17). `ours` is the layout of test_every_paper_entry_loads_from_its_published_file."""
    entry = CATALOG.get("mobilenetv1.acdc_75")
    path = tmp_path / "file.pth"
    effective = write_published(path, entry, layout=layout, wrapped=True)
    state = load_entry(entry, path=path).model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in effective.items())


def test_the_amc_layout_names_are_the_authors_amc_mobilenet(tmp_path):
    path = tmp_path / "amc.pth"
    write_published(path, CATALOG.get("mobilenetv1.dense"), layout="amc")
    keys = torch.load(path, weights_only=True)["model_state_dict"]
    assert "module.conv1.0.weight" in keys and "module.features.12.3.weight" in keys
    assert "module.classifier.0.bias" in keys and not any(".model." in k for k in keys)


# --- RigL's TF-style ResNet-50 --------------------------------------------------------------


class _ConvBN(nn.Module):
    """The authors' BasicConv2d / BasicConv2dNoReLU: conv (no bias), BN (eps 1e-5), ReLU?"""

    def __init__(self, c_in, c_out, kernel, stride, padding, relu=True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=1e-5)
        self.relu = relu

    def forward(self, x):
        x = self.bn(self.conv(x))
        return torch.relu(x) if self.relu else x


class _Bottleneck(nn.Module):
    """1x1, 3x3 with the stride, 1x1 to 4x; the first block of a layer has a projection."""

    def __init__(self, c_in, filters, stride, projection):
        super().__init__()
        if projection:
            self.shortcut = _ConvBN(c_in, 4 * filters, 1, stride, 0, relu=False)
        self.projection = projection
        self.conv1 = _ConvBN(c_in, filters, 1, 1, 0)
        self.conv2 = _ConvBN(filters, filters, 3, stride, 1)
        self.conv3 = _ConvBN(filters, 4 * filters, 1, 1, 0, relu=False)

    def forward(self, x):
        out = self.conv3(self.conv2(self.conv1(x)))
        return torch.relu(out + (self.shortcut(x) if self.projection else x))


class AuthorsResnetTF(nn.Module):
    """ResnetTF as models/external/rigl/resnet.py:89-115 defines it: 7x7/2 conv padded 3, a
    (0,1,0,1) zero pad, an unpadded 3x3/2 max-pool, four layers, AvgPool2d(7), fc."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.initial_conv = _ConvBN(3, 64, 7, 2, 3)
        self.pad = nn.ZeroPad2d((0, 1, 0, 1))
        self.initial_max_pool = nn.MaxPool2d(3, stride=2, padding=0)
        layers, c_in = [], 64
        for filters, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
            block = [_Bottleneck(c_in, filters, stride, True)]
            block += [_Bottleneck(4 * filters, filters, 1, False) for _ in range(blocks - 1)]
            layers.append(nn.Module())
            layers[-1].block = nn.Sequential(*block)
            c_in = 4 * filters
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AvgPool2d(7, stride=1)
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x):
        x = self.initial_max_pool(self.pad(self.initial_conv(x)))
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer.block(x)
        return self.fc(self.avgpool(x).flatten(1))


@pytest.mark.slow
def test_rigl_entries_run_in_the_authors_resnet_tf(tmp_path):
    """The RigL entry's weights, loaded as the catalog says, compute what the authors' ResnetTF
    computes with the same file; torchvision's symmetric max-pool does not."""
    entry = CATALOG.get("resnet50.rigl_erk5x_90")
    path = tmp_path / "rigl.pth"
    write_published(path, entry)
    loaded = load_entry(entry, path=path)
    ours = loaded.model.eval()
    # what full finetuning and the feature cache build from the converted file
    assert repr(to_upstream(loaded).build_model()) == repr(ours)
    reference = AuthorsResnetTF().eval()
    saved = torch.load(path, weights_only=True)["model_state_dict"]
    reference.load_state_dict({k.removeprefix("module."): v for k, v in saved.items()})
    plain = ARCHS.get("resnet50").build(1000).eval()
    plain.load_state_dict(ours.state_dict())
    torch.manual_seed(1)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), rtol=1e-4, atol=1e-6)
        # the stem, where the pooling grid differs (a random-weight network's logits barely
        # show it): ours is the authors', torchvision's is shifted by a pixel
        stem = reference.initial_max_pool(reference.pad(reference.initial_conv(x)))
        for model, same in ((ours, True), (plain, False)):
            pooled = model.maxpool(model.relu(model.bn1(model.conv1(x))))
            assert pooled.shape == stem.shape
            assert torch.allclose(pooled, stem, atol=1e-6) is same


def test_the_tf_variant_shares_resnet50s_keys_and_is_never_inferred():
    from sparse_transfer.models.inspection import infer_arch

    with torch.device("meta"):
        tf, plain = ARCHS.get("resnet50_tf").build(1000), ARCHS.get("resnet50").build(1000)
    assert list(tf.state_dict()) == list(plain.state_dict())
    assert ARCHS.get("resnet50_tf").variant_of == "resnet50"
    assert infer_arch(plain.state_dict()) == "resnet50"
    for name in ("resnet50.rigl_erk1x_80", "resnet50.rigl_erk5x_95"):
        assert CATALOG.get(name).model_arch == "resnet50_tf" and CATALOG.get(name).arch == (
            "resnet50"
        )


@pytest.mark.slow
def test_the_tf_variant_exports_to_onnx_and_runs_there(tmp_path):
    """As the DeepSparse speed measurement exports: opset 13, TorchScript path."""
    ort = pytest.importorskip("onnxruntime")
    model = ARCHS.get("resnet50_tf").build(10).eval()
    x = torch.randn(1, 3, 224, 224)
    path = tmp_path / "resnet50_tf.onnx"
    torch.onnx.export(model, (x,), str(path), opset_version=13, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(out), model(x), atol=1e-3)


@pytest.mark.slow
def test_the_tf_variant_takes_a_training_step():
    from sparse_transfer.transfer.loop import make_optimizer, train_step

    model = ARCHS.get("resnet50_tf").build(10)
    optimizer = make_optimizer(model.parameters(), {"lr": 0.1, "momentum": 0.9, "weight_decay": 0})
    loss = train_step(model, torch.randn(2, 3, 64, 64), torch.tensor([0, 1]), optimizer)
    assert torch.isfinite(loss)


# --- STR's full-finetuning head -------------------------------------------------------------


def test_str_entries_finetune_under_stride_bias_free_kaiming_1x1_conv_head():
    """STR's models end in `builder.conv1x1` (STR_resnet.py:117): bias-free, kaiming-normal
    fan-in relu (builder.py:36-39, 148-150). Ours must be that function with that init."""
    assert {CATALOG.get(n).head for n in STR_RELEASE_TABLE} == {"conv1x1"}
    assert {CATALOG.get(n).head for n in PAPER_ENTRIES if CATALOG.get(n).method != "STR"} == {
        "linear"
    }
    arch = ARCHS.get("mobilenetv1")
    with torch.device("meta"):
        model = arch.build(1000)
    torch.manual_seed(3)
    head = replace_classifier(model, arch, 37, head="conv1x1")
    torch.manual_seed(3)
    reference = nn.Conv2d(1024, 37, 1, bias=False)
    nn.init.kaiming_normal_(reference.weight, mode="fan_in", nonlinearity="relu")
    assert head.bias is None and model.fc is head
    pooled = torch.randn(4, 1024, 1, 1)
    head = head.to("cpu") if head.weight.device.type != "meta" else head
    assert torch.allclose(head(pooled.flatten(1)), reference(pooled).flatten(1), atol=1e-6)
    assert head.weight.std().item() == pytest.approx((2 / 1024) ** 0.5, rel=0.05)
    linear = replace_classifier(arch.build(10), arch, 37)
    assert linear.bias is not None


# --- masks from the file --------------------------------------------------------------------


def test_stored_masks_are_the_finetuning_masks_even_where_a_kept_weight_is_zero(tmp_path):
    entry = CATALOG.get("mobilenetv1.acdc_90")
    path = tmp_path / "acdc.pth"
    write_published(path, entry, stale_mask_fraction=0.0005)  # within mask_tolerance
    loaded = load_entry(entry, path=path)
    assert loaded.mask_source == "file"
    upstream = to_upstream(loaded)
    assert upstream.metadata["mask_source"] == "file"
    name = "model.5.3.weight"
    weight, mask = upstream.state_dict[name], upstream.masks[name]
    assert bool(((weight == 0) & mask).any()), "a kept weight that is zero stays kept"
    assert torch.equal(mask, loaded.stored_masks[name])


def test_unwrapped_files_take_their_masks_from_zeros(tmp_path):
    entry = CATALOG.get("mobilenetv1.acdc_90")
    path = tmp_path / "plain.pth"
    write_published(path, entry, wrapped=False)
    upstream = to_upstream(load_entry(entry, path=path))
    assert upstream.metadata["mask_source"] == "zeros"
    for name, mask in upstream.masks.items():
        assert torch.equal(mask, upstream.state_dict[name] != 0)


def test_a_stored_mask_that_disagrees_with_the_zeros_is_refused(tmp_path):
    entry = CATALOG.get("mobilenetv1.acdc_75")
    path = tmp_path / "stale.pth"
    write_published(path, entry, stale_mask_fraction=0.01)  # 1% > the 0.1% tolerance
    with pytest.raises(CorruptCheckpointError, match="masks disagree with the weights' zeros"):
        load_entry(entry, path=path)
    with pytest.raises(CorruptCheckpointError, match="tolerance 0.1000%"):
        inspect_checkpoint(path, catalog=entry.name)


def test_full_finetuning_attaches_the_head_its_upstream_names(tmp_path):
    """`finetune_full` reads the head from the converted upstream file (`to_upstream` writes
    the catalog entry's): a conv1x1 upstream trains a bias-free, kaiming-initialised head."""
    from sparse_transfer.models import UpstreamCheckpoint, save_upstream
    from sparse_transfer.transfer import TransferJob, run_transfer

    torch.manual_seed(0)
    state = ARCHS.get("quickstart_cnn").build(10).state_dict()
    heads = {}
    for head in ("conv1x1", "linear"):
        path = tmp_path / f"{head}.pt"
        preprocessing = {"interpolation": "bilinear", "mean": (0.5,), "std": (0.5,)}
        metadata = {"preprocessing": preprocessing, "head": head}
        save_upstream(path, UpstreamCheckpoint("quickstart_cnn", 10, state, {}, metadata))
        hparams = {"lr": 0.0, "epochs": 1, "batch_size": 256, "momentum": 0.9}
        job = TransferJob(path, "digits_5to9", "full", "search", hparams, seed=0, max_batches=1)
        (outcome,) = run_transfer(job)
        heads[head] = outcome.state()["model"]
    assert "fc.bias" not in heads["conv1x1"] and "fc.bias" in heads["linear"]
    weight = heads["conv1x1"]["fc.weight"]
    assert weight.std().item() == pytest.approx((2 / weight.shape[1]) ** 0.5, rel=0.35)


# --- the paper specs' own upstream lists, through the preflight a sweep (or --dry-run) runs ---


@pytest.mark.slow
@pytest.mark.parametrize("spec", ["paper_mobilenetv1_full.yaml", "paper_resnet50_full.yaml"])
def test_every_upstream_of_a_paper_spec_converts_from_its_published_file(spec, tmp_path):
    """`resolve_upstreams`, the step of `sparse-transfer sweep --dry-run` that fetches, loads
    and converts each upstream, for every upstream the spec lists (every catalog entry of the
    paper's raw results for that architecture), each from its published layout and at its
    published sparsity, and `checkpoint inspect --catalog` on the same file. One at a time
    (`upstream=[...]` narrowed with an override), since ResNet-50 files are 100 MB each."""
    from sparse_transfer.config.loader import load_spec
    from sparse_transfer.models import load_upstream
    from sparse_transfer.storage import Storage
    from sparse_transfer.sweep.upstream import resolve_upstreams

    root, runs = tmp_path / "checkpoints", tmp_path / "runs"
    root.mkdir()
    path = Path(__file__).resolve().parents[2] / "sweeps" / spec
    settings = [f"checkpoint_root={root}", f"storage={runs}"]
    listed = [(u.name, u.catalog) for u in load_spec(path, settings).upstream]
    arch = CATALOG.get(listed[0][1]).arch
    assert {c for _, c in listed} == {n for n in PAPER_ENTRIES if CATALOG.get(n).arch == arch}
    for name, catalog in listed:
        entry = CATALOG.get(catalog)
        write_published(root / f"{catalog}.pth", entry)
        report = inspect_checkpoint(root / f"{catalog}.pth", catalog=catalog)
        assert report["arch"] == entry.model_arch and report["sparsity_within_tolerance"]
        assert report["mask_source"] == _mask_source(entry), catalog
        assert (report["nominal_sparsity"], report["actual_sparsity"]) == (
            entry.sparsity,
            entry.expected_sparsity,
        )
        one = load_spec(path, [*settings, f"upstream=[{{name: {name}, catalog: {catalog}}}]"])
        ((converted, _),) = resolve_upstreams(one, Storage(str(runs)), log=lambda _: None).values()
        upstream = load_upstream(converted)
        assert upstream.arch == entry.model_arch, catalog
        assert upstream.metadata["measured_sparsity"] == pytest.approx(
            entry.expected_sparsity, abs=1e-4
        )
        assert upstream.metadata["mask_source"] == _mask_source(entry), catalog
        converted.unlink()
        (root / f"{catalog}.pth").unlink()
