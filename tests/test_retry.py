from __future__ import annotations

import random
import sys
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import anyio
import httpx
import pytest
import tenacity

from batchrun._models import Attempt
from batchrun._pacing.retry import (
    DEFAULT_MAX_WAIT,
    RETRYABLE_STATUSES,
    backoff_seconds,
    describe_attempt,
    is_retryable,
    is_retryable_status,
    make_retrying,
    retry_after_seconds,
    tenacity_retry,
    tenacity_wait,
    wait_seconds,
)
from batchrun.errors import (
    BadResponse,
    BudgetExceeded,
    ClientError,
    FinalError,
    RateLimited,
    RequestError,
    RequestTimeout,
    ServerError,
    TransportError,
)

NOW = 1_700_000_000.0  # a fixed unix time for HTTP-date Retry-After


def rate_limited(headers: Mapping[str, str] | None = None) -> RateLimited:
    return RateLimited("Rate limit reached", code="rate_limited", status=429, headers=headers)


def server_error(headers: Mapping[str, str] | None = None) -> ServerError:
    return ServerError("bad gateway", code="server_error", status=502, headers=headers)


def client_error(headers: Mapping[str, str] | None = None) -> ClientError:
    return ClientError("bad request", code="invalid_request", status=400, headers=headers)


# --- statuses and the retry decision -------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 520, 599])
def test_retryable_statuses(status: int) -> None:
    assert is_retryable_status(status)
    assert status in RETRYABLE_STATUSES


@pytest.mark.parametrize("status", [200, 201, 301, 400, 401, 403, 404, 410, 413, 422, 600])
def test_final_statuses(status: int) -> None:
    assert not is_retryable_status(status)


@pytest.mark.parametrize(
    "exc",
    [
        TransportError("reset", code="transport_error"),
        RequestTimeout("slow", code="timeout"),
        rate_limited(),
        server_error(),
        BadResponse("torn", code="bad_response", status=200),
    ],
)
def test_retryable_errors_are_retried(exc: RequestError) -> None:
    assert is_retryable(exc)


@pytest.mark.parametrize(
    "exc",
    [
        client_error(),
        FinalError("nope", code="final"),
        BudgetExceeded("over"),
        ValueError("bug"),
        KeyboardInterrupt(),
    ],
)
def test_everything_else_is_not_retried(exc: BaseException) -> None:
    assert not is_retryable(exc)


@pytest.mark.parametrize("value", ["false", "False", " FALSE "])
def test_x_should_retry_false_stops_a_retryable_error(value: str) -> None:
    assert not is_retryable(server_error({"X-Should-Retry": value}))
    assert not is_retryable(rate_limited(httpx.Headers({"x-should-retry": value})))


@pytest.mark.parametrize("value", ["true", "True"])
def test_x_should_retry_true_retries_a_final_error(value: str) -> None:
    assert is_retryable(client_error({"x-should-retry": value}))
    assert is_retryable(FinalError("x", code="final", headers={"X-SHOULD-RETRY": value}))


def test_x_should_retry_garbage_is_ignored() -> None:
    assert is_retryable(server_error({"x-should-retry": "maybe"}))
    assert not is_retryable(client_error({"x-should-retry": "1"}))


# --- retry_after_seconds --------------------------------------------------------------


def test_retry_after_seconds_int_and_float() -> None:
    assert retry_after_seconds({"Retry-After": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "1.5"}) == 1.5


def test_retry_after_ms() -> None:
    assert retry_after_seconds({"retry-after-ms": "250"}) == 0.25
    assert retry_after_seconds({"Retry-After-Ms": "1500.5"}) == pytest.approx(1.5005)


def test_retry_after_ms_wins_over_retry_after() -> None:
    assert retry_after_seconds({"retry-after": "10", "retry-after-ms": "300"}) == 0.3
    headers = httpx.Headers({"Retry-After": "10", "Retry-After-Ms": "300"})
    assert retry_after_seconds(headers) == 0.3


