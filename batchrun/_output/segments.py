"""A shard's results on object storage: immutable, numbered segments.

An object store has no append, so a shard that writes its run directory there keeps
its journal (results.jsonl, errors.jsonl) on the worker's local disk as always and
commits what it appended since its last commit as one new object, segment N:

    RUN/shards/00003/segments/00000000.jsonl
    RUN/shards/00003/segments/00000001.jsonl      one header line, then result lines,
    ...                                           then error lines (`encode_segment`)

A segment is created with a conditional put (`batchrun._output.store.ObjectStore.create`,
S3's ``If-None-Match: *``): two writers of one shard (a retried task and a zombie
of the first attempt) can never both commit segment N; the loser gets `SegmentTaken`
naming the winner and stops. A shard started again, on any node, rebuilds its
journal from the committed segments (`SegmentLog.rebuild`, `ShardState.write_journal`)
and goes on with segment N+1; a row in a committed segment is never sent again.

What a crash costs is bounded by the commit interval (`CommitInterval`, a number of
rows or seconds, whichever comes first): the rows answered since the shard's last
commit are paid and lost, at most one segment's worth per shard
(`SegmentWriter.pending_rows` is that number at any moment). See docs/DESIGN.md,
"Run directories on object storage".

    >>> interval = CommitInterval(rows=500, seconds=5.0)
    >>> interval.due(pending_rows=500, since_s=0.1), interval.due(pending_rows=3, since_s=0.1)
    (True, False)
"""

from __future__ import annotations

import os
import re
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from batchrun._output.store import Exists, ObjectStore
from batchrun.errors import RunDirError, SegmentTaken

SEGMENT_FORMAT = 1
SEGMENTS = "segments"
_NUMBERED = re.compile(r"^(\d{8})\.jsonl$")


def default_owner() -> str:
    """Who writes: ``host:pid:random``, unique across nodes and restarts."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class CommitInterval:
    """When a shard commits: once ``rows`` lines wait, or once the oldest has waited
    ``seconds`` (pure).

    The smaller the interval, the less a crash can lose and the more objects a run
    writes (one PUT per segment: 1,000 rows a segment is 1,000 PUTs for a million
    rows, a few cents on S3)."""

    rows: int = 1000
    seconds: float = 5.0

    def due(self, pending_rows: int, since_s: float) -> bool:
        return pending_rows >= self.rows or (pending_rows > 0 and since_s >= self.seconds)


@dataclass(frozen=True)
class SegmentHeader:
    """The first line of a segment: whose it is and how its bytes split."""

    shard: str
    number: int
    owner: str
    results: int
    errors: int
    results_bytes: int
    errors_bytes: int
    committed_at: float

    def to_line(self) -> bytes:
        return orjson.dumps(
            {
                "batchrun_segment": SEGMENT_FORMAT,
                "shard": self.shard,
                "number": self.number,
                "owner": self.owner,
                "results": self.results,
                "errors": self.errors,
                "results_bytes": self.results_bytes,
                "errors_bytes": self.errors_bytes,
                "committed_at": self.committed_at,
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )


def encode_segment(header: SegmentHeader, results: bytes, errors: bytes) -> bytes:
    """The segment object: its header line, its result lines, its error lines."""
    return header.to_line() + results + errors


def decode_segment(data: bytes, key: str) -> tuple[SegmentHeader, bytes, bytes]:
    """(header, result lines, error lines) of a segment object; a RunDirError when it
    is not one (a segment is written whole or not at all, so this is corruption)."""
    end = data.find(b"\n")
    try:
        raw = orjson.loads(data[:end])
        header = SegmentHeader(
            shard=str(raw["shard"]),
            number=int(raw["number"]),
            owner=str(raw["owner"]),
            results=int(raw["results"]),
            errors=int(raw["errors"]),
            results_bytes=int(raw["results_bytes"]),
            errors_bytes=int(raw["errors_bytes"]),
            committed_at=float(raw["committed_at"]),
        )
        if raw.get("batchrun_segment") != SEGMENT_FORMAT:
            raise ValueError(f"format {raw.get('batchrun_segment')!r}")
    except (ValueError, KeyError, TypeError) as exc:
        raise RunDirError(f"{key}: not a segment ({exc})") from exc
    body = data[end + 1 :]
    if len(body) != header.results_bytes + header.errors_bytes:
        raise RunDirError(
            f"{key}: {len(body)} bytes after the header, expected "
            f"{header.results_bytes + header.errors_bytes}"
        )
    return header, body[: header.results_bytes], body[header.results_bytes :]


def _lines(data: bytes, what: str) -> int:
    """Complete lines in ``data``; a torn last line is refused (never committed)."""
    if data and not data.endswith(b"\n"):
        raise ValueError(f"{what} end in a torn line: only whole lines are committed")
    return data.count(b"\n")


@dataclass
class ShardState:
    """What a shard's committed segments hold: the shard's journal as committed."""

    next_number: int = 0
    segments: list[SegmentHeader] = field(default_factory=list)
    results: bytes = b""
    errors: bytes = b""

    @property
    def result_lines(self) -> int:
        return self.results.count(b"\n")

    @property
    def error_lines(self) -> int:
        return self.errors.count(b"\n")

    def write_journal(self, directory: str) -> None:
        """The shard's local journal (results.jsonl, errors.jsonl) made the committed
        one: what the run's journal reader rebuilds a shard's progress from
        (`batchrun._output.journal`). Each file is replaced whole (atomically)."""
        from batchrun._output.journal import ERRORS, RESULTS
        from batchrun._output.summary import atomic_file

        os.makedirs(directory, exist_ok=True)
        for name, data in ((RESULTS, self.results), (ERRORS, self.errors)):
            with atomic_file(os.path.join(directory, name)) as tmp, open(tmp, "wb") as f:
                f.write(data)


class SegmentLog:
    """The committed segments of one shard (``where``: its key prefix in the run's
    store, ``shards/00003``), written as ``owner``."""

    def __init__(
        self,
        store: ObjectStore,
        where: str,
        owner: str | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.where = where.strip("/")
        self.owner = owner or default_owner()
        self._clock = clock

    @property
    def _folder(self) -> str:
        """``shards/00003/segments/``, or ``segments/`` for the run's own journal."""
        return f"{self.where}/{SEGMENTS}/" if self.where else f"{SEGMENTS}/"

    def key(self, number: int) -> str:
        return f"{self._folder}{number:08d}.jsonl"

    def numbers(self) -> list[int]:
        """The committed segment numbers, in order."""
        prefix = self._folder
        found = []
        for key in self.store.keys(prefix):
            matched = _NUMBERED.match(key[len(prefix) :])
            if matched:
                found.append(int(matched.group(1)))
        return sorted(found)

    def rebuild(self) -> ShardState:
        """The shard's state from every committed segment, in order (a shard started
        again, on any node, goes on from here)."""
        state = ShardState()
        results: list[bytes] = []
        errors: list[bytes] = []
        for number in self.numbers():
            key = self.key(number)
            stored = self.store.get(key)
            if stored is None:  # listed, then gone: segments are never deleted
                raise RunDirError(f"{self.store.location}/{key}: listed but unreadable")
            header, these_results, these_errors = decode_segment(
                stored.data, f"{self.store.location}/{key}"
            )
            state.segments.append(header)
            results.append(these_results)
            errors.append(these_errors)
            state.next_number = number + 1
        state.results = b"".join(results)
        state.errors = b"".join(errors)
        return state

    def commit(self, number: int, results: bytes, errors: bytes) -> SegmentHeader:
        """Commit segment ``number`` holding these lines; `SegmentTaken` (naming the
        writer that committed it) when it exists already."""
        header = SegmentHeader(
            shard=self.where,
            number=number,
            owner=self.owner,
            results=_lines(results, "results"),
            errors=_lines(errors, "errors"),
            results_bytes=len(results),
            errors_bytes=len(errors),
            committed_at=self._clock(),
        )
        key = self.key(number)
        data = encode_segment(header, results, errors)
        try:
            self.store.create(key, data)
        except Exists:
            stored = self.store.get(key)
            if stored is not None and stored.data == data:
                # our own write: an SDK retried a create whose answer was lost (the
                # header's owner and time make the bytes this attempt's alone)
                return header
            raise SegmentTaken(f"{self.store.location}/{key}", self.committer(number)) from None
        return header

    def committer(self, number: int) -> str:
        """Who committed segment ``number`` (as its header says)."""
        key = self.key(number)
        stored = self.store.get(key)
        if stored is None:
            return "an unknown writer"
        try:
            return decode_segment(stored.data, key)[0].owner
        except RunDirError:
            return "an unknown writer (its segment is unreadable)"


