"""One model's share of an endpoint: its quotas, its concurrency, its 429s. Pure.

OpenAI-style quotas (and their ``x-ratelimit-*`` headers) are per model, so every
model a run sends to gets its own `ModelAccount`; a model waiting for its quota
never slows another. An account holds:

* the user's quotas (``--rpm``/``--tpm``, per model or for every model), as `Bucket`s;
* the mirror of the server's own buckets (`QuotaMirror`), from the headers;
* a cooldown: a pause for *every* sender of this model, set only when a 429 says
  the quota is exhausted (its headers show nothing left, or 429s cluster: at
  least `CLUSTER_MIN` of the last `RECENT` answers and `CLUSTER_SHARE` of them). An
  isolated 429 delays only its own request (the retry honours its Retry-After);
* an AIMD concurrency limit, halved on an exhausting 429 at most once a second and
  grown by one per window of successes;
* a slow start: until the server's headers are known (or it shows it sends none),
  one request at a time, for at most `PROBE_SECONDS`. From a drained quota the first
  answer is a quick 429 whose headers set the pace; from a full one the first answer
  opens the gate, so full speed comes within one round trip.

Everything takes ``now`` from the caller: tested without a clock or a loop.

    >>> acct = ModelAccount("m", concurrency=8, now=0.0)
    >>> acct.size, acct.delay(tokens=0, now=0.0)
    (1, 0.0)
    >>> acct.answered(had_headers=False, now=0.1); acct.size
    8
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from batchrun._pacing.buckets import Bucket, QuotaMirror
from batchrun._pacing.headers import RateLimitSnapshot

RECENT = 100
"""Answers remembered to tell a cluster of 429s from isolated ones."""
CLUSTER_MIN = 3
CLUSTER_SHARE = 0.10
PROBE_SECONDS = 1.0
"""Longest slow start: a slow first answer (a long generation) must not hold a run."""
MIN_COOLDOWN = 0.05
"""Shortest shared pause after an exhausting 429 whose only hint was the reset headers."""


@dataclass
class AccountStats:
    rate_limited: int = 0
    """429 answers seen."""
    isolated_429: int = 0
    """Of those, 429s that did not pause the model (the quota was not exhausted)."""
    cooldown_s: float = 0.0
    """Seconds every sender of this model was paused by cooldowns."""
    header_waits: int = 0
    """Times senders waited for this model's quotas (header mirror or user buckets)."""
    paced_s: float = 0.0
    """Seconds spent in those waits (by the sender keeping time)."""


@dataclass(frozen=True, slots=True)
class SendMark:
    """The account's running totals just after one send: `observe` uses them to know
    what was sent since the request a response answers left."""

    account: ModelAccount
    at: float
    requests: float
    tokens: float


