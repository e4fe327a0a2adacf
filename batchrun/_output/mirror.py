"""A run directory on object storage, worked on through a local copy.

The engine, the journal reader, the reports and every lane work on a local directory.
A run whose directory is on object storage (``s3://``, ``gs://``, ``abfs://``: one
`batchrun._output.store.ObjectStore` each) keeps that: `RunMirror` makes a
fresh local directory (a temporary one, on this node's disk), fills it from what the
prefix holds, hands it to the run, and meanwhile writes back:

* **the journals as segments.** A thread reads what was appended to results.jsonl and
  errors.jsonl since the last commit (whole lines only) and commits it as the next
  immutable numbered segment (`batchrun._output.segments`) once the `CommitInterval`
  is due, and once more when the run ends. A segment is created with
  ``If-None-Match: *``: two writers never both commit segment N (the loser gets
  `batchrun.errors.SegmentTaken` naming the winner, and the run stops).
* **the other files as plain objects** (run.json, summary.json, shards.json,
  results.parquet, invalid.jsonl...): each one the run changed is put again, at each
  commit and at the end. Only the lease holder (or the shard's one task) writes them.
* **the lease.** The run's lock is ``lease.json`` (`batchrun._output.runlease`),
  acquired before anything is read and renewed by the same thread every ttl/3; a
  second run is refused naming the holder (`batchrun.errors.LeaseHeld`).

On a start, the local journals are rebuilt from the committed segments alone
(`batchrun._output.segments.SegmentLog.rebuild`), so a run started again on any node
finds every committed row done and never sends it again. Rows answered after the
last commit are lost with the process: fewer than one segment per journal (the
commit interval's rows or seconds), the lines of one tick of the thread, and the
requests on the wire, paid and sent again (docs/DESIGN.md, "A run on object storage
works on a local copy").

A shard on a cluster is the same with ``owned`` limited to the shard's keys and its
own lease, ``shards/00003/lease.json`` (`batchrun._scale.worker.on_this_node`).
`snapshot` is the read-only side: a local copy of the prefix that
`batchrun._output.rundir.RunDir` reads.

    with RunMirror("s3://bucket/runs/a") as local:     # doctest: +SKIP
        ...                                             # run with out_dir=local
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from batchrun._output.journal import ERRORS, RESULTS
from batchrun._output.runlease import LEASE, RunLease
from batchrun._output.segments import (
    SEGMENTS,
    CommitInterval,
    SegmentLog,
    SegmentWriter,
    ShardState,
)
from batchrun._output.store import ObjectStore, Stored, open_store
from batchrun.errors import LeaseLost, RunDirError, SegmentTaken

TICK_S = 0.02
"""How often the committing thread looks at the journals: what a crash can cost
beyond the waiting segment is the lines written in one tick (an idle thread, reading
two files 50 times a second, measured ~5 ms of CPU a second on a loaded machine)."""
JOURNALS = (RESULTS, ERRORS)
LEASE_COPY = ".lease.json"
"""The lease as a snapshot found it (`RunDir.holder` of a run on object storage)."""
LOCATION_NOTE = ".location"
"""A snapshot's or mirror's location, for the reports."""


COPY_PREFIX = "batchrun-run-"
"""A local copy's directory in the temporary directory: ``batchrun-run-<pid>-<random>``."""


