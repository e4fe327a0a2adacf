from __future__ import annotations

import httpx
import pytest

from batchrun._pacing.headers import (
    RateLimitSnapshot,
    get_header,
    parse_duration,
    parse_int,
    parse_ratelimit_headers,
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1.5s", 1.5),
        ("2h3m4.5s", 2 * 3600 + 3 * 60 + 4.5),
        ("0s", 0.0),
        ("100us", 100e-6),
        ("100\u00b5s", 100e-6),  # micro sign, as Go prints it
        ("100\u03bcs", 100e-6),  # Greek mu
        ("250ns", 250e-9),
        ("1m", 60.0),
        ("1h", 3600.0),
        ("1m30.5s", 90.5),
        (".5s", 0.5),
        ("7", 7.0),
        ("0.25", 0.25),
        (" 2s ", 2.0),
        ("1S", 1.0),
        ("1MS", 0.001),
    ],
)
def test_parse_duration_reads_openai_formats(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text",
    ["", "   ", "soon", "1x", "s", "1s garbage", "1.2.3s", "-1s", "inf", "nan", "1e999", "ms"],
)
def test_parse_duration_gives_none_for_garbage(text: str) -> None:
    assert parse_duration(text) is None


def test_parse_duration_of_none_is_none() -> None:
    assert parse_duration(None) is None


def test_parse_duration_overflow_is_none_not_an_error() -> None:
    assert parse_duration("9" * 400 + "h") is None


@pytest.mark.parametrize(
    ("text", "value"),
    [("1000", 1000), ("1000.0", 1000), (" 42 ", 42), ("0", 0), ("lots", None), ("", None)],
)
def test_parse_int(text: str, value: int | None) -> None:
    assert parse_int(text) == value


def test_parse_int_rejects_non_finite() -> None:
    assert parse_int("inf") is None
    assert parse_int("nan") is None


def test_get_header_any_key_case_in_plain_dict() -> None:
    assert get_header({"Retry-After": " 2 "}, "retry-after") == "2"
    assert get_header({"RETRY-AFTER": "3"}, "retry-after") == "3"
    assert get_header({"retry-after": "4"}, "retry-after") == "4"
    assert get_header({"other": "x"}, "retry-after") is None


def test_get_header_httpx_headers() -> None:
    headers = httpx.Headers({"Retry-After": "5"})
    assert get_header(headers, "retry-after") == "5"


FULL = {
    "x-ratelimit-limit-requests": "10000",
    "x-ratelimit-remaining-requests": "9999",
    "x-ratelimit-reset-requests": "6ms",
    "x-ratelimit-limit-tokens": "2000000.0",
    "x-ratelimit-remaining-tokens": "0",
    "x-ratelimit-reset-tokens": "1m30.5s",
}


def test_parse_ratelimit_headers_all_six() -> None:
    snap = parse_ratelimit_headers(FULL)
    assert snap is not None
    assert snap.reset_requests_s == pytest.approx(0.006)
    assert snap == RateLimitSnapshot(
        limit_requests=10000,
        remaining_requests=9999,
        reset_requests_s=snap.reset_requests_s,
        limit_tokens=2000000,
        remaining_tokens=0,
        reset_tokens_s=90.5,
    )


def test_parse_ratelimit_headers_mixed_case_dict_and_httpx_agree() -> None:
    shouty = {k.upper(): v for k, v in FULL.items()}
    assert parse_ratelimit_headers(shouty) == parse_ratelimit_headers(FULL)
    assert parse_ratelimit_headers(httpx.Headers(shouty)) == parse_ratelimit_headers(FULL)


def test_parse_ratelimit_headers_none_without_any() -> None:
    assert parse_ratelimit_headers({}) is None
    assert parse_ratelimit_headers({"content-type": "application/json"}) is None


def test_parse_ratelimit_headers_ignores_garbage_fields() -> None:
    snap = parse_ratelimit_headers(
        {"x-ratelimit-remaining-requests": "many", "x-ratelimit-reset-requests": "2s"}
    )
    assert snap == RateLimitSnapshot(reset_requests_s=2.0)


def test_parse_ratelimit_headers_only_garbage_is_none() -> None:
    assert parse_ratelimit_headers({"x-ratelimit-remaining-tokens": "??"}) is None


def test_snapshot_is_frozen() -> None:
    snap = RateLimitSnapshot(limit_requests=1)
    with pytest.raises(AttributeError):
        snap.limit_requests = 2  # type: ignore[misc]
