"""A run directory on Google Cloud Storage (``gs://bucket/prefix``): the
`batchrun._output.store.ObjectStore` contract over google-cloud-storage (the ``gcs``
extra).

GCS versions every object with a *generation* (a number that changes with each write)
and checks it atomically on a write, so the generation plays the part the ETag plays
on S3:

* `GcsStore.create`: an upload with ``ifGenerationMatch=0`` ("only if no live object
  has this name"), refused with 412 when the key exists;
* `GcsStore.replace`: ``ifGenerationMatch=<generation read>``, refused with 412 when
  the object was written since (or is gone).

Why the client library rather than the JSON API over httpx: the calls are few, but
the credentials are not, and google-auth (which the library brings) finds them as
gcloud does: ``GOOGLE_APPLICATION_CREDENTIALS``, the user's application-default
login, workload identity and the metadata server, refreshing the tokens. With
``STORAGE_EMULATOR_HOST`` set (a local emulator) the library sends every request
there, unauthenticated. No credential is ever put in a location, a file batchrun
writes or an error: errors name the store's status code, never its message.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from batchrun._output.objectstore import Exists, SdkStore, Stale, Stored, failure
from batchrun.errors import ConfigError, RunDirError


class GcsStore(SdkStore):
    """Objects under ``gs://bucket/prefix/``; ``client`` injects a
    ``google.cloud.storage.Client`` (else one is made from the environment)."""

    def __init__(self, location: str, client: Any = None) -> None:
        parts = urlsplit(location)
        if parts.scheme not in ("gs", "gcs") or not parts.netloc:
            raise ConfigError(f"{location}: not a gs://bucket/prefix location")
        self.location = location.rstrip("/")
        self.prefix = parts.path.strip("/")
        self._client = client if client is not None else _gcs_client()
        self._bucket = self._client.bucket(parts.netloc)

    def _blob(self, key: str) -> Any:
        return self._bucket.blob(f"{self.prefix}/{key}" if self.prefix else key)

    def create(self, key: str, data: bytes) -> str:
        return self._upload(key, data, 0, Exists)

    def replace(self, key: str, data: bytes, etag: str) -> str:
        try:
            generation = int(etag)
        except ValueError:
            raise Stale(key) from None  # not a generation this store gave
        return self._upload(key, data, generation, Stale)

    def put(self, key: str, data: bytes) -> str:
        return self._upload(key, data, None, Stale)

    def _upload(
        self, key: str, data: bytes, generation: int | None, refused: type[Exception]
    ) -> str:
        """The new generation; ``refused`` raised on a 412. With a generation the
        library retries a failed request by itself (the condition makes that safe)."""
        blob = self._blob(key)
        try:
            blob.upload_from_string(data, if_generation_match=generation)
        except Exception as exc:
            if _status(exc) == 412:
                raise refused(key) from None
            raise self._failed("write", key, exc) from exc
        return str(blob.generation)

    def get(self, key: str) -> Stored | None:
        blob = self._blob(key)
        try:
            data = blob.download_as_bytes()  # the response headers name its generation
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise self._failed("read", key, exc) from exc
        return Stored(data, str(blob.generation))

    def _remove(self, key: str) -> None:
        self._blob(key).delete()

    def _names(self, full: str) -> list[str]:
        return [b.name for b in self._bucket.list_blobs(prefix=full)]

    def _status(self, exc: Exception) -> int | None:
        return _status(exc)

    def _failed(self, action: str, key: str, exc: Exception) -> RunDirError:
        return failure(self.location, action, key, type(exc).__name__, _status(exc))


def _status(exc: Exception) -> int | None:
    """The HTTP status of a google.api_core error (None: not one)."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, int) else None


def _gcs_client() -> Any:
    try:
        from google.cloud import storage
    except ImportError as exc:
        raise ConfigError(
            "a run directory on gs:// needs google-cloud-storage for its conditional "
            "writes: pip install 'batchrun[gcs]'"
        ) from exc
    # object requests need no project: none unless the environment names one (else the
    # library would insist on finding one)
    project = os.environ.get("GOOGLE_CLOUD_PROJECT") or None
    if os.environ.get("STORAGE_EMULATOR_HOST"):
        from google.auth.credentials import AnonymousCredentials

        # an emulator: no credentials to look for (and none sent)
        return storage.Client(project=project or "local", credentials=AnonymousCredentials())
    try:
        return storage.Client(project=project)
    except Exception as exc:  # google.auth's DefaultCredentialsError
        raise ConfigError(
            f"gs://: no Google Cloud credentials ({type(exc).__name__}): set "
            "GOOGLE_APPLICATION_CREDENTIALS or run `gcloud auth application-default login`"
        ) from exc


__all__ = ["GcsStore"]
