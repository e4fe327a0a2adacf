"""Send one attempt over HTTP; map every failure onto batchrun.errors (HTTP statuses:
`batchrun._transport.responses`; the stack's exceptions:
`batchrun._transport.connect.map_transport_error`).

One client posts to each API's endpoint under the base URL (`batchrun._apis`: chat
completions, embeddings, Responses), as the request says; the answer is checked for
that API's shape (`batchrun._transport.responses.check_answer`).

The transport is injected (the seam tests use for ``httpx.MockTransport``). The
default is `default_transport`: httpx's API on top of aiohttp's connection pool,
whose per-request cost stays flat with thousands of connections where httpx's own
pool grows with them (see BENCHMARKS.md, "HTTP transport").

    >>> client = ChatClient(base_url="http://127.0.0.1:8000/v1", api_key="k")  # doctest: +SKIP
    >>> reply = await client.send({"model": "m", "messages": [...]})           # doctest: +SKIP
"""

from __future__ import annotations

import functools
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import orjson

from batchrun._apis import APIS, CHAT, EMBEDDINGS, PATHS, RESPONSES
from batchrun._redact import register_secret, scrub, scrub_json, scrub_text
from batchrun._transport.connect import map_transport_error
from batchrun._transport.responses import check_answer, parse_completion, request_id_of
from batchrun._version import __version__
from batchrun.errors import BadResponse, ConfigError, RequestError, RequestTimeout

Clock = Callable[[], float]
LARGE_BODY = 1 << 20


@dataclass(slots=True)
class Reply:
    """A usable completion: the body as the server sent it (streams: assembled)."""

    status: int
    headers: httpx.Headers
    body: dict[str, Any]
    request_id: str | None
    ttft_s: float | None = None


@functools.cache
def _verified_tls() -> ssl.SSLContext:
    """The certificate-checking TLS context every client of this process shares: made
    once (loading the CA bundle costs ~30 ms of CPU; a cluster worker makes a client
    per shard)."""
    return httpx.create_ssl_context(verify=True)


def default_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    """httpx-aiohttp transport sized for ``max_connections`` in flight."""
    from httpx_aiohttp import AiohttpTransport

    limits = httpx.Limits(
        max_connections=max_connections, max_keepalive_connections=max_connections
    )
    return AiohttpTransport(verify=_verified_tls(), limits=limits)


def auth_headers(api_key: str | None, auth: str, header: str) -> dict[str, str]:
    """``Authorization: Bearer KEY`` (default), a raw ``Authorization: KEY`` (seed 004),
    or the key in a custom header such as Azure's ``api-key``."""
    if not api_key or auth == "none":
        return {}
    if auth == "raw" or header.lower() != "authorization":
        return {header: api_key}
    if auth != "bearer":
        raise ConfigError(f"unknown auth style {auth!r} (use bearer, raw or none)")
    return {header: f"Bearer {api_key}"}


def api_url(base_url: str, api: str = CHAT) -> str:
    """The endpoint of ``api`` (`batchrun._apis`) under ``base_url``, query string kept.
    A base URL given as the chat endpoint itself stands for its base.

    >>> api_url("https://api.openai.com/v1")
    'https://api.openai.com/v1/chat/completions'
    >>> api_url("https://x.openai.azure.com/openai/deployments/d?api-version=2024-10-21")
    'https://x.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21'
    >>> api_url("http://127.0.0.1:8000/v1/chat/completions", "embeddings")
    'http://127.0.0.1:8000/v1/embeddings'
    """
    from urllib.parse import urlsplit, urlunsplit

    if not base_url.startswith(("http://", "https://")):
        raise ConfigError(f"base URL {base_url!r} must start with http:// or https://")
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/").removesuffix(PATHS[CHAT]) + PATHS[api]
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def completions_url(base_url: str) -> str:
    """The chat-completions endpoint under ``base_url`` (`api_url` for chat)."""
    return api_url(base_url, CHAT)


