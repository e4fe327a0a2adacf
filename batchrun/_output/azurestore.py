"""A run directory on Azure Blob Storage (``abfs://container@account.dfs.core.windows.net/
prefix``, or ``abfs://container/prefix`` with the account from the environment): the
`batchrun._output.store.ObjectStore` contract over azure-storage-blob (the ``azure``
extra).

Put Blob checks a condition atomically, as S3's PutObject does:

* `AzureStore.create`: ``If-None-Match: *``, refused (409 BlobAlreadyExists, or 412)
  when the blob exists;
* `AzureStore.replace`: ``If-Match: <etag>``, refused with 412 when the blob was
  written since (404 when it is gone).

The account and its credential come from the standard places, in this order:
``AZURE_STORAGE_CONNECTION_STRING`` (Azurite's, or an account's, with its endpoint);
``AZURE_STORAGE_ACCOUNT_KEY`` (or ``AZURE_STORAGE_KEY``) or ``AZURE_STORAGE_SAS_TOKEN``
for the account the location names (or ``AZURE_STORAGE_ACCOUNT_NAME``); else
azure-identity's ``DefaultAzureCredential`` (a managed identity, the az CLI login,
workload identity). None is ever written into a file or an error: errors name the
service's error code and status, never its message.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from batchrun._output.objectstore import Exists, SdkStore, Stale, Stored, failure
from batchrun.errors import ConfigError, RunDirError


def account_and_container(location: str) -> tuple[str, str, str]:
    """(the account named in the location, '' if none; the container; the prefix).

    >>> account_and_container("abfs://data@acct.dfs.core.windows.net/runs/a/")
    ('acct', 'data', 'runs/a')
    >>> account_and_container("abfss://data/runs/a")
    ('', 'data', 'runs/a')
    """
    parts = urlsplit(location)
    if parts.scheme not in ("abfs", "abfss") or not parts.netloc:
        raise ConfigError(f"{location}: not an abfs://container@account/prefix location")
    if parts.username:
        account = (parts.hostname or "").split(".", 1)[0]
        return account, parts.username, parts.path.strip("/")
    return "", parts.netloc, parts.path.strip("/")


class AzureStore(SdkStore):
    """Blobs under one container's prefix; ``service`` injects an
    ``azure.storage.blob.BlobServiceClient`` (else one is made from the environment)."""

    def __init__(self, location: str, service: Any = None) -> None:
        account, container, self.prefix = account_and_container(location)
        self.location = location.rstrip("/")
        service = service if service is not None else _service(account)
        self._container = service.get_container_client(container)

    def _blob(self, key: str) -> Any:
        return self._container.get_blob_client(f"{self.prefix}/{key}" if self.prefix else key)

    def create(self, key: str, data: bytes) -> str:
        # overwrite=False is Put Blob with If-None-Match: *
        return self._upload(key, data, Exists, overwrite=False)

    def replace(self, key: str, data: bytes, etag: str) -> str:
        return self._upload(key, data, Stale, etag=etag, match_condition=_match().IfNotModified)

    def put(self, key: str, data: bytes) -> str:
        return self._upload(key, data, Stale)

    def _upload(self, key: str, data: bytes, refused: type[Exception], **condition: Any) -> str:
        try:
            done = self._blob(key).upload_blob(data, **{"overwrite": True, **condition})
        except Exception as exc:
            status = _status(exc)
            if condition and (status == 412 or (refused is Exists and status == 409)):
                raise refused(key) from None
            if condition and refused is Stale and status == 404:
                raise Stale(key) from None
            raise self._failed("write", key, exc) from exc
        return str(done["etag"])

    def get(self, key: str) -> Stored | None:
        try:
            download = self._blob(key).download_blob()
            return Stored(download.readall(), str(download.properties.etag))
        except Exception as exc:
            if _status(exc) == 404:
                return None
            raise self._failed("read", key, exc) from exc

    def _remove(self, key: str) -> None:
        self._blob(key).delete_blob()

    def _names(self, full: str) -> list[str]:
        return [b.name for b in self._container.list_blobs(name_starts_with=full)]

    def _status(self, exc: Exception) -> int | None:
        return _status(exc)

    def _failed(self, action: str, key: str, exc: Exception) -> RunDirError:
        code = getattr(exc, "error_code", None)
        return failure(self.location, action, key, str(code or type(exc).__name__), _status(exc))


def _status(exc: Exception) -> int | None:
    """The HTTP status of an azure.core HttpResponseError (None: not one)."""
    code = getattr(exc, "status_code", None)
    return code if isinstance(code, int) else None


def _match() -> Any:
    from azure.core import MatchConditions

    return MatchConditions


def _service(account: str) -> Any:
    """A BlobServiceClient from the environment, for ``account`` ('' : the one the
    environment names)."""
    try:
        from azure.storage.blob import BlobServiceClient
    except ImportError as exc:
        raise ConfigError(
            "a run directory on abfs:// needs azure-storage-blob for its conditional "
            "writes: pip install 'batchrun[azure]'"
        ) from exc
    from batchrun._input.locations import register_env_secrets

    register_env_secrets()
    connection = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection:
        service = BlobServiceClient.from_connection_string(connection)
        if account and service.account_name != account:
            raise ConfigError(
                f"abfs://...@{account}: AZURE_STORAGE_CONNECTION_STRING is for another account"
            )
        return service
    account = account or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME", "")
    if not account:
        raise ConfigError(
            "abfs://container/prefix names no account: write "
            "abfs://container@ACCOUNT.dfs.core.windows.net/prefix, or set "
            "AZURE_STORAGE_ACCOUNT_NAME or AZURE_STORAGE_CONNECTION_STRING"
        )
    url = f"https://{account}.blob.core.windows.net"
    key = os.environ.get("AZURE_STORAGE_ACCOUNT_KEY") or os.environ.get("AZURE_STORAGE_KEY")
    sas = os.environ.get("AZURE_STORAGE_SAS_TOKEN")
    if key:
        return BlobServiceClient(url, credential={"account_name": account, "account_key": key})
    if sas:
        return BlobServiceClient(url, credential=sas)
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:
        raise ConfigError(
            f"abfs://: no key for {account} (AZURE_STORAGE_ACCOUNT_KEY, "
            "AZURE_STORAGE_CONNECTION_STRING) and no azure-identity for the default "
            "credential: pip install 'batchrun[azure]'"
        ) from exc
    return BlobServiceClient(url, credential=DefaultAzureCredential())


__all__ = ["AzureStore", "account_and_container"]
