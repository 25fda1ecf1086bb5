"""One storage interface for a local directory and an S3 bucket.

(About 400 lines: the interface and both backends side by side, so that their behaviour —
atomic writes, missing keys, retries, error messages — can be compared in one place.)

A *bucket* is named by a URI:

* ``s3://bucket/prefix`` — read and written with boto3.  The standard AWS environment
  variables apply (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``,
  ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` for MinIO or any S3-compatible store).
  Transient errors (throttling, 5xx, dropped connections) are retried by botocore's
  ``standard`` retry mode.  A PUT makes an object appear whole or not at all.
* a local directory (plain path or ``file://`` URI) with the same layout.  Writes go to a
  temporary file in the target folder and are renamed into place (atomic on one file system).

Keys are ``/``-separated paths relative to the bucket root, e.g. ``raw/validation_set.csv``.
The study's layout: ``raw/`` inputs (never modified by the ETL), ``processed/`` tables,
``json/`` datasets, ``graphs/`` crystal graphs, ``reports/`` drop reports.

Every failure the caller can act on (missing bucket, missing key, missing or rejected
credentials, unreachable endpoint) is a :class:`StorageError` whose message names the
bucket and key.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pandas as pd

from cgcnn.errors import CgcnnError
from cgcnn.fileio import atomic_write_bytes, json_safe

__all__ = [
    "Bucket",
    "LocalBucket",
    "MissingObjectError",
    "S3Bucket",
    "StorageError",
    "open_bucket",
    "protected_roots",
]


class StorageError(CgcnnError, OSError):
    """A bucket operation failed; the message names the bucket and key."""


class MissingObjectError(StorageError, FileNotFoundError):
    """The key (or the bucket itself) does not exist."""


def protected_roots() -> list[Path]:
    """Folders the ETL never writes into: the shared data folder beside the checkout."""
    repo = Path(__file__).resolve().parents[2]
    return [(repo.parent / "shared").resolve()]


def _guard(path: Path) -> None:
    for guard in protected_roots():
        if path == guard or guard in path.parents:
            raise StorageError(
                f"refusing to write {path}: it lies under the shared data folder {guard} "
                "(copy raw/ into a work bucket with prepare_work_bucket first)"
            )


def _dumps(obj: Any, indent: int | None) -> bytes:
    return json.dumps(json_safe(obj), indent=indent, ensure_ascii=False, allow_nan=False).encode()


class Bucket(ABC):
    """Byte-level access to one bucket; table and JSON helpers are built on top."""

    uri: str

    # --- byte level (implemented by backends) -------------------------------------------
    @abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """Whole object; :class:`MissingObjectError` if absent."""

    @abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Create or replace an object atomically."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object (nothing happens when it is absent)."""

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys below ``prefix`` (recursive), sorted."""

    def check(self) -> None:  # noqa: B027  (an optional hook, not abstract: a bucket that can check overrides it)
        """Raise :class:`StorageError` if the bucket cannot be reached or does not exist."""

    def local_root(self) -> Path | None:
        """The folder behind a local bucket (None for S3)."""
        return None

    def key_uri(self, key: str) -> str:
        return f"{self.uri.rstrip('/')}/{key}"

    def sha256(self, key: str) -> str:
        return hashlib.sha256(self.read_bytes(key)).hexdigest()

    # --- tables and documents -------------------------------------------------------------
    def read_csv(self, key: str, **kwargs) -> pd.DataFrame:
        """CSV as a DataFrame.  ``dtype=str, keep_default_na=False`` keep raw cells exact."""
        data = self.read_bytes(key)
        try:
            return pd.read_csv(io.BytesIO(data), **kwargs)
        except (ValueError, pd.errors.ParserError) as exc:
            raise StorageError(f"{self.key_uri(key)} is not a readable CSV file: {exc}") from exc

    def read_excel(self, key: str, **kwargs) -> pd.DataFrame:
        data = self.read_bytes(key)
        try:
            return pd.read_excel(io.BytesIO(data), engine="openpyxl", **kwargs)
        except Exception as exc:  # openpyxl raises a zoo of types for damaged files
            raise StorageError(f"{self.key_uri(key)} is not a readable XLSX file: {exc}") from exc

    def read_json(self, key: str) -> Any:
        """JSON document; ``.gz`` keys are decompressed."""
        data = self.read_bytes(key)
        if key.endswith(".gz"):
            data = gzip.decompress(data)
        try:
            return json.loads(data)
        except ValueError as exc:
            raise StorageError(f"{self.key_uri(key)} is not valid JSON: {exc}") from exc

    def write_csv(self, key: str, df: pd.DataFrame) -> None:
        self.write_bytes(key, df.to_csv(index=False, lineterminator="\n").encode())

    def write_xlsx(self, key: str, df: pd.DataFrame, sheet_name: str = "data") -> None:
        buf = io.BytesIO()
        with pd.ExcelWriter(buf, engine="openpyxl") as writer:
            df.to_excel(writer, sheet_name=sheet_name, index=False)
        self.write_bytes(key, buf.getvalue())

    def write_json(self, key: str, obj: Any, *, indent: int | None = 1) -> None:
        """JSON document (NaN written as null); ``.gz`` keys are gzip-compressed (mtime 0)."""
        data = _dumps(obj, indent)
        if key.endswith(".gz"):
            data = gzip.compress(data, compresslevel=6, mtime=0)
        self.write_bytes(key, data)

    def upload_file(self, key: str, path: str | Path) -> None:
        self.write_bytes(key, Path(path).read_bytes())

    def download_file(self, key: str, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, self.read_bytes(key), fsync=True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"


class LocalBucket(Bucket):
    """A directory laid out like a bucket.  ``writable=False`` refuses every write."""

    def __init__(self, root: str | Path, *, writable: bool = True):
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)
        self.writable = writable

    def _path(self, key: str) -> Path:
        key = key.lstrip("/")
        path = (self.root / key).resolve()
        if path != self.root and self.root not in path.parents:
            raise StorageError(f"key {key!r} escapes the bucket {self.uri}")
        return path

    def local_root(self) -> Path:
        return self.root

    def check(self) -> None:
        if not self.root.is_dir():
            raise MissingObjectError(f"bucket folder {self.uri} does not exist")

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            where = "bucket folder" if not self.root.is_dir() else "key"
            raise MissingObjectError(f"no such {where}: {self.key_uri(key)} (bucket {self.uri})") from None
        except IsADirectoryError:
            raise StorageError(f"{self.key_uri(key)} is a folder, not an object") from None

    def write_bytes(self, key: str, data: bytes) -> None:
        path = self._path(key)
        if not self.writable:
            raise StorageError(f"bucket {self.uri} is read-only; refusing to write {key}")
        _guard(path)
        atomic_write_bytes(path, data, fsync=True)

    def ensure_writable(self) -> None:
        """Fail early (before any work) if writes would be refused."""
        if not self.writable:
            raise StorageError(f"bucket {self.uri} is read-only")
        _guard(self.root)

    def create(self) -> None:
        """Make the bucket folder (never under the shared data folder)."""
        _guard(self.root)
        self.root.mkdir(parents=True, exist_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        if not self.writable:
            raise StorageError(f"bucket {self.uri} is read-only; refusing to delete {key}")
        _guard(path)
        path.unlink(missing_ok=True)

    def list(self, prefix: str = "") -> list[str]:
        base = self._path(prefix) if prefix else self.root
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            return []
        keys = []
        for path in base.rglob("*"):
            if path.is_file() and not path.name.endswith(".tmp"):
                keys.append(path.relative_to(self.root).as_posix())
        return sorted(keys)

    def upload_file(self, key: str, path: str | Path) -> None:
        self.write_bytes(key, Path(path).read_bytes())


class S3Bucket(Bucket):
    """``s3://bucket/prefix`` through boto3, with botocore's standard retry mode.

    Args:
        bucket: bucket name.
        prefix: key prefix inside the bucket ("" for the root).
        client: a ready boto3 S3 client (tests, custom sessions); built from the
            environment when None.
        max_attempts: total attempts per request (first try + retries) for transient errors.
    """

    def __init__(self, bucket: str, prefix: str = "", *, client=None, max_attempts: int = 5):
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self._client = client
        self.max_attempts = max_attempts

    @property
    def client(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            config = Config(
                retries={"total_max_attempts": self.max_attempts, "mode": "standard"},
                connect_timeout=10,
                read_timeout=60,
            )
            # boto3 honours AWS_ENDPOINT_URL / AWS_ENDPOINT_URL_S3 and the credential chain.
            self._client = boto3.session.Session().client("s3", config=config)
        return self._client

    def _key(self, key: str) -> str:
        key = key.lstrip("/")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _error(self, exc: Exception, key: str | None, action: str) -> StorageError:
        """Translate a botocore exception into a StorageError naming bucket and key."""
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
        )

        where = f"s3://{self.bucket}/{self._key(key)}" if key is not None else self.uri
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return StorageError(
                f"cannot {action} {where}: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
            )
        if isinstance(exc, EndpointConnectionError):
            return StorageError(f"cannot {action} {where}: S3 endpoint unreachable ({exc})")
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            message = err.get("Message", "") or str(exc)
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                return MissingObjectError(f"cannot {action} {where}: bucket {self.bucket!r} does not exist")
            if code in {"NoSuchKey", "404", "NotFound"}:
                if not self._bucket_exists():
                    return MissingObjectError(f"cannot {action} {where}: bucket {self.bucket!r} does not exist")
                return MissingObjectError(f"cannot {action} {where}: no such key")
            if (
                code
                in {
                    "InvalidAccessKeyId",
                    "SignatureDoesNotMatch",
                    "AccessDenied",
                    "InvalidToken",
                    "ExpiredToken",
                    "403",
                    "Forbidden",
                }
                or status == 403
            ):
                return StorageError(
                    f"cannot {action} {where}: credentials rejected or access denied ({code}: {message})"
                )
            return StorageError(f"cannot {action} {where}: {code or status}: {message}")
        if isinstance(exc, BotoCoreError):
            return StorageError(f"cannot {action} {where}: {exc}")
        return StorageError(f"cannot {action} {where}: {exc!r}")

    def _bucket_exists(self) -> bool:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return True
        except Exception as exc:  # any failure means "cannot tell": assume yes
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            return code not in {"404", "NoSuchBucket", "NotFound"}

    def check(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:  # any failure means "cannot tell": assume yes
            code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
            if code in {"404", "NoSuchBucket", "NotFound"}:
                raise MissingObjectError(f"bucket {self.bucket!r} ({self.uri}) does not exist") from exc
            raise self._error(exc, None, "open") from exc

    def read_bytes(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            return response["Body"].read()
        except Exception as exc:  # any failure means "cannot tell": assume yes
            raise self._error(exc, key, "read") from exc

    def write_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:  # any failure means "cannot tell": assume yes
            raise self._error(exc, key, "write") from exc

    def upload_file(self, key: str, path: str | Path) -> None:
        # upload_file switches to multipart for large files; a multipart object
        # only becomes visible when the upload completes.
        try:
            self.client.upload_file(str(path), self.bucket, self._key(key))
        except Exception as exc:  # any failure means "cannot tell": assume yes
            cause = getattr(exc, "last_exception", None) or exc
            raise self._error(cause, key, "write") from exc

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:  # any failure means "cannot tell": assume yes
            raise self._error(exc, key, "delete") from exc

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except Exception as exc:  # any failure means "cannot tell": assume yes
            err = self._error(exc, key, "inspect")
            if isinstance(err, MissingObjectError) and "no such key" in str(err):
                return False
            raise err from exc

    def list(self, prefix: str = "") -> list[str]:
        full = self._key(prefix) if prefix else (f"{self.prefix}/" if self.prefix else "")
        keys = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    keys.append(key[len(self.prefix) + 1 :] if self.prefix else key)
        except Exception as exc:  # any failure means "cannot tell": assume yes
            raise self._error(exc, prefix, "list") from exc
        return sorted(keys)


def open_bucket(uri: str | Path | Bucket, *, writable: bool = True) -> Bucket:
    """A bucket from a URI: ``s3://bucket/prefix``, ``file:///path`` or a plain path."""
    if isinstance(uri, Bucket):
        return uri
    text = str(uri)
    parsed = urlparse(text)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise StorageError(f"bucket URI {text!r} has no bucket name")
        return S3Bucket(parsed.netloc, parsed.path)
    if parsed.scheme == "file":
        return LocalBucket(parsed.path, writable=writable)
    if parsed.scheme and len(parsed.scheme) > 1:
        raise StorageError(f"unsupported bucket URI {text!r} (use s3://… or a local path)")
    return LocalBucket(text, writable=writable)
