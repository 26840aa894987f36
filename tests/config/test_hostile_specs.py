"""Hostile and careless specs (issue 11): every bad value is refused at validation, naming its
key, never echoing a secret, never with a traceback; no path in a spec leaves its root."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_spec_validation import VALID, write_spec

from sparse_transfer.config import SpecError, apply_overrides, load_spec
from sparse_transfer.config.zoo_spec import load_zoo_spec

REPO = Path(__file__).resolve().parents[2]
SECRET = "S3CR3TSENTINELwJalrXUtnFEMI"
HUGE = 10**400  # an integer no float holds


def _refused(tmp_path: Path, raw: dict) -> str:
    path = write_spec(tmp_path, raw)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    return str(caught.value)


def _with(path: str, value) -> dict:
    """VALID with the dotted `path` (ints index lists) set to `value`."""
    raw = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node = raw
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    node[int(last) if isinstance(node, list) else last] = value
    return raw


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "sparse_transfer.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


# -- paths: nothing in a spec leaves its root ------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("storage", "s3://bucket/../../.."),
        ("storage", "s3://../x"),
        ("storage", "s3://bucket/runs//x"),
        ("data_roots.dtd", "s3://bucket/../../../../etc"),
        ("data_root", "s3://bucket/data/../../../../etc"),
        ("checkpoint_root", "s3://bucket/../../x"),
        ("upstream.0.zoo", "../../../../etc/passwd"),
        ("upstream.0.zoo", "/etc/passwd"),
    ],
)
def test_a_path_that_would_leave_its_root_is_refused(tmp_path, key, value):
    message = _refused(tmp_path, _with(key, value))
    dotted = key.replace(".0.", "[0].")
    assert dotted in message, message
    assert "refusing" in message or "not an S3 bucket name" in message, message


def test_zoo_spec_storage_that_would_leave_the_cache_is_refused(tmp_path):
    raw = yaml.safe_load((REPO / "sweeps" / "zoo_demo.yaml").read_text())
    path = write_spec(tmp_path, {**raw, "storage": "s3://bucket/../../../outside"}, "zoo_x.yaml")
    with pytest.raises(SpecError, match=r"storage: refusing"):
        load_zoo_spec(path)


# -- secrets: refused in every URI field, never repeated ------------------------------------
SECRET_URIS = {
    "storage": f"s3://AKIAIOSFODNN7EXAMPLE:{SECRET}@bucket/runs",
    "storage-query": f"s3://bucket/runs?aws_secret_access_key={SECRET}",
    "data_root": f"s3://user:{SECRET}@bucket/datasets",
    "data_roots.dtd": f"s3://bucket/dtd?aws_session_token={SECRET}",
    "checkpoint_root": f"s3://bucket/ckpts?aws_secret_access_key={SECRET}",
    "upstream.1.checkpoint": f"https://example.com/m.pth?X-Amz-Signature={SECRET}",
    "tracking.uri": f"http://alice:{SECRET}@mlflow.example:5000",
    "tracking.uri-query": f"http://mlflow.example:5000?token={SECRET}",
    "zoo_dir": f"https://user:{SECRET}@example.com/zoo",
}


@pytest.mark.parametrize("case", list(SECRET_URIS))
def test_credentials_in_any_uri_field_are_refused_without_echo(tmp_path, case):
    key = case.removesuffix("-query")
    raw = _with(key, SECRET_URIS[case])
    if key == "upstream.1.checkpoint":  # an own-format checkpoint instead of a zoo entry
        del raw["upstream"][1]["zoo"]
    message = _refused(tmp_path, raw)
    assert key.replace(".1.", "[1].") in message and "credentials" in message, message
    assert SECRET not in message


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("storage", f"s3://AKIAIOSFODNN7EXAMPLE:{SECRET}@bucket/zoo"),
        ("tracking", {"uri": f"postgresql://mlflow:{SECRET}@db.example/mlflow"}),
    ],
)
def test_zoo_spec_refuses_credentials_without_echo(tmp_path, key, value):
    raw = yaml.safe_load((REPO / "sweeps" / "zoo_demo.yaml").read_text())
    path = write_spec(tmp_path, {**raw, key: value}, "zoo_x.yaml")
    with pytest.raises(SpecError, match="credentials") as caught:
        load_zoo_spec(path)
    assert key in str(caught.value) and SECRET not in str(caught.value)


def test_cli_validate_refuses_a_secret_without_printing_it(tmp_path):
    path = write_spec(tmp_path, _with("storage", f"s3://AKIAX:{SECRET}@bucket/runs"))
    done = _cli("validate", str(path), cwd=tmp_path)
    assert done.returncode == 1 and "storage" in done.stderr, done.stderr
    assert SECRET not in done.stdout + done.stderr and "Traceback" not in done.stderr


# -- values: refused before compute, naming the key ----------------------------------------
BAD_VALUES = {
    "huge-epochs": ("search_space.full.epochs", HUGE, "search_space.full.epochs"),
    "huge-lr": ("search_space.full.lr", HUGE, "search_space.full.lr"),
    "huge-choice": (
        "search_space.full.batch_size",
        {"distribution": "choice", "choices": [32, HUGE]},
        "search_space.full.batch_size",
    ),
    "huge-int-range": (
        "search_space.full.epochs",
        {"distribution": "int", "low": 1, "high": HUGE},
        "search_space.full.epochs",
    ),
    "huge-loguniform": (
        "search_space.full.lr",
        {"distribution": "loguniform", "low": 0.001, "high": HUGE},
        "search_space.full.lr",
    ),
    "bool-epochs": ("search_space.full.epochs", True, "search_space.full.epochs"),
    "duplicate-modes": ("modes", ["full", "full"], "modes: duplicates"),
    "duplicate-datasets": ("datasets", ["digits_5to9"] * 2, "datasets: duplicates"),
    "duplicate-seeds": ("seeds", [0, 0], "seeds: duplicates"),
    "duplicate-upstreams": ("upstream.1.name", "dense", "upstream: duplicates"),
    "infinite-cpu": ("resources.cpu", float("inf"), "resources.cpu"),
    "huge-seed": ("seeds", [2**70], "seeds[0]"),
    "negative-search-seed": ("search.seed", -1, "search.seed"),
    "infinite-reduction": ("early_stopping.reduction_factor", float("inf"), "reduction_factor"),
    "bool-trials": ("search.trials_per_cell", True, "search.trials_per_cell"),
    "huge-trials": ("search.trials_per_cell", 10**30, "search.trials_per_cell"),
    "long-description": ("description", "x" * 100_000, "description"),
    "long-name": ("upstream.0.name", "n" * 5000, "upstream[0].name"),
    "unknown-mode": ("modes", ["full", "fulll"], "'fulll'"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_are_refused_naming_the_key(tmp_path, case):
    key, value, expected = BAD_VALUES[case]
    message = _refused(tmp_path, _with(key, value))
    assert expected in message, message
    assert len(message) < 2000, "the error must not echo a huge value"


def test_unknown_mode_echoes_the_value_and_lists_the_valid_ones(tmp_path):
    message = _refused(tmp_path, _with("modes", ["full", "fulll"]))
    assert "unknown mode 'fulll'" in message and "full, linear, prune" in message


@pytest.mark.serial
def test_a_huge_spec_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "huge.yaml"
    path.write_text(yaml.safe_dump(VALID) + "description: " + "x" * (5 << 20) + "\n")
    started = time.perf_counter()
    with pytest.raises(SpecError, match="at most 1048576 bytes") as caught:
        load_spec(path)
    assert time.perf_counter() - started < 1.0
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("name=[unclosed", "not valid YAML"),
        ("name.sub=x", "'name' is a plain value"),
        ("seeds.0.x=1", "'0' is a plain value"),
    ],
)
def test_bad_overrides_are_named(override, expected):
    with pytest.raises(SpecError, match=expected) as caught:
        apply_overrides(copy.deepcopy(VALID), [override], source="spec.yaml")
    assert override.split("=")[0] in str(caught.value)


def test_an_override_through_a_null_mapping_sets_it():
    raw = {**copy.deepcopy(VALID), "downstream_pruning": None}
    out = apply_overrides(raw, ["downstream_pruning.target_sparsity=0.95"], source="s")
    assert out["downstream_pruning"] == {"target_sparsity": 0.95}


@pytest.mark.parametrize("override", ["name=[unclosed", "name.sub=x", "seeds.0.x=1"])
def test_cli_sweep_refuses_a_bad_override_before_compute(tmp_path, override):
    path = write_spec(tmp_path, VALID)
    done = _cli("sweep", str(path), "--set", override, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert override.split("=")[0] in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "sparse-transfer-runs").exists()


@pytest.mark.parametrize(
    "case", ["huge-epochs", "infinite-cpu", "huge-seed", "bool-trials", "duplicate-modes"]
)
def test_cli_validate_refuses_bad_values_without_traceback(tmp_path, case):
    key, value, expected = BAD_VALUES[case]
    path = write_spec(tmp_path, _with(key, value))
    done = _cli("validate", str(path), cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr


def _laughs(levels: int) -> str:
    """A "billion laughs" spec: each level an alias repeated 9 times, under a real key."""
    lines = [
        "upstream:",
        '  - &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
    ]
    for level in range(1, levels):
        lines.append(f"  - &l{level} [{', '.join([f'*l{level - 1}'] * 9)}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (_laughs(9), r"expands to \d{9} values through YAML aliases"),
        ("upstream: " + "[" * 50_000 + "]" * 50_000 + "\n", "nested too deeply"),
        ("upstream: &me [1, *me]\n", "refers to a value that holds it"),
    ],
    ids=["billion-laughs", "deep", "self-reference"],
)
@pytest.mark.serial
def test_yaml_that_expands_or_nests_without_end_is_refused_at_once(tmp_path, text, expected):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    started = time.perf_counter()
    with pytest.raises(SpecError, match=expected) as caught:
        load_spec(path)
    assert time.perf_counter() - started < 5.0
    assert str(path) in str(caught.value)
    done = _cli("validate", str(path), cwd=tmp_path)
    assert done.returncode == 1 and re.search(expected, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


def test_yaml_aliases_of_a_real_spec_still_load(tmp_path):
    """Anchors are how a spec reuses a search space: the guard leaves them be."""
    raw = copy.deepcopy(VALID)
    text = yaml.safe_dump(raw) + "description: &d shared\nname: *d\n"
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    assert load_spec(path).name == "shared"
