"""Nothing escapes its root (issue 11): one rule (sparse_transfer.paths) for storage mirrors,
S3 keys, zoo names, sweep ids and checkpoint caches, checked at use for names that come from a
bucket listing or a command line. S3 is a real moto server on localhost."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sparse_transfer.cli import app
from sparse_transfer.models.fetch import fetch
from sparse_transfer.paths import CredentialsInUriError, UnsafePathError, safe_parts
from sparse_transfer.storage import Storage
from sparse_transfer.zoo import entry_path

SECRET = "S3CR3TSENTINELwJalrXUtnFEMI"
ESCAPE = "../../../../../../outside"


@pytest.fixture
def s3(monkeypatch, tmp_path):
    from s3_helpers import s3_server

    yield from s3_server(monkeypatch, tmp_path)


def _written_outside(tmp_path: Path) -> list[Path]:
    return [p for p in tmp_path.rglob("*") if "outside" in p.parts or p.name == "ESCAPED.json"]


@pytest.mark.parametrize(
    "parts", [("..",), ("a/../../b",), ("/etc/passwd",), ("a//b",), (".",), ("a\x00b",)]
)
def test_the_rule_refuses_parts_that_leave_a_root(parts):
    with pytest.raises(UnsafePathError, match="refusing"):
        safe_parts(*parts)
    assert safe_parts("zoo", "quickstart/gmp_90.pt", "") == ["zoo", "quickstart", "gmp_90.pt"]


@pytest.mark.parametrize(
    "uri", ["s3://bucket/../../../../outside", "s3://../x", "s3://bucket/a/./b", "s3://Bad_Name"]
)
def test_a_storage_uri_whose_mirror_would_leave_the_cache_is_refused(tmp_path, monkeypatch, uri):
    monkeypatch.setenv("SPARSE_TRANSFER_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UnsafePathError):
        Storage(uri).local("sweeps")


def test_storage_parts_from_a_listing_or_a_command_line_are_checked(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSE_TRANSFER_CACHE", str(tmp_path / "cache"))
    for store in (Storage("s3://bucket/runs"), Storage(str(tmp_path / "runs"))):
        with pytest.raises(UnsafePathError):
            store.local("sweeps", ESCAPE)
        with pytest.raises(UnsafePathError):
            store.key("zoo", "/etc/passwd")
    assert Storage("s3://bucket/runs").local("zoo", "q/a.pt") == (
        tmp_path / "cache" / "s3" / "bucket" / "runs" / "zoo" / "q" / "a.pt"
    )


def test_a_storage_uri_with_credentials_is_refused_without_echo(tmp_path):
    with pytest.raises(CredentialsInUriError) as caught:
        Storage(f"s3://AKIAIOSFODNN7EXAMPLE:{SECRET}@bucket/runs")
    assert SECRET not in str(caught.value)
    result = CliRunner().invoke(app, ["zoo", "list", "--storage", f"s3://bucket?token={SECRET}"])
    assert result.exit_code == 2 and "credentials" in result.output
    assert SECRET not in result.output


def test_zoo_list_refuses_a_listed_key_that_would_escape_the_cache(s3, tmp_path):
    s3.client.put_object(
        Bucket="datasets-bucket", Key=f"runs/zoo/{ESCAPE}/ESCAPED.json", Body=b'{"name": "x"}'
    )
    listed = s3.client.list_objects_v2(Bucket="datasets-bucket", Prefix="runs/zoo/")
    assert f"runs/zoo/{ESCAPE}/ESCAPED.json" in [o["Key"] for o in listed["Contents"]]
    result = CliRunner().invoke(app, ["zoo", "list", "--storage", s3.uri("runs")])
    assert result.exit_code == 2, result.output
    assert "refusing" in result.output and not isinstance(result.exception, UnsafePathError)
    assert _written_outside(tmp_path) == []


def test_resume_refuses_a_sweep_id_that_would_escape_the_cache(s3, tmp_path):
    for name in ("state.json", "spec.yaml"):
        s3.client.put_object(
            Bucket="datasets-bucket", Key=f"runs/sweeps/{ESCAPE}/{name}", Body=b"{}"
        )
    location = s3.uri(f"runs/sweeps/{ESCAPE}")
    result = CliRunner().invoke(app, ["resume", location])
    assert result.exit_code == 2, result.output
    assert "refusing" in result.output and "../" in result.output
    assert isinstance(result.exception, SystemExit)  # no traceback, a clean exit
    assert _written_outside(tmp_path) == []


def test_zoo_entry_names_stay_in_the_zoo_directory(tmp_path):
    assert entry_path(tmp_path, "quickstart/dense") == tmp_path / "quickstart" / "dense.pt"
    with pytest.raises(UnsafePathError):
        entry_path(tmp_path, "../../../../etc/passwd")


def test_a_checkpoint_cache_name_stays_in_the_cache(s3, tmp_path):
    with pytest.raises(UnsafePathError):
        fetch("s3://datasets-bucket/ckpt/..", cache_dir=tmp_path / "ckpts", retries=0)
    with pytest.raises(CredentialsInUriError) as caught:
        fetch(f"https://u:{SECRET}@example.com/m.pth", cache_dir=tmp_path / "ckpts")
    assert SECRET not in str(caught.value)
    assert not (tmp_path / "ckpts").exists()  # refused before the cache was touched
