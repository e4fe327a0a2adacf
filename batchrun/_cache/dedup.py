"""In-run deduplication: identical requests in one input are sent once.

An evaluation input often asks the same thing twice (the same review under two ids,
a prompt variant that renders alike for some rows). The first such row is the
*leader*: it is sent. Every later row with the same request key is a *follower*: it
is not sent, and it gets its leader's answer.

The runner reads its input twice already (a validating scan, then the sending pass),
and this follows that shape, because that is what keeps memory small for ten million
rows. A Python dict of every key seen would cost ~150 bytes a row; instead:

* scan pass: `RequestGroups.add` appends each row's 16-byte key to one bytearray
  (**16 bytes a row**, plus up to 1/8 growth slack; ~0.2 us a row); a row that must
  be sent even if another asks the same (a sampled request repeated on purpose) is
  `add_unique`;
* `RequestGroups.finish` sorts the keys with pyarrow, in 16 slices by the key's first
  byte so the sort's scratch space is a sixteenth of the input (**about 4 bytes a row
  more, plus up to ~60 bytes per follower, for the moment it runs**: 3 s for ten
  million rows), and frees the keys;
* sending pass: the returned `DedupPlan` holds **nothing for a unique row and 32 bytes
  per follower** (follower -> leader, and leader -> followers, both sorted), and
  answers `leader_of` / `followers_of` by binary search, in any order (a lane per
  model reads the input once per model).

BENCHMARKS.md ("Response cache", in-run deduplication) has the measured figures.

Keys are `batchrun._cache.store.cache_key` values (blake2b-128 of the endpoint and the body
bytes), so "the same request" here is what it is for the response cache; 128 bits
make a false match (a follower given another request's answer) a ~1e-25 event for
ten million rows. Rows are numbered by their order of `add` (0-based).

    >>> groups = RequestGroups()
    >>> groups.add_many([b"A" * 16, b"B" * 16, b"A" * 16, b"A" * 16])
    >>> plan = groups.finish()
    >>> [plan.leader_of(row) for row in range(4)], plan.followers_of(0)
    ([None, None, 0, 0], [2, 3])
"""

from __future__ import annotations

from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from hashlib import blake2b
from typing import Any

from batchrun._arrowbuf import falses, from_array, null, scalar

__all__ = ["DedupPlan", "RequestGroups"]

KEY_BYTES = 16
_SLICE_BITS = 4
_SLICES = 1 << _SLICE_BITS  # finish() sorts 1/16 of the keys at a time
_NONZERO_PIECE = 1 << 16


class RequestGroups:
    """Collects every row's request key (the scan pass); `finish` groups them."""

    __slots__ = ("_keys", "_rows", "_finished")

    def __init__(self) -> None:
        # one bytearray of 16 bytes a row: appending is ~90 ns, where splitting each key
        # into two array('Q') halves was ~500 ns (and pyarrow sorts the bytes as they are)
        self._keys = bytearray()
        self._rows = 0
        self._finished = False

    def add(self, key: bytes) -> int:
        """Record the next row's key; returns that row's number (0, 1, 2, ...)."""
        if self._finished:
            raise ValueError("RequestGroups.finish() was called: start a new one")
        if len(key) != KEY_BYTES:
            raise ValueError(f"a request key is {KEY_BYTES} bytes (see cache_key), not {len(key)}")
        self._keys += key
        self._rows += 1
        return self._rows - 1

    def add_unique(self) -> int:
        """Record a row that must be sent whatever else asks the same, e.g. a sampled
        request (temperature above 0, no seed) that is repeated on purpose to draw
        several answers; `batchrun._cache.store.cacheable` is the test. Returns its number."""
        row = self._rows
        # a key no request has: blake2b of a marker and the row number, never the
        # hash of "endpoint\n body" (a collision is as likely as any 128-bit one)
        return self.add(blake2b(b"batchrun-unique-row\0%d" % row, digest_size=KEY_BYTES).digest())

    def add_many(self, keys: Iterable[bytes]) -> None:
        for key in keys:
            self.add(key)

    def __len__(self) -> int:
        return self._rows

    @property
    def nbytes(self) -> int:
        """Bytes the keys hold now (the bytearray's allocation is up to 1/8 more)."""
        return len(self._keys)

    def finish(self) -> DedupPlan:
        """Group equal keys and free them: the plan for the sending pass."""
        if self._finished:
            raise ValueError("RequestGroups.finish() was called already")
        self._finished = True
        rows, keys = self._rows, self._keys
        self._keys = bytearray()
        if rows < 2:
            return DedupPlan(rows)
        return DedupPlan(rows, *_group(keys, rows))


