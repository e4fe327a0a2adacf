"""Objects a run keeps on storage that has no append and no ``flock``: S3, GCS, Azure Blob
(and a local directory with the same rules).

A run directory on object storage is written as immutable objects
(`batchrun._output.segments`) and one object replaced in place, the run's lease
(`batchrun._output.runlease`). Both need a write that only happens under a condition
the store checks atomically; pyarrow.fs has none, so this module speaks to S3
through boto3 (the ``s3`` extra):

* `ObjectStore.create`: ``PutObject`` with ``If-None-Match: *``, which S3 refuses
  with 412 when the key exists, so two writers can never both create one key;
* `ObjectStore.replace`: ``PutObject`` with ``If-Match: <etag>``, refused with 412
  when the object is no longer the version read (a heartbeat that lost its lease);
* a 409 ``ConditionalRequestConflict`` (two conditional writes of one key in
  flight) is tried again after a short wait, as S3 asks, and then resolves to one
  winner and one 412.

Google Cloud Storage and Azure Blob have the same two writes, in their own modules
(each SDK imported only when its scheme is used): `batchrun._output.gcsstore`
(``ifGenerationMatch=0`` to create, ``ifGenerationMatch=<generation>`` to replace: the
generation plays the ETag's part) and `batchrun._output.azurestore` (``If-None-Match: *``
and ``If-Match: <etag>`` on Put Blob). `open_store` picks one by the location's scheme.

`LocalStore` keeps the same contract in a local directory (create by ``link``, which
fails when the name exists; replace under an exclusive ``flock``), so the segment
and lease logic is one code path wherever the run lives.

    >>> store = open_store("s3://bucket/runs/a")          # doctest: +SKIP
    >>> tag = store.create("lease.json", b"{...}")         # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from batchrun._output.objectstore import Exists, ObjectStore, Stale, Stored, failure
from batchrun.errors import ConfigError, RunDirError

CONFLICT_RETRIES = 5
CONFLICT_WAIT_S = 0.05


# -- S3 -------------------------------------------------------------------------------------
class S3Store:
    """Objects under ``s3://bucket/prefix/``, written with conditional puts.

    The client is boto3's, made from the environment as the AWS CLI makes it
    (``AWS_*`` variables with ``AWS_ENDPOINT_URL`` for MinIO or R2, shared config,
    instance roles); ``client`` injects one. ``sleep`` waits between the tries of a
    409 (tests inject theirs).
    """

    def __init__(
        self,
        location: str,
        client: Any = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(location)
        if parts.scheme != "s3" or not parts.netloc:
            raise ConfigError(f"{location}: not an s3://bucket/prefix location")
        self.location = location.rstrip("/")
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self._client = client if client is not None else _s3_client()
        self._sleep = sleep

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def create(self, key: str, data: bytes) -> str:
        answer = self._conditional(key, data, IfNoneMatch="*")
        if answer is None:
            raise Exists(key)
        return answer

    def replace(self, key: str, data: bytes, etag: str) -> str:
        answer = self._conditional(key, data, IfMatch=etag)
        if answer is None:
            raise Stale(key)
        return answer

    def put(self, key: str, data: bytes) -> str:
        try:
            put = self._client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:
            raise self._failed("write", key, exc) from exc
        return str(put["ETag"])

    def _conditional(self, key: str, data: bytes, **condition: str) -> str | None:
        """The new ETag, or None when the store refused the condition (412; a 404 for
        If-Match on a key that is gone)."""
        for attempt in range(CONFLICT_RETRIES + 1):
            try:
                put = self._client.put_object(
                    Bucket=self.bucket, Key=self._key(key), Body=data, **condition
                )
                return str(put["ETag"])
            except Exception as exc:
                code, status = _error_code(exc)
                if status == 412 or code in ("PreconditionFailed", "NoSuchKey"):
                    return None
                if (status == 409 or code == "ConditionalRequestConflict") and (
                    attempt < CONFLICT_RETRIES
                ):
                    self._sleep(CONFLICT_WAIT_S * (2**attempt))
                    continue
                raise self._failed("write", key, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def delete(self, key: str) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._failed("delete", key, exc) from exc

    def get(self, key: str) -> Stored | None:
        try:
            got = self._client.get_object(Bucket=self.bucket, Key=self._key(key))
            return Stored(got["Body"].read(), str(got["ETag"]))
        except Exception as exc:
            code, status = _error_code(exc)
            if status == 404 or code in ("NoSuchKey", "404"):
                return None
            raise self._failed("read", key, exc) from exc

    def keys(self, prefix: str) -> list[str]:
        out: list[str] = []
        start = len(self.prefix) + 1 if self.prefix else 0
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self._key(prefix)
            )
            for page in pages:
                out.extend(item["Key"][start:] for item in page.get("Contents", ()))
        except Exception as exc:
            raise self._failed("list", prefix, exc) from exc
        return sorted(out)

    def _failed(self, action: str, key: str, exc: Exception) -> RunDirError:
        code, status = _error_code(exc)
        return failure(self.location, action, key, code or type(exc).__name__, status)


def _s3_client() -> Any:
    try:
        import boto3
    except ImportError as exc:
        raise ConfigError(
            "a run directory on s3:// needs boto3 for its conditional writes: "
            "pip install 'batchrun[s3]'"
        ) from exc
    from batchrun._input.locations import register_env_secrets

    register_env_secrets()
    return boto3.client("s3")  # boto3 reads AWS_ENDPOINT_URL itself


def _error_code(exc: Exception) -> tuple[str, int | None]:
    """(the S3 error code, the HTTP status) of a botocore ClientError; ("", None) else."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return "", None
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status if isinstance(status, int) else None