class ModelAccount:
    def __init__(
        self,
        model: str,
        *,
        concurrency: int,
        rpm: float | None = None,
        tpm: float | None = None,
        now: float = 0.0,
    ) -> None:
        self.model = model
        self.maximum = max(1, concurrency)
        self.limit = float(self.maximum)
        self.in_flight = 0
        self.requests = QuotaMirror()
        self.tokens = QuotaMirror()
        self.user_requests = Bucket(rpm) if rpm else None
        self.user_tokens = Bucket(tpm) if tpm else None
        self.cooldown_until = float("-inf")
        self.probing = True
        self.probe_until = now + PROBE_SECONDS
        self.stats = AccountStats()
        self._recent: deque[bool] = deque()
        self._recent_429 = 0
        self._last_decrease = float("-inf")
        self._sent_requests = 0.0
        self._sent_tokens = 0.0

    # -- may a request go? -------------------------------------------------------
    @property
    def size(self) -> int:
        """Requests this model may have in flight now."""
        return 1 if self.probing else max(1, int(self.limit))

    def has_room(self, now: float) -> bool:
        if self.probing:
            if now < self.probe_until:
                return self.in_flight < 1
            self.probing = False  # a slow first answer: do not hold the run for it
        return self.in_flight < self.limit or self.in_flight < 1

    @property
    def needs_token_estimates(self) -> bool:
        """Token estimates cost a tokenizer pass: only make them when they matter."""
        return self.user_tokens is not None or self.tokens.limit is not None

    @property
    def bounded(self) -> bool:
        """True once any quota is known: the server's (headers) or the user's."""
        return (
            self.requests.limit is not None
            or self.tokens.limit is not None
            or self.user_requests is not None
            or self.user_tokens is not None
        )

    def delay(self, tokens: int, now: float) -> float:
        """Seconds before one request of ``tokens`` may go (0: now)."""
        if not self.bounded:  # the common case of a server that says nothing
            wait = self.cooldown_until - now
            return wait if wait > 0.0 else 0.0
        wait = max(
            self.cooldown_until - now,
            self.requests.delay(1, now),
            self.tokens.delay(tokens, now) if tokens else 0.0,
        )
        if self.user_requests is not None:
            wait = max(wait, self.user_requests.delay(1, now))
        if self.user_tokens is not None and tokens:
            wait = max(wait, self.user_tokens.delay(tokens, now))
        return wait

    def take(self, tokens: int, now: float) -> SendMark:
        """One request leaves now: charge every bucket, count it in flight. The mark
        tells `observe` what was sent after it (so the first headers, arriving after a
        burst, are not mistaken for the bucket now)."""
        self.in_flight += 1
        if not self.bounded:
            self._sent_requests += 1
            self._sent_tokens += tokens
            return SendMark(self, now, self._sent_requests, self._sent_tokens)
        self.requests.spend(1, now)
        if tokens:
            self.tokens.spend(tokens, now)
        if self.user_requests is not None:
            self.user_requests.spend(1, now)
        if self.user_tokens is not None and tokens:
            self.user_tokens.spend(tokens, now)
        self._sent_requests += 1
        self._sent_tokens += tokens
        return SendMark(self, now, self._sent_requests, self._sent_tokens)

    def room(self, tokens: int, now: float, most: int, slack: float = 0.0) -> int:
        """How many requests of ``tokens`` may go now, one after another (each with a
        `delay` of at most ``slack``), up to ``most``: what taking them one at a time
        would allow, in one step (a cluster's lease of hundreds)."""
        if self.cooldown_until - now > slack:
            return 0
        if not self.bounded:
            return most
        bounds = [self.requests.room(1, now, slack)]
        if tokens:
            bounds.append(self.tokens.room(tokens, now, slack))
        if self.user_requests is not None:
            bounds.append(self.user_requests.room(1, now, slack))
        if self.user_tokens is not None and tokens:
            bounds.append(self.user_tokens.room(tokens, now, slack))
        return int(min(most, *bounds))

    def take_many(self, count: int, tokens: int, now: float) -> SendMark:
        """``count`` requests leave now (`take` ``count`` times, in one step; in flight
        is not counted: a cluster's workers count their own). The mark is the first's."""
        mark = self.take(tokens, now)
        self.in_flight -= 1
        more = count - 1
        if more <= 0:
            return mark
        if self.bounded:
            self.requests.spend(more, now)
            if tokens:
                self.tokens.spend(more * tokens, now)
            if self.user_requests is not None:
                self.user_requests.spend(more, now)
            if self.user_tokens is not None and tokens:
                self.user_tokens.spend(more * tokens, now)
        self._sent_requests += more
        self._sent_tokens += more * tokens
        return mark

    def release(self, *, ok: bool) -> None:
        """A request is back (answered, failed, or never sent after all)."""
        self.in_flight -= 1
        if ok and self.limit < self.maximum:
            self.limit = min(float(self.maximum), self.limit + 1.0 / self.limit)

    def settle_tokens(self, estimated: int, actual: int | None, now: float) -> None:
        """Give back to ``--tpm`` what the estimate over-charged, once usage is known.

        Only the user's bucket: servers (OpenAI, the simulator) charge their own
        estimate up front and keep it, and the header mirror follows the server.
        """
        if self.user_tokens is not None and actual is not None and actual < estimated:
            self.user_tokens.refund(estimated - actual, now)

    # -- what the server said ----------------------------------------------------
    def answered(self, *, had_headers: bool, now: float) -> None:
        """Any answer ends the slow start: its headers set the pace, or the server
        sends none and there is nothing to wait for."""
        self.probing = False
        self._remember(False)

    def observe(
        self, snapshot: RateLimitSnapshot | None, mark: SendMark | None, now: float
    ) -> None:
        """Feed one response's x-ratelimit-* headers (``mark``: the send it answers):
        the requests and the tokens bucket alike, each when its limit and remaining
        count came."""
        if snapshot is None:
            return
        mine = mark if mark is not None and mark.account is self else None
        age = None if mine is None else now - mine.at
        for bucket, limit, remaining, reset_s, spent_since in (
            (
                self.requests,
                snapshot.limit_requests,
                snapshot.remaining_requests,
                snapshot.reset_requests_s,
                None if mine is None else self._sent_requests - mine.requests,
            ),
            (
                self.tokens,
                snapshot.limit_tokens,
                snapshot.remaining_tokens,
                snapshot.reset_tokens_s,
                None if mine is None else self._sent_tokens - mine.tokens,
            ),
        ):
            if limit is not None and remaining is not None:
                bucket.observe(limit, remaining, reset_s, now, spent_since=spent_since, age=age)
                self.probing = False

    def rate_limited(
        self,
        retry_after: float | None,
        *,
        explicit: bool,
        tokens: int,
        snapshot: RateLimitSnapshot | None,
        now: float,
    ) -> bool:
        """A 429 arrived. Returns True when it says the quota is exhausted; then every
        sender of this model pauses and concurrency halves. An isolated 429 (the
        headers show room, and 429s do not cluster) changes nothing shared: only its
        own request waits, for its Retry-After.

        ``explicit``: the server said how long (Retry-After, retry-after-ms). A hint
        read from ``x-ratelimit-reset-*`` is the time until the bucket is *full* (up
        to a minute), far longer than the next request needs; the pause is then cut
        to what the header accounts (just updated from this 429) say one request of
        ``tokens`` needs, and they keep pacing the rest.
        """
        self.stats.rate_limited += 1
        self.probing = False
        self._remember(True)
        if not (self._exhausted_by(snapshot, tokens) or self._clustered()):
            self.stats.isolated_429 += 1
            return False
        if now - self._last_decrease >= 1.0:  # one burst of 429s is one signal
            self._last_decrease = now
            self.limit = max(1.0, self.limit / 2)
        if retry_after is not None and retry_after > 0 and not explicit:
            if self.requests.limit is not None or self.tokens.limit is not None:
                needed = max(self.requests.delay(1, now), self.tokens.delay(tokens, now))
                retry_after = min(retry_after, max(needed, MIN_COOLDOWN))
        if retry_after is not None and retry_after > 0:
            until = now + retry_after
            if until > self.cooldown_until:
                self.stats.cooldown_s += until - max(self.cooldown_until, now)
                self.cooldown_until = until
        return True

    def _exhausted_by(self, snapshot: RateLimitSnapshot | None, tokens: int) -> bool:
        if snapshot is None:
            return False
        if snapshot.remaining_requests is not None and snapshot.remaining_requests < 1:
            return True
        return snapshot.remaining_tokens is not None and snapshot.remaining_tokens < max(1, tokens)

    def _clustered(self) -> bool:
        return self._recent_429 >= CLUSTER_MIN and self._recent_429 >= CLUSTER_SHARE * len(
            self._recent
        )

    def _remember(self, was_429: bool) -> None:
        recent = self._recent
        if len(recent) == RECENT and recent.popleft():
            self._recent_429 -= 1
        recent.append(was_429)
        self._recent_429 += was_429

    def summary(self) -> dict[str, Any]:
        return {
            "concurrency_limit": self.size,
            "cooldown_s": round(self.stats.cooldown_s, 3),
            "header_waits": self.stats.header_waits,
            "paced_s": round(self.stats.paced_s, 3),
            "rate_limited_seen": self.stats.rate_limited,
            "isolated_429": self.stats.isolated_429,
            "server_rpm": self.requests.limit,
            "server_tpm": self.tokens.limit,
        }


__all__ = ["AccountStats", "ModelAccount", "SendMark"]