def _group(keys: bytearray, n: int) -> tuple[array[int], array[int], array[int], array[int], int]:
    """(followers, their leaders) sorted by follower, (leaders, their followers)
    sorted by leader then follower, and the number of distinct leaders."""
    import pyarrow as pa
    import pyarrow.compute as pc

    key_type = pa.binary(KEY_BYTES)
    all_keys = pa.Array.from_buffers(key_type, n, [None, pa.py_buffer(keys)])
    # each key's slice, from its first byte (1 byte a row): comparing 16-byte keys
    # against slice bounds instead cost half of finish()
    key_bytes = pa.Array.from_buffers(pa.uint8(), n * KEY_BYTES, [None, pa.py_buffer(keys)])
    # Arrow scalars from buffers: Python values make pyarrow import pandas (arrowbuf)
    first, second = scalar(0, "int32"), scalar(1, "int32")
    first_byte = pc.list_element(pa.FixedSizeListArray.from_arrays(key_bytes, KEY_BYTES), first)
    slice_of = pc.shift_right(first_byte, scalar(8 - _SLICE_BITS, "uint8"))
    del key_bytes, first_byte
    found_followers = []
    found_leaders = []
    for part in range(_SLICES):
        # this slice's rows, ascending (so the first row of a group of equal keys,
        # after a stable sort, is its leader)
        rows = _nonzero(pc.equal(slice_of, scalar(part, "uint8")))
        if len(rows) < 2:
            continue
        # sort by the key read as two uint64 (2x faster than sorting 16-byte strings)
        halves = pc.take(all_keys, rows).buffers()[1]
        words = pa.Array.from_buffers(pa.uint64(), 2 * len(rows), [None, halves])
        pairs = pa.FixedSizeListArray.from_arrays(words, 2)
        part_keys = pa.record_batch(
            [pc.list_element(pairs, first), pc.list_element(pairs, second)], names=["a", "b"]
        )
        del halves, words, pairs
        order = pc.sort_indices(part_keys, sort_keys=[("a", "ascending"), ("b", "ascending")])
        part_keys = pc.take(part_keys, order)  # stable: equal keys stay in row order
        rows = pc.take(rows, order)
        del order
        a, b = part_keys.column(0), part_keys.column(1)
        same = pc.and_(pc.equal(a[1:], a[:-1]), pc.equal(b[1:], b[:-1]))
        del part_keys, a, b
        if not pc.any(same).as_py():
            continue
        # is_follower[i] = same[i - 1]; a group's leader is its first row, carried forward
        is_follower = pa.concat_arrays([falses(1), same])
        starts = pc.if_else(is_follower, null("uint64"), rows)
        leader = pc.fill_null_forward(starts)
        found_followers.append(pc.filter(rows, is_follower))
        found_leaders.append(pc.filter(leader, is_follower))
    del all_keys, slice_of
    if not found_followers:
        pa.default_memory_pool().release_unused()
        return array("Q"), array("Q"), array("Q"), array("Q"), 0
    pairs = pa.record_batch(
        [pa.concat_arrays(found_followers), pa.concat_arrays(found_leaders)], names=["f", "l"]
    )
    del found_followers, found_leaders
    by_follower = pc.take(pairs, pc.sort_indices(pairs, sort_keys=[("f", "ascending")]))
    followers, leader_of = _to_array(by_follower.column(0)), _to_array(by_follower.column(1))
    del by_follower
    by_leader = pc.take(
        pairs, pc.sort_indices(pairs, sort_keys=[("l", "ascending"), ("f", "ascending")])
    )
    del pairs
    leaders = by_leader.column(1)
    # distinct leaders from the sorted column (count_distinct builds a hash table:
    # 33 MiB for 100,000 followers)
    changes = pc.sum(pc.not_equal(leaders[1:], leaders[:-1])).as_py() or 0
    result = followers, leader_of, _to_array(leaders), _to_array(by_leader.column(0)), 1 + changes
    del by_leader, leaders
    # pyarrow's allocator keeps freed pages for reuse; the sort's are not needed again
    pa.default_memory_pool().release_unused()
    return result


