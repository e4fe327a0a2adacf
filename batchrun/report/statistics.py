"""Latency percentiles and retry causes over a run's output lines (pure: no I/O).

The end-of-run report and `batchrun status` read every output line for its
``batchrun`` meta (latency, time to first token, attempt statuses). Lines can hold
megabytes of response body, so `meta_of` takes the meta from the line's tail
without parsing the body: we write ``batchrun`` as the last key (see
batchrun.output.lines), and the bytes ``,"batchrun":`` cannot occur unescaped inside a
JSON string. Anything that does not look like our own line is parsed in full.

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

import orjson

PERCENTILES = (50, 95, 99)
_META_KEY = b',"batchrun":'


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


def meta_of(line: bytes) -> dict[str, Any]:
    """The ``batchrun`` meta of one output line, reading only its tail when possible.

    >>> meta_of(b'{"custom_id":"a","error":null,"batchrun":{"latency_ms":5.0}}\\n')
    {'latency_ms': 5.0}
    """
    at = line.rfind(_META_KEY)
    if at >= 0:
        tail = line[at + len(_META_KEY) :].rstrip()
        if tail.endswith(b"}"):
            try:
                meta = orjson.loads(tail[:-1])
            except orjson.JSONDecodeError:
                meta = None
            if isinstance(meta, dict):
                return meta
    record = orjson.loads(line)
    meta = record.get("batchrun") if isinstance(record, dict) else None
    return meta if isinstance(meta, dict) else {}


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

    def add_result(self, meta: dict[str, Any]) -> None:
        """One results.jsonl line's meta. ``statuses`` is only written after retries."""
        # called once per output line: kept to a few dict lookups and appends
        self.lines += 1
        if meta.get("reused"):
            return  # not sent: no time on the wire, no retries
        latency, ttft = meta.get("latency_ms"), meta.get("ttft_ms")
        try:
            if latency is not None:
                self.latency_ms.values.append(latency)
            if ttft is not None:
                self.ttft_ms.values.append(ttft)
        except TypeError:  # not a number: not a line we wrote; skip its timings
            pass
        statuses = meta.get("statuses")
        if statuses:
            for status in statuses[:-1]:
                self.retry_causes[retry_cause(status if isinstance(status, int) else None)] += 1

    def add_error(self, record: dict[str, Any]) -> None:
        """One errors.jsonl line, parsed: every attempt but the last was a retry."""
        self.lines += 1
        attempts = (record.get("error") or {}).get("attempts") or []
        for attempt in attempts[:-1]:
            status = attempt.get("status")
            cause = retry_cause(status if isinstance(status, int) else None, attempt.get("code"))
            self.retry_causes[cause] += 1
