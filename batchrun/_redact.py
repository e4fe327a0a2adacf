"""Keep API keys out of every byte batchrun writes.

A server (or a proxy in front of it) can echo the key back in many ways: an error
body quoting the Authorization header, an SSE error event, a torn stream's partial
body, a redirect's Location, an ``x-request-id`` header. Whatever path it takes,
it must not reach results.jsonl, errors.jsonl, results.parquet, summary.json, a
report or a log line. So the key is registered here when it is loaded, and the
writers (the result sink, the atomic JSON writer, the CLI's messages) pass their
bytes through `scrub` just before they write them. The client also scrubs what it
receives before it truncates anything, so a message cut at 300 characters cannot
keep half a key.

Bytes are not enough: a server can send the key in pieces (streamed deltas of three
characters) or ``\\u``-escaped inside a JSON string, and the decoded answer then holds
it whole. So the client also passes every *decoded* answer (a body, an assembled
stream, an error's body) through `scrub_json` before anything else sees it: the
result line, the response cache, a hook.

The registry is per process: a key loaded once is scrubbed from everything written
afterwards. Each key is matched in the forms it can take on the way: as is, JSON
string-escaped (once and twice, as an error text quoted inside a JSON string is),
with ``/`` written ``\\/``, and percent-encoded (a URL).

    >>> register_secret("sk-test-0123456789abcdef")
    >>> scrub(b'{"error": "bad key sk-test-0123456789abcdef"}')
    b'{"error": "bad key ***"}'
"""

from __future__ import annotations

import re
import threading
from typing import Any
from urllib.parse import quote

import orjson

MASK = b"***"
MIN_SECRET_CHARS = 8
"""Shorter values are not keys (and would mask ordinary text)."""

_lock = threading.Lock()
_forms: tuple[bytes, ...] = ()


def _escaped(value: bytes) -> bytes:
    return orjson.dumps(value.decode("utf-8", "replace"))[1:-1]


def forms_of(secret: str) -> set[bytes]:
    """Every spelling of ``secret`` that can appear in bytes batchrun writes."""
    raw = secret.encode("utf-8")
    base = {raw, raw.replace(b"/", b"\\/"), quote(secret, safe="").encode("ascii")}
    out = set(base)
    for form in base:
        once = _escaped(form)
        out.add(once)
        out.add(_escaped(once))
    return {f for f in out if len(f) >= MIN_SECRET_CHARS}


def register_secret(secret: str | None) -> None:
    """Scrub ``secret`` from everything written from now on in this process."""
    global _forms
    if not secret or len(secret) < MIN_SECRET_CHARS:
        return
    with _lock:
        merged = set(_forms) | forms_of(secret)
        # longest first: a form that contains another must be replaced whole
        _forms = tuple(sorted(merged, key=len, reverse=True))


def scrub(data: bytes) -> bytes:
    """``data`` with every registered secret replaced by ``***``.

    Cheap when there is nothing to replace (one substring search per form), so it
    sits on the hot path of the result writer.
    """
    for form in _forms:
        if form in data:
            data = data.replace(form, MASK)
    return data


def scrub_json(value: Any) -> Any:
    """A decoded JSON value (an answer, assembled) with every registered secret
    masked in it, whatever escapes or pieces it arrived in: the value is encoded
    again and `scrub` runs on those bytes. The value itself when nothing was masked.

    >>> register_secret("sk-test-0123456789abcdef")
    >>> scrub_json({"content": "key: sk-test-0123456789abcdef"})
    {'content': 'key: ***'}
    """
    if not _forms or value is None:
        return value
    if isinstance(value, str):
        return scrub_text(value)
    try:
        data = orjson.dumps(value)
    except TypeError:  # not JSON (a lone surrogate...): mask it as text
        return _scrub_repr(value)
    clean = scrub(data)
    return value if clean is data else orjson.loads(clean)


def _scrub_repr(value: Any) -> Any:
    """For a value orjson cannot encode: strings masked one by one, recursively."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {scrub_text(str(k)): _scrub_repr(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_repr(v) for v in value]
    return value


def scrub_text(text: str) -> str:
    """`scrub` for a str (log lines, messages)."""
    if not _forms:
        return text
    return scrub(text.encode("utf-8", "surrogatepass")).decode("utf-8", "surrogatepass")


def registered() -> bool:
    return bool(_forms)


_KEY_LIKE = re.compile(
    r"(?<![A-Za-z0-9])(?:sk-|sk_|rk-|gsk_|xai-|AIza|hf_|pplx-|r8_)[A-Za-z0-9_\-]{16,}"
    r"|Bearer\s+\S{16,}"
)


def looks_like_key(text: str) -> bool:
    """True for a value shaped like an API key (``sk-...``, ``Bearer ...``, ...): such
    a value is never echoed back or read from a file on disk.

    >>> looks_like_key("sk-abcdefghijklmnopqrstuv"), looks_like_key("gpt-4o-mini")
    (True, False)
    """
    return bool(_KEY_LIKE.search(text))


__all__ = [
    "forms_of",
    "looks_like_key",
    "register_secret",
    "registered",
    "scrub",
    "scrub_json",
    "scrub_text",
]
