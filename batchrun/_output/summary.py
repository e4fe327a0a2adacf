"""summary.json: the run's totals, rewritten atomically (temp file + rename).

A reader (a person, `batchrun status`, a script polling a long run) always sees a
complete JSON document: either the previous one or the new one, never half.

    >>> write_json_atomic("runs/a/summary.json", {"requests": {}})  # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import orjson

from batchrun._output.endpoints import EndpointTally
from batchrun._output.tally import Tally
from batchrun._redact import scrub
from batchrun._runfiles import TMP_PREFIX, file_mode
from batchrun._version import __version__


@contextmanager
def atomic_file(path: str, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over
    ``path``, on failure remove it. Readers see the old file or the new, never half.

        with atomic_file("runs/a/results.parquet", ".parquet") as tmp:
            pq.write_table(table, tmp)
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=directory)
    try:
        # mkstemp makes it 0600: the file it becomes gets the umask's mode, as the
        # run's other files do (results.jsonl beside a 0600 summary.json confuses)
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_json_atomic(path: str, data: Any) -> None:
    """Replace ``path`` with ``data`` as indented JSON (API keys scrubbed)."""
    encoded = scrub(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    with atomic_file(path, ".json") as tmp, open(tmp, "wb") as f:
        f.write(encoded)


def read_json_object(path: str) -> dict[str, Any] | None:
    """A JSON object from ``path`` (summary.json, run.json), or None when the file is
    missing, unreadable or not an object."""
    try:
        with open(path, "rb") as f:
            data = orjson.loads(f.read())
        return data if isinstance(data, dict) else None
    except (OSError, orjson.JSONDecodeError):
        return None


def merge_summary(summary: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with ``extra`` merged in place, ``journal`` kept last (for readers).

    >>> merge_summary({"a": 1, "journal": {}}, {"b": 2})
    {'a': 1, 'b': 2, 'journal': {}}
    """
    journal = summary.pop("journal", None)
    summary.update(extra)
    if journal is not None:
        summary["journal"] = journal
    return summary


@dataclass
class Counts:
    total: int = 0
    succeeded: int = 0
    failed: int = 0
    invalid: int = 0

    @property
    def pending(self) -> int:
        return max(0, self.total - self.succeeded - self.failed)

    def record(self, h: int, ok: bool, code: str | None, failed_now: dict[int, str]) -> None:
        """One row (id hash ``h``) finished: an answer takes it out of the failures
        (--retry-failed), a failure is counted once however often it fails."""
        if ok:
            self.succeeded += 1
            if failed_now.pop(h, None) is not None:
                self.failed -= 1
        else:
            if h not in failed_now:
                self.failed += 1
            failed_now[h] = str(code)

    def to_dict(self) -> dict[str, int]:
        return {
            "total": self.total,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "pending": self.pending,
            "invalid": self.invalid,
        }


def summary_figures(tally: Tally, state: dict[str, Any] | None = None) -> dict[str, Any]:
    """The figures of summary.json that are sums over output lines, from a `Tally`
    (``state``: its `Tally.to_state` when the caller has it): ``usage`` (with
    ``missing``: answers without usage), ``by_model``, ``retries``, ``rate_limited``,
    ``quality`` (every answer by category and model) and, when answers were reused
    (the response cache, identical requests of the run), ``reused``: how many, and
    the usage not paid again. The one mapping `build_summary`, the reader of a run
    directory (`batchrun._output.rundir`) and the sum over a cluster's shards use.

        >>> summary_figures(Tally())["usage"]["missing"]
        0
    """
    if state is None:
        state = tally.to_state()
    figures: dict[str, Any] = {
        "usage": {**state["usage"], "missing": state["missing_usage"]},
        "by_model": state["by_model"],
        "retries": tally.retries,
        "rate_limited": tally.rate_limited,
        "quality": state["quality"],
    }
    if tally.by_endpoint:  # a pool: what each endpoint did (`batchrun._output.endpoints`)
        figures["endpoints"] = {n: e.to_dict() for n, e in sorted(tally.by_endpoint.items())}
    if state["reused"]:
        figures["reused"] = {
            "cache": state["reused"].get("cache", 0),
            "run": state["reused"].get("run", 0),
            "saved_usage": state["saved"]["usage"],
        }
    return figures


def pool_rows(summary: dict[str, Any]) -> None:
    """A pool's ``endpoints.NAME``: what its lines say (`summary_figures`), with what
    this process knows of it (its breaker's state and trips: ``pacing.by_endpoint``)
    and its cost at its own prices (``cost_usd.by_endpoint``). Every endpoint of the
    pool has a row, one that took no request too."""
    pacing = (summary.get("pacing") or {}).get("by_endpoint") or {}
    cost = summary.get("cost_usd")
    costs = (cost.get("by_endpoint") if isinstance(cost, dict) else None) or {}
    if not pacing and not costs and "endpoints" not in summary:
        return
    rows = summary.setdefault("endpoints", {})
    for name in [*pacing, *costs, *rows]:
        row = rows.setdefault(name, EndpointTally().to_dict())
        if name in pacing:
            row["breaker"] = pacing[name].get("breaker")
            row["breaker_trips"] = pacing[name].get("breaker_trips", 0)
        if name in costs:
            row["cost_usd"] = costs[name]
    order = list(pacing) or list(costs)
    summary["endpoints"] = {n: rows[n] for n in [*order, *(n for n in rows if n not in order)]}


def build_summary(
    *,
    status: str,
    input_path: str,
    counts: Counts,
    tally: Tally,
    failed_codes: Iterable[str] = (),
    elapsed_s: float,
    results_bytes: int,
    errors_bytes: int,
    pacing: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    stop_reason: str | None = None,
) -> dict[str, Any]:
    """The summary document. ``journal`` lets a resume skip re-parsing old lines."""
    state = tally.to_state()
    figures = summary_figures(tally, state)
    summary: dict[str, Any] = {
        "status": status,
        "batchrun_version": __version__,
        # why the run stopped early (SIGINT, budget, a hook's reason...), None: it did not
        "stop_reason": stop_reason,
        "input": input_path,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "requests": counts.to_dict(),
        "usage": figures.pop("usage"),
        "by_model": figures.pop("by_model"),
        "retries": figures.pop("retries"),
        "rate_limited": figures.pop("rate_limited"),
        # the rows failing now, by code (a failure retried into an answer leaves it)
        "error_codes": dict(Counter(failed_codes)),
        "quality": figures.pop("quality"),
        "elapsed_s": round(elapsed_s, 3),
        "pacing": pacing or {},
        **figures,  # reused, when any answer was
    }
    if extra:
        summary.update(extra)
    pool_rows(summary)
    summary["journal"] = {
        "results_bytes": results_bytes,
        "errors_bytes": errors_bytes,
        "elapsed_s": round(elapsed_s, 3),
        "tally": state,
    }
    return summary
