"""What each endpoint of a pool did, counted from the lines. Pure.

A pool's line names the endpoint each attempt of its row went to
(``batchrun.route``, the last the one that answered: `batchrun._output.lines`). So
every per-endpoint figure a summary shows that comes from finished rows is a sum
over lines, counted the same way live and on resume (`batchrun._output.tally.Tally`
holds one `EndpointTally` per endpoint name, checkpointed with the rest, and a
recount of the files gives the same numbers):

* ``requests``: attempts sent there; ``rate_limited``: those answered 429;
* ``failures``: attempts there that failed, by kind (the HTTP status, else the
  error code: ``timeout``, ``connection_error``);
* ``answered`` / ``failed``: rows whose last attempt was there, answered or failed;
* ``reused``: rows answered, without sending, by an answer it gave earlier (the
  response cache, or an identical request of the run): not in ``requests``,
  ``answered`` or ``usage`` (nothing was sent there, nothing is paid);
* ``usage``: the tokens of the answers it gave, per model (what its prices price),
  and of those its Batch API gave (``batch_usage``, priced at its batch prices);
* latency: the wire time of the rows it answered, in a histogram of 5 % wide
  buckets, so p50/p95 are within 5 % and the state stays small whatever the size.

What only the running process knows (breaker trips, its state) comes from the pool
itself (`batchrun._pacing.pool.Pool.summary`).

    >>> t = EndpointTally()
    >>> t.attempt(429); t.attempt(200); t.finished(True, 0.8, "m", None)
    >>> t.to_dict()["requests"], t.to_dict()["rate_limited"], t.to_dict()["answered"]
    (2, 1, 1)
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from batchrun._models import Outcome
from batchrun._output.usage import Usage, UsageTotals, model_of, usage_of

BUCKET_RATIO = 1.05
"""Each latency bucket is 5 % wider than the last: percentiles within 5 %."""
_LOG_RATIO = math.log(BUCKET_RATIO)


@dataclass(slots=True)
class EndpointTally:
    """One endpoint's figures (see the module docstring)."""

    requests: int = 0
    rate_limited: int = 0
    answered: int = 0
    failed: int = 0
    reused: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    usage: UsageTotals = field(default_factory=UsageTotals)
    batch_usage: UsageTotals = field(default_factory=UsageTotals)
    """The part of ``usage`` answered through its Batch API."""
    latency: Counter[int] = field(default_factory=Counter)
    """Bucket -> answers whose wire time fell in it (`bucket_of`)."""

    def attempt(self, status: int | None, failure: str | None = None) -> None:
        """One attempt sent here: answered ``status``; ``failure``: its kind when it
        failed (None: it answered)."""
        self.requests += 1
        if status == 429:
            self.rate_limited += 1
        if failure is not None:
            self.failures[failure] += 1

    def finished(
        self,
        ok: bool,
        latency_s: float | None,
        model: str,
        usage: Usage | None,
        *,
        via_batch: bool = False,
    ) -> None:
        """The row's last attempt was here: answered (``ok``; ``via_batch``: in one of
        its batches) or failed."""
        if not ok:
            self.failed += 1
            return
        self.answered += 1
        self.usage.add(model, usage)
        if via_batch:
            self.batch_usage.add(model, usage)
        if latency_s is not None:
            self.latency[bucket_of(latency_s)] += 1

    def percentile(self, share: float) -> float | None:
        """The latency (seconds) ``share`` of its answers took at most (None: none)."""
        total = sum(self.latency.values())
        if not total:
            return None
        rank = share * total
        seen = 0
        for bucket in sorted(self.latency):
            seen += self.latency[bucket]
            if seen >= rank:
                return seconds_of(bucket)
        return seconds_of(max(self.latency))

    def merge(self, other: EndpointTally) -> None:
        self.requests += other.requests
        self.rate_limited += other.rate_limited
        self.answered += other.answered
        self.failed += other.failed
        self.reused += other.reused
        self.failures.update(other.failures)
        for model, usage in other.usage.by_model.items():
            self.usage.add(model, usage)
        self.usage.missing += other.usage.missing
        for model, usage in other.batch_usage.by_model.items():
            self.batch_usage.add(model, usage)
        self.latency.update(other.latency)

    def to_dict(self) -> dict[str, Any]:
        """What summary.json shows of it (its tokens by model, the latency
        percentiles in milliseconds)."""
        p50, p95 = self.percentile(0.5), self.percentile(0.95)
        return {
            "requests": self.requests,
            "answered": self.answered,
            "failed": self.failed,
            "reused": self.reused,
            "rate_limited": self.rate_limited,
            "failures": dict(sorted(self.failures.items())),
            "latency_p50_ms": None if p50 is None else round(p50 * 1000, 1),
            "latency_p95_ms": None if p95 is None else round(p95 * 1000, 1),
            "usage": self.usage.total.to_dict(),
        }

    def to_state(self) -> dict[str, Any]:
        """What a checkpoint keeps of it (read back by `from_state`)."""
        return {
            "requests": self.requests,
            "rate_limited": self.rate_limited,
            "answered": self.answered,
            "failed": self.failed,
            "reused": self.reused,
            "failures": dict(self.failures),
            "by_model": self.usage.by_model_dict(),
            "missing_usage": self.usage.missing,
            "latency": {str(k): v for k, v in sorted(self.latency.items())},
            **(
                {"batch_by_model": self.batch_usage.by_model_dict()}
                if self.batch_usage.by_model
                else {}
            ),
        }

    @classmethod
    def from_state(cls, state: Any) -> EndpointTally:
        state = state if isinstance(state, dict) else {}
        usage = UsageTotals(missing=int(state.get("missing_usage") or 0))
        for model, counted in (state.get("by_model") or {}).items():
            usage.add(str(model), Usage.from_dict(counted))
        batch_usage = UsageTotals()
        for model, counted in (state.get("batch_by_model") or {}).items():
            batch_usage.add(str(model), Usage.from_dict(counted))
        return cls(
            requests=int(state.get("requests") or 0),
            rate_limited=int(state.get("rate_limited") or 0),
            answered=int(state.get("answered") or 0),
            failed=int(state.get("failed") or 0),
            reused=int(state.get("reused") or 0),
            failures=Counter({str(k): int(v) for k, v in (state.get("failures") or {}).items()}),
            usage=usage,
            batch_usage=batch_usage,
            latency=Counter({int(k): int(v) for k, v in (state.get("latency") or {}).items()}),
        )