def _remove_left_behind() -> None:
    """Remove the local copies that killed processes of this machine left (a copy is
    never reused: what it held that mattered is in committed segments)."""
    home = tempfile.gettempdir()
    try:
        names = os.listdir(home)
    except OSError:
        return
    for name in names:
        if not name.startswith(COPY_PREFIX):
            continue
        pid = name[len(COPY_PREFIX) :].partition("-")[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(os.path.join(home, name), ignore_errors=True)
        except OSError:
            continue  # alive, another user's


def _is_segment(key: str) -> bool:
    return f"/{SEGMENTS}/" in f"/{key}"


def _journal_dir(key: str) -> str:
    """``shards/00003`` for ``shards/00003/segments/00000001.jsonl`` ("" at the top)."""
    head = f"/{key}".split(f"/{SEGMENTS}/", 1)[0]
    return head.strip("/")


def _local(root: str, key: str) -> str:
    return os.path.join(root, *key.split("/")) if key else root


def _write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.part"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def pull(
    store: ObjectStore,
    root: str,
    *,
    prefix: str = "",
    parquet: bool = True,
    names: Iterable[str] | None = None,
    journals: bool = True,
    only: Iterable[str] | None = None,
) -> dict[str, ShardState]:
    """Copy the run's objects under ``prefix`` into ``root``: plain objects as files
    (``names``: only objects of these base names; ``parquet``: results.parquet too),
    each journal rebuilt from its committed segments (``journals``; ``only``: those of
    these directories). The committed state of each journal directory ("" for the
    run's own)."""
    wanted = set(names) if names is not None else None
    segment_dirs: set[str] = set()
    for key in store.keys(prefix):
        if _is_segment(key):
            segment_dirs.add(_journal_dir(key))
            continue
        base = key.rsplit("/", 1)[-1]
        if wanted is not None and base not in wanted:
            continue
        if not parquet and (key == "results.parquet" or key.startswith("results.parquet/")):
            continue
        if base == LEASE:  # the run's (a shard's: its own) lock, never a plain file
            target = _local(root, key[: -len(LEASE)] + LEASE_COPY)
        elif base in JOURNALS or base.startswith("."):
            continue  # journals come from segments only
        else:
            target = _local(root, key)
        stored = store.get(key)
        if stored is not None:
            _write(target, stored.data)
    states: dict[str, ShardState] = {}
    if journals:
        chosen = segment_dirs if only is None else segment_dirs & set(only)
        for where in sorted(chosen):
            state = SegmentLog(store, where).rebuild()
            state.write_journal(_local(root, where))
            states[where] = state
    return states


@dataclass
class _Tail:
    """One journal directory's new complete lines, committed a segment at a time."""

    directory: str
    writer: SegmentWriter
    offsets: dict[str, int] = field(default_factory=dict)

    def poll(self) -> int:
        """Take the new complete lines, committing a segment each time one is due (so a
        segment never holds more than the interval's rows); how many were committed."""
        committed = 0
        for name in JOURNALS:
            path = os.path.join(self.directory, name)
            start = self.offsets.get(name, 0)
            try:
                with open(path, "rb") as f:
                    f.seek(start)
                    data = f.read()
            except FileNotFoundError:
                continue
            end = data.rfind(b"\n") + 1
            if end <= 0:
                continue
            for line in data[:end].splitlines(keepends=True):
                if name == RESULTS:
                    self.writer.add(result=line)
                else:
                    self.writer.add(error=line)
                if self.writer.pending_rows >= self.writer.interval.rows:
                    committed += self.writer.flush() is not None
            self.offsets[name] = start + end
        return committed


