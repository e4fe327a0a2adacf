"""The lock of a run directory on object storage: a lease object with an expiry.

A local run directory is locked with ``flock``, which an object store does not have
and which would not outlive a dead node anyway. A run on object storage is held by
whoever owns ``RUN/lease.json``::

    {"owner": "node-3:4121:9f2c01ab", "generation": 4, "expires_at": 1767312000.0,
     "renewed_at": 1767311970.0, "ttl_s": 30.0}

* `RunLease.acquire` creates it (``If-None-Match: *``), or takes over one whose
  ``expires_at`` has passed by more than ``grace_s`` (the takers' clocks may differ
  by that much), or whose owner was a process of this machine that is gone
  (`owner_is_gone`), by replacing exactly the version it read (``If-Match: <etag>``):
  of two takers only one can win. A live owner's lease is refused, naming the owner
  (`LeaseHeld`).
* `RunLease.renew` (the heartbeat, every ``ttl_s / 3``) replaces the version this
  owner last wrote; when that fails someone took the lease over after it expired
  (this process was paused or cut off longer than its ttl) and the owner must stop
  writing (`LeaseLost`).
* `RunLease.release` marks it expired at once, so the next run need not wait.

Each takeover raises ``generation``: a writer can tell a takeover happened. The
lease keeps two live processes from running one run; what a zombie that missed its
own expiry could still write is kept out by the segments' own conditional creates
(`batchrun._output.segments`).

    >>> lease = RunLease(store, "lease.json", owner="me")   # doctest: +SKIP
    >>> lease.acquire(); lease.renew(); lease.release()     # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson

from batchrun._output.segments import default_owner
from batchrun._output.store import Exists, ObjectStore, Stale, Stored
from batchrun.errors import LeaseHeld, LeaseLost, RunDirError

LEASE = "lease.json"
DEFAULT_TTL_S = 30.0
DEFAULT_GRACE_S = 5.0


@dataclass(frozen=True)
class LeaseRecord:
    """What the lease object says."""

    owner: str
    generation: int
    expires_at: float
    renewed_at: float
    ttl_s: float

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "owner": self.owner,
                "generation": self.generation,
                "expires_at": self.expires_at,
                "renewed_at": self.renewed_at,
                "ttl_s": self.ttl_s,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> LeaseRecord:
        try:
            raw = orjson.loads(data)
            return cls(
                owner=str(raw["owner"]),
                generation=int(raw["generation"]),
                expires_at=float(raw["expires_at"]),
                renewed_at=float(raw["renewed_at"]),
                ttl_s=float(raw["ttl_s"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise RunDirError(f"{where}: not a lease ({exc})") from exc


def owner_is_gone(owner: str) -> bool:
    """Whether ``owner`` (``host:pid:random``, `default_owner`) is a process of this
    machine that no longer runs: its lease is taken over at once, as a local run's
    flock is released by the kernel when its process dies (a rerun after a kill -9 on
    the same machine need not wait for the expiry). An owner on another host, or a
    live pid, is never judged gone."""
    import os
    import socket

    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


class RunLease:
    """``owner``'s lease on the run whose store is ``store`` (the object ``key``).

    ``clock`` is wall-clock time (expiries are compared between nodes); tests inject
    theirs."""

    def __init__(
        self,
        store: ObjectStore,
        key: str = LEASE,
        owner: str | None = None,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        grace_s: float = DEFAULT_GRACE_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.key = key
        self.owner = owner or default_owner()
        self.ttl_s = ttl_s
        self.grace_s = grace_s
        self._clock = clock
        self._etag: str | None = None
        self.record: LeaseRecord | None = None
        """The lease as this owner last wrote it (None: not held)."""

    @property
    def where(self) -> str:
        return f"{self.store.location}/{self.key}"

    def _record(self, generation: int) -> LeaseRecord:
        now = self._clock()
        return LeaseRecord(self.owner, generation, now + self.ttl_s, now, self.ttl_s)

    def _read(self) -> tuple[LeaseRecord, Stored] | None:
        stored = self.store.get(self.key)
        if stored is None:
            return None
        return LeaseRecord.from_bytes(stored.data, self.where), stored

    def acquire(self) -> LeaseRecord:
        """Hold the lease: create it, renew this owner's own, or take over an expired
        one; `LeaseHeld` while another owner's is live."""
        found = self._read()
        if found is None:
            record = self._record(generation=1)
            try:
                self._etag = self.store.create(self.key, record.to_bytes())
            except Exists:  # another taker created it between our read and write
                return self._held_by_winner()
            self.record = record
            return record
        current, stored = found
        now = self._clock()
        live = now < current.expires_at + self.grace_s
        if current.owner != self.owner and live and not owner_is_gone(current.owner):
            raise LeaseHeld(self.where, current.owner, current.expires_at - now)
        record = self._record(generation=current.generation + 1)
        try:
            self._etag = self.store.replace(self.key, record.to_bytes(), stored.etag)
        except Stale:  # another taker replaced the version we read first
            return self._held_by_winner()
        self.record = record
        return record

    def _held_by_winner(self) -> LeaseRecord:
        found = self._read()
        if found is None:
            raise RunDirError(f"{self.where}: the lease changed while it was taken; try again")
        winner = found[0]
        raise LeaseHeld(self.where, winner.owner, winner.expires_at - self._clock())

    def renew(self) -> LeaseRecord:
        """The heartbeat: push the expiry on; `LeaseLost` when the lease is no longer
        this owner's version (taken over)."""
        if self._etag is None or self.record is None:
            raise RunDirError(f"{self.where}: renewed before it was acquired")
        record = self._record(generation=self.record.generation)
        try:
            self._etag = self.store.replace(self.key, record.to_bytes(), self._etag)
        except Stale:
            found = self._read()
            self._etag, self.record = None, None
            raise LeaseLost(self.where, found[0].owner if found else "nobody") from None
        self.record = record
        return record

    def release(self) -> None:
        """Give the lease up now (expired at once); a lease already lost stays lost."""
        if self._etag is None or self.record is None:
            return
        now = self._clock()
        gone = LeaseRecord(self.owner, self.record.generation, now - self.grace_s, now, 0.0)
        try:
            self.store.replace(self.key, gone.to_bytes(), self._etag)
        except Stale:
            pass
        self._etag, self.record = None, None


__all__ = ["LEASE", "LeaseRecord", "RunLease", "owner_is_gone"]
