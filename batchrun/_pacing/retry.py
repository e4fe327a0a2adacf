"""When to try a request again, and how long to wait first.

Small pure functions the runner hands to tenacity, so the policy can be tested by
building states instead of sleeping:

- `is_retryable` decides: the error tree in `batchrun.errors` says retryable or
  final, and an ``x-should-retry: true|false`` header overrides it (OpenAI SDK rule).
- `retry_after_seconds` reads the server's hint: ``retry-after-ms``, then
  ``Retry-After`` (seconds or an HTTP date), then the ``x-ratelimit-reset-*`` of
  an exhausted limit.
- `backoff_seconds` is the fallback: exponential with "equal jitter".
- `wait_seconds` joins the two; `make_retrying` wires everything into tenacity.
- `ends_the_run` decides when a failure to connect at all (DNS, refused, TLS) stops
  the whole run instead of being retried; `Reachability` holds what it needs to know.

    retrying = make_retrying(6, sleep=anyio.sleep, on_retry=log_it)
    body = await retrying(send_once, request)   # reraises the last error

Jitter only ever *adds* to a server hint: a 429 with ``Retry-After: 2`` is retried
after 2.0 to 2.2 s, never sooner.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import tenacity
from tenacity import RetryCallState

from batchrun._models import Attempt
from batchrun._pacing.headers import RateLimitSnapshot, get_header, parse_ratelimit_headers
from batchrun.errors import EndpointUnreachable, RateLimited, RequestError, RetryableError

__all__ = [
    "DEFAULT_MAX_WAIT",
    "MAX_MESSAGE_CHARS",
    "REFUSALS_TO_STOP",
    "RETRYABLE_STATUSES",
    "Reachability",
    "backoff_seconds",
    "describe_attempt",
    "ends_the_run",
    "endpoint_down_note",
    "is_retryable",
    "is_retryable_status",
    "make_retrying",
    "retry_after_seconds",
    "tenacity_retry",
    "tenacity_wait",
    "wait_seconds",
]

RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 409, 429, *range(500, 600)})
"""408 timeout, 409 conflict (OpenAI uses it for lock contention), 429, every 5xx."""

DEFAULT_MAX_WAIT = 300.0
"""Longest single wait, whatever the server asks: a batch should crawl, not stall."""

HINT_JITTER = 0.1
"""Up to this fraction is *added* to a server hint so a burst of 429s fans out."""

MAX_MESSAGE_CHARS = 300

REFUSALS_TO_STOP = 3
"""Attempts of one request refused in a row (about a second of back-off) before a run
whose endpoint has not answered yet stops: long enough for a port that was just
being bound, short enough that a dead endpoint costs seconds, not minutes."""


def is_retryable_status(status: int) -> bool:
    """True for statuses where another attempt may succeed (408, 409, 429, 5xx).

    >>> is_retryable_status(503), is_retryable_status(400)
    (True, False)
    """
    return status in RETRYABLE_STATUSES


def _should_retry_header(headers: Mapping[str, str]) -> bool | None:
    value = get_header(headers, "x-should-retry")
    if value is None:
        return None
    lowered = value.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    return None


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed attempt deserves another one.

    The server has the last word: ``x-should-retry: false`` stops even a 5xx, and
    ``x-should-retry: true`` retries even a 4xx (as the OpenAI SDK does). Without
    the header the error class decides. Anything that is not a `RequestError` (a
    bug, a cancellation, the budget running out) is never retried.

        >>> is_retryable(RateLimited("slow down", code="rate_limited", status=429))
        True
    """
    if not isinstance(exc, RequestError):
        return False
    verdict = _should_retry_header(exc.headers)
    if verdict is not None:
        return verdict
    return isinstance(exc, RetryableError)


def _parse_seconds(value: str) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) else None