class RunMirror:
    """``location`` (an object-storage run directory) worked on through a local one
    (see the module docstring). ``with`` it: the local directory's path.

    ``owned``: the keys this process writes back (prefixes; "" for every key but
    ``excluded``); ``journals``: the journal directories it commits ("" the run's own,
    ``shards/00003`` a shard's); ``lease``: hold a lease meanwhile, the run's
    (``lease_key`` lease.json) or a shard's (``shards/00003/lease.json``);
    ``rebuild``: the journal directories rebuilt from their segments when it opens
    (None: every one under ``pull_prefix``; a Ray driver needs only its own, it reads
    the shards' when they end).
    ``on_failure``: called from the committing thread when the run must stop (its
    lease was lost, or another writer committed its segment)."""

    def __init__(
        self,
        location: str,
        *,
        interval: CommitInterval | None = None,
        journals: tuple[str, ...] = ("",),
        owned: tuple[str, ...] = ("",),
        excluded: tuple[str, ...] = (),
        pull_prefix: str = "",
        lease: bool = True,
        lease_key: str = LEASE,
        rebuild: tuple[str, ...] | None = None,
        store: ObjectStore | None = None,
        owner: str | None = None,
        local_dir: str | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.location = location.rstrip("/")
        self.store = store if store is not None else open_store(self.location)
        self.interval = interval or CommitInterval()
        self.journals = journals
        self.owned = owned
        self.excluded = excluded
        self.pull_prefix = pull_prefix
        self.rebuild = rebuild
        self.lease_key = lease_key
        self.lease = RunLease(self.store, lease_key, owner) if lease else None
        self.owner = self.lease.owner if self.lease else owner
        self.on_failure = on_failure
        self._clock = clock
        self._given_dir = local_dir
        self.local = ""
        self.failure: BaseException | None = None
        self.tails: list[_Tail] = []
        self._pushed: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._next_renew = 0.0
        self._fresh = False
        self._wrote = False
        self._next_push = 0.0
        self.segments = 0
        """Segments this process committed."""

    # -- start ----------------------------------------------------------------------
    def open(self) -> str:
        if self.lease is not None:
            self.lease.acquire()  # LeaseHeld names the live owner
            self._next_renew = self._clock() + self.lease.ttl_s / 3
        try:
            if self._given_dir is None:
                _remove_left_behind()
            self.local = self._given_dir or tempfile.mkdtemp(prefix=f"{COPY_PREFIX}{os.getpid()}-")
            self._fresh = self.lease is not None and not [
                k for k in self.store.keys(self.pull_prefix) if k != self.lease_key
            ]
            states = pull(
                self.store, self.local, prefix=self.pull_prefix, parquet=False, only=self.rebuild
            )
            for where in self.journals:
                state = states.get(where, ShardState())
                log = SegmentLog(self.store, where, self.owner)
                directory = _local(self.local, where)
                os.makedirs(directory, exist_ok=True)
                tail = _Tail(
                    directory,
                    SegmentWriter(log, state, self.interval, clock=self._clock),
                    {RESULTS: len(state.results), ERRORS: len(state.errors)},
                )
                self.tails.append(tail)
            self._remember_files()
            with open(os.path.join(self.local, LOCATION_NOTE), "w") as f:
                f.write(self.location + "\n")
        except BaseException:
            self._discard()
            if self.lease is not None:  # nothing was done under it: give it up now
                with contextlib.suppress(RunDirError):
                    self.lease.release()
            raise
        with _ACTIVE_LOCK:
            _ACTIVE[os.path.abspath(self.local)] = self
        self._thread = threading.Thread(target=self._loop, name="batchrun-commit", daemon=True)
        self._thread.start()
        return self.local

    def __enter__(self) -> str:
        return self.open()

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close()

    # -- meanwhile ------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.commit(final=False)
                self._heartbeat()
            except (SegmentTaken, LeaseLost) as exc:
                self._failed(exc)
                return
            except RunDirError:
                continue  # the store is unreachable for now: the next tick tries again

    def _failed(self, exc: BaseException) -> None:
        self.failure = exc
        if self.on_failure is not None:
            self.on_failure(exc)

    def _heartbeat(self) -> None:
        if self.lease is None or self._clock() < self._next_renew:
            return
        self.lease.renew()
        self._next_renew = self._clock() + self.lease.ttl_s / 3

    def commit(self, *, final: bool) -> int:
        """Commit each journal's new lines when due (``final``: whatever waits), and
        put the files that changed when a segment was committed (or ``final``). How
        many segments were committed."""
        with self._lock:
            if self.failure is not None:
                return 0
            committed = 0
            for tail in self.tails:
                committed += tail.poll()
                header = tail.writer.flush() if final else tail.writer.commit_if_due()
                committed += header is not None
            self.segments += committed
            now = self._clock()
            if committed or final or now >= self._next_push:
                # the other files go with each segment, and at least once a commit
                # interval without one (a driver's summary.json: its shards commit)
                self._next_push = now + self.interval.seconds
                self.push()
            return committed

    @property
    def pending_rows(self) -> int:
        """Rows answered and not yet committed: what a crash now would lose."""
        return sum(t.writer.pending_rows for t in self.tails)

    # -- plain files ----------------------------------------------------------------
    def _files(self) -> Iterator[tuple[str, str]]:
        for root, dirs, names in os.walk(self.local):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            rel = os.path.relpath(root, self.local)
            base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            for name in names:
                if name.startswith(".") or name.endswith(".part") or name in (*JOURNALS, LEASE):
                    continue
                key = base + name
                if self._owns(key):
                    yield key, os.path.join(root, name)

    def _owns(self, key: str) -> bool:
        if any(key.startswith(x) for x in self.excluded):
            return False
        return any(key.startswith(p) for p in self.owned)

    def _remember_files(self) -> None:
        for key, path in self._files():
            with contextlib.suppress(OSError):
                st = os.stat(path)
                self._pushed[key] = (st.st_size, st.st_mtime_ns)

    def push(self) -> int:
        """Put every owned file that changed since it was last put (or pulled)."""
        count = 0
        for key, path in list(self._files()):
            try:
                st = os.stat(path)
                mark = (st.st_size, st.st_mtime_ns)
                if self._pushed.get(key) == mark:
                    continue
                with open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue  # replaced while listed: the next push has it
            self.store.put(key, data)
            self._pushed[key] = mark
            self._wrote = True
            count += 1
        return count

    def refresh(self, prefix: str, names: Iterable[str] | None = None) -> None:
        """Copy what others wrote under ``prefix`` (the shards', for a driver) into the
        local directory again: ``names`` only (plain objects), or everything, each
        journal rebuilt from its segments."""
        pull(
            self.store,
            self.local,
            prefix=prefix,
            parquet=False,
            names=names,
            journals=names is None,
        )

    # -- the end --------------------------------------------------------------------
    def close(self) -> None:
        """Stop the thread, commit what waits, put the files, give the lease up and
        remove the local directory. Raises what stopped the run (`SegmentTaken`,
        `LeaseLost`)."""
        self._stop.set()
        with _ACTIVE_LOCK:
            _ACTIVE.pop(os.path.abspath(self.local), None)
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        try:
            if self.failure is None and self.local:
                try:
                    self.commit(final=True)
                except (SegmentTaken, LeaseLost) as exc:
                    self.failure = exc
            if self.failure is not None:
                raise self.failure
        finally:
            if self.lease is not None and not isinstance(self.failure, LeaseLost):
                with contextlib.suppress(RunDirError):
                    if self._fresh and not self._wrote and not self.segments:
                        # refused before it wrote anything: leave the prefix as found
                        self.store.delete(self.lease_key)
                    else:
                        self.lease.release()
            self._discard()

    def _discard(self) -> None:
        if self.local and self._given_dir is None:
            shutil.rmtree(self.local, ignore_errors=True)


_ACTIVE: dict[str, RunMirror] = {}
_ACTIVE_LOCK = threading.Lock()


def mirror_of(local: str) -> RunMirror | None:
    """The `RunMirror` working through the local directory ``local`` (or a directory
    above it: a shard's) in this process, or None. The engine asks, to be told when
    the run must stop."""
    path = os.path.abspath(local)
    with _ACTIVE_LOCK:
        for root, mirror in _ACTIVE.items():
            if path == root or path.startswith(root + os.sep):
                return mirror
    return None


def refresh(local: str, prefix: str, names: Iterable[str] | None = None) -> None:
    """When ``local`` is the copy of a run on object storage: copy what other
    processes wrote under ``prefix`` into it again (a driver reading its shards):
    ``names`` only, or every object with each journal rebuilt from its segments.
    Nothing for a plain local directory."""
    location = location_of(local)
    if location is None:
        return
    mirror = mirror_of(local)
    store = mirror.store if mirror is not None else open_store(location)
    pull(store, local, prefix=prefix, parquet=False, names=names, journals=names is None)


# -- reading --------------------------------------------------------------------------
def snapshot_home() -> str:
    """Where snapshots of runs on object storage are kept: $BATCHRUN_SNAPSHOTS, else
    ~/.cache/batchrun/snapshots."""
    found = os.environ.get("BATCHRUN_SNAPSHOTS")
    if found:
        return found
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "batchrun", "snapshots")


