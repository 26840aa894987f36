"""Paper datasets read from an S3 prefix (a real moto server on localhost), synced once per
node into the cache: same samples as the local copy, no second listing, one download per file
under concurrent callers, clear refusals for empty prefixes and keys that would escape."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import pytest
from dataset_fixtures import build_dtd
from s3_helpers import BUCKET, fault_proxy, s3_server

from sparse_transfer.data import remote
from sparse_transfer.data.paper import PAPER_DATASETS, DatasetLayoutError
from sparse_transfer.data.remote import MARKER, EmptyPrefixError, local_root
from sparse_transfer.paths import CredentialsInUriError, UnsafePathError


@pytest.fixture
def s3(monkeypatch, tmp_path):
    yield from s3_server(monkeypatch, tmp_path)


@pytest.fixture
def dtd(tmp_path) -> Path:
    root = tmp_path / "dtd-local"
    build_dtd(root)
    return root


def _relative(opened, root: Path) -> list[tuple[str, int]]:
    return [(str(Path(path).relative_to(root)), label) for path, label in opened.samples]


def test_an_s3_root_opens_like_the_local_copy(s3, dtd, tmp_path):
    count = s3.upload_tree(dtd, "datasets/dtd")
    dataset = PAPER_DATASETS.get("dtd")
    cache = local_root(s3.uri("datasets/dtd"))
    assert cache == (tmp_path / "cache/datasets" / BUCKET / "datasets/dtd").resolve()
    for split in ("train", "val", "trainval", "test"):
        local, remote_split = dataset.open(dtd, split), dataset.open(s3.uri("datasets/dtd"), split)
        assert remote_split.classes == local.classes
        assert _relative(remote_split, cache) == _relative(local, dtd)
        for (ours, _), (theirs, _) in zip(remote_split.samples, local.samples, strict=True):
            assert Path(ours).read_bytes() == Path(theirs).read_bytes()
        assert remote_split[0][0].size == local[0][0].size
    synced = (cache / MARKER).read_text()
    assert f'"objects": {count}' in synced and f"s3://{BUCKET}/datasets/dtd" in synced


def test_a_synced_root_is_read_from_the_cache_without_s3(s3, dtd):
    s3.upload_tree(dtd, "datasets/dtd")
    uri = s3.uri("datasets/dtd")
    first = PAPER_DATASETS.get("dtd").open(uri, "test")
    s3.stop()  # no server at all: listing or downloading would now fail
    second = PAPER_DATASETS.get("dtd").open(uri, "test")
    assert second.samples == first.samples and second.classes == first.classes


def test_a_partial_copy_without_a_marker_fetches_only_what_is_missing(s3, dtd, monkeypatch):
    s3.upload_tree(dtd, "datasets/dtd")
    cache = local_root(s3.uri("datasets/dtd"))
    (cache / MARKER).unlink()
    damaged = cache / "dtd/dtd/labels/test1.txt"
    damaged.write_text("short")
    fetched = []
    download = remote._download
    monkeypatch.setattr(remote, "_download", lambda *a: (fetched.append(a[1]), download(*a)))
    local_root(s3.uri("datasets/dtd"))
    assert fetched == ["dtd/dtd/labels/test1.txt"]
    assert damaged.read_bytes() == (dtd / "dtd/dtd/labels/test1.txt").read_bytes()


def _sync_in_child(uri: str, log: str, barrier, results) -> None:
    from sparse_transfer.data import remote

    download = remote._download

    def counted(storage, relative, path):
        with open(log, "a") as handle:  # O_APPEND: lines from both processes don't mix
            handle.write(f"{relative}\n")
        time.sleep(0.05)  # hold the lock long enough that the other process must wait
        download(storage, relative, path)

    remote._download = counted
    barrier.wait()
    results.put(str(remote.local_root(uri)))


def test_concurrent_processes_download_each_file_once(s3, dtd, tmp_path):
    count = s3.upload_tree(dtd, "datasets/dtd")
    log = tmp_path / "gets.log"
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    args = (s3.uri("datasets/dtd"), str(log), barrier, results)
    children = [context.Process(target=_sync_in_child, args=args) for _ in range(2)]
    for child in children:
        child.start()
    roots = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=60)
        assert child.exitcode == 0
    gets = log.read_text().splitlines()
    assert len(gets) == len(set(gets)) == count
    assert roots[0] == roots[1]
    cache = Path(roots[0])
    assert not [p for p in cache.rglob(".*") if p.name != MARKER], "temporary files left"
    for path in dtd.rglob("*"):
        if path.is_file():
            assert (cache / path.relative_to(dtd)).read_bytes() == path.read_bytes()


def test_an_empty_prefix_names_the_uri_and_is_not_marked_synced(s3, dtd):
    s3.client.put_object(Bucket=BUCKET, Key="datasets/dtd-other/x.txt", Body=b"x")
    with pytest.raises(EmptyPrefixError, match=f"s3://{BUCKET}/datasets/dtd: no objects"):
        PAPER_DATASETS.get("dtd").open(s3.uri("datasets/dtd"), "test")
    assert issubclass(EmptyPrefixError, DatasetLayoutError)
    s3.upload_tree(dtd, "datasets/dtd")  # uploaded later: the next call syncs
    assert len(PAPER_DATASETS.get("dtd").open(s3.uri("datasets/dtd"), "test")) == 2


@pytest.mark.parametrize("key", ["datasets/a/../../../../../../x.txt", "datasets//tmp/x.txt"])
def test_a_key_that_would_escape_the_cache_is_refused(s3, tmp_path, key):
    s3.client.put_object(Bucket=BUCKET, Key="datasets/a/ok.txt", Body=b"ok")
    s3.client.put_object(Bucket=BUCKET, Key=key, Body=b"bad")
    listed = s3.client.list_objects_v2(Bucket=BUCKET, Prefix="datasets/")
    assert key in [o["Key"] for o in listed["Contents"]]  # the server kept the key as is
    with pytest.raises(UnsafePathError, match="refusing"):
        local_root(s3.uri("datasets"))
    assert not list(tmp_path.rglob("*.txt"))  # refused before anything was downloaded


def test_listing_follows_every_page(s3, monkeypatch):
    for i in range(10):
        s3.client.put_object(Bucket=BUCKET, Key=f"many/{i:02d}.bin", Body=bytes([i]) * i)
    assert s3.client.list_objects_v2(Bucket=BUCKET, Prefix="many/", MaxKeys=3)["IsTruncated"]
    monkeypatch.setattr(remote, "LIST_PAGE_SIZE", 3)
    cache = local_root(s3.uri("many"))
    assert sorted(p.name for p in cache.glob("*.bin")) == [f"{i:02d}.bin" for i in range(10)]
    assert (cache / "07.bin").read_bytes() == bytes([7]) * 7


def test_local_roots_pass_through_and_uri_credentials_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert local_root("data/dtd") == tmp_path.resolve() / "data/dtd"
    assert not (tmp_path / "data").exists()
    with pytest.raises(CredentialsInUriError, match="credentials"):
        local_root("s3://bucket/dtd?access_key=AKIA")


@pytest.mark.parametrize("fault", ["corrupt", "truncate", "reset", "503"])
def test_a_sync_through_s3_faults_is_byte_for_byte_whole(s3, dtd, fault):
    """A flipped byte used to pass: only the length was checked, and nothing retried."""
    count = s3.upload_tree(dtd, "datasets/dtd")
    for proxy in fault_proxy(s3):
        proxy.configure(schedule=[None] + [fault] * 3)  # the listing, then three GETs
        cache = local_root(proxy.uri("datasets/dtd"))
        assert proxy.injected[fault] == 3
    files = [p for p in dtd.rglob("*") if p.is_file()]
    assert len(files) == count
    for path in files:
        assert (cache / path.relative_to(dtd)).read_bytes() == path.read_bytes(), path
    assert not [p for p in cache.rglob(".*") if p.name != MARKER], "temporary files left"
