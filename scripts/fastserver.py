"""A tiny, fast HTTP/1.1 keep-alive server that answers every request with a canned completion.

Why: to measure what an HTTP *client* costs, the server must cost far less than the client,
otherwise the benchmark measures the server. A framework (aiohttp.web, uvicorn) spends tens
of microseconds per request; this server is a bare asyncio ``Protocol`` that parses only
the request line's end, ``Content-Length`` and ``Connection: close``, and writes one
pre-built response, so it serves well over 20k requests/s on one core.

It speaks just enough HTTP/1.1 for a benchmark: keep-alive, request bodies framed by
``Content-Length`` (no chunked request bodies), back-to-back requests on one connection.
Every request -- whatever its method or path -- gets the same ``200`` with a ~600-byte
``chat.completion`` JSON body that carries ``usage``.

Stdlib only by default; ``--uvloop`` uses uvloop if it is importable.

Example::

    python scripts/fastserver.py --port 8765          # prints "listening on 8765"
    curl -s -XPOST -d '{}' http://127.0.0.1:8765/v1/chat/completions
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import signal
import sys
from typing import cast

CANNED_COMPLETION: dict[str, object] = {
    "id": "chatcmpl-bench0000000000000000000000000",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": (
                    "The quick brown fox jumps over the lazy dog. This canned answer stands in "
                    "for a short completion of realistic size."
                ),
                "refusal": None,
            },
            "logprobs": None,
            "finish_reason": "stop",
        }
    ],
    "usage": {
        "prompt_tokens": 42,
        "completion_tokens": 45,
        "total_tokens": 87,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    },
    "service_tier": "default",
    "system_fingerprint": "fp_bench",
}

BODY = json.dumps(CANNED_COMPLETION, separators=(",", ":")).encode()


def _response(body: bytes, *, close: bool) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


RESPONSE = _response(BODY, close=False)
RESPONSE_CLOSE = _response(BODY, close=True)

MAX_HEAD = 64 * 1024  # a request head larger than this is a client bug; drop the connection
MAX_BODY = 64 * 1024 * 1024


class Counter:
    """How many requests this process has answered (printed on shutdown)."""

    requests = 0


class CannedHTTP(asyncio.Protocol):
    """One connection: split the byte stream into requests and answer each one.

    State is just a buffer and, once a head has been parsed, how many body bytes are still
    owed. Writing happens straight from ``data_received``; the transport buffers it.
    """

    __slots__ = ("transport", "buf", "body_left", "close_after")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.body_left = -1  # -1: waiting for a head; >= 0: bytes of body still to skip
        self.close_after = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None:
            return
        buf = self.buf
        buf += data
        while True:
            if self.body_left < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > MAX_HEAD:
                        transport.close()
                    return
                head = bytes(buf[:end]).lower()
                del buf[: end + 4]
                self.body_left = _content_length(head)
                if self.body_left < 0 or self.body_left > MAX_BODY:
                    transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    transport.close()
                    return
                self.close_after = _wants_close(head)
            if len(buf) < self.body_left:
                self.body_left -= len(buf)
                buf.clear()
                return
            del buf[: self.body_left]
            self.body_left = -1
            Counter.requests += 1
            if self.close_after:
                transport.write(RESPONSE_CLOSE)
                transport.close()
                return
            transport.write(RESPONSE)


def _content_length(head: bytes) -> int:
    """Return the Content-Length of a lower-cased request head, 0 if absent, -1 if invalid."""
    i = head.find(b"\r\ncontent-length:")
    if i < 0:
        return -1 if b"\r\ntransfer-encoding:" in head else 0
    i += 17
    j = head.find(b"\r\n", i)
    value = head[i:] if j < 0 else head[i:j]
    try:
        return int(value.strip())
    except ValueError:
        return -1


def _wants_close(head: bytes) -> bool:
    """HTTP/1.1 keeps the connection unless told to close; HTTP/1.0 closes unless kept."""
    line_end = head.find(b"\r\n")
    request_line = head if line_end < 0 else head[:line_end]
    if request_line.endswith(b"http/1.0"):
        return b"connection: keep-alive" not in head
    return b"connection: close" in head


def _raise_fd_limit() -> None:
    # 1024 client connections plus listeners would hit a 1024 soft limit.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 65536 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT; print ``listening on PORT`` once the socket is bound."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(CannedHTTP, host, port, backlog=4096, reuse_address=True)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening on {bound}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    print(f"served {Counter.requests} requests", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--uvloop", action="store_true", help="use uvloop if importable")
    args = parser.parse_args(argv)
    _raise_fd_limit()
    if args.uvloop:
        try:
            import uvloop
        except ImportError:
            print("uvloop not importable; using the stdlib loop", file=sys.stderr, flush=True)
        else:
            uvloop.run(serve(args.host, args.port))
            return
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