def test_garbage_retry_after_ms_falls_back_to_retry_after() -> None:
    assert retry_after_seconds({"retry-after-ms": "soon", "retry-after": "4"}) == 4.0


def test_retry_after_http_date_relative_to_injected_now() -> None:
    when = datetime.fromtimestamp(NOW + 30, tz=UTC)
    headers = {"Retry-After": format_datetime(when, usegmt=True)}
    assert retry_after_seconds(headers, now=NOW) == pytest.approx(30.0)
    # The literal RFC 9110 example, read against a "now" 5 s before it.
    example = {"retry-after": "Fri, 31 Dec 1999 23:59:59 GMT"}
    assert retry_after_seconds(example, now=946684799.0 - 5) == pytest.approx(5.0)


def test_retry_after_http_date_without_zone_is_utc() -> None:
    headers = {"retry-after": "Fri, 31 Dec 1999 23:59:59 -0000"}
    assert retry_after_seconds(headers, now=946684799.0 - 7) == pytest.approx(7.0)


def test_retry_after_http_date_in_the_past_is_zero() -> None:
    when = datetime.fromtimestamp(NOW - 60, tz=UTC)
    assert retry_after_seconds({"retry-after": format_datetime(when, usegmt=True)}, NOW) == 0.0


def test_negative_hints_clamp_to_zero() -> None:
    assert retry_after_seconds({"retry-after": "-5"}) == 0.0
    assert retry_after_seconds({"retry-after-ms": "-100"}) == 0.0


def test_huge_hints_clamp_to_max_wait() -> None:
    assert retry_after_seconds({"retry-after": "86400"}) == DEFAULT_MAX_WAIT
    assert retry_after_seconds({"retry-after-ms": "1e12"}) == DEFAULT_MAX_WAIT
    assert retry_after_seconds({"retry-after": "86400"}, max_wait=60.0) == 60.0
    far = datetime.fromtimestamp(NOW + 10**6, tz=UTC)
    assert retry_after_seconds({"retry-after": format_datetime(far)}, NOW) == DEFAULT_MAX_WAIT


@pytest.mark.parametrize("value", ["", "soon", "inf", "nan", "Blursday, 99 Foo 12345"])
def test_unreadable_retry_after_is_no_hint(value: str) -> None:
    assert retry_after_seconds({"retry-after": value}, now=NOW) is None


def test_no_headers_no_hint() -> None:
    assert retry_after_seconds({}) is None
    assert retry_after_seconds(httpx.Headers()) is None


def test_reset_header_of_the_exhausted_limit() -> None:
    headers = {
        "x-ratelimit-remaining-requests": "9999",
        "x-ratelimit-reset-requests": "6ms",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "1.5s",
    }
    assert retry_after_seconds(headers) == 1.5
    headers = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "20s",
        "x-ratelimit-remaining-tokens": "100",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert retry_after_seconds(headers) == 20.0


def test_reset_headers_both_exhausted_waits_for_the_later() -> None:
    headers = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2s",
        "x-ratelimit-remaining-tokens": "0.0",
        "x-ratelimit-reset-tokens": "7s",
    }
    assert retry_after_seconds(headers) == 7.0


def test_reset_headers_with_budget_left_are_no_hint_unless_rate_limited() -> None:
    # OpenAI sends these on every response; a 500 must not wait for a token reset.
    headers = {
        "x-ratelimit-remaining-requests": "10",
        "x-ratelimit-reset-requests": "3s",
        "x-ratelimit-remaining-tokens": "500",
        "x-ratelimit-reset-tokens": "12s",
    }
    assert retry_after_seconds(headers) is None
    assert retry_after_seconds(headers, rate_limited=True) == 12.0


def test_reset_only_header_counts_on_a_429() -> None:
    assert retry_after_seconds({"x-ratelimit-reset-tokens": "1s"}, rate_limited=True) == 1.0
    assert retry_after_seconds({"x-ratelimit-reset-tokens": "1s"}) is None