def bucket_of(seconds: float) -> int:
    """The latency bucket of ``seconds`` (milliseconds on a 5 % log scale), taken
    from the milliseconds a line records (to 0.1 ms), so a time counted live and the
    same time read back from its line fall in the same bucket."""
    ms = max(round(seconds * 1000.0, 1), 0.1)
    return math.floor(math.log(ms) / _LOG_RATIO)


def seconds_of(bucket: int) -> float:
    """The middle of ``bucket`` (geometric), in seconds."""
    return math.exp((bucket + 0.5) * _LOG_RATIO) / 1000.0


def failure_kind(status: int | None, code: str | None) -> str:
    """How a failed attempt is counted: its HTTP status, else its error code."""
    if status is not None:
        return str(status)
    return code or "no_response"


def count_route(by_endpoint: dict[str, EndpointTally], outcome: Outcome) -> None:
    """Count one line of a pool (its ``route``) into ``by_endpoint``: each attempt at
    the endpoint it went to, the row at the last one; a reused line (its route the
    endpoint whose answer it is, no attempt) as ``reused`` there. A line without a
    route (one endpoint) counts nowhere."""
    route = outcome.route
    if not route:
        return
    if outcome.reused is not None:
        by_endpoint.setdefault(route[-1], EndpointTally()).reused += 1
        return
    attempts = outcome.attempts
    last = len(route) - 1
    for i, name in enumerate(route):
        tally = by_endpoint.get(name)
        if tally is None:
            tally = by_endpoint[name] = EndpointTally()
        attempt = attempts[i] if i < len(attempts) else None
        status = attempt.status if attempt is not None else None
        answered = outcome.ok and i == last
        if answered:
            tally.attempt(status)
        else:
            # an answer's line keeps only its earlier attempts' statuses; a failure's
            # keeps their codes too: count what the line will say
            code = attempt.code if attempt is not None and not outcome.ok else None
            tally.attempt(status, failure_kind(status, code))
    body = outcome.body
    final = by_endpoint[route[-1]]
    model = model_of(body, outcome.asked_model) if outcome.ok else ""
    final.finished(
        outcome.ok,
        outcome.latency_s,
        model,
        usage_of(body) if outcome.ok else None,
        via_batch=outcome.via == "batch",
    )


__all__ = [
    "BUCKET_RATIO",
    "EndpointTally",
    "bucket_of",
    "count_route",
    "failure_kind",
    "seconds_of",
]
