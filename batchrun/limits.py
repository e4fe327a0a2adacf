"""Pacing: how many requests may be in flight, and when the next one may go.

Goal (issue 3): run as close to the server's quota as possible while almost never
hitting it, with or without ``--rpm``/``--tpm``. Four brakes, all checked before
every attempt (`Pacer.acquire`):

1. **Shared cooldown.** A 429 that says how long to wait (retry-after-ms,
   Retry-After, x-ratelimit-reset-*) pauses *every* sender until then, not just the
   task that got it; that is what stops a thundering herd. A 429 with no hint
   leaves the wait to the retry policy (exponential backoff with jitter) and to
   brake 2.
2. **AIMD concurrency.** In-flight requests are capped by an adaptive limit that
   halves on a 429 (at most once per second) and grows by one per window of
   successes back up to ``--concurrency``.
3. **User quotas.** ``--rpm`` / ``--tpm`` go through aiolimiter leaky buckets; the
   token bucket is charged an estimate (prompt tokens + max tokens x n) and the
   difference to the real usage is given back when the response arrives.
4. **Header mirror.** Every response's ``x-ratelimit-*`` headers update a model of
   the server's own buckets (`QuotaMirror`), which we debit as we send; a send that
   would leave less than a small margin waits for the refill. This paces us at the
   server's refill rate *before* the quota runs out, even when no ``--rpm`` was
   given. Senders take turns at this brake (one lock), so they leave in order.

A header is a snapshot taken when the server admitted *our* request, some time
before we read it; other requests may have been admitted since. The mirror keeps
its own running account and only lets the snapshot bound it: the true remaining
is at least ``remaining - what we sent since this request left`` and at most
``remaining + refill since it left``. The pacer knows which send a response
answers because `acquire` and `observe` run in the same task (a context variable).

Clock and sleep are injected so the arithmetic is tested without waiting.

    >>> mirror = QuotaMirror()
    >>> mirror.observe(limit=60, remaining=0, reset_s=60.0, now=0.0)
    >>> round(mirror.delay(1, now=0.0), 2)   # 1 request + a margin of 2.2 refill at 1/s
    3.2
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import anyio

from batchrun.ratelimit_headers import RateLimitSnapshot

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]

_EPSILON = 1e-6  # seconds; float residue is not worth another sleep
MARGIN_SHARE = 0.02
"""Share of a server limit kept in reserve (plus one unit), for estimate errors."""


MIN_COOLDOWN = 0.05
"""Shortest shared pause after a 429 whose only hint was the reset headers."""


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
        used = limit - remaining
        if reset_s is not None and reset_s > 0 and used >= 0.1 * limit:
            # reset = time until full; a nearly full bucket gives a tiny, rounded
            # reset and a wild rate, so keep the old rate then
            rate = used / reset_s
        elif self.rate > 0 and self.limit == limit:
            rate = self.rate
        else:
            rate = limit / 60.0
        low = remaining - (spent_since or 0.0)
        high = remaining + rate * (age or 0.0)
        if self.limit != limit:
            level = low  # first snapshot (or the limit changed): assume the worst
        else:
            level = min(max(self.available(now), low), high)
        self.limit, self.level, self.rate, self.at = float(limit), level, rate, now

    def margin(self) -> float:
        return 1.0 + MARGIN_SHARE * (self.limit or 0.0)

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

    def spend(self, cost: float, now: float) -> None:
        if self.limit is not None:
            self.level = self.available(now) - cost
            self.at = now


class Stopped(Exception):
    """The run stopped while a request waited to be sent: it must not go out."""


class AdaptiveLimit:
    """A FIFO semaphore whose size follows AIMD between 1 and ``maximum``.

    A released slot is handed straight to the oldest waiter, so nobody overtakes.

        >>> slots = AdaptiveLimit(8, clock=lambda: 0.0)
        >>> slots.decrease(); slots.size
        4
    """

    def __init__(self, maximum: int, clock: Clock) -> None:
        self.maximum = max(1, maximum)
        self.limit = float(self.maximum)
        self.in_use = 0
        self._clock = clock
        self._last_decrease = float("-inf")
        self._waiters: deque[anyio.Event] = deque()

    @property
    def size(self) -> int:
        return max(1, int(self.limit))

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def try_acquire(self) -> bool:
        """Take a slot if one is free now (the fast path: no waiting, no scope)."""
        if self.in_use < self.size and not self._waiters:
            self.in_use += 1
            return True
        return False

    async def acquire(self) -> None:
        if self.try_acquire():
            return
        event = anyio.Event()
        self._waiters.append(event)
        try:
            await event.wait()
        except BaseException:
            if event.is_set():
                self.release()  # the slot was already ours: pass it on
            else:
                self._waiters.remove(event)
            raise

    def release(self) -> None:
        self.in_use -= 1
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.in_use < self.size:
            self.in_use += 1  # taken on the waiter's behalf
            self._waiters.popleft().set()

    def decrease(self) -> None:
        """Halve the limit, at most once per second (one burst of 429s is one signal)."""
        now = self._clock()
        if now - self._last_decrease >= 1.0:
            self._last_decrease = now
            self.limit = max(1.0, self.limit / 2)

    def increase(self) -> None:
        """Grow by 1/limit per success: +1 per window of ``limit`` successes."""
        if self.limit < self.maximum:
            self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)
            self._wake()


@dataclass
class PacerStats:
    rate_limited: int = 0
    """429 responses seen."""
    cooldown_s: float = 0.0
    """Seconds all senders were paused by shared cooldowns."""
    header_waits: int = 0
    """Times a sender waited for the header mirror (or a cooldown) before sending."""
    paced_s: float = 0.0
    """Seconds spent in those waits (the sender at the head of the line)."""


@dataclass(frozen=True, slots=True)
class _Send:
    at: float
    requests: float
    tokens: float
    """The pacer's running totals just after this send."""