class ChatClient:
    """One attempt per `send`; retrying is the caller's business (batchrun._pacing.retry)."""

    def __init__(
        self,
        *,
        base_url: str,
        api_key: str | None = None,
        auth: str = "bearer",
        auth_header: str = "Authorization",
        extra_headers: Sequence[tuple[str, str]] = (),
        timeout: float = 120.0,
        total_timeout: float = 1800.0,
        max_response_bytes: int = 64 * 1024 * 1024,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 64,
        clock: Clock = time.monotonic,
    ) -> None:
        self.url = api_url(base_url, CHAT)
        self._url = httpx.URL(self.url)
        self._urls = {api: httpx.URL(api_url(base_url, api)) for api in APIS}
        self._host = self._url.host
        self._port = self._url.port or (443 if self._url.scheme == "https" else 80)
        headers = {
            "host": self._url.netloc.decode("ascii"),
            "content-type": "application/json",
            "accept": "application/json",
            "user-agent": f"batchrun/{__version__}",
        }
        headers.update({name.lower(): value for name, value in extra_headers})
        headers.update({k.lower(): v for k, v in auth_headers(api_key, auth, auth_header).items()})
        self._headers = list(headers.items())
        self._stream_headers = list({**headers, "accept": "text/event-stream"}.items())
        register_secret(api_key)
        self._total_timeout = total_timeout
        self._max_bytes = max_response_bytes
        self._clock = clock
        # what httpx.Timeout(timeout, connect=...) would put on the request
        self._extensions = {
            "timeout": {
                "connect": min(timeout, 30.0),
                "read": timeout,
                "write": timeout,
                "pool": timeout,
            },
        }
        # The transport is called directly: httpx.AsyncClient adds ~50-125 us per
        # request (cookies, auth flow, redirects, URL merging) that batchrun does not
        # use; see BENCHMARKS.md "HTTP transport". Redirects are not followed.
        self._transport = transport or default_transport(max_connections)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def send(
        self, body: Mapping[str, Any], payload: bytes | None = None, api: str = CHAT
    ) -> Reply:
        """Send ``body`` once to ``api``'s endpoint (``payload``: its JSON, when the
        caller already has it). Returns a Reply or raises a RequestError."""
        if payload is None:
            payload = orjson.dumps(body)
        streaming = body.get("stream") is True and api != EMBEDDINGS
        headers = self._stream_headers if streaming else self._headers
        request = httpx.Request(
            "POST",
            self._urls[api],
            headers=[*headers, ("content-length", str(len(payload)))],
            # aiohttp warns (ResourceWarning) about raw-bytes bodies over 1 MiB; the same
            # bytes as a stream with the declared length go out identically, unchunked
            content=payload if len(payload) <= LARGE_BODY else _chunks(payload),
            extensions=self._extensions,
        )
        sent_at = self._clock()  # time to first token counts from here, not from the headers
        try:
            with anyio.fail_after(self._total_timeout) as deadline:
                response = await self._transport.handle_async_request(request)
                try:
                    if streaming and response.status_code == 200 and _is_event_stream(response):
                        return await self._read_stream(response, sent_at, _choices(body), api)
                    content = await self._read_capped(response)
                finally:
                    await response.aclose()
        except RequestError as exc:
            _scrub_error(exc)
            raise
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline.cancel_called:  # the total deadline
                raise RequestTimeout(
                    f"no complete answer within {self._total_timeout:g} s", code="timeout_total"
                ) from exc
            mapped = map_transport_error(exc, self._host, self._port)
            if mapped is None:  # not the transport's: a bug, raised as it is
                raise
            raise mapped from exc
        # a proxy quoting our Authorization header must not put the key in errors.jsonl;
        # scrubbed here, before any message is cut short around it
        content = scrub(content)
        rheaders = response.headers
        try:
            parsed = parse_completion(response.status_code, rheaders, content, api, body)
        except RequestError as exc:
            _scrub_error(exc)
            raise
        # the decoded answer too: a key \u-escaped in the JSON is whole only now
        return Reply(response.status_code, rheaders, scrub_json(parsed), request_id_of(rheaders))

    async def _read_capped(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self._max_bytes:
            raise _too_large(response, self._max_bytes, int(declared), declared=True)
        chunks = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_bytes:
                raise _too_large(response, self._max_bytes, size)
            chunks.append(chunk)
        return b"".join(chunks)

    async def _read_stream(
        self, response: httpx.Response, sent_at: float, choices: int | None, api: str = CHAT
    ) -> Reply:
        from batchrun._transport.response_stream import ResponseStreamAssembler
        from batchrun._transport.streaming import SSEDecoder, StreamAssembler

        decoder = SSEDecoder()
        # with n > 1, a stream that silently drops a whole choice is torn too
        assembler: StreamAssembler | ResponseStreamAssembler = (
            ResponseStreamAssembler()
            if api == RESPONSES
            else StreamAssembler(expected_choices=choices)
        )
        ttft: float | None = None
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > self._max_bytes:
                    raise _too_large(response, self._max_bytes, size)
                for payload in decoder.feed(chunk):
                    if assembler.add(scrub_text(payload)) and ttft is None:
                        ttft = self._clock() - sent_at
            for payload in decoder.close():
                assembler.add(scrub_text(payload))
            completion = assembler.result()
        except BadResponse as exc:
            # the exchange itself was an HTTP 200: keep it on the attempt and error line
            exc.status = response.status_code
            exc.headers = response.headers
            exc.request_id = request_id_of(response.headers)
            raise
        # scrubbed once assembled: a key sent in pieces is whole only now
        body = scrub_json(check_answer(completion, response.status_code, response.headers, api))
        rheaders = response.headers
        return Reply(response.status_code, rheaders, body, request_id_of(rheaders), ttft)


async def _chunks(payload: bytes, size: int = LARGE_BODY) -> AsyncIterator[bytes]:
    view = memoryview(payload)
    for start in range(0, len(view), size):
        yield bytes(view[start : start + size])


def _choices(body: Mapping[str, Any]) -> int | None:
    n = body.get("n")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else None


def _is_event_stream(response: httpx.Response) -> bool:
    ctype = response.headers.get("content-type", "")
    return "json" not in ctype


def _too_large(
    response: httpx.Response, limit: int, size: int, *, declared: bool = False
) -> BadResponse:
    """A body over ``--max-response-bytes``, named by its size (``declared`` by its
    Content-Length, else the bytes read when reading stopped). A 2xx answer that
    large was generated, so probably paid for: retried once at most (``billed``)."""
    raw = f"{size:,} bytes" if declared else f"over {size:,} bytes (reading stopped there)"
    error = BadResponse(
        f"response body larger than {limit} bytes (--max-response-bytes): {raw}",
        code="response_too_large",
        status=response.status_code,
        headers=response.headers,
        request_id=request_id_of(response.headers),
    )
    error.billed = 200 <= response.status_code < 300
    return error


def _scrub_error(exc: RequestError) -> None:
    """Mask every registered secret in ``exc``'s message and decoded body (an error
    body, a torn stream's partial answer): they are written to errors.jsonl."""
    exc.body = scrub_json(exc.body)
    exc.message = scrub_text(exc.message)
    exc.args = (exc.message, *exc.args[1:])


__all__ = [
    "ChatClient",
    "Reply",
    "api_url",
    "auth_headers",
    "completions_url",
    "default_transport",
]