def _nonzero(mask: Any) -> Any:
    """``pc.indices_nonzero`` in pieces: it reserves 8 bytes for every input row
    before it knows how many are set, which for a sixteenth set is 16x too many."""
    import pyarrow as pa
    import pyarrow.compute as pc

    parts = []
    for start in range(0, len(mask), _NONZERO_PIECE):
        found = pc.indices_nonzero(mask.slice(start, _NONZERO_PIECE))
        if len(found):
            parts.append(pc.add(found, scalar(start, "uint64")) if start else found)
    return pa.concat_arrays(parts) if parts else from_array(array("Q"), "uint64")


def _to_array(values: Any) -> array[int]:
    """A pyarrow uint64 array without nulls, copied into an array('Q')."""
    out: array[int] = array("Q")
    buffer = values.buffers()[1]
    start = values.offset * 8
    out.frombytes(memoryview(buffer)[start : start + len(values) * 8])
    return out


class DedupPlan:
    """Which rows are sent and which take another row's answer (the sending pass).

    ``rows`` rows in all; ``followers`` of them are not sent; ``leaders`` rows are
    sent and answer at least one follower.
    """

    __slots__ = (
        "rows",
        "leaders",
        "_followers",
        "_leader_of",
        "_leaders",
        "_followers_by_leader",
    )

    def __init__(
        self,
        rows: int,
        followers: array[int] | None = None,
        leader_of: array[int] | None = None,
        leaders: array[int] | None = None,
        followers_by_leader: array[int] | None = None,
        distinct_leaders: int = 0,
    ) -> None:
        self.rows = rows
        self.leaders = distinct_leaders
        """Rows sent whose answer also answers other rows."""
        self._followers = followers if followers is not None else array("Q")  # sorted
        self._leader_of = leader_of if leader_of is not None else array("Q")  # parallel
        self._leaders = leaders if leaders is not None else array("Q")  # sorted
        self._followers_by_leader = (
            followers_by_leader if followers_by_leader is not None else array("Q")
        )

    @property
    def followers(self) -> int:
        """Rows not sent: each takes its leader's answer."""
        return len(self._followers)

    @property
    def nbytes(self) -> int:
        """Bytes the plan holds: 32 per follower, none per unique row."""
        return 8 * (
            len(self._followers)
            + len(self._leader_of)
            + len(self._leaders)
            + len(self._followers_by_leader)
        )

    def leader_of(self, row: int) -> int | None:
        """The row whose answer this row takes, or None when this row is sent."""
        i = bisect_left(self._followers, row)
        if i < len(self._followers) and self._followers[i] == row:
            return int(self._leader_of[i])
        return None

    def followers_of(self, row: int) -> list[int]:
        """The rows that take this row's answer (empty for most rows), ascending."""
        start = bisect_left(self._leaders, row)
        stop = bisect_right(self._leaders, row, lo=start)
        return list(self._followers_by_leader[start:stop])

    def pairs(self) -> Iterator[tuple[int, int]]:
        """Every (follower, its leader), by follower: what a resume checks against the
        rows already answered (a pilot may have sent a follower in its leader's place)."""
        return zip(self._followers, self._leader_of, strict=True)

    def __repr__(self) -> str:
        return f"DedupPlan(rows={self.rows}, followers={self.followers})"
