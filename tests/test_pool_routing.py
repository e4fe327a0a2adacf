"""Routing a request across a pool, and where its retry goes (issue 26, item 3).

`batchrun._pacing.routing` is pure: each endpoint serving the request's model says how
soon it could take it (its `ModelAccount`'s quota and cool-down, its in-flight cap, its
breaker), the soonest takes it, weight breaks ties, and a wait is never a binding.
Tested with real accounts and breakers on a clock the test moves by hand.
"""

from __future__ import annotations

import pytest

from batchrun._pacing.account import ModelAccount
from batchrun._pacing.circuit import EndpointBreaker
from batchrun._pacing.routing import (
    TIE_SECONDS,
    Candidate,
    Retry,
    Route,
    candidate,
    retry_route,
    route,
)
from batchrun.errors import (
    ClientError,
    RateLimited,
    RequestError,
    RequestTimeout,
    ServerError,
    TransportError,
)

MODEL = "gpt-4o-mini"
DOWN = ServerError("Service Unavailable", code="server_error", status=503)


def drained(rpm: float, concurrency: int = 64) -> ModelAccount:
    """An account whose --rpm bucket was just used up (as after another client), past
    its slow start."""
    account = ModelAccount(MODEL, concurrency=concurrency, rpm=rpm, now=0.0)
    assert account.user_requests is not None
    account.user_requests.spend(rpm, now=0.0)
    account.answered(had_headers=False, now=0.0)
    return account


# -- the soonest takes it -----------------------------------------------------------------------
def test_the_pools_throughput_is_the_sum_of_its_quotas_and_each_takes_its_share() -> None:
    """Two endpoints at 600 and 1,200 requests a minute, drained, a queue that never
    empties: over a minute the pool sends 1,800 (each its own quota), routing each
    request to whichever account has room first, never waiting while one has room."""
    accounts = {"a": drained(600), "b": drained(1200)}
    breakers = {name: EndpointBreaker(name) for name in accounts}
    sent = dict.fromkeys(accounts, 0)
    now = 0.0
    while now < 60.0:
        choices = [
            candidate(n, accounts[n], breakers[n], tokens=0, now=now, order=i)
            for i, n in enumerate(accounts)
        ]
        chosen = route(c for c in choices if c is not None)
        assert chosen is not None
        if chosen.wait > 0:
            # nobody has room: the wait is the soonest any endpoint frees up
            assert all(c is not None and c.wait >= chosen.wait - TIE_SECONDS for c in choices)
            now += max(chosen.wait, 1e-6)  # a float wait of 1e-17 would not move the clock
            continue
        account = accounts[chosen.endpoint]
        account.take(0, now)
        account.release(ok=True)
        sent[chosen.endpoint] += 1
    assert sent["a"] == pytest.approx(600, abs=2)
    assert sent["b"] == pytest.approx(1200, abs=2)
    assert sum(sent.values()) / 1800 >= 0.998


def test_no_head_of_line_blocking_a_cooling_endpoint_never_holds_a_request() -> None:
    a = ModelAccount(MODEL, concurrency=1, now=0.0)
    b = ModelAccount(MODEL, concurrency=1, now=0.0)
    for account in (a, b):
        account.answered(had_headers=False, now=0.0)
    a.cooldown_until = 20.0  # a's quota says: nothing for 20 s
    breakers = {"a": EndpointBreaker("a"), "b": EndpointBreaker("b")}

    def ask(now: float) -> Route | None:
        cands = [
            candidate("a", a, breakers["a"], tokens=10, now=now, order=0),
            candidate("b", b, breakers["b"], tokens=10, now=now, order=1),
        ]
        return route(c for c in cands if c is not None)

    assert ask(1.0) == Route("b", 0.0)
    b.take(10, 1.0)  # b is now at its in-flight cap
    waiting = ask(1.5)
    assert waiting == Route("a", 18.5), "the soonest is a's cool-down..."
    b.release(ok=True)  # ... but b's request came back first: asked again, b takes it
    assert ask(2.0) == Route("b", 0.0)


def test_an_open_breaker_sends_its_requests_elsewhere_and_a_removed_one_is_no_candidate() -> None:
    a, b = drained(6000), drained(6000)
    a.user_requests = b.user_requests = None  # no quota in the way
    ba, bb = EndpointBreaker("a"), EndpointBreaker("b")
    for _ in range(ba.trip_after):
        ba.failed(DOWN, now=0.0)
    ca = candidate("a", a, ba, tokens=0, now=0.5)
    assert ca is not None and ca.wait == pytest.approx(0.5)
    assert route([ca, Candidate("b", 0.0)]) == Route("b", 0.0)
    bb.failed(ClientError("bad key", code="invalid_api_key", status=401), now=0.0)
    assert candidate("b", b, bb, tokens=0, now=0.5) is None
    # only the open one is left: the request waits for its probe, it is not lost
    assert route([ca]) == Route("a", pytest.approx(0.5))


