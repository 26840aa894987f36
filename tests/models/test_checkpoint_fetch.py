"""Remote checkpoints are fetched once per node, atomically, with retries and a sha256 check.

Only local things: an `http.server` on 127.0.0.1 that counts its requests, and a moto S3
server on 127.0.0.1 (random ports, bounded requests, stopped at the end).
"""

from __future__ import annotations

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from s3_helpers import BUCKET, s3_server

from sparse_transfer.models.errors import ChecksumMismatchError
from sparse_transfer.models.fetch import FetchError, fetch

PAYLOAD = b"weights " * 50_000  # 400 kB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


class Server:
    """Serves PAYLOAD at /ok.pth (slowly), fails /flaky.pth `fail_first` times, 404s others."""

    def __init__(self, delay_s: float = 0.3, fail_first: int = 0) -> None:
        self.requests: list[str] = []
        self.fail_first = fail_first
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.requests.append(self.path)
                if self.path == "/flaky.pth" and server.fail_first > 0:
                    server.fail_first -= 1
                    self.send_error(503)
                    return
                if self.path not in ("/ok.pth", "/flaky.pth"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(PAYLOAD)))
                self.end_headers()
                time.sleep(delay_s)  # long enough for a second fetch to arrive meanwhile
                self.wfile.write(PAYLOAD)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_two_concurrent_fetches_on_a_node_make_one_download(tmp_path):
    results = []
    with Server() as server:
        threads = [
            threading.Thread(
                target=lambda: results.append(
                    fetch(f"{server.url}/ok.pth", sha256=SHA, cache_dir=tmp_path)
                )
            )
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        again = fetch(f"{server.url}/ok.pth", sha256=SHA, cache_dir=tmp_path)
    assert server.requests == ["/ok.pth"]
    assert len(results) == 2 and results[0] == results[1] == again
    assert again.read_bytes() == PAYLOAD and again.name == "ok.pth"
    assert not [p for p in again.parent.iterdir() if p.name.endswith(".tmp")]


def test_server_errors_are_retried_with_backoff(tmp_path):
    with Server(delay_s=0, fail_first=2) as server:
        path = fetch(f"{server.url}/flaky.pth", cache_dir=tmp_path, backoff_s=0.01)
    assert server.requests == ["/flaky.pth"] * 3 and path.read_bytes() == PAYLOAD


def test_retries_are_bounded_and_a_404_is_not_retried(tmp_path):
    with Server(delay_s=0, fail_first=10) as server:
        with pytest.raises(FetchError, match="failed after 3 attempts"):
            fetch(f"{server.url}/flaky.pth", cache_dir=tmp_path, retries=2, backoff_s=0.01)
        with pytest.raises(FetchError, match="HTTP 404"):
            fetch(f"{server.url}/missing.pth", cache_dir=tmp_path, backoff_s=0.01)
    assert server.requests == ["/flaky.pth"] * 3 + ["/missing.pth"]


def test_a_download_with_the_wrong_sha256_never_lands_in_the_cache(tmp_path):
    with Server(delay_s=0) as server, pytest.raises(ChecksumMismatchError, match="not the decl"):
        fetch(f"{server.url}/ok.pth", sha256="f" * 64, cache_dir=tmp_path)
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")]


def test_local_paths_pass_through_and_are_verified(tmp_path):
    path = tmp_path / "local.pth"
    path.write_bytes(PAYLOAD)
    assert fetch(path, sha256=SHA) == path
    assert fetch(f"file://{path}") == path
    with pytest.raises(ChecksumMismatchError):
        fetch(path, sha256="0" * 64)
    with pytest.raises(FileNotFoundError):
        fetch(tmp_path / "absent.pth")
    with pytest.raises(ValueError, match="unsupported checkpoint source"):
        fetch("gs://bucket/x.pth")


@pytest.fixture
def s3(monkeypatch, tmp_path):
    """A moto S3 server on 127.0.0.1 with PAYLOAD at ckpt/model.pth of its bucket."""
    for server in s3_server(monkeypatch, tmp_path):
        server.client.put_object(Bucket=BUCKET, Key="ckpt/model.pth", Body=PAYLOAD)
        yield server


def test_s3_sources_are_fetched_once_into_the_cache(s3, tmp_path, monkeypatch):
    endpoint, url = f"http://127.0.0.1:{s3.port}", f"s3://{BUCKET}/ckpt/model.pth"
    path = fetch(url, sha256=SHA, cache_dir=tmp_path, s3_endpoint_url=endpoint)
    assert path.read_bytes() == PAYLOAD
    s3.client.delete_object(Bucket=BUCKET, Key="ckpt/model.pth")  # a second fetch must not need it
    assert fetch(url, sha256=SHA, cache_dir=tmp_path) == path
    s3.client.put_object(Bucket=BUCKET, Key="ckpt/other.pth", Body=b"other")
    other = f"s3://{BUCKET}/ckpt/other.pth"
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)  # the endpoint from the environment
    assert fetch(other, cache_dir=tmp_path).read_bytes() == b"other"


def test_an_s3_endpoint_may_come_in_the_uri_as_for_sweep_storage(s3, tmp_path):
    # s3://bucket/key?endpoint_override=HOST:PORT&scheme=http, as `checkpoint_root` takes it
    path = fetch(s3.uri("ckpt/model.pth"), sha256=SHA, cache_dir=tmp_path)
    assert path.read_bytes() == PAYLOAD and path.name == "model.pth"


def test_a_missing_s3_object_fails_without_retrying(s3, tmp_path):
    with pytest.raises(FetchError, match="S3 (404|NoSuchKey)"):
        fetch(s3.uri("absent.pth"), cache_dir=tmp_path, backoff_s=5)
