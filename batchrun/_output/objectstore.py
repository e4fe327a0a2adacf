"""What every store of a run directory on object storage promises
(`batchrun._output.store` for S3 and a local directory, `batchrun._output.gcsstore`,
`batchrun._output.azurestore`): keys under one prefix, a create that happens once, a
replace only over the version read, and the two refusals they raise."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from batchrun.errors import RunDirError


class Exists(Exception):
    """`ObjectStore.create`: the key exists already."""


class Stale(Exception):
    """`ObjectStore.replace`: the object is not the version named (or is gone)."""


@dataclass(frozen=True)
class Stored:
    """An object's bytes and its version (its ETag; on GCS its generation)."""

    data: bytes
    etag: str


class ObjectStore(Protocol):
    """Keys under one run's prefix; every write is all or nothing."""

    location: str

    def create(self, key: str, data: bytes) -> str:
        """Write ``key`` if no object has it (raises `Exists`); its ETag."""
        ...

    def replace(self, key: str, data: bytes, etag: str) -> str:
        """Overwrite ``key`` if it is still version ``etag`` (raises `Stale`); the new
        ETag."""
        ...

    def put(self, key: str, data: bytes) -> str:
        """Write ``key`` whatever is there (files only the lease holder writes, such as
        summary.json); its ETag."""
        ...

    def get(self, key: str) -> Stored | None:
        """The object, or None."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key`` (gone already: nothing happens)."""
        ...

    def keys(self, prefix: str) -> list[str]:
        """Every key starting with ``prefix``, sorted."""
        ...


def failure(location: str, action: str, key: str, what: str, status: int | None) -> RunDirError:
    """A store's error, named by its code and HTTP status only: an SDK's message may
    quote a request URL, and a URL may carry a signature.

    >>> str(failure("gs://b/runs/a", "read", "lease.json", "Forbidden", 403))
    'gs://b/runs/a/lease.json: cannot read it: Forbidden (HTTP 403)'
    """
    shown = f"{what} (HTTP {status})" if status is not None else what
    return RunDirError(f"{location}/{key}: cannot {action} it: {shown}")


class SdkStore:
    """What the stores over a cloud SDK (GCS, Azure Blob) share: keys under the run's
    ``prefix``, listed and deleted through the SDK (a delete of a key already gone is
    done). Each says how to list, delete, read an error's HTTP status and name it."""

    location: str
    prefix: str

    def _names(self, full: str) -> Iterable[str]:
        """The full names of the objects starting with ``full``."""
        raise NotImplementedError

    def _remove(self, key: str) -> None:
        raise NotImplementedError

    def _status(self, exc: Exception) -> int | None:
        raise NotImplementedError

    def _failed(self, action: str, key: str, exc: Exception) -> RunDirError:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        try:
            self._remove(key)
        except Exception as exc:
            if self._status(exc) != 404:
                raise self._failed("delete", key, exc) from exc

    def keys(self, prefix: str) -> list[str]:
        start = len(self.prefix) + 1 if self.prefix else 0
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        try:
            found = [name[start:] for name in self._names(full)]
        except Exception as exc:
            raise self._failed("list", prefix, exc) from exc
        return sorted(found)


__all__ = ["Exists", "ObjectStore", "SdkStore", "Stale", "Stored", "failure"]
