"""Refuse a zip bomb before torch inflates it: check the sizes a torch.save zip declares.

`torch.save` writes its records uncompressed, and torch's reader inflates a compressed record
in full, into memory, before it looks at its size: 2 GB of deflated zeros fit in a 2 MB file.
The zip's central directory declares every record's compressed and inflated size, so the
check costs one read of the directory, whatever the record holds.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from sparse_transfer.models.errors import CorruptCheckpointError, UnsafeCheckpointError

__all__ = ["MAX_EXPANSION", "MAX_RECORD_BYTES", "check_archive"]

# Weights hardly compress (an 8x ratio is a sparse model's best case); zeros deflate ~1000x.
MAX_EXPANSION = 32
SMALL_RECORD = 1 << 20  # below this a record may expand as it likes (pickles, text)
MAX_RECORD_BYTES = 64 << 30  # no one tensor storage of an ImageNet model is near this


def check_archive(path: Path) -> None:
    """Raise unless every record of the zip at `path` fits the archive and the limits."""
    path = Path(path)
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:
        raise CorruptCheckpointError(
            f"{path}: not a readable checkpoint (truncated or corrupt zip archive: {err})"
        ) from None
    for record in records:
        stored = record.header_offset + record.compress_size
        if stored > size:
            raise CorruptCheckpointError(
                f"{path}: record {record.filename!r} declares {record.compress_size} bytes "
                f"that the {size}-byte file does not hold (truncated or corrupt)"
            )
        if record.file_size > max(SMALL_RECORD, MAX_EXPANSION * record.compress_size) or (
            record.file_size > MAX_RECORD_BYTES
        ):
            raise UnsafeCheckpointError(
                f"{path}: refused before reading: record {record.filename!r} declares "
                f"{record.file_size} bytes inflated from {record.compress_size} (a zip bomb; "
                "torch.save never compresses its records)"
            )
