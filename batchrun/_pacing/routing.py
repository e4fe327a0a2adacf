"""Which endpoint of a pool takes a request, and where its retry goes. Pure.

A pool's throughput is the sum of its endpoints' quotas only if no endpoint waits
while another has room. So a request is not dealt to an endpoint in advance: when it
is about to be sent, every endpoint serving its model says how soon it could take it
(a `Candidate`: its account's quota and cool-down, `ModelAccount.delay`; its own cap
on requests in flight; its breaker, `batchrun._pacing.circuit`), and `route` picks
the soonest. Weight only breaks ties: between endpoints that can take the request
equally soon, the least loaded for its weight (requests in flight / weight), then
the heavier, then the first declared.

No head-of-line blocking: the answer is a `Route` with a wait, never a binding. A
request whose soonest endpoint must wait is asked about again when that wait is over
or a request of the pool comes back, whichever is first; if another endpoint got
room meanwhile, it goes there. A request is never parked on a cooling endpoint while
another serving its model has room.

Failover (`retry_route`): after a retryable failure (5xx, timeout, connection error,
an unusable 200) the next attempt goes to another endpoint serving the model when one
can take it no later than the failed endpoint could (its back-off, its breaker's
cool-down); after a 429, only when another can take it sooner than the 429's wait;
after a failure about the endpoint (401, 402, 403, 404, ``insufficient_quota``) to
another endpoint whenever there is one. Every attempt, wherever it goes, counts
against the same ``--max-attempts``.

    >>> route([Candidate("a", wait=4.0), Candidate("b", wait=0.0)])
    Route(endpoint='b', wait=0.0)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from batchrun._pacing.account import ModelAccount
from batchrun._pacing.circuit import EndpointBreaker, endpoint_fault
from batchrun._pacing.retry import is_retryable
from batchrun.errors import RateLimited

TIE_SECONDS = 0.001
"""Waits this close are equally soon (weight and load decide between them)."""
NEVER = math.inf


@dataclass(frozen=True, slots=True)
class Candidate:
    """One endpoint's answer to "how soon could you take this request?"."""

    name: str
    wait: float
    """Seconds before it may send it: 0 now; inf when only a request of its coming back
    can make room (its in-flight cap reached, its half-open probe out)."""
    weight: float = 1.0
    in_flight: int = 0
    """Requests in flight there (all its models'), to share ties by load."""
    order: int = 0
    """Its place in the pool: the last tie-breaker, so a choice is reproducible."""


@dataclass(frozen=True, slots=True)
class Route:
    """Where a request goes and how long it waits first (see the module docstring:
    a wait is not a binding; inf: until a request of the pool comes back)."""

    endpoint: str
    wait: float


@dataclass(frozen=True, slots=True)
class Retry:
    """Where the next attempt of a failed request goes, and after how long."""

    endpoint: str
    wait: float
    moved: bool
    """It goes to another endpoint than the one that failed."""


def candidate(
    name: str,
    account: ModelAccount,
    breaker: EndpointBreaker,
    *,
    tokens: int,
    now: float,
    in_flight: int = 0,
    cap: int | None = None,
    weight: float = 1.0,
    order: int = 0,
) -> Candidate | None:
    """The `Candidate` of endpoint ``name`` for a request of ``tokens`` for
    ``account``'s model, at ``now``; None when its breaker will not take that model
    any more (removed). ``in_flight``/``cap``: the endpoint's requests in flight, all
    models', and its own cap on them (the account has its own per-model limit)."""
    if breaker.removed_for(account.model):
        return None
    wait = max(account.delay(tokens, now), breaker.wait(now))
    if not account.has_room(now) or (cap is not None and in_flight >= cap):
        wait = NEVER
    return Candidate(name, wait, weight, in_flight, order)


def route(candidates: Iterable[Candidate]) -> Route | None:
    """The endpoint that can take the request soonest (ties: see the module
    docstring); None when no endpoint serving it is left.

    >>> route([Candidate("a", 0.0, weight=1), Candidate("b", 0.0, weight=3)]).endpoint
    'b'
    >>> route([Candidate("a", 0.0, in_flight=2), Candidate("b", 0.0, in_flight=1)]).endpoint
    'b'
    """
    pool = list(candidates)
    if not pool:
        return None
    soonest = min(c.wait for c in pool)
    tied = [c for c in pool if c.wait <= soonest + TIE_SECONDS]
    best = min(tied, key=lambda c: (c.in_flight / c.weight, -c.weight, c.order))
    return Route(best.name, best.wait)


def retry_route(
    failed_on: str,
    error: BaseException,
    candidates: Iterable[Candidate],
    *,
    wait_here: float,
    attempts: int,
    max_attempts: int,
) -> Retry | None:
    """Where the next attempt of a request that just failed on ``failed_on`` goes;
    None when there is none (the error is final for the row, or ``attempts`` made
    reached ``max_attempts``, or the endpoint is out and no other serves the model).

    ``candidates``: every endpoint serving the request's model, the failed one too
    when it may still take it (its breaker, just told of the failure, sets its
    wait); ``wait_here``: what the retry policy says this endpoint's retry waits (the
    429's Retry-After, the back-off).

    >>> from batchrun.errors import ServerError
    >>> e = ServerError("down", code="server_error", status=503)
    >>> retry_route("a", e, [Candidate("a", 0.0), Candidate("b", 0.0)], wait_here=0.5,
    ...             attempts=1, max_attempts=10)
    Retry(endpoint='b', wait=0.0, moved=True)
    """
    about_endpoint = endpoint_fault(error)
    if attempts >= max_attempts or not (is_retryable(error) or about_endpoint):
        return None
    pool = list(candidates)
    here = next((c for c in pool if c.name == failed_on), None)
    elsewhere = route(c for c in pool if c.name != failed_on)
    stay = None if here is None or about_endpoint else max(wait_here, here.wait)
    if elsewhere is not None:
        if stay is None:
            return Retry(elsewhere.endpoint, elsewhere.wait, True)
        sooner = elsewhere.wait < stay if isinstance(error, RateLimited) else elsewhere.wait <= stay
        if sooner:
            return Retry(elsewhere.endpoint, elsewhere.wait, True)
    if stay is None:
        return None
    return Retry(failed_on, stay, False)


__all__ = ["TIE_SECONDS", "Candidate", "Retry", "Route", "candidate", "retry_route", "route"]
