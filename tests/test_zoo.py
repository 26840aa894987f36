"""The quickstart zoo: entries carry honest metadata, are built once, load safely."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from sparse_transfer.models import load_upstream
from sparse_transfer.models.checkpoint import file_sha256
from sparse_transfer.storage import Storage
from sparse_transfer.zoo import QUICKSTART_RECIPE, ensure_entry, entry_path, list_entries

ENTRIES = QUICKSTART_RECIPE.entry_names()


def test_recipe_entry_names():
    assert ENTRIES == [
        "quickstart/dense",
        "quickstart/magnitude_70",
        "quickstart/magnitude_90",
        "quickstart/gmp_70",
        "quickstart/gmp_90",
    ]


@pytest.mark.parametrize(
    ("name", "method", "target"),
    [(f"quickstart/{e.entry}", e.method, e.sparsity) for e in QUICKSTART_RECIPE.entries],
)
def test_entry_metadata_is_honest(zoo_dir, name, method, target):
    path = entry_path(zoo_dir, name)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["name"] == name and meta["method"] == method
    assert meta["target_sparsity"] == target
    assert abs(meta["sparsity"] - target) <= 1e-3
    assert set(meta["preprocessing"]) >= {"mean", "std", "input_size"}
    assert meta["preprocessing"]["input_size"] == [8, 8]
    assert meta["sha256"] == file_sha256(path)
    assert 0.0 <= meta["upstream_val_top1"] <= 100.0
    # the checkpoint's own weights agree with the metadata
    upstream = load_upstream(path)
    assert upstream.sha256 == meta["sha256"]
    weights = {n: upstream.state_dict[n] for n in upstream.masks if not n.startswith("fc.")}
    zeros = sum(int((w == 0).sum()) for w in weights.values())
    assert zeros / sum(w.numel() for w in weights.values()) == pytest.approx(meta["sparsity"])


def test_list_entries_finds_every_entry(zoo_dir):
    entries = list_entries(Storage(str(zoo_dir.parent)), zoo_dir.name)
    assert sorted(e["name"] for e in entries) == sorted(ENTRIES)


def test_ensure_entry_does_not_rebuild(zoo_dir):
    before = {name: entry_path(zoo_dir, name).stat().st_mtime_ns for name in ENTRIES}
    built = []
    assert ensure_entry(zoo_dir, "quickstart/gmp_90", log=built.append) == entry_path(
        zoo_dir, "quickstart/gmp_90"
    )
    assert built == []
    assert {name: entry_path(zoo_dir, name).stat().st_mtime_ns for name in ENTRIES} == before


@pytest.mark.parametrize("name", ["quickstart/gmp_80", "imagenet/resnet50"])
def test_unknown_entry_lists_known_ones(tmp_path, name):
    with pytest.raises(KeyError) as caught:
        ensure_entry(tmp_path, name)
    assert name in str(caught.value)
    assert "quickstart" in str(caught.value)
    assert not list(tmp_path.rglob("*.pt")), "nothing is built for an unknown entry"


def test_unknown_entry_in_known_recipe_lists_entries(tmp_path):
    with pytest.raises(KeyError, match="quickstart/gmp_90"):
        ensure_entry(tmp_path, "quickstart/gmp_80")


def test_load_upstream_refuses_a_non_checkpoint(tmp_path):
    garbage = tmp_path / "notes.pt"
    garbage.write_text("this is not a checkpoint")
    with pytest.raises(ValueError, match="not a loadable checkpoint"):
        load_upstream(garbage)
    plain = tmp_path / "plain.pt"
    torch.save({"weight": torch.ones(2)}, plain)
    with pytest.raises(ValueError, match="not a sparse-transfer/upstream-v1 checkpoint"):
        load_upstream(plain)


def test_load_upstream_refuses_nan_weights(zoo_dir, tmp_path):
    payload = torch.load(entry_path(zoo_dir, "quickstart/dense"), weights_only=True)
    payload["state_dict"]["features.0.weight"][0, 0, 0, 0] = float("nan")
    poisoned = tmp_path / "nan.pt"
    torch.save(payload, poisoned)
    with pytest.raises(ValueError, match="'features.0.weight' holds NaN"):
        load_upstream(poisoned)


def test_load_upstream_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_upstream(tmp_path / "absent.pt")


@pytest.fixture
def s3(monkeypatch, tmp_path):
    from s3_helpers import s3_server

    yield from s3_server(monkeypatch, tmp_path)


def test_zoo_list_reads_a_local_or_an_s3_storage(zoo_dir, s3, tmp_path):
    from typer.testing import CliRunner

    from sparse_transfer.cli import app

    local = tmp_path / "runs"
    shutil.copytree(zoo_dir, local / "zoo")
    s3.upload_tree(zoo_dir, "runs/zoo")
    for storage in (str(local), s3.uri("runs")):
        result = CliRunner().invoke(app, ["zoo", "list", "--storage", storage])
        assert result.exit_code == 0, result.output
        lines = result.output.splitlines()
        assert lines[0].split()[0] == "name" and set(lines[1]) <= {"-", " "}  # header, rule
        listed = [line.split()[0] for line in lines[2:] if line.strip()]
        assert listed == sorted(ENTRIES), storage
    empty = CliRunner().invoke(app, ["zoo", "list", "--storage", s3.uri("nothing")])
    assert empty.exit_code == 0 and "no zoo entries under s3://" in empty.output
