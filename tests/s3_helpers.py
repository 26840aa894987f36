"""A real S3-compatible server on localhost (moto's server mode) for tests that need S3."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

BUCKET = "datasets-bucket"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3:
    def __init__(self, port: int) -> None:
        self.port = port
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
        self.server.start()
        self.running = True
        self.reset()
        self.client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}")
        self.client.create_bucket(Bucket=BUCKET)

    def uri(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}?endpoint_override=127.0.0.1:{self.port}&scheme=http"

    def upload_tree(self, local: Path, prefix: str) -> int:
        files = [p for p in sorted(local.rglob("*")) if p.is_file()]
        for path in files:
            key = f"{prefix}/{path.relative_to(local).as_posix()}"
            self.client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
        return len(files)

    def reset(self) -> None:
        # moto keeps its buckets in process-wide state that outlives a server: start clean
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/moto-api/reset", method="POST"
        )
        urllib.request.urlopen(request, timeout=10).close()

    def stop(self) -> None:
        if self.running:
            self.reset()
            self.server.stop()
            self.running = False


def s3_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[S3]:
    """Credentials and the node cache set for the test; the server stopped after it."""
    for key, value in CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SPARSE_TRANSFER_CACHE", str(tmp_path / "cache"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = S3(port)
    yield server
    server.stop()
