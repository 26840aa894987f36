"""S3 errors during transfers: Storage talks to a moto server through a proxy that resets
connections, answers 500 and 503, answers slowly, cuts bodies short and corrupts them."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from s3_helpers import BUCKET, FAULTS, fault_proxy, s3_server

from sparse_transfer.storage import Storage, StorageError

s3 = pytest.fixture(s3_server)


@pytest.fixture
def proxy(s3):
    yield from fault_proxy(s3)


def _sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _expected(fault: str) -> int:
    """Faults met: a slow answer is only late, the rest make the request go again."""
    return 1 if fault == "slow" else 2


@pytest.fixture
def payload() -> bytes:
    return os.urandom(300_000)


# An upload's answer has no body to corrupt (a corrupted upload body would be S3's to refuse:
# moto does not verify checksums on upload, real S3 does).
@pytest.mark.parametrize("fault", [f for f in FAULTS if f != "corrupt"])
def test_upload_through_faults_is_whole_and_checksummed(s3, proxy, tmp_path, payload, fault):
    store = Storage(proxy.uri("study"))
    path = store.local("trials", "t1", "state.pt")
    path.parent.mkdir(parents=True)
    path.write_bytes(payload)
    proxy.configure(schedule=[fault, fault])
    store.upload("trials", "t1", "state.pt")
    assert proxy.injected[fault] == _expected(fault)
    head = s3.client.head_object(
        Bucket=BUCKET, Key="study/trials/t1/state.pt", ChecksumMode="ENABLED"
    )
    assert head["ChecksumSHA256"] == _sha256(payload)
    stored = s3.client.get_object(Bucket=BUCKET, Key="study/trials/t1/state.pt")["Body"].read()
    assert stored == payload


@pytest.mark.parametrize("fault", FAULTS)
def test_download_through_faults_is_verified(s3, proxy, tmp_path, payload, fault):
    digest = _sha256(payload)
    s3.client.put_object(
        Bucket=BUCKET,
        Key="study/report/summary.csv",
        Body=payload,
        ChecksumAlgorithm="SHA256",
        ChecksumSHA256=digest,
    )
    store = Storage(proxy.uri("study"))
    proxy.configure(schedule=[fault, fault])
    assert store.download("report", "summary.csv")
    assert proxy.injected[fault] == _expected(fault)
    assert store.local("report", "summary.csv").read_bytes() == payload
    assert sorted(p.name for p in store.local("report").iterdir()) == ["summary.csv"]


@pytest.mark.parametrize("fault", ["truncate", "corrupt"])
def test_a_download_that_never_verifies_fails_and_leaves_no_partial_file(
    s3, proxy, payload, fault
):
    """An object put without a SHA-256 (by another tool) is checked against its MD5 ETag."""
    s3.client.put_object(Bucket=BUCKET, Key="study/trials/t1/state.pt", Body=payload)
    store = Storage(proxy.uri("study"))
    old = store.local("trials", "t1", "state.pt")
    old.parent.mkdir(parents=True)
    old.write_bytes(b"the previous whole state")
    proxy.configure(rate=1.0, kinds=[fault])
    with pytest.raises(StorageError, match=r"download of s3://.*state.pt failed 6 times"):
        store.download("trials", "t1", "state.pt")
    assert old.read_bytes() == b"the previous whole state"
    assert [p.name for p in old.parent.iterdir()] == ["state.pt"]


def test_a_missing_object_is_no_error_through_faults(s3, proxy):
    store = Storage(proxy.uri("study"))
    proxy.configure(schedule=["503", "reset"])
    assert not store.download("nothing", "here.pt")


# A missing object's answer is a small XML error body that botocore reads whole before it
# looks at the status: a body cut short there surfaced as urllib3's raw ProtocolError, which
# nothing retried (seen as a final run failing in the S3 sweep-faults test).
@pytest.mark.parametrize("fault", FAULTS)
def test_a_missing_object_through_faults_is_reported_missing(s3, proxy, fault):
    store = Storage(proxy.uri("study"))
    proxy.configure(schedule=[fault, fault])
    assert not store.download("trials", "t1", "result.json")
    assert proxy.injected[fault] >= 1
    assert not store.local("trials", "t1").exists() or not any(store.local("trials").rglob("*"))


@pytest.mark.parametrize("fault", FAULTS)
def test_listing_and_removal_through_faults(s3, proxy, fault):
    for name in ("state.pt", "result.json", "weights.safetensors"):
        s3.client.put_object(Bucket=BUCKET, Key=f"study/trials/t1/{name}", Body=b"x" * 10)
    store = Storage(proxy.uri("study"))
    proxy.configure(schedule=[fault, fault])
    assert store.list_objects("trials", "t1") == [
        ("result.json", 10),
        ("state.pt", 10),
        ("weights.safetensors", 10),
    ]
    assert proxy.injected[fault] >= 1
    proxy.configure(schedule=[fault, fault])
    store.remove("trials", "t1")
    assert s3.client.list_objects_v2(Bucket=BUCKET, Prefix="study/trials/").get("KeyCount") == 0