def test_retry_after_wins_over_reset_headers() -> None:
    headers = {
        "retry-after": "3",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "40s",
    }
    assert retry_after_seconds(headers, rate_limited=True) == 3.0


def test_reset_hint_is_clamped_too() -> None:
    headers = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-reset-tokens": "2h"}
    assert retry_after_seconds(headers) == DEFAULT_MAX_WAIT


# --- backoff ---------------------------------------------------------------------------


def test_backoff_doubles_from_base_with_equal_jitter() -> None:
    low = [backoff_seconds(n, rand=lambda: 0.0) for n in range(1, 6)]
    high = [backoff_seconds(n, rand=lambda: 1.0) for n in range(1, 6)]
    assert low == [0.25, 0.5, 1.0, 2.0, 4.0]
    assert high == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_backoff_bounds_for_many_attempts_with_seeded_rand() -> None:
    rng = random.Random(1234)
    for attempt in range(1, 2001):
        ceiling = min(30.0, 0.5 * 2.0 ** min(attempt - 1, 62))
        for _ in range(5):
            wait = backoff_seconds(attempt, rand=rng.random)
            assert ceiling / 2 <= wait <= ceiling
            assert wait <= 30.0


def test_backoff_never_near_zero_and_reaches_cap() -> None:
    assert backoff_seconds(1, rand=lambda: 0.0) == 0.25
    assert backoff_seconds(100, rand=lambda: 0.0) == 15.0
    assert backoff_seconds(100, rand=lambda: 0.999) == pytest.approx(29.985)
    assert backoff_seconds(10_000, base=1.0, cap=5.0, rand=lambda: 0.5) == 3.75


def test_backoff_attempt_below_one_is_treated_as_first() -> None:
    assert backoff_seconds(0, rand=lambda: 0.0) == backoff_seconds(1, rand=lambda: 0.0)
    assert backoff_seconds(-3, rand=lambda: 1.0) == 0.5


# --- wait_seconds ----------------------------------------------------------------------


@pytest.mark.parametrize("r", [0.0, 0.5, 0.999999])
def test_wait_honours_retry_after_and_jitter_only_adds(r: float) -> None:
    wait = wait_seconds(rate_limited({"Retry-After": "2"}), 1, rand=lambda: r)
    assert 2.0 <= wait <= 2.2


def test_wait_uses_hint_even_on_late_attempts() -> None:
    assert wait_seconds(rate_limited({"retry-after-ms": "100"}), 6, rand=lambda: 0.0) == 0.1


def test_wait_on_a_503_with_retry_after() -> None:
    exc = ServerError("busy", code="server_error", status=503, headers={"Retry-After": "5"})
    assert wait_seconds(exc, 1, rand=lambda: 0.0) == 5.0


def test_wait_with_http_date_uses_now() -> None:
    when = datetime.fromtimestamp(NOW + 9, tz=UTC)
    exc = rate_limited({"retry-after": format_datetime(when, usegmt=True)})
    assert wait_seconds(exc, 1, now=NOW, rand=lambda: 0.0) == pytest.approx(9.0)


def test_wait_falls_back_to_backoff_without_hint() -> None:
    assert wait_seconds(server_error(), 3, rand=lambda: 0.0) == 1.0
    assert wait_seconds(TransportError("x", code="transport_error"), 1, rand=lambda: 1.0) == 0.5
    assert wait_seconds(None, 2, rand=lambda: 0.0) == 0.5
    assert wait_seconds(ValueError("bug"), 2, rand=lambda: 0.0) == 0.5


def test_wait_500_ignores_reset_headers_with_budget_left() -> None:
    headers = {"x-ratelimit-remaining-tokens": "99", "x-ratelimit-reset-tokens": "50s"}
    assert wait_seconds(server_error(headers), 1, rand=lambda: 0.0) == 0.25