def test_an_endpoints_own_cap_counts_all_its_models_requests() -> None:
    account = ModelAccount(MODEL, concurrency=64, now=0.0)
    account.answered(had_headers=False, now=0.0)
    breaker = EndpointBreaker("a")
    free = candidate("a", account, breaker, tokens=0, now=0.0, in_flight=3, cap=4)
    full = candidate("a", account, breaker, tokens=0, now=0.0, in_flight=4, cap=4)
    assert free is not None and free.wait == 0.0
    assert full is not None and full.wait == float("inf")


def test_weight_breaks_ties_by_load_for_its_weight() -> None:
    in_flight = {"heavy": 0, "light": 0}
    weights = {"heavy": 3.0, "light": 1.0}
    for _ in range(8):  # both have room all along: weight decides
        chosen = route(
            Candidate(n, 0.0, weight=weights[n], in_flight=in_flight[n], order=i)
            for i, n in enumerate(in_flight)
        )
        assert chosen is not None
        in_flight[chosen.endpoint] += 1
    assert in_flight == {"heavy": 6, "light": 2}
    # equal weights and loads: the first declared, so a choice is reproducible
    assert route([Candidate("x", 0.0, order=1), Candidate("y", 0.0, order=0)]) == Route("y", 0)
    # sooner beats heavier
    assert route([Candidate("x", 0.5, weight=9), Candidate("y", 0.1)]) == Route("y", 0.1)
    assert route([]) is None


# -- failover -----------------------------------------------------------------------------------
ROOM = [Candidate("a", 0.0, order=0), Candidate("b", 0.0, order=1)]


@pytest.mark.parametrize(
    "error",
    [
        DOWN,
        RequestTimeout("no answer in 60 s", code="timeout"),
        TransportError("connection reset", code="connection_error"),
    ],
)
def test_a_retryable_failure_retries_on_another_endpoint_serving_the_model(
    error: RequestError,
) -> None:
    assert retry_route("a", error, ROOM, wait_here=0.5, attempts=1, max_attempts=10) == Retry(
        "b", 0.0, moved=True
    )


def test_it_stays_when_the_others_would_make_it_wait_longer() -> None:
    busy = [Candidate("a", 0.0), Candidate("b", 10.0)]
    assert retry_route("a", DOWN, busy, wait_here=0.5, attempts=1, max_attempts=10) == Retry(
        "a", 0.5, moved=False
    )
    # ... unless its breaker just opened: then staying waits the cool-down
    cooling = [Candidate("a", 30.0), Candidate("b", 10.0)]
    assert retry_route("a", DOWN, cooling, wait_here=0.5, attempts=1, max_attempts=10) == Retry(
        "b", 10.0, moved=True
    )


def test_a_429_moves_only_when_another_endpoint_can_take_it_sooner() -> None:
    limited = RateLimited("Rate limit reached", code="rate_limit_exceeded", status=429)
    others = [Candidate("a", 0.0), Candidate("b", 2.0)]
    assert retry_route("a", limited, others, wait_here=20.0, attempts=1, max_attempts=10) == Retry(
        "b", 2.0, moved=True
    )
    assert retry_route("a", limited, others, wait_here=2.0, attempts=1, max_attempts=10) == Retry(
        "a", 2.0, moved=False
    )


def test_a_failure_about_the_endpoint_goes_elsewhere_or_nowhere() -> None:
    bad_key = ClientError("Incorrect API key", code="invalid_api_key", status=401)
    slow = [Candidate("a", 0.0), Candidate("b", 45.0)]
    assert retry_route("a", bad_key, slow, wait_here=0.0, attempts=1, max_attempts=10) == Retry(
        "b", 45.0, moved=True
    )
    alone = [Candidate("a", 0.0)]
    assert retry_route("a", bad_key, alone, wait_here=0.0, attempts=1, max_attempts=10) is None
    bad_row = ClientError("Invalid 'messages'", code="invalid_request_error", status=400)
    assert retry_route("a", bad_row, ROOM, wait_here=0.0, attempts=1, max_attempts=10) is None


def test_every_attempt_wherever_it_goes_counts_against_max_attempts() -> None:
    """A request failing on every endpoint: a, b, a, ... until --max-attempts 4."""
    where = ["a"]
    attempts = 1
    while True:
        step = retry_route(where[-1], DOWN, ROOM, wait_here=0.2, attempts=attempts, max_attempts=4)
        if step is None:
            break
        where.append(step.endpoint)
        attempts += 1
    assert where == ["a", "b", "a", "b"]
    assert attempts == 4