def _http_date_delay(value: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000" means "UTC, source unknown" (RFC 5322)
        when = when.replace(tzinfo=UTC)
    return when.timestamp() - now


def _reset_hint(snap: RateLimitSnapshot, rate_limited: bool) -> float | None:
    # The limit with nothing remaining is the one that refused us; if both are out,
    # the later reset is the one that must pass before a retry can succeed.
    pairs = (
        (snap.remaining_requests, snap.reset_requests_s),
        (snap.remaining_tokens, snap.reset_tokens_s),
    )
    exhausted = [
        reset
        for remaining, reset in pairs
        if remaining is not None and remaining <= 0 and reset is not None
    ]
    if exhausted:
        return max(exhausted)
    if rate_limited:
        # A 429 with budget apparently left (e.g. the request needs more tokens than
        # remain): we cannot tell which limit bit, so wait for both.
        known = [reset for _, reset in pairs if reset is not None]
        if known:
            return max(known)
    return None


def retry_after_seconds(
    headers: Mapping[str, str],
    now: float | None = None,
    *,
    max_wait: float = DEFAULT_MAX_WAIT,
    rate_limited: bool = False,
    use_reset: bool = True,
) -> float | None:
    """Seconds the server asks us to wait, clamped to ``[0, max_wait]``; None if no hint.

    Order: ``retry-after-ms``, ``Retry-After`` (seconds, or an HTTP date measured
    from ``now``, a unix timestamp defaulting to ``time.time()``), then the
    ``x-ratelimit-reset-*`` headers. OpenAI sends the reset headers on every
    response, so they count only for a limit whose remaining is 0, or -- when
    ``rate_limited`` (the response was a 429) -- as the later of the two resets.
    ``use_reset=False`` ignores them: a caller that paces from those headers itself
    (the model's `batchrun._pacing.account.ModelAccount`) knows better than "until the bucket is
    full". An unreadable header is skipped, never fatal.

        >>> retry_after_seconds({"Retry-After": "2"})
        2.0
        >>> retry_after_seconds({"x-ratelimit-reset-tokens": "1s"}, rate_limited=True)
        1.0
    """
    hint: float | None = None
    millis = get_header(headers, "retry-after-ms")
    if millis is not None:
        value = _parse_seconds(millis)
        if value is not None:
            hint = value / 1000.0
    if hint is None:
        retry_after = get_header(headers, "retry-after")
        if retry_after:
            hint = _parse_seconds(retry_after)
            if hint is None:
                hint = _http_date_delay(retry_after, time.time() if now is None else now)
    if hint is None and use_reset:
        snap = parse_ratelimit_headers(headers)
        if snap is not None:
            hint = _reset_hint(snap, rate_limited)
    if hint is None:
        return None
    return max(0.0, min(hint, max_wait))


def backoff_seconds(
    attempt: int,
    base: float = 0.5,
    cap: float = 30.0,
    rand: Callable[[], float] = random.random,
) -> float:
    """Wait before retry number ``attempt`` (1 = after the first failure) with no hint.

    The ceiling doubles each attempt up to ``cap``: ``min(cap, base * 2**(attempt-1))``.
    "Equal jitter" waits half the ceiling plus a random share of the other half, so
    waits spread out to avoid a thundering herd yet never collapse to ~0 the way
    AWS "full jitter" can. ``rand`` returns a float in [0, 1) and is injectable.

        >>> [backoff_seconds(n, rand=lambda: 0.0) for n in (1, 2, 3)]
        [0.25, 0.5, 1.0]
    """
    exponent = min(max(attempt, 1) - 1, 62)  # 2.0**1024 would overflow a float
    ceiling = min(cap, base * 2.0**exponent)
    half = ceiling / 2.0
    return half + half * rand()


def wait_seconds(
    exc: BaseException | None,
    attempt: int,
    now: float | None = None,
    rand: Callable[[], float] = random.random,
    *,
    base: float = 0.5,
    cap: float = 30.0,
    max_wait: float = DEFAULT_MAX_WAIT,
    use_reset: bool = True,
) -> float:
    """How long to wait after ``exc`` failed attempt number ``attempt``.

    A server hint (see `retry_after_seconds`) wins, plus up to 10% extra so many
    requests refused together do not all come back at the same instant; the extra
    only adds, so the hint is always honoured. Otherwise `backoff_seconds`.

        >>> err = RateLimited("429", code="rate_limited", status=429,
        ...                   headers={"retry-after": "2"})
        >>> 2.0 <= wait_seconds(err, 1) <= 2.2
        True
    """
    hint = None
    if isinstance(exc, RequestError) and exc.headers:
        rate_limited = isinstance(exc, RateLimited) or exc.status == 429
        hint = retry_after_seconds(
            exc.headers, now, max_wait=max_wait, rate_limited=rate_limited, use_reset=use_reset
        )
    if hint is None:
        return backoff_seconds(attempt, base=base, cap=cap, rand=rand)
    return min(hint + hint * HINT_JITTER * rand(), max_wait)


def _failure_of(retry_state: RetryCallState) -> BaseException | None:
    outcome = retry_state.outcome
    if outcome is None or not outcome.failed:
        return None
    return outcome.exception()


def tenacity_wait(retry_state: RetryCallState) -> float:
    """`wait_seconds` as a tenacity ``wait=`` strategy (real clock, real randomness).

    tenacity.AsyncRetrying(wait=tenacity_wait, retry=tenacity_retry, reraise=True)
    """
    return wait_seconds(_failure_of(retry_state), retry_state.attempt_number)


tenacity_retry = tenacity.retry_if_exception(is_retryable)
"""`is_retryable` as a tenacity ``retry=`` strategy."""


def make_retrying(
    max_attempts: int,
    sleep: Callable[[float], Awaitable[None]],
    on_retry: Callable[[RetryCallState], Any] | None = None,
    *,
    now: Callable[[], float] = time.time,
    rand: Callable[[], float] = random.random,
    base: float = 0.5,
    cap: float = 30.0,
    max_wait: float = DEFAULT_MAX_WAIT,
    attempts_made: int = 0,
    use_reset: bool = True,
) -> tenacity.AsyncRetrying:
    """A fresh tenacity controller applying this policy; make one per request.

    ``attempts_made`` lets a caller make the first attempt itself (tenacity costs
    ~25 us a request, and most requests succeed at once) and hand over only after
    a failure: stop and backoff then count those attempts too.

    ``max_attempts`` counts the first try. ``sleep`` is ``anyio.sleep`` in the
    runner and a recorder in tests. ``on_retry`` runs before each sleep (log it,
    append `describe_attempt` of the failure). After the last attempt the last
    error itself is raised, not a ``tenacity.RetryError``. ``now`` (a unix-time
    clock, used for HTTP-date Retry-After) and ``rand`` are injectable for tests.

        retrying = make_retrying(6, sleep=anyio.sleep)
        result = await retrying(send_once, request)
    """

    def wait(retry_state: RetryCallState) -> float:
        return wait_seconds(
            _failure_of(retry_state),
            retry_state.attempt_number + attempts_made,
            now(),
            rand,
            base=base,
            cap=cap,
            max_wait=max_wait,
            use_reset=use_reset,
        )

    return tenacity.AsyncRetrying(
        sleep=sleep,
        stop=tenacity.stop_after_attempt(max(1, max_attempts - attempts_made)),
        wait=wait,
        retry=tenacity_retry,
        before_sleep=on_retry,
        reraise=True,
    )


def _truncate(text: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def describe_attempt(exc: BaseException) -> Attempt:
    """The `Attempt` record of one failed try, for errors.jsonl and the journal.

    Messages are cut to 300 characters: a provider's HTML error page must not bloat
    every output line. Non-request exceptions are described by their class name.

        >>> describe_attempt(RateLimited("slow down", code="rate_limited", status=429))
        Attempt(status=429, code='rate_limited', message='slow down', billed=False)
    """
    if isinstance(exc, RequestError):
        return Attempt(exc.status, exc.code, _truncate(exc.message or str(exc)), exc.billed)
    return Attempt(None, type(exc).__name__, _truncate(str(exc)))


def ends_the_run(
    exc: EndpointUnreachable,
    *,
    reached: bool,
    refusals: int,
    max_attempts: int,
    older_in_flight: bool = False,
) -> bool:
    """Whether a failure to connect at all stops the whole run now (rather than being
    retried, or failing its row).

    Once the endpoint has answered in this run (any HTTP status), never: a name that
    fails to resolve for a moment or a server restarting is retried like any transport
    error, and a lasting outage trips the breaker (`batchrun._engine.attempt.Breaker`).
    Before that, a name that does not resolve or a TLS handshake that fails stops it at
    the first occurrence: every request goes to the same host and would fail the same
    way. A refused connection (or no route to the host) may be a server still binding
    its port: that request is retried with the usual short back-off, and the run stops
    once it has been refused `REFUSALS_TO_STOP` times (or on its last attempt, if it has
    fewer) -- unless a request sent before it is still on the wire (``older_in_flight``:
    a connection was made, its answer may come, e.g. from a second server behind the
    name, and then the endpoint has answered).

        >>> refused = EndpointUnreachable("connection refused by 127.0.0.1:9",
        ...                               kind="refused", host="127.0.0.1", port=9)
        >>> [ends_the_run(refused, reached=False, refusals=n, max_attempts=10)
        ...  for n in (1, 2, 3)]
        [False, False, True]
        >>> ends_the_run(refused, reached=True, refusals=10, max_attempts=10)
        False
    """
    if reached:
        return False
    if exc.kind in ("dns", "tls"):
        return True
    return refusals >= min(REFUSALS_TO_STOP, max(1, max_attempts)) and not older_in_flight


def endpoint_down_note(exc: EndpointUnreachable) -> str:
    """The note of a run stopped by `ends_the_run`: what failed, and what to do.

    >>> note = endpoint_down_note(EndpointUnreachable("cannot resolve api.example.invalid",
    ...     kind="dns", host="api.example.invalid", port=443))
    >>> note.split("; ")[0]
    'stopping: cannot resolve api.example.invalid'
    """
    if exc.kind == "dns":
        fix = "check --base-url and the network"
    elif exc.kind == "tls":
        fix = "check --base-url (http:// or https://) and the server's certificate"
    else:
        fix = "start the server (or check --base-url and the network)"
    return (
        f"stopping: {exc.message}; nothing reached the endpoint, the rows not sent are "
        f"left pending; {fix}, then rerun the same command"
    )


class Reachability:
    """What a run knows of its endpoint for `ends_the_run`: whether it has answered yet,
    and, until it has, which attempts are on the wire (numbered in the order sent).
    No I/O and no clock; one per run, in its event loop.

        >>> reach = Reachability()
        >>> first = reach.sending(); second = reach.sending()
        >>> refused = EndpointUnreachable("connection refused by h:1", kind="refused",
        ...                               host="h", port=1)
        >>> reach.stops(refused, second, refusals=3, max_attempts=10)  # first may answer
        False
        >>> reach.landed(first, answered=True); reach.reached
        True
    """

    __slots__ = ("_next", "_on_wire", "reached")

    def __init__(self) -> None:
        self.reached = False
        """The endpoint has answered an attempt of this run (any HTTP status)."""
        self._next = 0
        self._on_wire: set[int] = set()

    def sending(self) -> int:
        """An attempt goes out; its number (for `landed` and `stops`)."""
        number = self._next
        self._next += 1
        if not self.reached:
            self._on_wire.add(number)
        return number

    def landed(self, number: int, *, answered: bool) -> None:
        """Attempt ``number`` is over; ``answered``: an HTTP response came back."""
        self._on_wire.discard(number)
        if answered and not self.reached:
            self.reached = True
            self._on_wire.clear()  # no longer needed: a reached endpoint never stops here

    def stops(
        self, exc: EndpointUnreachable, number: int, *, refusals: int, max_attempts: int
    ) -> bool:
        """`ends_the_run` for attempt ``number``, its request refused ``refusals`` times."""
        older = not self.reached and any(other < number for other in self._on_wire)
        return ends_the_run(
            exc,
            reached=self.reached,
            refusals=refusals,
            max_attempts=max_attempts,
            older_in_flight=older,
        )
