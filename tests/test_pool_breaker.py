"""Each endpoint's breaker, and when a pool has no endpoint left (issue 26, item 4).

`batchrun._pacing.circuit` is a pure state machine on an injected clock: closed ->
open after consecutive retryable failures -> half-open after a cool-down (one probe)
-> closed on success, open again (longer) on failure; 401/402/403/insufficient_quota
remove the endpoint for good with one warning naming it, a 404 for its model. The
rule "consecutive failures, not a failure share over a window" is measured here
against a flapping endpoint (and a noisy one) with a time-stepped model of a pool
member: requests offered at 20 a second, answered 0.2 s later by whatever state the
endpoint was in when they were sent; a request the breaker turns away goes to another
endpoint of the pool (not counted here).
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable

import pytest

from batchrun._pacing.circuit import (
    CLOSED,
    DOWN_AFTER_PROBES,
    HALF_OPEN,
    OPEN,
    REMOVED,
    TRIP_AFTER,
    EndpointBreaker,
    endpoint_fault,
    stop_note,
    stranded,
)
from batchrun.errors import ClientError, RateLimited, RequestError, ServerError

DOWN = ServerError("Service Unavailable", code="server_error", status=503)
UNAUTHORIZED = ClientError("Incorrect API key", code="invalid_api_key", status=401)
NO_CREDIT = RateLimited("You exceeded your quota", code="insufficient_quota", status=429)
NO_MODEL = ClientError("The model does not exist", code="model_not_found", status=404)


def trip(breaker: EndpointBreaker, now: float = 0.0) -> None:
    for i in range(breaker.trip_after):
        assert breaker.failed(DOWN, now=now + i * 0.01) is None


# -- the state machine ------------------------------------------------------------------------
def test_consecutive_retryable_failures_open_it_and_a_success_between_resets_the_count() -> None:
    b = EndpointBreaker("c")
    for _ in range(TRIP_AFTER - 1):
        b.failed(DOWN, now=0.0)
    b.succeeded()  # one answer between: the count starts again
    for _ in range(TRIP_AFTER - 1):
        b.failed(DOWN, now=0.1)
    assert b.state == CLOSED and b.admits(0.1)
    b.failed(DOWN, now=0.2)
    assert b.state == OPEN and b.trips == 1
    assert not b.admits(0.5) and b.wait(0.5) == pytest.approx(0.7)


def test_after_the_cool_down_one_probe_goes_and_its_answer_closes_it() -> None:
    b = EndpointBreaker("c", cooldown=1.0)
    trip(b)
    reopen = b.reopen_at
    assert not b.admits(reopen - 0.01)
    assert b.admits(reopen)
    b.sent(reopen)  # the probe
    assert b.state == HALF_OPEN
    assert not b.admits(reopen + 0.1), "one probe at a time"
    assert b.wait(reopen + 0.1) == float("inf")  # until the probe comes back
    b.succeeded()
    assert b.state == CLOSED and b.admits(reopen + 0.2) and b.failed_probes == 0


def test_a_failed_probe_opens_it_again_for_twice_as_long_up_to_a_ceiling() -> None:
    b = EndpointBreaker("c", cooldown=1.0, max_cooldown=4.0)
    trip(b)
    pauses = []
    now = b.reopen_at
    for _ in range(4):
        b.sent(now)
        b.failed(DOWN, now=now)
        assert b.state == OPEN
        pauses.append(round(b.reopen_at - now, 6))
        now = b.reopen_at
    assert pauses == [2.0, 4.0, 4.0, 4.0]
    assert b.failed_probes == 4 and b.trips == 1
    b.sent(now)
    b.succeeded()  # closed again: the next trip starts from the first cool-down
    trip(b, now + 1)
    assert b.reopen_at - (now + 1 + 0.01 * (TRIP_AFTER - 1)) == pytest.approx(1.0)
    assert b.trips == 2


def test_late_failures_of_requests_sent_before_it_opened_do_not_extend_it() -> None:
    b = EndpointBreaker("c")
    trip(b)
    reopen = b.reopen_at
    for _ in range(20):  # the rest of what was in flight comes back failed
        b.failed(DOWN, now=0.3)
    assert b.reopen_at == reopen and b.state == OPEN


@pytest.mark.parametrize(
    ("error", "warning"),
    [
        (UNAUTHORIZED, "endpoint d: 401 Unauthorized: taken out for the rest of the run"),
        (
            ClientError("no", code="payment_required", status=402),
            "endpoint d: 402 Payment Required: taken out for the rest of the run",
        ),
        (
            ClientError("no", code="permission_denied", status=403),
            "endpoint d: 403 Forbidden: taken out for the rest of the run",
        ),
        (NO_CREDIT, "endpoint d: 429 insufficient_quota: taken out for the rest of the run"),
    ],
)
def test_a_key_or_account_failure_takes_it_out_for_good_with_one_warning(
    error: RequestError, warning: str
) -> None:
    b = EndpointBreaker("d")
    assert b.failed(error, now=0.0) == warning
    assert b.state == REMOVED and b.warning == warning
    assert b.failed(error, now=1.0) is None, "said once"
    assert not b.admits(1e9) and b.wait(0.0) == float("inf")
    b.succeeded()  # a late answer of a request sent before does not bring it back
    assert b.state == REMOVED


def test_a_404_takes_it_out_for_that_model_only() -> None:
    b = EndpointBreaker("relay")
    warning = b.failed(NO_MODEL, now=0.0, model="gpt-4.1")
    assert warning == (
        "endpoint relay: 404 Not Found for the model gpt-4.1: taken out for gpt-4.1 for the "
        "rest of the run"
    )
    assert b.failed(NO_MODEL, now=0.1, model="gpt-4.1") is None
    assert not b.admits(0.2, "gpt-4.1") and b.admits(0.2, "gpt-4o-mini")
    assert b.removed_for("gpt-4.1") and not b.removed_for("gpt-4o-mini")


def test_429s_are_the_accounts_and_other_4xx_the_rows_neither_trips_it() -> None:
    b = EndpointBreaker("c")
    slow_down = RateLimited("Rate limit reached", code="rate_limit_exceeded", status=429)
    bad_row = ClientError("bad request", code="invalid_request_error", status=400)
    for _ in range(3 * TRIP_AFTER):
        b.failed(slow_down, now=0.0)
        b.failed(bad_row, now=0.0)
    assert b.state == CLOSED and b.trips == 0
    assert endpoint_fault(UNAUTHORIZED) and endpoint_fault(NO_CREDIT)
    assert not endpoint_fault(slow_down) and not endpoint_fault(DOWN)


# -- the run-level rule -----------------------------------------------------------------------
def test_the_run_stops_only_when_a_model_with_rows_has_no_endpoint_left() -> None:
    a, c, d = EndpointBreaker("a"), EndpointBreaker("c"), EndpointBreaker("d")
    breakers = {"a": a, "c": c, "d": d}
    serving = {"gpt-4o-mini": ["a", "c", "d"], "gpt-4.1": ["d"]}
    d.failed(UNAUTHORIZED, now=0.0)
    # gpt-4.1 has rows and only d served it
    assert stranded(["gpt-4o-mini", "gpt-4.1"], serving, breakers) == {"gpt-4.1": ["d"]}
    # gpt-4.1 finished: the others carry on
    assert stranded(["gpt-4o-mini"], serving, breakers) == {}
    # c opens: cooling is not gone
    trip(c)
    assert stranded(["gpt-4o-mini"], serving, breakers) == {}
    # a is removed; c fails probe after probe until it counts as gone
    a.failed(NO_CREDIT, now=0.0)
    now = c.reopen_at
    for _ in range(DOWN_AFTER_PROBES - 1):
        c.sent(now)
        c.failed(DOWN, now=now)
        now = c.reopen_at
        assert stranded(["gpt-4o-mini"], serving, breakers) == {}
    c.sent(now)
    c.failed(DOWN, now=now)
    stuck = stranded(["gpt-4o-mini"], serving, breakers)
    assert stuck == {"gpt-4o-mini": ["a", "c", "d"]}
    assert stop_note(stuck, breakers) == (
        "stopping: no endpoint is left for gpt-4o-mini (a: 429 insufficient_quota; c: "
        f"failing, {DOWN_AFTER_PROBES} probes failed in a row; d: 401 Unauthorized); the "
        "rows left stay pending"
    )


# -- the rule, measured against a flapping endpoint -------------------------------------------
class ShareBreaker(EndpointBreaker):
    """The alternative rule, for the measurement: open when at least half of the last
    20 outcomes (10 at least) failed."""

    __slots__ = ("recent",)

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.recent: deque[bool] = deque(maxlen=20)

    def succeeded(self) -> None:
        self.recent.append(False)
        super().succeeded()

    def failed(self, exc: BaseException, now: float, model: str | None = None) -> str | None:
        self.recent.append(True)
        if self.state != CLOSED:
            return super().failed(exc, now, model)
        if len(self.recent) >= 10 and sum(self.recent) >= len(self.recent) / 2:
            self.recent.clear()
            self._open(now, longer=False)
        return None


Health = Callable[[float, random.Random], bool]


def offered(
    breaker: EndpointBreaker | None, healthy: Health, seconds: float = 120.0
) -> tuple[int, int, int]:
    """(requests sent while it was failing, sent while it answered, offered while it
    answered): 20 requests a second offered, each answered 0.2 s after it left by the
    state the endpoint was in then."""
    rng = random.Random(7)
    in_flight: list[tuple[float, int, bool]] = []
    wasted = used = could = 0
    for step in range(int(seconds * 20)):
        now = step / 20
        while in_flight and in_flight[0][0] <= now:
            _, _, ok = heapq.heappop(in_flight)
            if breaker is not None:
                breaker.succeeded() if ok else breaker.failed(DOWN, now=now)
        up = healthy(now, rng)
        could += up
        if breaker is None or breaker.admits(now):
            if breaker is not None:
                breaker.sent(now)
            used += up
            wasted += not up
            heapq.heappush(in_flight, (now + 0.2, step, up))
    return wasted, used, could


def flapping(now: float, rng: random.Random) -> bool:
    return now % 6.0 < 3.0  # 3 s answering, 3 s 503 for everything


def noisy(now: float, rng: random.Random) -> bool:
    return rng.random() >= 0.2  # one request in five a 503, at random


def test_against_a_flapping_endpoint_it_wastes_few_requests_and_keeps_most_of_its_answers() -> None:
    """Flapping 3 s up / 3 s down for two minutes at 20 requests a second: without a
    breaker 1,200 requests go to the dead phases; consecutive failures (5) send 187
    there (-84 %) and keep 73 % of the endpoint's answering capacity (880 of 1,200); a
    failure share over a window (half of the last 20) sends 287 and keeps 65 %. With
    random 503s on one request in five, consecutive failures never trip: every answer
    is kept."""
    none_wasted, none_used, could = offered(None, flapping)
    assert none_used == could == 1200 and none_wasted == 1200
    wasted, used, _ = offered(EndpointBreaker("c"), flapping)
    share_wasted, share_used, _ = offered(ShareBreaker("c"), flapping)
    assert wasted <= 0.2 * none_wasted, (wasted, none_wasted)
    assert used >= 0.65 * could, (used, could)
    assert wasted < share_wasted and used > share_used, (wasted, used, share_wasted, share_used)
    noisy_wasted, noisy_used, noisy_could = offered(EndpointBreaker("c"), noisy)
    assert noisy_used == noisy_could, "a noisy endpoint stays in rotation"
    breaker = EndpointBreaker("c")
    offered(breaker, noisy)
    assert breaker.trips == 0
