"""Pacing: how many requests may be in flight, and when the next one may go.

Four brakes, all checked before every attempt (`Pacer.acquire`):

1. **Shared cooldown.** A 429 that says how long to wait (retry-after-ms,
   Retry-After, x-ratelimit-reset-*) pauses *every* sender until then, not just the
   task that got it; that is what stops a thundering herd.
2. **AIMD concurrency.** In-flight requests are capped by an adaptive limit that
   halves on a 429 (at most once per second) and grows by one per window of
   successes back up to ``--concurrency``.
3. **User quotas.** ``--rpm`` / ``--tpm`` go through aiolimiter leaky buckets; the
   token bucket is charged an estimate (prompt tokens + max tokens x n) and the
   difference to the real usage is given back when the response arrives.
4. **Header mirror.** Every response's ``x-ratelimit-*`` headers update a model of
   the server's own bucket (`QuotaMirror`); a send that would overdraw it waits for
   the refill. This slows us down before the quota runs out even when no ``--rpm``
   was given.

Clock and sleep are injected so the arithmetic is tested without waiting.

    >>> mirror = QuotaMirror()
    >>> mirror.observe(limit=60, remaining=0, reset_s=60.0, now=0.0)
    >>> round(mirror.delay(1, now=0.0), 2)   # one request refills in 1 s, plus margin
    2.0
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from batchrun.ratelimit_headers import RateLimitSnapshot

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]


class QuotaMirror:
    """Our model of one server-side bucket (requests or tokens), from headers.

    ``remaining`` was true at ``at``; the bucket refills at ``rate`` per second up to
    ``limit``; we have spent ``spent`` since. A margin of 1 unit plus 2% of the
    limit absorbs requests the server counted that we did not see yet.
    """

    def __init__(self) -> None:
        self.limit: float | None = None
        self.remaining = 0.0
        self.rate = 0.0
        self.at = 0.0
        self.spent = 0.0

    def available(self, now: float) -> float:
        if self.limit is None:
            return float("inf")
        refilled = self.remaining + self.rate * max(0.0, now - self.at)
        return min(self.limit, refilled) - self.spent

    def observe(self, limit: float, remaining: float, reset_s: float | None, now: float) -> None:
        if limit <= 0:
            return
        if reset_s is not None and reset_s > 0 and remaining < limit:
            rate = (limit - remaining) / reset_s
        else:
            rate = limit / 60.0
        if self.limit is not None:
            # responses arrive out of order: never trust a snapshot that shows more
            # than our own projection (that would overdraw the real bucket)
            remaining = min(remaining, self.available(now))
        self.limit, self.remaining, self.rate, self.at, self.spent = (
            limit,
            remaining,
            rate,
            now,
            0.0,
        )

    def margin(self) -> float:
        return 1.0 + 0.02 * (self.limit or 0.0)

    def delay(self, cost: float, now: float) -> float:
        """Seconds to wait before ``cost`` units may be spent (0 = go now)."""
        if self.limit is None or self.rate <= 0:
            return 0.0
        cost = min(cost, self.limit - self.margin()) if self.limit > self.margin() else cost
        short = cost + self.margin() - self.available(now)
        return 0.0 if short <= 0 else short / self.rate

    def spend(self, cost: float) -> None:
        if self.limit is not None:
            self.spent += cost

    def refund(self, cost: float) -> None:
        if self.limit is not None:
            self.spent = max(0.0, self.spent - cost)


class AdaptiveLimit:
    """A semaphore whose size follows AIMD between 1 and ``maximum``."""

    def __init__(self, maximum: int, clock: Clock) -> None:
        self.maximum = maximum
        self.limit = float(maximum)
        self.in_use = 0
        self._clock = clock
        self._last_decrease = float("-inf")
        self._waiters: deque[anyio.Event] = deque()

    async def acquire(self) -> None:
        while self.in_use >= int(self.limit):
            event = anyio.Event()
            self._waiters.append(event)
            try:
                await event.wait()
            except BaseException:
                if event in self._waiters:
                    self._waiters.remove(event)
                elif event.is_set():
                    self._wake()  # pass the wake-up on
                raise
        self.in_use += 1

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < int(self.limit):
            self._waiters.popleft().set()
            break

    def decrease(self) -> None:
        now = self._clock()
        if now - self._last_decrease >= 1.0:
            self._last_decrease = now
            self.limit = max(1.0, self.limit / 2)

    def increase(self) -> None:
        if self.limit < self.maximum:
            before = int(self.limit)
            self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)
            if int(self.limit) > before:
                self._wake()


@dataclass
class PacerStats:
    rate_limited: int = 0
    cooldown_s: float = 0.0
    header_waits: int = 0


class Pacer:
    """Decides when an attempt may start. One per run, shared by all workers."""

    def __init__(
        self,
        *,
        concurrency: int,
        rpm: float | None = None,
        tpm: float | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = anyio.sleep,
    ) -> None:
        from aiolimiter import AsyncLimiter

        self.clock = clock
        self.sleep = sleep
        self.slots = AdaptiveLimit(concurrency, clock)
        self.rpm = AsyncLimiter(rpm, 60) if rpm else None
        self.tpm = AsyncLimiter(tpm, 60) if tpm else None
        self.tpm_capacity = float(tpm or 0)
        self.requests = QuotaMirror()
        self.tokens = QuotaMirror()
        self.cooldown_until = 0.0
        self.stats = PacerStats()

    @property
    def needs_token_estimates(self) -> bool:
        """Token estimates cost a tokenizer pass: only make them when they matter."""
        return self.tpm is not None or self.tokens.limit is not None

    @property
    def concurrency_limit(self) -> int:
        return int(self.slots.limit)

    async def _wait_cooldown(self) -> None:
        while (left := self.cooldown_until - self.clock()) > 0:
            await self.sleep(left)

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until one attempt costing ``tokens`` may be sent; take a slot."""
        await self._wait_cooldown()
        await self.slots.acquire()
        try:
            if self.rpm is not None:
                await self.rpm.acquire(1)
            if self.tpm is not None and tokens:
                await self.tpm.acquire(min(float(tokens), self.tpm_capacity))
            while True:
                now = self.clock()
                wait = max(self.requests.delay(1, now), self.tokens.delay(tokens, now))
                wait = max(wait, self.cooldown_until - now)
                if wait <= 0:
                    break
                self.stats.header_waits += 1
                await self.sleep(wait)
            self.requests.spend(1)
            self.tokens.spend(tokens)
        except BaseException:
            self.slots.release()
            raise

    def release(self, *, ok: bool) -> None:
        self.slots.release()
        if ok:
            self.slots.increase()

    def settle_tokens(self, estimated: int, actual: int | None) -> None:
        """Give back what the estimate over-reserved once real usage is known."""
        if actual is None or actual >= estimated:
            return
        refund = estimated - actual
        self.tokens.refund(refund)
        if self.tpm is not None:
            # aiolimiter has no public refund; lowering its level is the same thing
            level = getattr(self.tpm, "_level", None)
            if isinstance(level, float | int):
                self.tpm._level = max(0.0, level - refund)

    def observe(self, snapshot: RateLimitSnapshot | None) -> None:
        if snapshot is None:
            return
        now = self.clock()
        if snapshot.limit_requests is not None and snapshot.remaining_requests is not None:
            self.requests.observe(
                snapshot.limit_requests,
                snapshot.remaining_requests,
                snapshot.reset_requests_s,
                now,
            )
        if snapshot.limit_tokens is not None and snapshot.remaining_tokens is not None:
            self.tokens.observe(
                snapshot.limit_tokens,
                snapshot.remaining_tokens,
                snapshot.reset_tokens_s,
                now,
            )

    def rate_limited(self, retry_after: float | None) -> None:
        """A 429 arrived: shrink concurrency; with a hint, pause every sender."""
        self.stats.rate_limited += 1
        self.slots.decrease()
        if retry_after is not None and retry_after > 0:
            until = self.clock() + retry_after
            if until > self.cooldown_until:
                self.stats.cooldown_s += until - max(self.cooldown_until, self.clock())
                self.cooldown_until = until
