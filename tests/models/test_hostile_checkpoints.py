"""Hostile checkpoint files (issue 11): a zip bomb is refused before it is inflated, and every
refusal says what the file is: corrupt, not a checkpoint, the wrong format, or unsafe (naming
the refused global)."""

from __future__ import annotations

import io
import os
import random
import struct
import time
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from sparse_transfer.cli import app
from sparse_transfer.models.catalog import CatalogEntry
from sparse_transfer.models.checkpoint import load_upstream
from sparse_transfer.models.errors import (
    CorruptCheckpointError,
    UnsafeCheckpointError,
    WrongFormatError,
)
from sparse_transfer.models.formats import read_state_dict
from sparse_transfer.models.loading import load_entry

BOMB_BYTES = 2 << 30  # what the bomb's one record inflates to
PLEASE_FILE = "Please file an issue"


def _zip(records: list[tuple[str, int, bytes, int]]) -> bytes:
    """A zip of (name, method, data as stored, inflated size) records. The CRCs are left 0:
    a reader that checks them has already inflated the record, which is what must not happen."""
    out, central = bytearray(), bytearray()
    for name, method, data, size in records:
        raw, offset = name.encode(), len(out)
        out += struct.pack(
            "<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, 0, len(data), size, len(raw), 0
        )
        out += raw + data
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            *(0x02014B50, 20, 20, 0, method, 0, 0, 0, len(data), size, len(raw)),
            *(0, 0, 0, 0, 0, offset),
        )
        central += raw
    start = len(out)
    out += central
    out += struct.pack(
        "<IHHHHIIH", 0x06054B50, 0, 0, len(records), len(records), len(central), start, 0
    )
    return bytes(out)


def _deflated_zeros(size: int) -> bytes:
    """A raw deflate stream of `size` zero bytes, built in milliseconds: after a full flush a
    deflate block stands alone, so one compressed MiB of zeros can be repeated."""
    chunk = 1 << 20
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * (size // chunk) + compressor.flush()


@pytest.fixture
def bomb(tmp_path) -> Path:
    """A torch.save file of one small tensor whose storage record holds 2 GB deflated zeros."""
    buffer = io.BytesIO()
    torch.save({"w": torch.zeros(4)}, buffer)
    source = zipfile.ZipFile(buffer)
    records = []
    for info in source.infolist():
        if info.filename.endswith("/data/0"):
            records.append((info.filename, 8, _deflated_zeros(BOMB_BYTES), BOMB_BYTES))
        else:
            data = source.read(info)
            records.append((info.filename, 0, data, len(data)))
    path = tmp_path / "bomb.pth"
    path.write_bytes(_zip(records))
    assert path.stat().st_size < 3 << 20
    assert zipfile.ZipFile(path).getinfo("archive/data/0").file_size == BOMB_BYTES
    return path


@pytest.mark.serial
def test_a_zip_bomb_is_refused_before_it_is_inflated(bomb):
    started = time.perf_counter()
    with pytest.raises(UnsafeCheckpointError, match="declares 2147483648 bytes.*zip bomb"):
        read_state_dict(bomb, "torchvision")
    with pytest.raises(UnsafeCheckpointError, match="zip bomb"):
        load_upstream(bomb)
    result = CliRunner().invoke(app, ["checkpoint", "inspect", str(bomb)])
    assert result.exit_code == 1 and "zip bomb" in result.output
    assert time.perf_counter() - started < 3.0  # inflating it takes 15 s and 3 GB


def test_a_record_the_archive_does_not_hold_is_corrupt(tmp_path):
    path = tmp_path / "short.pth"
    path.write_bytes(_zip([("archive/data.pkl", 0, b"x" * 100, 100)]))
    data = bytearray(path.read_bytes())
    data[18:22] = struct.pack("<I", 10**6)  # local header: compressed size beyond the file
    central = data.index(b"PK\x01\x02")
    data[central + 20 : central + 24] = struct.pack("<I", 10**6)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="does not hold"):
        read_state_dict(path, "torchvision")


def _safetensors(tmp_path: Path) -> Path:
    path = tmp_path / "model.safetensors"
    save_file({"w": torch.ones(3, 3)}, str(path))
    return path


def _lying_length(tmp_path: Path) -> Path:
    data = _safetensors(tmp_path).read_bytes()
    path = tmp_path / "lying.safetensors"
    path.write_bytes(struct.pack("<Q", len(data) + 100) + data[8:])
    return path


def _random_bytes(tmp_path: Path) -> Path:
    path = tmp_path / "random.pth"
    path.write_bytes(random.Random(11).randbytes(4096))
    return path


def _pickle_payload(tmp_path: Path) -> Path:
    class Payload:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "x": Payload()}, path)
    return path


CASES = {
    # id: (make the file, --format, error type, what the message must say)
    "random-bytes": (_random_bytes, None, CorruptCheckpointError, "not a checkpoint"),
    "proc-environ": (
        lambda _: Path("/proc/self/environ"),
        None,
        CorruptCheckpointError,
        "not a checkpoint",
    ),
    "lying-safetensors": (_lying_length, None, CorruptCheckpointError, "corrupt safetensors"),
    "safetensors-as-torchvision": (
        _safetensors,
        "torchvision",
        WrongFormatError,
        "read as format 'torchvision', but it is a safetensors file (format 'safetensors')",
    ),
    "torch-as-safetensors": (
        _pickle_payload,
        "safetensors",
        WrongFormatError,
        "read as format 'safetensors', but it is a torch.save file",
    ),
    "pickle-payload": (_pickle_payload, None, UnsafeCheckpointError, "would call posix.system"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_inspect_says_what_the_file_is(tmp_path, monkeypatch, case):
    make, fmt, error, expected = CASES[case]
    monkeypatch.chdir(tmp_path)
    path = make(tmp_path)
    result = CliRunner().invoke(
        app, ["checkpoint", "inspect", str(path), *(["--format", fmt] if fmt else [])]
    )
    assert result.exit_code == 1, result.output
    assert expected in result.output and PLEASE_FILE not in result.output, result.output
    assert isinstance(result.exception, SystemExit)
    assert not (tmp_path / "pwned").exists()
    if case == "proc-environ":  # the file's contents are never quoted
        assert os.environ.get("PATH", "x") not in result.output


@pytest.mark.parametrize("case", list(CASES))
def test_the_loader_says_what_the_file_is(tmp_path, case):
    make, fmt, error, expected = CASES[case]
    entry = CatalogEntry(
        name="test.small",
        arch="quickstart_cnn",
        method="dense",
        sparsity=0.0,
        num_classes=5,
        format=fmt or ("safetensors" if "safetensors" in case else "torchvision"),
    )
    with pytest.raises(error) as caught:
        load_entry(entry, path=make(tmp_path))
    assert expected in str(caught.value) and PLEASE_FILE not in str(caught.value)