class SegmentCache:
    """An `ObjectStore` that keeps the segments it reads in a local directory and reads
    them from there the next time: a segment is immutable once committed, so a copy is
    never stale. Everything else goes to ``store`` (the live page of a run takes a
    snapshot every few seconds: only the new segments are fetched)."""

    def __init__(self, store: ObjectStore, directory: str) -> None:
        self.store = store
        self.directory = directory
        self.location = store.location
        self.fetched = 0
        """Segments read from the store (not from the cache)."""

    def create(self, key: str, data: bytes) -> str:
        return self.store.create(key, data)

    def replace(self, key: str, data: bytes, etag: str) -> str:
        return self.store.replace(key, data, etag)

    def put(self, key: str, data: bytes) -> str:
        return self.store.put(key, data)

    def delete(self, key: str) -> None:
        self.store.delete(key)

    def keys(self, prefix: str) -> list[str]:
        return self.store.keys(prefix)

    def get(self, key: str) -> Stored | None:
        if not _is_segment(key):
            return self.store.get(key)
        path = _local(self.directory, key)
        try:
            with open(path, "rb") as f:
                data = f.read()
            return Stored(data, "")
        except FileNotFoundError:
            pass
        stored = self.store.get(key)
        if stored is not None:
            _write(path, stored.data)
            self.fetched += 1
        return stored


