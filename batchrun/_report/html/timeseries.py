"""A run's activity over time, binned: requests finished, tokens, 429s, retries, in flight.

Pure: fed one finished request at a time (from its output line's ``batchrun`` meta),
it keeps 21 bytes per request in typed arrays (a million rows: 21 MB, no Python
object per row), and `TimeSeries.binned` bins them with pyarrow at the end into at
most `MAX_BINS` bins of a round width (0.1 s ... 1 day), so a 2-second run gets
tenth-of-a-second bars and a day-long one 5-minute bars, and the page stays the same
size either way.

Every figure is counted at the request's finish time (``at``): attempts record no
time of their own, so a 429 that was retried shows up when its row finished.
In flight is the mean number of requests on the wire during a bin: a request is
taken to be on the wire over ``[at - latency_ms, at]`` (its attempts' wire time,
summed, ending when it finished; back-offs between attempts are not counted).

    >>> ts = TimeSeries()
    >>> ts.add(at=100.5, latency_ms=1000.0, tokens=10, statuses=[429, 200], failed=False)
    >>> b = ts.binned(max_bins=2)
    >>> b["t0"], b["bin_s"], b["finished"], b["rate_limited"], b["in_flight"]
    (99.0, 1.0, [0, 1], [0, 1], [0.5, 1.0])

(The last bin's mean is over the part of it the run lasted.)

In a pool, each answer sent also names the endpoint that gave it (the last of the
line's ``batchrun.route``: its name; ``batchrun.endpoint``, its URL, may be two
names' with two keys), and
``by_endpoint`` gives each endpoint's answers per bin: its share of the work over
time. A failed row or a reused answer (nothing sent) is no endpoint's work.

    >>> ts = TimeSeries()
    >>> for at, name in ((0.05, "a"), (0.06, "b"), (0.15, "a")):
    ...     ts.add(at=at, latency_ms=None, tokens=0, statuses=[200], failed=False, endpoint=name)
    >>> ts.binned()["by_endpoint"]
    {'a': [1, 1], 'b': [1, 0]}
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from batchrun._arrowbuf import from_array, scalar

MAX_BINS = 600
"""Most bins a series gets: enough for a wide chart's pixels, small in the page."""
BIN_WIDTHS: tuple[float, ...] = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600)
BIN_WIDTHS += (900, 1800, 3600, 7200, 21600, 43200, 86400)
"""Bin widths in seconds, smallest first; the first that fits `MAX_BINS` is used."""
COUNTERS = ("finished", "failed", "tokens", "rate_limited", "retries")
_SMALL = 255  # retries and 429s of one request are kept in a byte (saturating)
_NO_ENDPOINT = 0xFFFF
"""The endpoint code of a row that is no endpoint's answer (failed, reused, one endpoint)."""


def bin_width(span_s: float, max_bins: int = MAX_BINS) -> float:
    """The smallest round width that covers ``span_s`` seconds in ``max_bins`` bins
    (the bins are aligned to multiples of the width, so one more may be needed).

    >>> bin_width(1.4), bin_width(90), bin_width(3600), bin_width(36000)
    (0.1, 0.2, 10, 120)
    """
    for width in BIN_WIDTHS:
        if span_s / width + 1 <= max_bins:
            return width
    return float(math.ceil(span_s / (max_bins - 1)))


