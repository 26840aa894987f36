"""One rule for every path the project builds from names it did not choose.

Storage mirrors, S3 keys, zoo entry names, sweep ids, dataset roots and checkpoint caches are
all a trusted root joined with parts that come from a spec, a command line or a bucket
listing. `safe_parts` is the one check they share: a part is relative, and no component of
it is empty, `.` or `..`, so a joined path can never leave its root. Values from a spec are
checked when the spec is validated; values from a bucket listing when they are used.

`check_uri` is the companion rule for URIs: credentials never travel in one (they would end
up in the spec saved with the sweep, in MLflow params, in local mirror paths and in logs).
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

__all__ = [
    "CredentialsInUriError",
    "UnsafeInputError",
    "UnsafePathError",
    "check_bucket",
    "check_uri",
    "safe_join",
    "safe_parts",
]

# S3's own naming rule for buckets (lower-case letters, digits, dots and hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
# Query keys that carry a credential, compared lower-cased with '-' read as '_':
# boto/pyarrow style keys, and pre-signed URL parameters.
_SECRET_WORDS = ("secret", "password", "passwd", "token", "credential", "signature", "api_key")
_SECRET_KEYS = {"access_key", "access_key_id", "aws_access_key_id", "key_id", "sig", "apikey"}


class UnsafeInputError(ValueError):
    """A path or URI refused by these rules; the message names where it came from."""


class UnsafePathError(UnsafeInputError):
    """A name that would put a file outside its root (or make an ambiguous key)."""


class CredentialsInUriError(UnsafeInputError):
    """A URI that carries credentials. The message never repeats them."""


def safe_parts(*parts: str, where: str = "path") -> list[str]:
    """The components of `parts` (each may hold '/'), refusing any that could leave a root:
    absolute parts, empty components ('a//b'), '.' and '..', and NUL bytes."""
    out: list[str] = []
    for part in parts:
        if part == "":
            continue  # an absent optional prefix, as in Storage.key
        components = str(part).split("/")
        if any(c in ("", ".", "..") or "\x00" in c for c in components):
            raise UnsafePathError(
                _at(
                    where,
                    f"refusing {str(part)!r}: a path part must be relative, without "
                    "empty, '.' or '..' components, so that it stays inside its root",
                )
            )
        out += components
    return out


def safe_join(root: Path, *parts: str, where: str = "path") -> Path:
    """`root` joined with `parts`, which `safe_parts` has checked."""
    return Path(root).joinpath(*safe_parts(*parts, where=where))


def check_bucket(bucket: str, where: str = "storage") -> str:
    if "@" in bucket or ":" in bucket:
        raise CredentialsInUriError(_credentials_message(where))
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise UnsafePathError(
            _at(
                where,
                f"{bucket!r} is not an S3 bucket name (3-63 lower-case letters, "
                "digits, dots and hyphens)",
            )
        )
    return bucket


def check_uri(uri: str, where: str) -> str:
    """`uri` unchanged, unless it carries credentials: user:password@ or a secret query key."""
    parsed = urlparse(uri)
    has_userinfo = "@" in parsed.netloc
    secret_keys = [k for k, _ in parse_qsl(parsed.query, keep_blank_values=True) if _secret(k)]
    if has_userinfo or secret_keys:
        raise CredentialsInUriError(_credentials_message(where, secret_keys))
    return uri


def _secret(key: str) -> bool:
    key = key.lower().replace("-", "_")
    return key in _SECRET_KEYS or any(word in key for word in _SECRET_WORDS)


def _credentials_message(where: str, keys: list[str] | None = None) -> str:
    part = f"query parameters {sorted(set(keys))}" if keys else "a user:password@ part"
    return _at(
        where,
        f"refusing a URI that carries credentials ({part}; not repeated here). "
        "Credentials come from the environment: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or "
        "an instance role, ~/.aws) for S3; MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD "
        "(or MLFLOW_TRACKING_TOKEN) for an MLflow server",
    )


def _at(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message