def snapshot(location: str, store: ObjectStore | None = None) -> str:
    """A local, read-only copy of the run at ``location`` as it is now (its journals
    are its committed segments): the path of a directory that replaces the last
    snapshot of the same location whole. RunDirError when nothing is there. Segments
    read once are kept beside it (`SegmentCache`) and not fetched again."""
    location = location.rstrip("/")
    store = store if store is not None else open_store(location)
    home = snapshot_home()
    os.makedirs(home, exist_ok=True)
    name = hashlib.blake2b(location.encode(), digest_size=10).hexdigest()
    target = os.path.join(home, name)
    fresh = tempfile.mkdtemp(prefix=f".{name}-", dir=home)
    # the cache belongs to this run: a prefix emptied and used again for another run
    # (another run.json) gets a cache of its own
    info = store.get("run.json")
    run_id = hashlib.blake2b(info.data if info else b"", digest_size=6).hexdigest()
    cached = SegmentCache(store, os.path.join(home, f".{name}.{run_id}.segments"))
    try:
        pull(cached, fresh)
        if not os.listdir(fresh):
            raise RunDirError(f"{location}: no such run directory (nothing under the prefix)")
        with open(os.path.join(fresh, LOCATION_NOTE), "w") as f:
            f.write(location + "\n")
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    old = f"{target}.old-{os.getpid()}-{time.monotonic_ns()}"
    with contextlib.suppress(FileNotFoundError):
        os.rename(target, old)
    os.rename(fresh, target)
    shutil.rmtree(old, ignore_errors=True)
    return target


def location_of(local: str) -> str | None:
    """The object-storage location a snapshot or mirror stands for (None: a plain
    local directory)."""
    try:
        with open(os.path.join(local, LOCATION_NOTE)) as f:
            return f.read().strip() or None
    except OSError:
        return None


def recorded_out_dir(out_dir: str | None) -> str | None:
    """The run directory as run.json records it: for the local copy of a run on object
    storage, the prefix the user gave, not the copy."""
    if not out_dir:
        return out_dir
    return location_of(out_dir) or out_dir


def lease_holder(local: str, now: float | None = None) -> str | None:
    """Who held the lease of the run when the snapshot ``local`` was taken, if it was
    live then (None: nobody)."""
    import orjson

    try:
        with open(os.path.join(local, LEASE_COPY), "rb") as f:
            raw = orjson.loads(f.read())
        expires = float(raw["expires_at"])
        owner = str(raw["owner"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    from batchrun._output.runlease import owner_is_gone

    live = expires > (time.time() if now is None else now) and not owner_is_gone(owner)
    return owner if live else None


__all__ = [
    "RunMirror",
    "SegmentCache",
    "lease_holder",
    "location_of",
    "mirror_of",
    "pull",
    "recorded_out_dir",
    "refresh",
    "snapshot",
    "snapshot_home",
]