# -- a local directory ----------------------------------------------------------------------
class LocalStore:
    """The same contract in a directory on a local disk: `create` writes a temporary
    file and links it to its name (``link`` fails when the name exists, and the object
    appears whole), `replace` compares and renames under an exclusive ``flock`` of
    the directory's ``.store.lock``. The ETag is a hash of the bytes."""

    def __init__(self, directory: str) -> None:
        self.location = directory.rstrip("/") or "/"
        self.directory = directory

    def _path(self, key: str) -> str:
        return os.path.join(self.directory, *key.split("/"))

    def create(self, key: str, data: bytes) -> str:
        path = self._path(key)
        tmp = self._staged(path, data)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise Exists(key) from None
        except OSError as exc:
            raise RunDirError(f"{path}: cannot write it: {exc}") from exc
        finally:
            os.unlink(tmp)
        return _etag(data)

    def replace(self, key: str, data: bytes, etag: str) -> str:
        path = self._path(key)
        with self._locked():
            now = self.get(key)
            if now is None or now.etag != etag:
                raise Stale(key)
            tmp = self._staged(path, data)
            os.replace(tmp, path)
        return _etag(data)

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        os.replace(self._staged(path, data), path)
        return _etag(data)

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise RunDirError(f"{self._path(key)}: cannot delete it: {exc}") from exc

    def get(self, key: str) -> Stored | None:
        try:
            with open(self._path(key), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise RunDirError(f"{self._path(key)}: cannot read it: {exc}") from exc
        return Stored(data, _etag(data))

    def keys(self, prefix: str) -> list[str]:
        out: list[str] = []
        for root, _, names in os.walk(self.directory):
            rel = os.path.relpath(root, self.directory)
            base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            out.extend(base + n for n in names if not n.startswith("."))
        return sorted(k for k in out if k.startswith(prefix))

    def _staged(self, path: str, data: bytes) -> str:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".", dir=os.path.dirname(path))
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        os.makedirs(self.directory, exist_ok=True)
        with open(os.path.join(self.directory, ".store.lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _etag(data: bytes) -> str:
    return '"' + hashlib.blake2b(data, digest_size=16).hexdigest() + '"'


def is_object_storage(location: object) -> bool:
    """Whether a run directory's location is on object storage (a URI other than
    file://), not a local or shared path.

    >>> is_object_storage("s3://b/runs/a"), is_object_storage("runs/a")
    (True, False)
    """
    if not isinstance(location, str) or "://" not in location:
        return False
    return location.partition("://")[0].lower() != "file"


def open_store(location: str) -> ObjectStore:
    """The store of a run directory: S3 for s3://, GCS for gs://, Azure Blob for
    abfs://, a `LocalStore` for a local path."""
    scheme = location.partition("://")[0].lower() if "://" in location else ""
    if scheme == "s3":
        return S3Store(location)
    if scheme in ("gs", "gcs"):
        from batchrun._output.gcsstore import GcsStore

        return GcsStore(location)
    if scheme in ("abfs", "abfss"):
        from batchrun._output.azurestore import AzureStore

        return AzureStore(location)
    if scheme and scheme != "file":
        raise ConfigError(
            f"{location}: a run directory is a local path, s3://bucket/prefix, "
            "gs://bucket/prefix or abfs://container@account.dfs.core.windows.net/prefix"
        )
    return LocalStore(location.removeprefix("file://"))


__all__ = [
    "Exists",
    "LocalStore",
    "ObjectStore",
    "S3Store",
    "Stale",
    "Stored",
    "failure",
    "is_object_storage",
    "open_store",
]
