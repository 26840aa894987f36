"""Bring a remote checkpoint to this node once: every trial on the node reads the same copy.

`fetch(source)` returns a local path. Local paths pass through; `https://` (urllib) and `s3://`
(boto3, standard retry mode) are downloaded into `cache_dir/<sha256(url)[:32]>/<file name>`
under a file lock, so concurrent trials on one node wait for the one download instead of
starting their own. The download goes to a temporary name, is checked against the declared
sha256 and only then renamed into place (atomic), so nobody ever reads half a file.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from sparse_transfer.models.checkpoint import file_sha256
from sparse_transfer.models.errors import ChecksumMismatchError
from sparse_transfer.paths import check_uri, safe_join

__all__ = ["CACHE_ENV", "FetchError", "default_cache_dir", "fetch", "verify_sha256"]

CACHE_ENV = "SPARSE_TRANSFER_CACHE"
_CHUNK = 1 << 20


class FetchError(OSError):
    """A remote checkpoint could not be downloaded (after retries, where retrying helps)."""


def default_cache_dir() -> Path:
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sparse-transfer"
    return Path(root) / "checkpoints"


def verify_sha256(path: Path, expected: str | None) -> str:
    """The file's sha256; raises if `expected` is given and differs."""
    actual = file_sha256(path)
    if expected and actual != expected.lower():
        raise ChecksumMismatchError(
            f"{path}: sha256 {actual} is not the declared {expected.lower()}"
        )
    return actual


def fetch(
    source: str | Path,
    *,
    sha256: str | None = None,
    cache_dir: Path | None = None,
    retries: int = 4,
    backoff_s: float = 1.0,
    s3_endpoint_url: str | None = None,
) -> Path:
    """A local path holding `source`'s bytes (verified against `sha256` when given)."""
    text = str(source)
    scheme = urlparse(text).scheme
    if scheme in ("", "file"):
        path = Path(urlparse(text).path if scheme == "file" else text)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        if sha256:  # hashing a 100 MB file for nothing to compare against is wasted time
            verify_sha256(path, sha256)
        return path
    check_uri(text, "checkpoint")  # a URI's credentials would end up in logs and errors
    if scheme in ("http", "https"):
        download = _http_download
    elif scheme == "s3":
        download = _s3_downloader(s3_endpoint_url or _endpoint_of(text))
    else:
        raise ValueError(f"unsupported checkpoint source {text!r}: use a path, https:// or s3://")
    return _cached(text, download, sha256, cache_dir or default_cache_dir(), retries, backoff_s)


def _cached(
    url: str,
    download: Callable[[str, Path], None],
    sha256: str | None,
    cache_dir: Path,
    retries: int,
    backoff_s: float,
) -> Path:
    key = hashlib.sha256(url.encode()).hexdigest()[:32]
    name = Path(urlparse(url).path).name or "checkpoint"
    final = safe_join(cache_dir, key, name, where=f"checkpoint {url}")  # e.g. s3://b/..
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if final.is_file():
            try:
                verify_sha256(final, sha256)
                return final
            except ChecksumMismatchError:
                final.unlink()  # a stale or damaged copy: fetch it again
        tmp = final.with_name(f".{name}.{uuid.uuid4().hex}.tmp")
        try:
            _with_retries(lambda: download(url, tmp), url, retries, backoff_s)
            verify_sha256(tmp, sha256)
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
    return final


def _with_retries(attempt: Callable[[], None], url: str, retries: int, backoff_s: float) -> None:
    for number in range(retries + 1):
        try:
            attempt()
            return
        except _Permanent as err:
            raise FetchError(f"{url}: {err}") from None
        except Exception as err:
            if number == retries:
                raise FetchError(f"{url}: failed after {retries + 1} attempts: {err}") from err
            time.sleep(backoff_s * 2**number)


class _Permanent(Exception):
    """An answer that retrying cannot change (404, 403, ...)."""


def _http_download(url: str, dest: Path) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "sparse-transfer"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response, open(dest, "wb") as out:
            while block := response.read(_CHUNK):
                out.write(block)
    except urllib.error.HTTPError as err:
        if 400 <= err.code < 500 and err.code not in (408, 429):
            raise _Permanent(f"HTTP {err.code} {err.reason}") from None
        raise


def _endpoint_of(url: str) -> str | None:
    """An S3-compatible endpoint given in the URI's query, as the sweep storage takes it:
    s3://bucket/key?endpoint_override=HOST:PORT&scheme=http."""
    query = {k: v[-1] for k, v in parse_qs(urlparse(url).query).items()}
    if "endpoint_override" not in query:
        return None
    return f"{query.get('scheme', 'https')}://{query['endpoint_override']}"


def _s3_downloader(endpoint_url: str | None) -> Callable[[str, Path], None]:
    def download(url: str, dest: Path) -> None:
        import boto3
        from botocore.config import Config
        from botocore.exceptions import ClientError

        parsed = urlparse(url)
        client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,  # None: AWS_ENDPOINT_URL(_S3) or AWS itself
            config=Config(retries={"mode": "standard", "max_attempts": 5}),
        )
        try:
            client.download_file(parsed.netloc, parsed.path.lstrip("/"), str(dest))
        except ClientError as err:
            code = str(err.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NoSuchBucket", "403", "AccessDenied"):
                raise _Permanent(f"S3 {code}: {err}") from None
            raise

    return download
