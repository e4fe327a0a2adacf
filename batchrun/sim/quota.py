"""OpenAI-style rate limits: a request bucket and a token bucket per API key and model.

Like OpenAI's, quotas are per model: each model has its own buckets (its own
limits when ``model_limits`` names it, else the defaults), and the headers of a
response describe the buckets of the model it was for. ``start_drained`` starts
every bucket empty, as a key whose quota another client has just used up.

Each bucket holds at most its per-minute limit and refills continuously at
limit/60 per second. A request is admitted only when *both* buckets hold enough
(1 request, and its estimated tokens: prompt + max tokens x n); otherwise nothing
is taken and the caller is told when enough will be there. The clock is injected,
so the arithmetic is tested without sleeping.

    >>> clock = [0.0]
    >>> quota = Quota(rpm=60, tpm=None, now=lambda: clock[0])
    >>> quota.admit("anon", tokens=10).allowed
    True
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


class TokenBucket:
    """A bucket of `capacity` units refilling at capacity/`period` per second."""

    def __init__(
        self,
        capacity: float,
        now: Callable[[], float],
        period: float = 60.0,
        *,
        empty: bool = False,
    ) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = float(capacity)
        self.rate = self.capacity / period
        self._now = now
        self._level = 0.0 if empty else self.capacity
        self._updated = now()

    def level(self) -> float:
        """Units available now (refills first)."""
        now = self._now()
        elapsed = now - self._updated
        if elapsed > 0:
            self._level = min(self.capacity, self._level + elapsed * self.rate)
        self._updated = max(self._updated, now)
        return self._level

    def wait_for(self, amount: float) -> float:
        """Seconds until `amount` units are available (0 if now, inf if never)."""
        if amount > self.capacity:
            return math.inf
        missing = amount - self.level()
        return 0.0 if missing <= 0 else missing / self.rate

    def take(self, amount: float) -> None:
        self._level = self.level() - amount

    def seconds_to_full(self) -> float:
        return max(0.0, (self.capacity - self.level()) / self.rate)


def format_reset(seconds: float) -> str:
    """A duration the way OpenAI's x-ratelimit-reset-* headers write it (Go style).

    >>> [format_reset(s) for s in (0.02, 1, 1.5, 360, 3723)]
    ['20ms', '1s', '1.5s', '6m0s', '1h2m3s']
    """
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{secs:.3f}".rstrip("0").rstrip(".")
    if text == "60":  # rounding carried over
        minutes, text = minutes + 1, "0"
    if hours:
        return f"{int(hours)}h{int(minutes)}m{text}s"
    if minutes:
        return f"{int(minutes)}m{text}s"
    return f"{text}s"


@dataclass(frozen=True, slots=True)
class Admission:
    """The verdict on one request: admitted or not, when to retry, headers to send."""

    allowed: bool
    retry_after: float = 0.0
    """Seconds until enough capacity exists (inf: the request can never fit)."""
    limited_by: str = ""
    """'requests' or 'tokens' when refused."""
    headers: dict[str, str] = field(default_factory=dict)


class Quota:
    """Request and token buckets per API key and model; any limit may be None
    (unlimited)."""

    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        now: Callable[[], float] = time.monotonic,
        *,
        model_limits: Mapping[str, tuple[int | None, int | None]] | None = None,
        start_drained: bool = False,
    ) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self.model_limits = dict(model_limits or {})
        self.start_drained = start_drained
        self._now = now
        self._buckets: dict[tuple[str, str], tuple[TokenBucket | None, TokenBucket | None]] = {}

    def limits(self, model: str) -> tuple[int | None, int | None]:
        """(rpm, tpm) for ``model``."""
        rpm, tpm = self.model_limits.get(model, (None, None))
        return (rpm if rpm is not None else self.rpm, tpm if tpm is not None else self.tpm)

    def _for(self, key: str, model: str) -> tuple[TokenBucket | None, TokenBucket | None]:
        pair = self._buckets.get((key, model))
        if pair is None:
            rpm, tpm = self.limits(model)
            drained = self.start_drained
            pair = (
                TokenBucket(rpm, self._now, empty=drained) if rpm else None,
                TokenBucket(tpm, self._now, empty=drained) if tpm else None,
            )
            self._buckets[(key, model)] = pair
        return pair

    def admit(self, key: str, tokens: int, model: str = "") -> Admission:
        """Take 1 request and `tokens` tokens from the buckets of `key` and `model`,
        or refuse."""
        requests, token_bucket = self._for(key, model)
        wait_requests = requests.wait_for(1) if requests else 0.0
        wait_tokens = token_bucket.wait_for(tokens) if token_bucket else 0.0
        if wait_requests > 0 or wait_tokens > 0:
            limited_by = "tokens" if wait_tokens >= wait_requests else "requests"
            return Admission(
                False,
                max(wait_requests, wait_tokens),
                limited_by,
                self._headers(requests, token_bucket),
            )
        if requests:
            requests.take(1)
        if token_bucket:
            token_bucket.take(tokens)
        return Admission(True, headers=self._headers(requests, token_bucket))

    def peek_headers(self, key: str, model: str = "") -> dict[str, str]:
        """The x-ratelimit headers for `key` and `model` without taking anything."""
        return self._headers(*self._for(key, model))

    @staticmethod
    def _headers(requests: TokenBucket | None, tokens: TokenBucket | None) -> dict[str, str]:
        headers: dict[str, str] = {}
        for name, bucket in (("requests", requests), ("tokens", tokens)):
            if bucket is None:
                continue
            headers[f"x-ratelimit-limit-{name}"] = str(int(bucket.capacity))
            headers[f"x-ratelimit-remaining-{name}"] = str(max(0, math.floor(bucket.level())))
            headers[f"x-ratelimit-reset-{name}"] = format_reset(bucket.seconds_to_full())
        return headers


def retry_after_headers(seconds: float) -> dict[str, str]:
    """``Retry-After`` (whole seconds, rounded up) and ``retry-after-ms``."""
    return {
        "Retry-After": str(math.ceil(seconds - 1e-9)) if seconds > 0 else "0",
        "retry-after-ms": str(math.ceil(seconds * 1000 - 1e-6)) if seconds > 0 else "0",
    }
