"""Sweep specs: every shipped spec validates, bad specs fail naming file and dotted key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from sparse_transfer.cli import app
from sparse_transfer.config import SpecError, apply_overrides, load_spec
from sparse_transfer.tracking import default_tracking_uri

REPO = Path(__file__).resolve().parents[2]
ALL_SPECS = sorted((REPO / "sweeps").glob("**/*.y*ml"))
ZOO_SPECS = [p for p in ALL_SPECS if p.name.startswith("zoo_")]
SWEEP_SPECS = [p for p in ALL_SPECS if p not in ZOO_SPECS]

VALID: dict = {
    "name": "tiny",
    "upstream": [
        {
            "name": "dense",
            "arch": "quickstart_cnn",
            "method": "dense",
            "sparsity": 0.0,
            "zoo": "quickstart/dense",
        },
        {
            "name": "gmp_90",
            "arch": "quickstart_cnn",
            "method": "gmp",
            "sparsity": 0.9,
            "zoo": "quickstart/gmp_90",
        },
    ],
    "datasets": ["digits_5to9", "digits_5to9_parity"],
    "modes": ["full", "linear"],
    "seeds": [0, 1],
    "search_space": {
        "full": {"lr": {"distribution": "loguniform", "low": 0.003, "high": 0.1}, "epochs": 3},
        "linear": {"lr": {"distribution": "uniform", "low": 0.01, "high": 0.3}, "epochs": 4},
    },
    "search": {"trials_per_cell": 2},
    "early_stopping": {"scheduler": "asha", "grace_period": 1},
}


def write_spec(tmp_path: Path, raw, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    return path


def test_sweeps_folder_has_specs():
    assert SWEEP_SPECS, f"no sweep specs found under {REPO / 'sweeps'}"


@pytest.mark.parametrize("path", SWEEP_SPECS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_spec_validates(path):
    spec = load_spec(path)
    assert spec.name
    assert all(mode in spec.search_space for mode in spec.modes)


@pytest.mark.parametrize("path", ZOO_SPECS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_zoo_spec_validates(path):
    from sparse_transfer.config.zoo_spec import load_zoo_spec

    zoo = load_zoo_spec(path)
    assert zoo.entry_names()


def test_sweeps_name_only_zoo_entries_that_a_zoo_spec_builds():
    from sparse_transfer.config.zoo_spec import load_zoo_spec
    from sparse_transfer.zoo import RECIPES

    buildable = {n for p in ZOO_SPECS for n in load_zoo_spec(p).entry_names()}
    buildable |= {n for zoo in RECIPES.values() for n in zoo.entry_names()}
    for path in SWEEP_SPECS:
        for upstream in load_spec(path).upstream:
            if upstream.zoo:
                assert upstream.zoo in buildable, f"{path.name}: {upstream.zoo}"


@pytest.mark.parametrize("path", ALL_SPECS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_spec_opens_with_a_header_comment(path):
    assert path.read_text().startswith("#"), "STYLE: a spec starts with what it is and how to run"


def test_packaged_quickstart_is_identical_to_sweeps_copy():
    packaged = REPO / "sparse_transfer" / "config" / "quickstart.yaml"
    assert packaged.read_bytes() == (REPO / "sweeps" / "quickstart.yaml").read_bytes()


def test_catalog_upstreams_take_arch_method_and_sparsity_from_the_entry(tmp_path):
    raw = copy.deepcopy(VALID)
    raw["upstream"][1] = {"name": "acdc", "catalog": "resnet50.acdc_95", "checkpoint": "/x.pth"}
    upstream = load_spec(write_spec(tmp_path, raw)).upstream[1]
    assert (upstream.arch, upstream.method, upstream.sparsity) == ("resnet50", "AC/DC", 0.95)


def test_dataset_overrides_change_only_their_datasets_cells(tmp_path):
    raw = copy.deepcopy(VALID)
    raw["dataset_overrides"] = {"digits_5to9": {"full": {"epochs": 2, "lr": 0.05}}}
    spec = load_spec(write_spec(tmp_path, raw))
    assert spec.space("full", "digits_5to9")["lr"] == 0.05
    assert spec.space("full", "digits_5to9")["epochs"] == 2
    assert spec.space("full", "digits_5to9_parity") == spec.space("full")
    assert spec.space("linear", "digits_5to9") == spec.space("linear")


def test_file_datasets_live_under_the_data_root_unless_named(tmp_path):
    raw = copy.deepcopy(VALID)
    raw["datasets"] = ["digits_5to9", "cifar10", "dtd"]
    raw["data_root"] = "s3://bucket/datasets?endpoint_override=127.0.0.1:9000&scheme=http"
    raw["data_roots"] = {"dtd": "/mnt/dtd"}
    spec = load_spec(write_spec(tmp_path, raw))
    assert spec.dataset_root("cifar10") == (
        "s3://bucket/datasets/cifar10?endpoint_override=127.0.0.1:9000&scheme=http"
    )
    assert spec.dataset_root("dtd") == "/mnt/dtd"
    assert spec.dataset_root("digits_5to9") is None


def test_minimal_valid_spec_is_valid(tmp_path):
    spec = load_spec(write_spec(tmp_path, VALID))
    assert [u.name for u in spec.upstream] == ["dense", "gmp_90"]
    assert spec.search.trials_per_cell == 2


def _set(path: str, value):
    """A mutation setting `path` (dotted, ints index lists) to `value`."""

    def mutate(raw: dict) -> None:
        *parents, last = path.split(".")
        node = raw
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        node[int(last) if isinstance(node, list) else last] = value

    return mutate


def _delete(path: str):
    def mutate(raw: dict) -> None:
        *parents, last = path.split(".")
        node = raw
        for part in parents:
            node = node[part]
        del node[last]

    return mutate


BAD_CASES = {
    # id: (mutation, substrings the message must contain besides the file path)
    "unknown-top-level-key": (_set("colour", "blue"), ["colour", "unknown key"]),
    "unknown-search-key": (_set("search.typo", 3), ["search.typo", "unknown key"]),
    "zero-trials": (_set("search.trials_per_cell", 0), ["search.trials_per_cell"]),
    "sparsity-one": (_set("upstream.1.sparsity", 1.0), ["upstream[1].sparsity", "[0, 1)"]),
    "sparsity-negative": (_set("upstream.1.sparsity", -0.1), ["upstream[1].sparsity"]),
    "unknown-method": (
        _set("upstream.0.method", "snip"),
        ["upstream[0].method", "'snip'", "gmp", "magnitude", "dense"],
    ),
    "unknown-dataset": (
        _set("datasets.1", "svhn"),
        ["datasets[1]", "'svhn'", "digits_5to9", "digits_0to4"],
    ),
    "unknown-arch": (
        _set("upstream.1.arch", "resnet9000"),
        ["upstream[1].arch", "resnet9000", "quickstart_cnn"],
    ),
    "loguniform-low-zero": (
        _set("search_space.full.lr.low", 0.0),
        ["search_space.full.lr", "low must be > 0"],
    ),
    "uniform-high-below-low": (
        _set("search_space.linear.lr.high", 0.001),
        ["search_space.linear.lr", "greater than low"],
    ),
    "unknown-distribution": (
        _set("search_space.full.lr.distribution", "gaussian"),
        ["search_space.full.lr", "gaussian", "loguniform"],
    ),
    "unknown-hyperparameter": (
        _set("search_space.full.learning_rate", 0.1),
        ["search_space.full", "learning_rate", "weight_decay"],
    ),
    "empty-space": (_set("search_space.full", {}), ["search_space.full", "empty"]),
    "mode-without-space": (_delete("search_space.linear"), ["search_space", "'linear'"]),
    "grace-above-epochs": (
        _set("early_stopping.grace_period", 5),
        ["early_stopping.grace_period", "(3)"],
    ),
    "zoo-and-checkpoint": (
        _set("upstream.1.checkpoint", "/tmp/model.pt"),
        ["upstream[1]", "exactly one source"],
    ),
    "duplicate-datasets": (
        _set("datasets", ["digits_5to9", "digits_5to9"]),
        ["datasets", "duplicates", "digits_5to9"],
    ),
    "dense-with-sparsity": (_set("upstream.0.sparsity", 0.5), ["upstream[0].sparsity", "dense"]),
    "unknown-catalog-entry": (
        _set("upstream.1", {"name": "x", "catalog": "resnet50.acdc_99"}),
        ["upstream[1].catalog", "resnet50.acdc_99", "resnet50.acdc_95"],
    ),
    "catalog-contradiction": (
        _set("upstream.1", {"name": "x", "catalog": "resnet50.acdc_95", "sparsity": 0.9}),
        ["upstream[1]", "sparsity: 0.9 contradicts", "resnet50.acdc_95"],
    ),
    "catalog-without-file": (
        _set("upstream.1", {"name": "x", "catalog": "resnet50.acdc_95"}),
        ["upstream[1].checkpoint", "no published file", "checkpoint_root"],
    ),
    "paper-method-for-zoo-entry": (
        _set("upstream.1.method", "AC/DC"),
        ["upstream[1]", "'AC/DC'", "published checkpoint"],
    ),
    "file-dataset-without-root": (
        _set("datasets.1", "cifar10"),
        ["data_root", "'cifar10'", "data_roots.cifar10"],
    ),
    "root-for-packaged-dataset": (
        _set("data_roots", {"digits_5to9": "/data/digits"}),
        ["data_roots.digits_5to9", "ships with the package"],
    ),
    "override-for-unknown-dataset": (
        _set("dataset_overrides", {"svhn": {"full": {"lr": 0.1}}}),
        ["dataset_overrides.svhn", "unknown dataset"],
    ),
    "override-with-bad-value": (
        _set("dataset_overrides", {"digits_5to9": {"full": {"lr": -1}}}),
        ["dataset_overrides.digits_5to9.full.lr", "> 0"],
    ),
    "enqueue-outside-the-distribution": (
        _set("search.enqueue", [{"lr": 0.2}]),  # inside linear's uniform, outside full's range
        ["search.enqueue[0].lr", "0.2 is outside", "loguniform", "full cells"],
    ),
    "enqueue-of-a-fixed-hyperparameter": (
        _set("search.enqueue", [{"epochs": 3}]),
        ["search.enqueue[0].epochs", "not searched"],
    ),
    "enqueue-of-an-unknown-hyperparameter": (
        _set("search.enqueue", [{"learning_rate": 0.05}]),
        ["search.enqueue[0].learning_rate", "not searched"],
    ),
    "enqueue-paper-value-outside": (
        _set("search.enqueue", [{"lr": "paper"}]),  # the paper's full lr, 0.001, is below 0.003
        ["search.enqueue[0].lr", "0.001 is outside"],
    ),
    "enqueue-more-than-the-budget": (
        _set("search.enqueue", [{"lr": 0.05}] * 3),
        ["search.enqueue", "3 configurations", "trials_per_cell (2)"],
    ),
    "unknown-precision": (
        _set("resources", {"precision": "fp16"}),
        ["resources.precision", "'bf16'", "'fp32'"],
    ),
}


def test_enqueued_configurations_resolve_paper_per_cell(tmp_path):
    raw = copy.deepcopy(VALID)
    raw["search_space"]["full"]["lr"] = {"distribution": "loguniform", "low": 1e-4, "high": 0.1}
    raw["search"]["enqueue"] = [{"lr": "paper"}, {"lr": 0.05}]
    spec = load_spec(write_spec(tmp_path, raw))
    assert spec.enqueued("full", "digits_5to9") == [{"lr": 0.001}, {"lr": 0.05}]
    assert spec.enqueued("linear", "digits_5to9") == [{"lr": 0.01}, {"lr": 0.05}]
    dry = spec.as_dry_run()  # one trial per cell: the first configuration
    assert dry.search.enqueue == [{"lr": "paper"}]


def test_precision_defaults_to_bf16_autocast():
    spec = load_spec(REPO / "sweeps" / "quickstart.yaml")
    assert spec.resources.precision == "bf16"


@pytest.mark.parametrize("case", list(BAD_CASES), ids=list(BAD_CASES))
def test_bad_spec_names_file_and_key(tmp_path, case):
    mutate, expected = BAD_CASES[case]
    raw = copy.deepcopy(VALID)
    mutate(raw)
    path = write_spec(tmp_path, raw)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert str(path) in message
    for text in expected:
        assert text in message, f"{text!r} missing from:\n{message}"


@pytest.mark.parametrize(
    ("content", "expected"),
    [("- just\n- a list\n", "mapping"), ("name: [unclosed\n", "not valid YAML")],
    ids=["not-a-mapping", "invalid-yaml"],
)
def test_unreadable_spec_names_file(tmp_path, content, expected):
    path = write_spec(tmp_path, content)
    with pytest.raises(SpecError, match=expected) as caught:
        load_spec(path)
    assert str(path) in str(caught.value)


def test_missing_spec_file(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(SpecError, match="no such spec file") as caught:
        load_spec(path)
    assert str(path) in str(caught.value)


# --- `--set key=value` overrides ---------------------------------------------------------------


def test_override_nested_key(tmp_path):
    spec = load_spec(write_spec(tmp_path, VALID), ["search.trials_per_cell=8"])
    assert spec.search.trials_per_cell == 8


def test_override_list_index_is_validated(tmp_path):
    path = write_spec(tmp_path, VALID)
    spec = load_spec(path, ["upstream.1.sparsity=0.5"])
    assert spec.upstream[1].sparsity == 0.5
    with pytest.raises(SpecError) as caught:
        load_spec(path, ["upstream.1.sparsity=1.5"])
    assert "upstream[1].sparsity" in str(caught.value)


def test_override_value_is_parsed_as_yaml():
    raw = apply_overrides(
        VALID, ["seeds=[3, 4]", "search.sampler=random", "storage=/x/y"], source="s.yaml"
    )
    assert raw["seeds"] == [3, 4]
    assert raw["search"]["sampler"] == "random"
    assert raw["storage"] == "/x/y"
    assert VALID["seeds"] == [0, 1], "overrides must not mutate the input"


def test_override_creates_missing_mapping():
    raw = apply_overrides(VALID, ["tracking.uri=sqlite:////tmp/m.db"], source="s.yaml")
    assert raw["tracking"] == {"uri": "sqlite:////tmp/m.db"}


@pytest.mark.parametrize("override", ["search.trials_per_cell", "=3"])
def test_malformed_override_is_named(override):
    with pytest.raises(SpecError) as caught:
        apply_overrides(VALID, [override], source="s.yaml")
    assert repr(override) in str(caught.value)
    assert "s.yaml" in str(caught.value)


def test_override_list_index_out_of_range():
    with pytest.raises(SpecError, match="no list index '7'"):
        apply_overrides(VALID, ["upstream.7.sparsity=0.5"], source="s.yaml")


def test_override_introducing_invalid_value_reports_dotted_key(tmp_path):
    path = write_spec(tmp_path, VALID)
    with pytest.raises(SpecError) as caught:
        load_spec(path, ["search.trials_per_cell=0"])
    assert "search.trials_per_cell" in str(caught.value)
    assert str(path) in str(caught.value)


# --- the CLI -----------------------------------------------------------------------------------


def test_cli_validate_good_files(tmp_path):
    extra = write_spec(tmp_path, VALID)
    result = CliRunner().invoke(app, ["validate", *map(str, SWEEP_SPECS), str(extra)])
    assert result.exit_code == 0, result.output
    for path in [*SWEEP_SPECS, extra]:
        assert f"{path}: ok" in result.output
    assert "8 cells" in result.output  # the tiny spec: 2 upstreams x 2 datasets x 2 modes


def test_cli_validate_bad_file_names_file_and_key(tmp_path):
    raw = copy.deepcopy(VALID)
    raw["search"]["trials_per_cell"] = 0
    bad = write_spec(tmp_path, raw, "bad.yaml")
    good = write_spec(tmp_path, VALID, "good.yaml")
    result = CliRunner().invoke(app, ["validate", str(good), str(bad)])
    assert result.exit_code != 0
    assert str(bad) in result.output
    assert "search.trials_per_cell" in result.output
    assert f"{good}: ok" in result.output


def test_cli_help_lists_commands():
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("sweep", "validate", "resume", "report", "quickstart", "zoo"):
        assert command in result.output


# --- tracking URI defaults ---------------------------------------------------------------------


def test_tracking_uri_from_spec_wins(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert default_tracking_uri("http://spec:5000") == "http://spec:5000"


def test_tracking_uri_from_environment(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    assert default_tracking_uri(None) == "http://env:5000"


def test_tracking_uri_default_is_absolute_sqlite(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_tracking_uri(None) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"


def test_tracking_uri_relative_sqlite_made_absolute(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert (
        default_tracking_uri("sqlite:///runs/m.db") == f"sqlite:///{tmp_path.resolve()}/runs/m.db"
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("storage", "s3://bucket/p?access_key=AKIAX&secret_key=abc", "credentials"),
        ("storage", "ftp://host/runs", "unsupported scheme"),
        ("tracking", {"uri": "http://alice:secret@mlflow.example:5000"}, "credentials"),
    ],
)
def test_specs_refuse_credentials_and_unusable_storage(tmp_path, key, value, message):
    path = write_spec(tmp_path, {**VALID, key: value})
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    text = str(caught.value)
    assert key in text and message in text
    assert "secret" not in text.replace("secret_key", ""), "the error must not echo a secret"


@pytest.mark.parametrize(
    ("override", "nearest"),
    [
        ("search.trial_per_cell=3", "trials_per_cell"),
        ("datsets=[cifar10]", "datasets"),
        ("upstream.0.sparsty=0.5", "sparsity"),
        ("tracking.experimnt=x", "experiment"),
    ],
)
def test_an_unknown_key_suggests_the_nearest_valid_one(tmp_path, override, nearest):
    path = write_spec(tmp_path, VALID)
    with pytest.raises(SpecError) as caught:
        load_spec(path, [override])
    assert f"unknown key (not allowed here); did you mean `{nearest}`?" in str(caught.value)