_last_send: ContextVar[_Send | None] = ContextVar("batchrun_last_send", default=None)


class Pacer:
    """Decides when an attempt may start. One per run, shared by all workers.

    pacer = Pacer(concurrency=64)
    await pacer.acquire(tokens)          # may wait
    try: reply = await send(body)
    finally: pacer.release(ok=...)
    pacer.observe(parse_ratelimit_headers(reply.headers))
    """

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
        self.cooldown_until = float("-inf")
        self.stats = PacerStats()
        self._turn = anyio.Lock()
        self._stopped = False
        self._waits: set[anyio.CancelScope] = set()
        self._sent_requests = 0.0
        self._sent_tokens = 0.0

    @property
    def needs_token_estimates(self) -> bool:
        """Token estimates cost a tokenizer pass: only make them when they matter."""
        return self.tpm is not None or self.tokens.limit is not None

    @property
    def concurrency_limit(self) -> int:
        return self.slots.size

    def summary(self) -> dict[str, Any]:
        """Current pacing, for summary.json and progress lines."""
        return {
            "concurrency_limit": self.concurrency_limit,
            "cooldown_s": round(self.stats.cooldown_s, 3),
            "header_waits": self.stats.header_waits,
            "paced_s": round(self.stats.paced_s, 3),
            "rate_limited_seen": self.stats.rate_limited,
            "server_rpm": self.requests.limit,
            "server_tpm": self.tokens.limit,
        }

    def _wait_needed(self, tokens: int) -> float:
        now = self.clock()
        return max(
            self.cooldown_until - now,
            self.requests.delay(1, now),
            self.tokens.delay(tokens, now),
        )

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until one attempt costing ``tokens`` may be sent; take a slot.

        Raises `Stopped` when `stop` is called while waiting (or before): a request
        that waits here is never sent after the run stopped. Only the waits pay for
        being interruptible; an attempt that can go at once costs no cancel scope.
        """
        if self._stopped:
            raise Stopped()
        if self.cooldown_until > self.clock():
            await self._interruptible(self._cool_down())
        if not self.slots.try_acquire():
            await self._interruptible(self.slots.acquire())
        try:
            if self.rpm is not None:
                await self._interruptible(self.rpm.acquire(1))
            if self.tpm is not None and tokens:
                await self._interruptible(self.tpm.acquire(min(float(tokens), self.tpm_capacity)))
            if not self._turn.locked() and self._wait_needed(tokens) <= _EPSILON:
                self._spend(tokens)  # nobody queued and room in every account: go now
            else:
                await self._interruptible(self._take_turn(tokens))
        except BaseException:
            self.slots.release()
            raise

    async def _cool_down(self) -> None:
        while (left := self.cooldown_until - self.clock()) > 0:
            await self.sleep(left)

    async def _take_turn(self, tokens: int) -> None:
        """Queue for the header accounts: senders that must wait leave in order."""
        async with self._turn:
            while (wait := self._wait_needed(tokens)) > _EPSILON:
                self.stats.header_waits += 1
                self.stats.paced_s += wait
                await self.sleep(wait)
            self._spend(tokens)

    def _spend(self, tokens: int) -> None:
        now = self.clock()
        self.requests.spend(1, now)
        self.tokens.spend(tokens, now)
        self._sent_requests += 1
        self._sent_tokens += tokens
        _last_send.set(_Send(now, self._sent_requests, self._sent_tokens))

    async def _interruptible(self, waiting: Awaitable[Any]) -> None:
        with anyio.CancelScope() as scope:
            self._waits.add(scope)
            try:
                await waiting
                return
            finally:
                self._waits.discard(scope)
        raise Stopped()

    def stop(self) -> None:
        """Wake every waiting sender with `Stopped`; later `acquire` calls raise it too."""
        self._stopped = True
        for scope in self._waits:
            scope.cancel()

    def release(self, *, ok: bool) -> None:
        self.slots.release()
        if ok:
            self.slots.increase()

    def settle_tokens(self, estimated: int, actual: int | None) -> None:
        """Give back to ``--tpm`` what the estimate over-reserved, once usage is known.

        Only the user's bucket: servers (OpenAI, the simulator) charge their own
        estimate up front and keep it, and the header mirror follows the server.
        """
        if actual is None or actual >= estimated or self.tpm is None:
            return
        refund = estimated - actual
        # aiolimiter has no public refund; lowering its level is the same thing
        level = getattr(self.tpm, "_level", None)
        if isinstance(level, float | int):
            self.tpm._level = max(0.0, level - refund)
            wake = getattr(self.tpm, "_wake_next", None)
            if callable(wake):
                wake()  # a waiter may fit now

    def observe(self, snapshot: RateLimitSnapshot | None) -> None:
        """Feed one response's x-ratelimit-* headers (call in the task that sent it)."""
        if snapshot is None:
            return
        now = self.clock()
        send = _last_send.get()
        age = None if send is None else now - send.at
        if snapshot.limit_requests is not None and snapshot.remaining_requests is not None:
            self.requests.observe(
                snapshot.limit_requests,
                snapshot.remaining_requests,
                snapshot.reset_requests_s,
                now,
                spent_since=None if send is None else self._sent_requests - send.requests,
                age=age,
            )
        if snapshot.limit_tokens is not None and snapshot.remaining_tokens is not None:
            self.tokens.observe(
                snapshot.limit_tokens,
                snapshot.remaining_tokens,
                snapshot.reset_tokens_s,
                now,
                spent_since=None if send is None else self._sent_tokens - send.tokens,
                age=age,
            )

    def rate_limited(
        self, retry_after: float | None, *, explicit: bool = True, tokens: int = 0
    ) -> None:
        """A 429 arrived: shrink concurrency; with a hint, pause every sender.

        ``explicit``: the server said how long (Retry-After, retry-after-ms). A hint
        read from ``x-ratelimit-reset-*`` instead is the time until the bucket is
        *full* (up to a minute), far longer than the next request needs; the pause
        is then cut to what the header accounts (just updated from this 429) say one
        request of ``tokens`` needs, and they keep pacing the rest.
        """
        self.stats.rate_limited += 1
        self.slots.decrease()
        if retry_after is not None and retry_after > 0 and not explicit:
            now = self.clock()
            if self.requests.limit is not None or self.tokens.limit is not None:
                needed = max(self.requests.delay(1, now), self.tokens.delay(tokens, now))
                retry_after = min(retry_after, max(needed, MIN_COOLDOWN))
        if retry_after is not None and retry_after > 0:
            now = self.clock()
            until = now + retry_after
            if until > self.cooldown_until:
                self.stats.cooldown_s += until - max(self.cooldown_until, now)
                self.cooldown_until = until