def test_wait_429_uses_reset_headers() -> None:
    headers = {"x-ratelimit-remaining-tokens": "99", "x-ratelimit-reset-tokens": "4s"}
    assert wait_seconds(rate_limited(headers), 1, rand=lambda: 0.0) == 4.0


def test_wait_never_exceeds_max_wait() -> None:
    exc = rate_limited({"retry-after": "100000"})
    assert wait_seconds(exc, 1, rand=lambda: 0.999) == DEFAULT_MAX_WAIT
    assert wait_seconds(exc, 1, rand=lambda: 0.999, max_wait=10.0) == 10.0


def test_wait_zero_hint_means_now() -> None:
    assert wait_seconds(rate_limited({"retry-after": "0"}), 1, rand=lambda: 0.9) == 0.0


# --- tenacity integration (no real sleeping) -----------------------------------------


class Script:
    """A coroutine function that raises the scripted errors in turn, then returns."""

    def __init__(self, *errors: BaseException, result: str = "ok") -> None:
        self.errors = list(errors)
        self.calls = 0
        self.result = result

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return self.result


def recorder() -> tuple[list[float], Callable[[float], Awaitable[None]]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return slept, sleep


def run(retrying: tenacity.AsyncRetrying, fn: Callable[[], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        return await retrying(fn)

    return anyio.run(main)


def test_tenacity_429_retry_after_sleeps_once_at_least_the_hint() -> None:
    slept, sleep = recorder()
    fn = Script(rate_limited({"retry-after": "2"}))
    assert run(make_retrying(6, sleep), fn) == "ok"
    assert fn.calls == 2
    assert len(slept) == 1
    assert 2.0 <= slept[0] <= 2.2


def test_tenacity_server_errors_back_off_exponentially() -> None:
    slept, sleep = recorder()
    fn = Script(server_error(), server_error(), server_error())
    assert run(make_retrying(6, sleep, rand=lambda: 0.0), fn) == "ok"
    assert fn.calls == 4
    assert slept == [0.25, 0.5, 1.0]


def test_tenacity_client_error_not_retried() -> None:
    slept, sleep = recorder()
    fn = Script(client_error())
    with pytest.raises(ClientError):
        run(make_retrying(6, sleep), fn)
    assert fn.calls == 1
    assert slept == []


def test_tenacity_x_should_retry_overrides_in_both_directions() -> None:
    slept, sleep = recorder()
    fn = Script(client_error({"x-should-retry": "true"}))
    assert run(make_retrying(3, sleep, rand=lambda: 0.0), fn) == "ok"
    assert slept == [0.25]

    slept, sleep = recorder()
    fn = Script(server_error({"x-should-retry": "false"}))
    with pytest.raises(ServerError):
        run(make_retrying(3, sleep), fn)
    assert fn.calls == 1 and slept == []


def test_tenacity_stops_after_max_attempts_and_reraises_last_error() -> None:
    slept, sleep = recorder()
    errors = [server_error() for _ in range(5)]
    fn = Script(*errors)
    with pytest.raises(ServerError) as info:
        run(make_retrying(3, sleep, rand=lambda: 0.0), fn)
    assert info.value is errors[2]
    assert fn.calls == 3
    assert slept == [0.25, 0.5]


def test_tenacity_max_attempts_one_means_no_retry() -> None:
    slept, sleep = recorder()
    fn = Script(server_error())
    with pytest.raises(ServerError):
        run(make_retrying(1, sleep), fn)
    assert fn.calls == 1 and slept == []


def test_tenacity_non_request_errors_propagate_at_once() -> None:
    slept, sleep = recorder()
    fn = Script(ValueError("bug"))
    with pytest.raises(ValueError):
        run(make_retrying(6, sleep), fn)
    assert fn.calls == 1 and slept == []


def test_tenacity_on_retry_sees_each_failure_before_sleeping() -> None:
    slept, sleep = recorder()
    seen: list[Attempt] = []

    def on_retry(state: tenacity.RetryCallState) -> None:
        assert state.outcome is not None
        exc = state.outcome.exception()
        assert exc is not None
        seen.append(describe_attempt(exc))
        assert len(slept) == len(seen) - 1  # called before the sleep

    fn = Script(rate_limited({"retry-after-ms": "10"}), server_error())
    assert run(make_retrying(6, sleep, on_retry, rand=lambda: 0.0), fn) == "ok"
    assert [(a.status, a.code) for a in seen] == [(429, "rate_limited"), (502, "server_error")]
    assert slept == [0.01, 0.5]  # backoff counts every attempt, hinted or not


def test_tenacity_http_date_uses_injected_clock() -> None:
    slept, sleep = recorder()
    when = datetime.fromtimestamp(NOW + 12, tz=UTC)
    fn = Script(rate_limited({"retry-after": format_datetime(when, usegmt=True)}))
    retrying = make_retrying(3, sleep, now=lambda: NOW, rand=lambda: 0.0)
    assert run(retrying, fn) == "ok"
    assert slept == [pytest.approx(12.0)]


def test_tenacity_async_for_form() -> None:
    slept, sleep = recorder()
    fn = Script(rate_limited({"retry-after": "1"}))

    async def main() -> str:
        async for attempt in make_retrying(4, sleep, rand=lambda: 0.0):
            with attempt:
                return await fn()
        raise AssertionError("unreachable")

    assert anyio.run(main) == "ok"
    assert slept == [1.0]


def test_standalone_adapters_plug_into_tenacity() -> None:
    slept, sleep = recorder()
    retrying = tenacity.AsyncRetrying(
        sleep=sleep,
        wait=tenacity_wait,
        retry=tenacity_retry,
        stop=tenacity.stop_after_attempt(4),
        reraise=True,
    )
    fn = Script(rate_limited({"retry-after": "3"}), client_error())
    with pytest.raises(ClientError):
        run(retrying, fn)
    assert fn.calls == 2
    assert len(slept) == 1 and 3.0 <= slept[0] <= 3.3


def test_tenacity_wait_from_a_built_state() -> None:
    state = tenacity.RetryCallState(tenacity.AsyncRetrying(), fn=None, args=(), kwargs={})
    state.attempt_number = 2
    try:
        raise rate_limited({"retry-after": "7"})
    except RateLimited:
        state.set_exception(sys.exc_info())  # type: ignore[arg-type]
    assert 7.0 <= tenacity_wait(state) <= 7.7


# --- describe_attempt ------------------------------------------------------------------


def test_describe_attempt_of_request_error() -> None:
    assert describe_attempt(rate_limited()) == Attempt(429, "rate_limited", "Rate limit reached")
    timeout = RequestTimeout("no answer in 120 s", code="timeout")
    assert describe_attempt(timeout) == Attempt(None, "timeout", "no answer in 120 s")


def test_describe_attempt_truncates_long_messages() -> None:
    html = "<html>" + "x" * 5000
    attempt = describe_attempt(ServerError(html, code="server_error", status=502))
    assert len(attempt.message) == 300
    assert attempt.message.startswith("<html>xxx")
    assert attempt.message.endswith("\u2026")
    short = "y" * 300
    assert describe_attempt(ServerError(short, code="e", status=500)).message == short


def test_describe_attempt_of_other_exceptions() -> None:
    assert describe_attempt(ValueError("bad thing")) == Attempt(None, "ValueError", "bad thing")


def test_reset_headers_can_be_left_to_the_pacer() -> None:
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "60s"}
    assert retry_after_seconds(headers, rate_limited=True) == 60.0
    assert retry_after_seconds(headers, rate_limited=True, use_reset=False) is None
    # an explicit Retry-After is still obeyed
    assert retry_after_seconds({**headers, "retry-after": "3"}, use_reset=False) == 3.0
    # without the reset hint a 429 falls back to the exponential backoff
    assert wait_seconds(rate_limited(headers), 1, rand=lambda: 0.0, use_reset=False) == 0.25
