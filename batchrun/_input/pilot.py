"""Pilot runs: send part of the input first, look, then continue the same directory.

``--limit N`` takes the first N valid rows of the input, ``--sample N --seed S`` a
random N that the seed fixes: each row's id is hashed with the seed (blake2b) and the
N smallest hashes win, so the sample depends only on the ids and the seed, not on the
row order, and the same command picks the same rows again. With variants a row is
all its variants' requests (a pilot compares them on the same rows). The run
directory is the same as the full run's: a later run without the option sends only
what the pilot did not.

The selection is collected during the input scan (`PilotPicker.observe`, a few bytes
a row for a sample, nothing for a limit) and consulted by the sending pass
(`Selection.wants`).

    >>> picker = PilotPicker(limit=2)
    >>> for row in (1, 2, 2, 3):
    ...     picker.observe(Request(f"r{row}", {}, row), b"")
    >>> sel = picker.finish()
    >>> [sel.wants(Request("x", {}, row)) for row in (1, 2, 3)], sel.rows
    ([True, True, False], 2)
"""

from __future__ import annotations

from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from hashlib import blake2b

from batchrun._arrowbuf import from_array
from batchrun._input.variants import split_variant
from batchrun._models import Request


@dataclass(frozen=True)
class Selection:
    """The input rows a pilot asks for (by row number)."""

    rows: int
    """How many input rows were picked."""
    last_row: int | None = None
    """``--limit``: every row up to this row number."""
    picked: frozenset[int] = frozenset()
    """``--sample``: these row numbers."""

    def wants(self, req: Request) -> bool:
        if self.last_row is not None:
            return req.row <= self.last_row
        return req.row in self.picked


class PilotPicker:
    """Collects what a selection needs while the input is scanned."""

    def __init__(
        self,
        *,
        limit: int | None = None,
        sample: int | None = None,
        seed: int = 0,
        variants: Sequence[str] = (),
    ) -> None:
        if (limit is None) == (sample is None):
            raise ValueError("a pilot takes a limit or a sample")
        self.limit = limit
        self.sample = sample
        self._seed = seed.to_bytes(8, "little")
        self._variants = tuple(variants)
        self._last = 0  # the last row number seen
        self._rows = 0
        self._last_wanted: int | None = None
        self._keys: array[int] = array("Q")
        self._row_numbers: array[int] = array("q")

    def observe(self, req: Request, payload: bytes) -> None:
        """One valid request of the scan (called in input order)."""
        if req.row == self._last:
            return  # another variant of the same row
        self._last = req.row
        self._rows += 1
        if self.limit is not None:
            if self._rows == self.limit:
                self._last_wanted = req.row
            return
        row_id = split_variant(req.custom_id, self._variants)[0]  # the row's own id
        digest = blake2b(self._seed + row_id.encode(), digest_size=8).digest()
        self._keys.append(int.from_bytes(digest, "little"))
        self._row_numbers.append(req.row)

    @property
    def rows_seen(self) -> int:
        """Valid input rows the scan saw."""
        return self._rows

    def finish(self) -> Selection:
        if self.limit is not None:
            last = self._last_wanted if self._last_wanted is not None else self._last
            return Selection(rows=min(self.limit, self._rows), last_row=last)
        assert self.sample is not None
        n = min(self.sample, len(self._keys))
        if n == len(self._keys):
            return Selection(rows=n, picked=frozenset(self._row_numbers))
        import pyarrow as pa
        import pyarrow.compute as pc

        keys = from_array(self._keys, "uint64")
        # the n smallest hashes, ties broken by row number: the same rows every time
        table = pa.table({"key": keys, "row": from_array(self._row_numbers, "int64")})
        chosen = pc.select_k_unstable(
            table, k=n, sort_keys=[("key", "ascending"), ("row", "ascending")]
        )
        rows = table.column("row").take(chosen).to_pylist()
        return Selection(rows=n, picked=frozenset(int(r) for r in rows))


__all__ = ["PilotPicker", "Selection"]
