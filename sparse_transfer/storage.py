"""Where a study's durable files live: a local directory or an S3 prefix.

Work always happens in a node-local directory. For local storage that directory *is* the
storage; for `s3://bucket/prefix` it is a mirror under the node cache
($SPARSE_TRANSFER_CACHE, default ~/.cache/sparse-transfer), and S3 holds the durable copies:
files are uploaded once complete (an S3 PUT is atomic, so a reader never sees half a file)
with a SHA-256 checksum the server verifies, and downloaded when a node lacks them.

An S3 endpoint for S3-compatible stores comes from the URI's query, as Ray Tune takes it:
`s3://bucket/prefix?endpoint_override=HOST:PORT&scheme=http`. Credentials come only from the
environment or instance roles: a URI that carries keys is refused.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from sparse_transfer.paths import check_bucket, check_uri, safe_join, safe_parts

__all__ = ["Storage", "StorageError"]

_ALLOWED_PARAMS = {"endpoint_override", "scheme", "region"}
_ATTEMPTS = 6  # whole-object attempts, each with botocore's own retries inside
_TRANSIENT_CODES = {"InternalError", "ServiceUnavailable", "SlowDown", "RequestTimeout"}


class StorageError(ValueError):
    """A storage URI that cannot be used; the message says why."""


class Storage:
    def __init__(self, uri: str) -> None:
        self.uri = check_uri(uri, "storage")
        parsed = urlparse(uri)
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        if parsed.scheme in ("", "file"):
            self.kind = "local"
            self.local_root = Path(parsed.path if parsed.scheme else uri).expanduser().resolve()
            # Absolute from here on: Ray workers run in other directories than the driver.
            self.uri = str(self.local_root)
            self.bucket = self.prefix = ""
        elif parsed.scheme == "s3":
            unknown = set(query) - _ALLOWED_PARAMS
            if unknown:
                raise StorageError(
                    f"storage: unknown S3 URI parameters {sorted(unknown)}; "
                    f"valid: {sorted(_ALLOWED_PARAMS)}"
                )
            if not parsed.netloc:
                raise StorageError(f"storage: {uri!r} names no bucket")
            self.kind = "s3"
            # The bucket and prefix name the local mirror's folder: they must stay inside it.
            self.bucket = check_bucket(parsed.netloc)
            self.prefix = "/".join(safe_parts(parsed.path.strip("/"), where="storage"))
            cache = Path(os.environ.get("SPARSE_TRANSFER_CACHE", "~/.cache/sparse-transfer"))
            self.local_root = safe_join(
                cache.expanduser().resolve() / "s3", self.bucket, self.prefix, where="storage"
            )
        else:
            raise StorageError(
                f"storage: unsupported scheme {parsed.scheme!r}; use a local "
                "path or s3://bucket/prefix"
            )
        self._query = query
        self._client = None

    def __getstate__(self) -> dict:  # boto3 clients don't pickle; Ray ships this object
        return {"uri": self.uri}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["uri"])

    @property
    def is_remote(self) -> bool:
        return self.kind == "s3"

    def local(self, *parts: str) -> Path:
        # Parts may come from a bucket listing or a command line: never outside the root.
        return safe_join(self.local_root, *parts, where=self.display())

    def key(self, *parts: str) -> str:
        return "/".join(safe_parts(self.prefix, *parts, where=self.display()))

    def display(self, *parts: str) -> str:
        where = f"s3://{self.bucket}/{self.prefix}" if self.is_remote else str(self.local_root)
        return "/".join([where.rstrip("/"), *parts]) if parts else where

    def child(self, *parts: str) -> str:
        """The URI of a sub-path, with the same endpoint parameters."""
        if not self.is_remote:
            return str(self.local(*parts))
        query = "&".join(f"{k}={v}" for k, v in self._query.items())
        return f"s3://{self.bucket}/{self.key(*parts)}" + (f"?{query}" if query else "")

    # -- S3 transfer (no-ops for local storage) --------------------------------------------
    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            endpoint = None
            if "endpoint_override" in self._query:
                endpoint = (
                    f"{self._query.get('scheme', 'https')}://{self._query['endpoint_override']}"
                )
            self._client = boto3.client(
                "s3",
                endpoint_url=endpoint,
                region_name=self._query.get("region"),
                config=Config(
                    retries={"mode": "standard", "max_attempts": 10},
                    connect_timeout=10,
                    read_timeout=60,
                ),
            )
        return self._client

    def upload(self, *parts: str, if_absent: bool = False) -> bool:
        """Copy a complete local file to S3 as one whole object (a PUT is atomic: a reader sees
        the old object or the new one, never half), with its SHA-256, which S3 verifies on
        receipt and downloads verify again. Retried on top of botocore's own retries.

        `if_absent`: a conditional write (`If-None-Match: *`) that never replaces an object;
        False when the key holds other bytes (another writer's), True when it holds these
        (written, or written by an attempt whose answer was lost)."""
        if not self.is_remote:
            return True
        path = self.local(*parts)
        body = path.read_bytes()
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self._retrying(
                f"upload of {self.display(*parts)}",
                lambda: self.client.put_object(
                    Bucket=self.bucket,
                    Key=self.key(*parts),
                    Body=body,
                    ChecksumAlgorithm="SHA256",
                    ChecksumSHA256=digest,
                    **extra,
                ),
            )
        except Exception as err:
            if not (if_absent and _precondition_failed(err)):
                raise
            return self.etags(*parts[:-1]).get(parts[-1]) == hashlib.md5(body).hexdigest()
        return True

    def etags(self, *parts: str) -> dict[str, str]:
        """Name (relative to `parts`) -> MD5 hex of each S3 object under `parts` put whole
        (the ETag S3 gives a single PUT), without downloading any."""
        prefix = f"{self.key(*parts)}/" if self.key(*parts) else ""

        def listing() -> dict[str, str]:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            return {
                item["Key"][len(prefix) :]: item["ETag"].strip('"')
                for page in pages
                for item in page.get("Contents", [])
            }

        return self._retrying(f"listing of {self.display(*parts)}", listing)

    def delete(self, *parts: str) -> None:
        """Delete one object (or local file); deleting what is gone is harmless."""
        if not self.is_remote:
            self.local(*parts).unlink(missing_ok=True)
            return
        self._retrying(
            f"removal of {self.display(*parts)}",
            lambda: self.client.delete_object(Bucket=self.bucket, Key=self.key(*parts)),
        )

    def download(self, *parts: str) -> bool:
        """Fetch a file to the local mirror if S3 has it; True when it is there locally. The
        bytes go to a temporary file, checked against the object's stored SHA-256 (or its MD5
        ETag for objects put without one) and its length, and only then renamed into place:
        a reader never sees a partial or corrupt file."""
        path = self.local(*parts)
        if not self.is_remote:
            return path.is_file()
        return self.download_to(path, *parts)

    def download_to(self, path: Path, *parts: str) -> bool:
        """`download`, into `path` instead of the local mirror (S3 storage only): retried,
        verified, renamed into place whole. False if S3 has no such object."""
        return self._retrying(
            f"download of {self.display(*parts)}", lambda: self._fetch(path, parts)
        )

    def _fetch(self, path: Path, parts: tuple[str, ...]) -> bool:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(
                Bucket=self.bucket, Key=self.key(*parts), ChecksumMode="ENABLED"
            )
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return False
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.download")
        try:
            sha256, md5, size = hashlib.sha256(), hashlib.md5(), 0
            with open(tmp, "wb") as handle:
                for chunk in response["Body"].iter_chunks(1 << 20):
                    sha256.update(chunk)
                    md5.update(chunk)
                    size += len(chunk)
                    handle.write(chunk)
            _verify(response, size, sha256, md5, self.display(*parts))
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return True

    def _retrying(self, what: str, call):
        """`call()`, again after a transient failure that botocore's retries did not absorb
        (a body cut short, a checksum mismatch, a reset after its last attempt)."""
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return call()
            except Exception as err:
                if not _transient(err):
                    raise
                if attempt == _ATTEMPTS:
                    raise StorageError(
                        f"storage: {what} failed {_ATTEMPTS} times; the last error: {err}"
                    ) from err
                time.sleep(min(0.1 * 2**attempt, 3.0))
        raise AssertionError("unreachable")

    def list_objects(self, *parts: str, page_size: int = 1000) -> list[tuple[str, int]]:
        """(path relative to `parts`, size) of every file under `parts`, in S3 or on local
        disk; S3's "folder" placeholder keys are skipped."""
        if not self.is_remote:
            base = self.local(*parts)
            files = [p for p in base.rglob("*") if p.is_file()] if base.is_dir() else []
            return sorted((p.relative_to(base).as_posix(), p.stat().st_size) for p in files)
        prefix = f"{self.key(*parts)}/" if self.key(*parts) else ""

        def listing() -> list[tuple[str, int]]:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}
            )
            return sorted(
                (item["Key"][len(prefix) :], item["Size"])
                for page in pages
                for item in page.get("Contents", [])
                if not item["Key"].endswith("/")
            )

        return self._retrying(f"listing of {self.display(*parts)}", listing)

    def exists(self, *parts: str) -> bool:
        if not self.is_remote:
            return self.local(*parts).exists()
        listed = self._retrying(
            f"listing of {self.display(*parts)}",
            lambda: self.client.list_objects_v2(
                Bucket=self.bucket, Prefix=self.key(*parts), MaxKeys=1
            ),
        )
        return listed.get("KeyCount", 0) > 0

    # -- Ray Tune ---------------------------------------------------------------------------
    def tune_location(self, *parts: str) -> tuple[str, object | None]:
        """(storage_path, storage_filesystem) for a Tune experiment under `parts`."""
        if not self.is_remote:
            return str(self.local(*parts)), None
        import pyarrow.fs

        kwargs = {}
        if "endpoint_override" in self._query:
            kwargs["endpoint_override"] = self._query["endpoint_override"]
            kwargs["scheme"] = self._query.get("scheme", "https")
        if "region" in self._query:
            kwargs["region"] = self._query["region"]
        # Tune's own transfers retry too, like botocore's for ours.
        kwargs["retry_strategy"] = pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=10)
        return f"{self.bucket}/{self.key(*parts)}", pyarrow.fs.S3FileSystem(**kwargs)

    def remove(self, *parts: str) -> None:
        """Delete the folder `parts`: every object under it in S3, or the local directory."""
        if not self.is_remote:
            shutil.rmtree(self.local(*parts), ignore_errors=True)
            return
        prefix = f"{self.key(*parts)}/"

        def listing() -> list[str]:  # every key, the "folder" placeholders too
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=prefix
            )
            return [item["Key"] for page in pages for item in page.get("Contents", [])]

        keys = self._retrying(f"listing of {self.display(*parts)}", listing)
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            self._retrying(  # deleting twice is harmless
                f"removal of {self.display(*parts)}",
                lambda batch=batch: self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch}
                ),
            )


