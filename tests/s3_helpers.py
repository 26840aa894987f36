"""A real S3-compatible server on localhost (moto's server mode) for tests that need S3."""

from __future__ import annotations

import http.client
import random
import socket
import struct
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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


# -- a fault-injecting proxy in front of the S3 server -------------------------------------
FAULTS = ("reset", "500", "503", "slow", "truncate", "corrupt")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te"}


class FaultProxy:
    """An HTTP proxy to the S3 server that breaks some requests, the way a flaky network or an
    overloaded S3 does: `reset` (the connection reset, before the request reaches S3 or after
    S3 applied it, alternately), `500`/`503` answers, `slow` answers (`slow_s`), `truncate`
    (half the body, then the connection closed) and `corrupt` (a byte of an object's body
    flipped).

    Faults come from `schedule` (one entry per request, None for none) while it lasts, then at
    `rate` from `kinds`. `agent` limits them to requests whose User-Agent contains it."""

    def __init__(self, upstream_port: int, *, seed: int = 0, slow_s: float = 1.5) -> None:
        self.upstream_port = upstream_port
        self.rate, self.kinds, self.schedule, self.agent = 0.0, FAULTS, [], ""
        self.slow_s = slow_s
        self.injected: Counter = Counter()
        self.requests = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._resets = 0
        proxy = self

        class Handler(_ProxyHandler):
            owner = proxy

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def configure(self, *, rate=None, kinds=None, schedule=None, agent=None) -> None:
        with self._lock:
            if rate is not None:
                self.rate = rate
            if kinds is not None:
                self.kinds = tuple(kinds)
            if schedule is not None:
                self.schedule = list(schedule)
            if agent is not None:
                self.agent = agent

    def uri(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}?endpoint_override=127.0.0.1:{self.port}&scheme=http"

    def pick(self, user_agent: str) -> str | None:
        with self._lock:
            self.requests += 1
            if self.agent and self.agent not in user_agent:
                return None
            if self.schedule:
                fault = self.schedule.pop(0)
            elif self.rate and self._random.random() < self.rate:
                fault = self._random.choice(self.kinds)
            else:
                fault = None
            if fault:
                self.injected[fault] += 1
            return fault

    def reset_before(self) -> bool:
        with self._lock:
            self._resets += 1
            return self._resets % 2 == 1

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _error_body(code: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>injected by the test proxy</Message></Error>"
    ).encode()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: FaultProxy

    def log_message(self, *args) -> None:  # quiet: the tests' output is for failures
        pass

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reset(self) -> None:
        # SO_LINGER 0: close() sends a TCP RST, as a dropped connection does.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True
        self.connection.close()

    def _forward(self, body: bytes):
        upstream = http.client.HTTPConnection("127.0.0.1", self.owner.upstream_port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers["Content-Length"] = str(len(body))
        upstream.request(self.command, self.path, body=body, headers=headers)
        response = upstream.getresponse()
        data = response.read()
        upstream.close()
        return response, data

    def _answer(self, status: int, headers, data: bytes, *, length: int | None = None) -> None:
        self.send_response(status)
        for key, value in headers:
            if key.lower() not in _HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data) if length is None else length))
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        body = self._body()
        fault = self.owner.pick(self.headers.get("User-Agent", ""))
        if fault == "reset" and self.owner.reset_before():
            return self._reset()
        if fault in ("500", "503"):
            code = "InternalError" if fault == "500" else "SlowDown"
            return self._answer(
                int(fault), [("Content-Type", "application/xml")], _error_body(code)
            )
        if fault == "slow":
            time.sleep(self.owner.slow_s)
        response, data = self._forward(body)
        if fault == "reset":  # S3 applied the request; its answer is lost
            return self._reset()
        headers = response.getheaders()
        if self.command == "HEAD":  # no body, but the object's length stays in the header
            self.send_response(response.status)
            for key, value in headers:
                if key.lower() not in _HOP_BY_HOP - {"content-length"}:
                    self.send_header(key, value)
            self.end_headers()
            return
        if fault == "truncate":  # an empty answer is cut short too: it promises bytes
            length = max(len(data), 64)
            self._answer(response.status, headers, data[: len(data) // 2], length=length)
            self.wfile.flush()
            return self._reset()
        if fault == "corrupt" and data and not data.startswith(b"<?xml"):
            # Object bytes only: a garbled API answer (XML) is TLS's to prevent, not ours.
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        self._answer(response.status, headers, data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


def fault_proxy(server: S3) -> Iterator[FaultProxy]:
    proxy = FaultProxy(server.port)
    yield proxy
    proxy.stop()