class SegmentWriter:
    """Lines a shard answered, committed a segment at a time.

    ``add`` the lines as the local journal takes them; ``commit_if_due`` after each
    (the `CommitInterval` says when); ``flush`` at the end. `pending_rows` is what a
    crash at this moment would lose."""

    def __init__(
        self,
        log: SegmentLog,
        state: ShardState,
        interval: CommitInterval | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.interval = interval or CommitInterval()
        self.next_number = state.next_number
        self._clock = clock
        self._results: list[bytes] = []
        self._errors: list[bytes] = []
        self._oldest: float | None = None
        self.committed_rows = state.result_lines + state.error_lines

    @property
    def pending_rows(self) -> int:
        return len(self._results) + len(self._errors)

    def add(self, *, result: bytes | None = None, error: bytes | None = None) -> None:
        """One complete line (ending in a newline) to commit with the next segment."""
        for line, into in ((result, self._results), (error, self._errors)):
            if line is None:
                continue
            if not line.endswith(b"\n"):
                raise ValueError("a segment holds whole lines only")
            into.append(line)
            if self._oldest is None:
                self._oldest = self._clock()

    def commit_if_due(self) -> SegmentHeader | None:
        since = 0.0 if self._oldest is None else self._clock() - self._oldest
        if not self.interval.due(self.pending_rows, since):
            return None
        return self.flush()

    def flush(self) -> SegmentHeader | None:
        """Commit what waits (nothing waits: nothing is written)."""
        if not self.pending_rows:
            return None
        header = self.log.commit(self.next_number, b"".join(self._results), b"".join(self._errors))
        self.next_number += 1
        self.committed_rows += self.pending_rows
        self._results, self._errors, self._oldest = [], [], None
        return header


__all__ = [
    "CommitInterval",
    "SegmentHeader",
    "SegmentLog",
    "SegmentWriter",
    "ShardState",
    "decode_segment",
    "default_owner",
    "encode_segment",
]
