"""`validate`'s look at the files a spec names, in seconds and without loading any of them:
each file dataset's layout under its root, and each upstream's checkpoint file.

Local paths are checked. S3 paths are checked when this machine has S3 credentials, all at once
and for at most `REMOTE_PATIENCE_S`; otherwise the answer says they were not checked.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from sparse_transfer.config import SweepSpec
from sparse_transfer.data.paper import PAPER_DATASETS
from sparse_transfer.models.catalog import CATALOG
from sparse_transfer.storage import Storage

__all__ = ["PathsCheck", "check_paths"]

REMOTE_PATIENCE_S = 10.0


@dataclass
class PathsCheck:
    problems: list[str] = field(default_factory=list)  # "key: path: what is wrong"
    unchecked: list[tuple[str, str]] = field(default_factory=list)  # (key, remote path)
    why_unchecked: str = ""

    def unchecked_text(self) -> str:
        """`key root (n paths)` per spec key: `checkpoint_root s3://b/ckpt (20 files)`."""
        by_key: dict[str, list[str]] = {}
        for key, uri in self.unchecked:
            by_key.setdefault(key, []).append(uri)
        parts = []
        for key, uris in by_key.items():
            if len(uris) == 1:
                parts.append(f"{key} {uris[0]}")
            else:
                common = os.path.commonprefix(uris).rpartition("/")[0]
                parts.append(f"{key} {common} ({len(uris)} paths under it)")
        return ", ".join(parts)


def check_paths(spec: SweepSpec) -> PathsCheck:
    found = PathsCheck()
    remote: dict[str, str] = {}  # uri -> key
    splits = ("train", "val", "trainval", "test") if spec.searches else ("trainval", "test")
    for dataset in spec.datasets:
        root = spec.dataset_root(dataset)
        if root is None:
            continue
        key = f"data_roots.{dataset}" if dataset in spec.data_roots else "data_root"
        if root.startswith("s3://"):
            remote[root] = key
            continue
        if not Path(root).expanduser().is_dir():
            found.problems.append(f"{key}: {root} does not exist (dataset {dataset!r})")
            continue
        try:
            for split in splits:
                PAPER_DATASETS.get(dataset).open(root, split)
        except (OSError, ValueError) as err:
            found.problems.append(f"{key}: {err}")
    for index, upstream in enumerate(spec.upstream):
        where = f"upstream[{index}] ({upstream.name})"
        if upstream.catalog and not upstream.checkpoint:
            entry = CATALOG.get(upstream.catalog)
            if entry.source is not None or spec.checkpoint_root is None:
                continue  # fetched from its source; a missing root is a spec error already
            file, key = Storage(spec.checkpoint_root).child(f"{entry.name}.pth"), "checkpoint_root"
        elif upstream.checkpoint:
            file, key = upstream.checkpoint, f"{where}.checkpoint"
        else:
            continue  # a zoo entry: built when missing
        if file.startswith("s3://"):
            remote[file] = key
        elif file.startswith(("http://", "https://")):
            found.unchecked.append((key, file))
        elif not Path(file).expanduser().is_file():
            found.problems.append(f"{key}: {file} does not exist")
    _check_remote(remote, found)
    return found


def _check_remote(remote: dict[str, str], found: PathsCheck) -> None:
    if not remote:
        return
    import boto3

    if boto3.Session().get_credentials() is None:
        found.unchecked += [(key, uri) for uri, key in remote.items()]
        found.why_unchecked = "no S3 credentials"
        return
    answers: dict[str, object] = {}

    def look(uri: str) -> None:
        try:
            answers[uri] = Storage(uri).exists()
        except Exception as err:  # answered below as not checked, with the reason
            answers[uri] = err

    # daemon threads: one that S3 never answers does not keep the command from exiting
    threads = [threading.Thread(target=look, args=(uri,), daemon=True) for uri in remote]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + REMOTE_PATIENCE_S
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    for uri, key in remote.items():
        answer = answers.get(uri)
        if answer is True:
            continue
        if answer is False:
            found.problems.append(f"{key}: {uri}: nothing there")
        else:
            found.unchecked.append((key, uri))
            found.why_unchecked = (
                f"S3 did not answer in {REMOTE_PATIENCE_S:.0f} s"
                if answer is None
                else f"S3 said: {answer}"
            )
