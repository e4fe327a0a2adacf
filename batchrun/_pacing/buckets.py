"""Token buckets, pure arithmetic on an injected clock: the user's quota and our
running account of the server's.

A `Bucket` is a quota the user gave (``--rpm``, ``--tpm``): ``capacity`` units that
refill at capacity/60 per second and start full, so a minute's worth may go at once
(as OpenAI's own buckets allow). A `QuotaMirror` is our account of one of the
*server's* buckets, corrected by every response's ``x-ratelimit-*`` headers.

A header is a snapshot taken when the server admitted *our* request, some time
before we read it; other requests may have been admitted since. The mirror keeps
its own running account and only lets the snapshot bound it: the true remaining
is at least ``remaining - what we sent since this request left`` and at most
``remaining + refill since it left``.

    >>> b = Bucket(60)                    # --rpm 60
    >>> b.spend(60, now=0.0); round(b.delay(1, now=0.0), 3)
    1.0
    >>> mirror = QuotaMirror()
    >>> mirror.observe(limit=60, remaining=0, reset_s=60.0, now=0.0)
    >>> round(mirror.delay(1, now=0.0), 2)   # 1 request + a margin of 1.3, refill 1/s
    2.3
"""

from __future__ import annotations

import math

MARGIN_SHARE = 0.02
"""Share of a server limit kept in reserve, for estimate errors and other clients."""
MARGIN_UNITS = 0.1
"""And a tenth of a unit: a 6-RPM quota must not keep a whole request (10 s) aside."""


class Bucket:
    """A quota of ``capacity`` units per ``period`` seconds, refilling continuously."""

    def __init__(self, capacity: float, period: float = 60.0) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = float(capacity)
        self.rate = self.capacity / period
        self.level = self.capacity
        self.at: float | None = None

    def available(self, now: float) -> float:
        if self.at is None:
            return self.level
        return min(self.capacity, self.level + self.rate * max(0.0, now - self.at))

    def delay(self, cost: float, now: float) -> float:
        """Seconds until ``cost`` units are there (a cost above capacity waits for a
        full bucket: it could never go otherwise)."""
        cost = min(cost, self.capacity)
        short = cost - self.available(now)
        return 0.0 if short <= 0 else short / self.rate

    def spend(self, cost: float, now: float) -> None:
        self.level = self.available(now) - min(cost, self.capacity)
        self.at = now

    def room(self, cost: float, now: float, slack: float = 0.0) -> float:
        """How many spends of ``cost`` may follow one another now, each with a `delay`
        of at most ``slack`` seconds before it (inf: no bound)."""
        return _room(self.available(now), min(cost, self.capacity), min(cost, self.capacity),
                     slack * self.rate)  # fmt: skip

    def refund(self, amount: float, now: float) -> None:
        """Give back what an estimate over-charged (real usage came in lower)."""
        self.level = min(self.capacity, self.available(now) + amount)
        self.at = now


class QuotaMirror:
    """Our running account of one server-side bucket (requests or tokens).

    The bucket held ``level`` at time ``at`` and refills at ``rate`` per second up
    to ``limit``. `spend` debits it as we send; `observe` corrects it from headers.

        >>> m = QuotaMirror()
        >>> m.observe(limit=1200, remaining=1000, reset_s=10.0, now=0.0)
        >>> m.rate, m.available(now=1.0)
        (20.0, 1020.0)
    """

    def __init__(self) -> None:
        self.limit: float | None = None
        self.level = 0.0
        self.rate = 0.0
        self.at = 0.0

    def available(self, now: float) -> float:
        if self.limit is None:
            return float("inf")
        return min(self.limit, self.level + self.rate * max(0.0, now - self.at))

    def observe(
        self,
        limit: float,
        remaining: float,
        reset_s: float | None,
        now: float,
        *,
        spent_since: float | None = None,
        age: float | None = None,
    ) -> None:
        """Correct the account from one response's headers.

        ``spent_since``: what we debited after the request this response answers was
        sent; ``age``: seconds since it was sent. Unknown (None): trust the snapshot.
        """
        if limit <= 0:
            return
        nominal = limit / 60.0  # the limits are per minute (OpenAI: RPM, TPM)
        used = limit - remaining
        if reset_s is not None and reset_s > 0 and used >= 0.1 * limit:
            # reset = time until full; a nearly full bucket gives a tiny, rounded
            # reset and a wild rate, so keep the old rate then
            rate = used / reset_s
            if abs(used - nominal * reset_s) <= 1.5:
                # `remaining` is rounded down: a unit of error, which is 10 s of a
                # 6-RPM quota. When rounding explains the gap, this is a per-minute
                # bucket and it refills at exactly limit/60
                rate = nominal
        elif self.rate > 0 and self.limit == limit:
            rate = self.rate
        else:
            rate = nominal
        if reset_s is not None and reset_s > 0:
            # the reset (in ms) says more precisely where in [remaining, remaining + 1)
            # the bucket really was
            remaining = min(max(remaining, limit - reset_s * rate), remaining + 0.999)
        low = remaining - (spent_since or 0.0)
        high = remaining + rate * (age or 0.0)
        if self.limit != limit:
            level = low  # first snapshot (or the limit changed): assume the worst
        else:
            level = min(max(self.available(now), low), high)
        self.limit, self.level, self.rate, self.at = float(limit), level, rate, now

    def margin(self) -> float:
        return MARGIN_UNITS + MARGIN_SHARE * (self.limit or 0.0)

    def delay(self, cost: float, now: float) -> float:
        """Seconds to wait before ``cost`` units may be spent (0 = go now)."""
        if self.limit is None or self.rate <= 0:
            return 0.0
        margin = self.margin()
        # a request larger than the whole bucket could never go: let it wait for a
        # full bucket instead (the server will answer for it)
        cost = min(cost, max(0.0, self.limit - margin))
        short = cost + margin - self.available(now)
        return 0.0 if short <= 0 else short / self.rate

    def room(self, cost: float, now: float, slack: float = 0.0) -> float:
        """How many spends of ``cost`` may follow one another now, each with a `delay`
        of at most ``slack`` seconds before it (inf: no bound)."""
        if self.limit is None or self.rate <= 0:
            return float("inf")
        margin = self.margin()
        asked = min(cost, max(0.0, self.limit - margin)) + margin
        return _room(self.available(now), asked, cost, slack * self.rate)

    def spend(self, cost: float, now: float) -> None:
        if self.limit is not None:
            self.level = self.available(now) - cost
            self.at = now

    def refund(self, amount: float, now: float) -> None:
        """Give back what was charged but never sent (an unused lease of a cluster run)."""
        if self.limit is not None and amount > 0:
            self.level = min(self.limit, self.available(now) + amount)
            self.at = now


def _room(available: float, asked: float, cost: float, slack: float) -> float:
    """Spends of ``cost`` that leave, before each, ``asked - slack`` units or more of
    ``available`` (`delay` says 0 for each): the closed form of taking one at a time."""
    if available < asked - slack:
        return 0.0
    if cost <= 0:
        return float("inf")
    return float(math.floor((available - asked + slack) / cost) + 1)
