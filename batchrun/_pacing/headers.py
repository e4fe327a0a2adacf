"""Read what a server says about its rate limits from response headers.

Pure parsing: no I/O, no httpx. Headers are any ``Mapping[str, str]`` -- an
``httpx.Headers`` (already case-insensitive) or a plain dict whose keys may be in
any case -- so the retry policy can be tested with dicts.

OpenAI-style servers send six headers on most responses::

    x-ratelimit-limit-requests: 10000      x-ratelimit-limit-tokens: 2000000
    x-ratelimit-remaining-requests: 9999   x-ratelimit-remaining-tokens: 1999000
    x-ratelimit-reset-requests: 6ms        x-ratelimit-reset-tokens: 1m30.5s

The reset values are Go-style durations, which is why `parse_duration` exists.

    >>> parse_duration("6m0s")
    360.0
    >>> parse_ratelimit_headers({"X-RateLimit-Remaining-Tokens": "0"}).remaining_tokens
    0
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "RateLimitSnapshot",
    "get_header",
    "parse_duration",
    "parse_int",
    "parse_ratelimit_headers",
]

# Seconds per unit. Both the micro sign (U+00B5) and the Greek mu (U+03BC) appear in
# the wild for microseconds; Go prints U+00B5.
_UNIT_SECONDS: dict[str, float] = {
    "h": 3600.0,
    "m": 60.0,
    "s": 1.0,
    "ms": 1e-3,
    "us": 1e-6,
    "\u00b5s": 1e-6,
    "\u03bcs": 1e-6,
    "ns": 1e-9,
}
# "ms" must be tried before "m", and "s" last, or "20ms" would read as 20 minutes.
_PART = r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|us|\u00b5s|\u03bcs|ns|s)"
_DURATION_RE = re.compile(rf"(?:{_PART})+")
_PART_RE = re.compile(_PART)


def get_header(headers: Mapping[str, str], name: str) -> str | None:
    """Look a header up by name, whatever case the mapping's keys use.

    ``httpx.Headers`` answers the direct lookup; a plain dict with ``Retry-After`` as
    its key is found by the scan. ``name`` is expected in lower case.

        >>> get_header({"Retry-After": "2"}, "retry-after")
        '2'
    """
    value = headers.get(name)
    if value is None:
        for key, candidate in headers.items():
            if isinstance(key, str) and key.lower() == name:
                value = candidate
                break
    if value is None:
        return None
    return str(value).strip()


def parse_duration(value: str | None) -> float | None:
    """Seconds in an OpenAI reset header (``1s``, ``6m0s``, ``20ms``, ``2h3m4.5s``).

    A bare number is taken as seconds. Anything unreadable gives None rather than an
    exception: a malformed hint must never fail a request that otherwise worked.

        >>> parse_duration("1.5s"), parse_duration("20ms"), parse_duration("soon")
        (1.5, 0.02, None)
    """
    if value is None:
        return None
    text = str(value).strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        if not _DURATION_RE.fullmatch(text):
            return None
        seconds = sum(
            float(number) * _UNIT_SECONDS[unit] for number, unit in _PART_RE.findall(text)
        )
    # float() also accepts "inf" and "nan", and a long enough duration overflows.
    return seconds if math.isfinite(seconds) else None


def parse_int(value: str | None) -> int | None:
    """An integer header value; ``"1000"`` and ``"1000.0"`` both give 1000, junk None.

    >>> parse_int("1000.0"), parse_int("lots")
    (1000, None)
    """
    if value is None:
        return None
    text = str(value).strip()
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    return int(number)


@dataclass(frozen=True, slots=True)
class RateLimitSnapshot:
    """The six x-ratelimit-* values of one response; a field is None when absent or junk.

    >>> snap = parse_ratelimit_headers({"x-ratelimit-reset-requests": "20ms"})
    >>> snap.reset_requests_s
    0.02
    """

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None


def parse_ratelimit_headers(headers: Mapping[str, str]) -> RateLimitSnapshot | None:
    """Read the x-ratelimit-* headers, or None when none of them yields a value.

    None (rather than an all-None snapshot) lets callers write ``if snap:``; a server
    that sends only garbage in these headers is treated as sending none.

        >>> parse_ratelimit_headers({"content-type": "application/json"}) is None
        True
    """
    # hot path: most servers (vLLM, llama.cpp) send none; one pass over the names
    raw = getattr(headers, "raw", None)  # httpx.Headers: [(bytes, bytes), ...]
    if raw is not None:
        present = any(name[:11].lower() == b"x-ratelimit" for name, _ in raw)
    else:
        present = any(str(name)[:11].lower() == "x-ratelimit" for name in headers)
    if not present:
        return None
    snap = RateLimitSnapshot(
        limit_requests=parse_int(get_header(headers, "x-ratelimit-limit-requests")),
        remaining_requests=parse_int(get_header(headers, "x-ratelimit-remaining-requests")),
        reset_requests_s=parse_duration(get_header(headers, "x-ratelimit-reset-requests")),
        limit_tokens=parse_int(get_header(headers, "x-ratelimit-limit-tokens")),
        remaining_tokens=parse_int(get_header(headers, "x-ratelimit-remaining-tokens")),
        reset_tokens_s=parse_duration(get_header(headers, "x-ratelimit-reset-tokens")),
    )
    if snap == RateLimitSnapshot():
        return None
    return snap
