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
from pathlib import Path
from urllib.parse import parse_qs, urlparse

__all__ = ["Storage", "StorageError"]

_SECRET_PARAMS = {
    "access_key",
    "secret_key",
    "session_token",
    "aws_access_key_id",
    "aws_secret_access_key",
}
_ALLOWED_PARAMS = {"endpoint_override", "scheme", "region"}


class StorageError(ValueError):
    """A storage URI that cannot be used; the message says why."""


class Storage:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        parsed = urlparse(uri)
        query = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        if set(query) & _SECRET_PARAMS:
            raise StorageError(
                "storage: credentials do not belong in a storage URI; set AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY in the environment or use an instance role"
            )
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
            self.bucket, self.prefix = parsed.netloc, parsed.path.strip("/")
            cache = Path(os.environ.get("SPARSE_TRANSFER_CACHE", "~/.cache/sparse-transfer"))
            self.local_root = cache.expanduser().resolve() / "s3" / self.bucket / self.prefix
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
        return self.local_root.joinpath(*parts)

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def display(self, *parts: str) -> str:
        return (
            f"s3://{self.bucket}/{self.key(*parts)}" if self.is_remote else str(self.local(*parts))
        )

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
                config=Config(retries={"mode": "standard", "max_attempts": 8}),
            )
        return self._client

    def upload(self, *parts: str) -> None:
        """Copy a complete local file to S3, checksummed; S3 verifies it on receipt."""
        if not self.is_remote:
            return
        path = self.local(*parts)
        body = path.read_bytes()
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.key(*parts),
            Body=body,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=digest,
        )

    def download(self, *parts: str) -> bool:
        """Fetch a file to the local mirror if S3 has it; True when it is there locally."""
        path = self.local(*parts)
        if not self.is_remote:
            return path.is_file()
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key(*parts))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return False
            raise
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.download")
        with open(tmp, "wb") as handle:
            shutil.copyfileobj(response["Body"], handle)
        os.replace(tmp, path)
        return True

    def list_objects(self, *parts: str, page_size: int = 1000) -> list[tuple[str, int]]:
        """(path relative to `parts`, size) of every file under `parts`, in S3 or on local
        disk; S3's "folder" placeholder keys are skipped."""
        if not self.is_remote:
            base = self.local(*parts)
            files = [p for p in base.rglob("*") if p.is_file()] if base.is_dir() else []
            return sorted((p.relative_to(base).as_posix(), p.stat().st_size) for p in files)
        prefix = f"{self.key(*parts)}/" if self.key(*parts) else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, PaginationConfig={"PageSize": page_size}
        )
        return sorted(
            (item["Key"][len(prefix) :], item["Size"])
            for page in pages
            for item in page.get("Contents", [])
            if not item["Key"].endswith("/")
        )

    def exists(self, *parts: str) -> bool:
        if not self.is_remote:
            return self.local(*parts).exists()
        listed = self.client.list_objects_v2(
            Bucket=self.bucket, Prefix=self.key(*parts), MaxKeys=1
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
        return f"{self.bucket}/{self.key(*parts)}", pyarrow.fs.S3FileSystem(**kwargs)

    def remove(self, *parts: str) -> None:
        """Delete the folder `parts`: every object under it in S3, or the local directory."""
        if not self.is_remote:
            shutil.rmtree(self.local(*parts), ignore_errors=True)
            return
        keys = [f"{self.key(*parts)}/{name}" for name, _ in self.list_objects(*parts)]
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch})