@dataclass
class TimeSeries:
    """Finished requests, kept compactly until `binned` (see the module docstring)."""

    at: array[float] = field(default_factory=lambda: array("d"))
    """Finish time, Unix seconds."""
    wire_s: array[float] = field(default_factory=lambda: array("f"))
    tokens: array[int] = field(default_factory=lambda: array("I"))
    retries: array[int] = field(default_factory=lambda: array("B"))
    rate_limited: array[int] = field(default_factory=lambda: array("B"))
    failed: array[int] = field(default_factory=lambda: array("B"))
    endpoint: array[int] = field(default_factory=lambda: array("H"))
    """The code of the endpoint that gave the answer (`endpoints`), or `_NO_ENDPOINT`."""
    endpoints: dict[str, int] = field(default_factory=dict)
    """Endpoint name -> its code, in the order first seen."""

    def __len__(self) -> int:
        return len(self.at)

    def add(
        self,
        *,
        at: float,
        latency_ms: float | None,
        tokens: int | None,
        statuses: Sequence[Any],
        failed: bool,
        endpoint: str | None = None,
    ) -> None:
        """One finished request. ``statuses``: every attempt's HTTP status, in order
        (retries and 429s are counted from it as `batchrun._output.tally.Tally` counts
        them); ``endpoint``: a pool's endpoint that answered it (None: none did)."""
        self.at.append(at)
        self.wire_s.append(max(0.0, latency_ms or 0.0) / 1000.0)
        self.tokens.append(min(max(0, tokens or 0), 0xFFFFFFFF))
        self.retries.append(min(max(0, len(statuses) - 1), _SMALL))
        self.rate_limited.append(min(list(statuses).count(429), _SMALL))
        self.failed.append(1 if failed else 0)
        code = _NO_ENDPOINT
        if endpoint is not None and not failed:
            code = self.endpoints.setdefault(endpoint, len(self.endpoints))
            code = code if code < _NO_ENDPOINT else _NO_ENDPOINT
        self.endpoint.append(code)

    def binned(self, max_bins: int = MAX_BINS) -> dict[str, Any]:
        """The series for the page: ``t0`` (Unix seconds), ``bin_s``, ``t`` (each bin's
        start in seconds from ``t0``), one list per counter (totals per bin) and
        ``in_flight`` (mean requests on the wire per bin, two decimals), and
        ``by_endpoint`` (each endpoint's answers per bin; empty without a pool)."""
        if not self.at:
            return {"t0": None, "bin_s": 1.0, "t": [], "in_flight": [], "by_endpoint": {}} | {
                name: [] for name in COUNTERS
            }
        import pyarrow as pa
        import pyarrow.compute as pc

        at = from_array(self.at, "double")
        start = pc.subtract(at, from_array(self.wire_s, "float").cast(pa.float64()))
        first, last = pc.min(start).as_py(), pc.max(at).as_py()
        width = float(bin_width(last - first, max_bins))
        t0 = math.floor(first / width) * width
        bins = int((last - t0) // width) + 1
        # offsets from t0 keep the in-flight sums exact (Unix times would lose ~1e-6 s
        # per addition, a million times over)
        origin = scalar(t0, "double")
        start_off, end_off = pc.subtract(start, origin), pc.subtract(at, origin)
        end_bin = _bin_index(end_off, width, bins)
        out: dict[str, Any] = {
            "t0": t0,
            "bin_s": width,
            "t": [round(i * width, 3) for i in range(bins)],
            "finished": [int(v) for v in _per_bin(end_bin, None, bins)],
        }
        for name in COUNTERS[1:]:
            dtype = "uint32" if name == "tokens" else "uint8"
            values = from_array(getattr(self, name), dtype).cast(pa.int64())
            out[name] = [int(v) for v in _per_bin(end_bin, values, bins)]
        out["in_flight"] = _in_flight(start_off, end_off, width, bins, last - t0)
        out["by_endpoint"] = self._by_endpoint(end_bin, bins)
        return out

    def _by_endpoint(self, end_bin: Any, bins: int) -> dict[str, list[int]]:
        """Each endpoint's answers per bin (its name -> counts, every bin present)."""
        if not self.endpoints:
            return {}
        import pyarrow as pa

        codes = from_array(self.endpoint, "uint16")
        table = pa.table({"b": end_bin, "e": codes})
        table = table.group_by(["b", "e"]).aggregate([("b", "count")])
        out = {name: [0] * bins for name in self.endpoints}
        names = {code: name for name, code in self.endpoints.items()}
        for b, e, n in zip(*(table[c].to_pylist() for c in ("b", "e", "b_count")), strict=True):
            if e in names:
                out[names[e]][b] = int(n)
        return out


def _bin_index(offsets: Any, width: float, bins: int) -> Any:
    import pyarrow as pa
    import pyarrow.compute as pc

    index = pc.cast(pc.floor(pc.divide(offsets, scalar(width, "double"))), pa.int64())
    return pc.min_element_wise(
        pc.max_element_wise(index, scalar(0, "int64")), scalar(bins - 1, "int64")
    )


def _per_bin(index: Any, values: Any, bins: int) -> list[float]:
    """Sum of ``values`` (None: a count) per bin index, every bin present."""
    import pyarrow as pa

    if values is None:
        table = pa.table({"b": index}).group_by("b").aggregate([("b", "count")])
        column = "b_count"
    else:
        table = pa.table({"b": index, "v": values}).group_by("b").aggregate([("v", "sum")])
        column = "v_sum"
    out = [0.0] * bins
    for b, v in zip(table["b"].to_pylist(), table[column].to_pylist(), strict=True):
        out[b] = v
    return out


def _in_flight(start: Any, end: Any, width: float, bins: int, span: float) -> list[float]:
    """Mean requests on the wire per bin, from the intervals [start, end] (offsets).

    The time-integral of the number on the wire up to x is F(x) = sum over started
    intervals of (x - start) minus the same over ended ones; with the starts' and ends'
    counts and sums accumulated per bin, F at every bin edge costs no per-row work,
    and a bin's mean is (F(right edge) - F(left edge)) / width.
    """
    from itertools import accumulate

    def before_edges(offsets: Any) -> tuple[list[float], list[float]]:
        index = _bin_index(offsets, width, bins)
        counts = _per_bin(index, None, bins)
        sums = _per_bin(index, offsets, bins)
        # at edge k: everything in bins < k
        return [0.0, *accumulate(counts)], [0.0, *accumulate(sums)]

    starts_n, starts_sum = before_edges(start)
    ends_n, ends_sum = before_edges(end)
    area = [
        (starts_n[k] - ends_n[k]) * (k * width) - starts_sum[k] + ends_sum[k]
        for k in range(bins + 1)
    ]
    last_width = max(span - (bins - 1) * width, 1e-3)  # the run may end inside the last bin
    return [
        round((area[k + 1] - area[k]) / (width if k < bins - 1 else min(width, last_width)), 2)
        for k in range(bins)
    ]
