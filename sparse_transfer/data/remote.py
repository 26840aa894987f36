"""Datasets kept under an S3 prefix, read from one node-local copy.

The paper's datasets are tens of thousands of small image files; a DataLoader reading them
one S3 GET at a time would be slow and would pay for every epoch again. So `local_root(uri)`
syncs the prefix once per node into $SPARSE_TRANSFER_CACHE/datasets/<bucket>/<prefix>
(default cache ~/.cache/sparse-transfer) and every trial on the node reads that directory.

Concurrent callers on a node (several trials, several processes) serialise on a file lock,
so the first one downloads and the others find the work done. Each file goes to a temporary
name and is renamed into place, so a crashed sync leaves no half files, only missing ones
that the next sync fetches. A marker written after the last file says the copy is complete:
later calls return without listing the bucket, which matters when hundreds of trials start
(and keeps working when S3 is unreachable). Delete the marker to force a fresh sync.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sparse_transfer.data.paper.registry import DatasetLayoutError
from sparse_transfer.paths import UnsafePathError, safe_join
from sparse_transfer.storage import Storage

__all__ = ["MARKER", "EmptyPrefixError", "local_root"]

MARKER = ".sparse-transfer-synced.json"
CACHE_ENV = "SPARSE_TRANSFER_CACHE"
LIST_PAGE_SIZE = 1000  # S3's own maximum; tests lower it to exercise pagination
THREADS = 8  # small files: latency-bound, so a few concurrent GETs on one (thread-safe) client


class EmptyPrefixError(DatasetLayoutError):
    """An S3 dataset prefix holds no objects (a typo in the URI, or nothing uploaded yet)."""


def local_root(root: str | Path) -> Path:
    """A local directory holding the dataset at `root` (a path, or an `s3://` prefix)."""
    if not str(root).startswith("s3://"):
        return Path(root).expanduser().resolve()
    storage = Storage(str(root))  # parses the endpoint and refuses credentials in the URI
    dest = safe_join(_cache_dir(), storage.bucket, storage.prefix, where="dataset root")
    if (dest / MARKER).is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (dest / MARKER).is_file():  # another process may have synced while we waited
            _sync(storage, dest)
    return dest


def _cache_dir() -> Path:
    cache = os.environ.get(CACHE_ENV) or "~/.cache/sparse-transfer"
    return Path(cache).expanduser().resolve() / "datasets"


def _sync(storage: Storage, dest: Path) -> None:
    objects = storage.list_objects(page_size=LIST_PAGE_SIZE)
    if not objects:
        raise EmptyPrefixError(
            f"dataset root {storage.display()}: no objects under this prefix (is the URI "
            "right, and has the dataset been uploaded?)"
        )
    # Check every key before downloading anything: a bad key means a bad listing.
    targets = [(name, size, _target(dest, storage, name)) for name, size in objects]
    todo = [t for t in targets if not (t[2].is_file() and t[2].stat().st_size == t[1])]
    with ThreadPoolExecutor(THREADS) as pool:
        # list() drains the iterator so the first failed download raises here
        list(pool.map(lambda t: _download(storage, t[0], t[2]), todo))
    summary = {
        "uri": storage.display(),
        "objects": len(objects),
        "bytes": sum(size for _, size in objects),
        "downloaded": len(todo),
        "synced_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    tmp = dest / f".{MARKER}.{uuid.uuid4().hex}.tmp"
    tmp.write_text(json.dumps(summary, indent=1) + "\n")
    os.replace(tmp, dest / MARKER)


def _target(dest: Path, storage: Storage, relative: str) -> Path:
    where = f"dataset root {storage.display()}"
    if relative.rpartition("/")[2] == MARKER:
        raise UnsafePathError(f"{where}: refusing key {relative!r}, it would replace the marker")
    return safe_join(dest, relative, where=where)


def _download(storage: Storage, relative: str, path: Path) -> None:
    # Retried, checked against the object's checksum (SHA-256, or the MD5 ETag of a plain
    # upload) and length, and renamed into place whole, as every transfer of ours is.
    if not storage.download_to(path, relative):
        raise DatasetLayoutError(f"{storage.display(relative)}: listed, then gone from S3")