class _Corrupt(OSError):
    """A downloaded object that does not match its stored checksum or length."""


def _verify(response: dict, size: int, sha256, md5, where: str) -> None:
    expected = response.get("ContentLength")
    if expected is not None and size != expected:
        raise _Corrupt(f"{where}: got {size} of {expected} bytes")
    stored = response.get("ChecksumSHA256", "")
    if stored and "-" not in stored:  # "-N" marks a checksum of parts, not of the object
        if base64.b64encode(sha256.digest()).decode() != stored:
            raise _Corrupt(f"{where}: SHA-256 does not match the stored checksum")
        return
    etag = response.get("ETag", "").strip('"')
    if len(etag) == 32 and "-" not in etag and md5.hexdigest() != etag:
        raise _Corrupt(f"{where}: MD5 does not match the object's ETag")


def _precondition_failed(err: BaseException) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(err, ClientError) and (
        err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 412
        or err.response.get("Error", {}).get("Code") == "PreconditionFailed"
    )


def _transient(err: BaseException) -> bool:
    import http.client

    from botocore.exceptions import (
        BotoCoreError,
        ClientError,
        ConnectionError,
        FlexibleChecksumError,
        HTTPClientError,
        IncompleteReadError,
        ResponseStreamingError,
    )
    from urllib3.exceptions import IncompleteRead, ProtocolError, ReadTimeoutError

    if isinstance(err, ClientError):
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return status >= 500 or err.response.get("Error", {}).get("Code") in _TRANSIENT_CODES
    transient = (
        ConnectionError,  # refused, reset, timed out connecting
        HTTPClientError,  # closed mid-answer, read timeouts
        FlexibleChecksumError,
        IncompleteReadError,
        ResponseStreamingError,
        _Corrupt,
        # A body botocore reads whole before looking at the status (an error answer, a
        # listing) cut short: urllib3's own errors, not wrapped by botocore there.
        ProtocolError,
        IncompleteRead,
        ReadTimeoutError,
        http.client.IncompleteRead,
    )
    return isinstance(err, transient) or (
        isinstance(err, BotoCoreError) and "timeout" in type(err).__name__.lower()
    )
