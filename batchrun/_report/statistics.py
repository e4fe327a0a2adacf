"""Latency percentiles and retry causes over a run's output lines (pure: no I/O).

The end-of-run report and `batchrun status` read every output line for its
``batchrun`` meta (latency, time to first token, attempt statuses). Lines can hold
megabytes of response body, so answers are read with
`batchrun._output.lines.decode_meta`, which takes the meta from the line's tail
without parsing the body.

Latencies are kept as 4-byte floats (``array('f')``): a million requests cost 4 MB,
and percentiles of milliseconds need no more precision than that.

    >>> stats = LatencyStats()
    >>> for ms in (100, 200, 300, 400):
    ...     stats.add(ms)
    >>> stats.summary()["p50"]
    250.0
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from batchrun._models import Outcome

PERCENTILES = (50, 95, 99)


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by linear interpolation between closest ranks.

    Same definition as numpy's default and ``statistics.quantiles(method="inclusive")``.

        >>> percentile([1.0, 2.0, 3.0, 4.0], 50)
        2.5
    """
    n = len(sorted_values)
    if n == 0:
        return None
    if n == 1:
        return float(sorted_values[0])
    pos = (n - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, n - 1)
    frac = pos - low
    below, above = float(sorted_values[low]), float(sorted_values[high])
    return below + (above - below) * frac


@dataclass
class LatencyStats:
    """Milliseconds of many requests; `summary` gives count, mean, p50/p95/p99, max."""

    values: array[float] = field(default_factory=lambda: array("f"))

    def add(self, ms: float | None) -> None:
        if ms is not None:
            self.values.append(float(ms))

    def summary(self) -> dict[str, Any]:
        """Same figures as `percentile` (linear interpolation), computed by pyarrow on
        the float32 buffer itself: sorting a million latencies as Python floats
        would take ~32 MiB at the end of a long run."""
        out: dict[str, Any] = {"count": len(self.values)}
        if not self.values:
            out["mean"] = None
            out.update({f"p{q}": None for q in PERCENTILES})
            out["max"] = None
            return out
        import pyarrow as pa
        import pyarrow.compute as pc

        data = pa.Array.from_buffers(
            pa.float32(), len(self.values), [None, pa.py_buffer(self.values)]
        ).cast(pa.float64())
        quantiles = pc.quantile(data, q=[q / 100 for q in PERCENTILES], interpolation="linear")
        out["mean"] = round(pc.mean(data).as_py(), 1)
        for q, value in zip(PERCENTILES, quantiles.to_pylist(), strict=True):
            out[f"p{q}"] = round(value, 1)
        out["max"] = round(pc.max(data).as_py(), 1)
        return out


def retry_cause(status: int | None, code: str | None = None) -> str:
    """A short name for why an attempt was retried: the HTTP error status, else a code.

    >>> retry_cause(429), retry_cause(None, "timeout"), retry_cause(None)
    ('429', 'timeout', 'no_response')
    """
    if status is not None and status >= 400:
        return str(status)
    if code:
        return code
    return "no_response" if status is None else f"bad_{status}"


@dataclass
class OutputStats:
    """What the output lines say beyond the usage totals: latency, TTFT, retry causes.

    Latency and TTFT are over succeeded requests (a failure's time says more about
    the retry policy than about the server) that were sent: an answer reused from the
    cache or from an identical request (``reused`` in its meta) spent no time on the
    wire, and counting it as 0 ms would pull every percentile down. Latency runs from
    the first attempt to the answer, so it includes any retry waits.
    """

    latency_ms: LatencyStats = field(default_factory=LatencyStats)
    ttft_ms: LatencyStats = field(default_factory=LatencyStats)
    retry_causes: Counter[str] = field(default_factory=Counter)
    lines: int = 0

    def add(self, outcome: Outcome) -> None:
        """One output line, decoded (an answer's response may be left out:
        `batchrun._output.lines.decode_meta`). Every attempt but the last was a retry;
        an answer's earlier attempts are known by their status only (the line keeps
        no more), a failure's by status and code."""
        # called once per output line: kept to a few attribute reads and appends
        self.lines += 1
        ok = outcome.ok
        if ok:
            if outcome.reused is not None:
                return  # not sent: no time on the wire, no retries
            latency, ttft = outcome.latency_s, outcome.ttft_s
            if latency is not None:
                self.latency_ms.values.append(latency * 1000)
            if ttft is not None:
                self.ttft_ms.values.append(ttft * 1000)
        for attempt in outcome.attempts[:-1]:
            self.retry_causes[retry_cause(attempt.status, None if ok else attempt.code)] += 1
