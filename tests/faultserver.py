"""A loopback HTTP server that misbehaves on purpose, one scripted step per attempt.

Real sockets, raw bytes: the server parses just enough HTTP/1.1 to read a request,
then plays a *step* chosen by the request's last message content (its "key"). Each
key has a script; attempt ``n`` of that key plays ``script[n]`` and anything past
the end of the script plays ``"ok"``. So ``script("a", "html502", "ok")`` makes the
first attempt of the row whose message is ``"a"`` get a proxy's HTML 502 page and
the second a normal completion.

Steps (``name`` or ``name:arg``):

    ok             200 chat.completion, application/json, Content-Length
    ok_text_plain  the same JSON labelled text/plain (accepted: the body decides)
    ok_no_ctype    the same JSON with no Content-Type at all
    ok_chunked     the same JSON, chunked transfer encoding
    ok_http10      HTTP/1.0, no Content-Length, the close ends the body
    nonjson200     200 "internal hiccup, try later" as text/plain
    html200        200 with a captive-portal HTML page
    html502        502 Bad Gateway HTML page, as nginx/cloudflare send them
    empty200       200 with an empty body (Content-Length: 0)
    list200        200 JSON that is a list, not an object
    error200       200 carrying an {"error": {...}} envelope
    huge:N         200 whose body streams N MB (chunked, no length given)
    huge_declared:N  200 declaring Content-Length of N MB, then streaming it
    short_body     Content-Length promises more than is sent, then FIN
    reset_mid_body headers and half the body, then a TCP RST
    close_no_answer  read the request, close without a byte of answer
    hang           read the request, never answer (client must time out)
    hang_mid_body  headers and half the body, then never another byte
    drip           headers, then one body byte every 50 ms, forever
    bad_status     a status line that is not HTTP
    huge_headers   a 200 with a 100 KB header
    bad_gzip       Content-Encoding: gzip on a body that is not gzip
    redirect:CODE  a 3xx to another URL on this server
    status:CODE    that status with an OpenAI-style JSON error envelope
    echo_auth:CODE that status with an error body quoting the Authorization header
    sse_ok         a well-formed chat.completion.chunk stream ending in [DONE]
    sse_flood:N    an event stream of N MB of keep-alive comments, never a chunk
    sse_garbage    an event stream whose data lines are not JSON
    sse_torn       a stream cut off (FIN) before finish_reason and [DONE]
    json_labelled_sse    a complete event stream labelled application/json
    lone_surrogate 200 JSON whose content holds a lone surrogate escape (\\ud800)
    echo:MODE      a server that puts the presented key (Authorization, Bearer
                   stripped) where a careless client would store it: MODE is
                   sse_error, sse_text, sse_torn, location, request_id, escaped,
                   long, plain or nonjson200; in a *good* answer (a 200 a cache
                   would keep): sse_deltas (a stream sending it 3 characters a
                   delta) or json_escaped (every character \\u-escaped)

    with FaultServer() as srv:
        srv.script("row-1", "html502", "ok")
        run_batch(base_url=srv.base_url)
        assert srv.attempts["row-1"] == 2
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterable
from typing import Any

import orjson

MB = 1 << 20
_HEAD_LENGTH = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
_CHUNK = b"x" * (64 * 1024)


def completion(content: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"echo: {content[:100]}"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


HTML_502 = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
HTML_PORTAL = b"<!DOCTYPE html><html><body><h1>Please log in to the Wi-Fi</h1></body></html>"


def _key_of(body: bytes) -> str:
    """The last message's content, or '' when the body is not a chat request."""
    try:
        data = orjson.loads(body)
        content = data["messages"][-1]["content"]
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
        return ""
    return content if isinstance(content, str) else ""


class FaultServer:
    """A scripted misbehaving server on 127.0.0.1 in a background thread."""

    def __init__(self) -> None:
        self.scripts: dict[str, tuple[str, ...]] = {}
        self.attempts: Counter[str] = Counter()
        self.played: list[tuple[str, str]] = []
        self.auth_seen: list[str | None] = []
        self.bytes_sent: Counter[str] = Counter()
        self.requests = 0
        self.port = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._conns: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    # -- scripting --------------------------------------------------------------------
    def script(self, key: str, *steps: str) -> None:
        with self._lock:
            self.scripts[key] = tuple(steps)
            self.attempts.pop(key, None)

    def reset(self) -> None:
        """Forget scripts and counters (one server can serve a whole test module)."""
        with self._lock:
            self.scripts.clear()
            self.attempts.clear()
            self.played.clear()
            self.auth_seen.clear()
            self.bytes_sent.clear()
            self.requests = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _next_step(self, key: str, auth: str | None) -> str:
        with self._lock:
            n = self.attempts[key]
            self.attempts[key] = n + 1
            steps = self.scripts.get(key, ())
            step = steps[n] if n < len(steps) else "ok"
            self.played.append((key, step))
            self.auth_seen.append(auth)
            self.requests += 1
            return step

    # -- lifecycle --------------------------------------------------------------------
    def __enter__(self) -> FaultServer:
        self._thread = threading.Thread(target=self._main, name="faultserver", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fault server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._track, "127.0.0.1", 0, limit=1 << 20)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            server.close()
            # hanging handlers wake on _stop; idle keep-alive readers see the close
            for writer in list(self._conns.values()):
                writer.transport.abort()
            if self._conns:
                await asyncio.wait(list(self._conns), timeout=5)

    async def _track(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns[task] = writer
        try:
            await self._connection(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            self._conns.pop(task, None)
            with contextlib.suppress(Exception):
                writer.close()

    # -- one connection ---------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return
            lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0") or 0)
            body = await reader.readexactly(length)
            key = _key_of(body)
            step = self._next_step(key, headers.get("authorization"))
            keep_open = await self._play(step, key, headers, writer)
            if not keep_open:
                return

    async def _send(self, writer: asyncio.StreamWriter, key: str, data: bytes) -> None:
        writer.write(data)
        self.bytes_sent[key] += len(data)
        await writer.drain()

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        key: str,
        status: int,
        body: bytes,
        headers: Iterable[tuple[str, str]] = (("Content-Type", "application/json"),),
        reason: str = "X",
    ) -> bool:
        head = [f"HTTP/1.1 {status} {reason}"]
        head += [f"{n}: {v}" for n, v in headers]
        head += [f"Content-Length: {len(body)}", "Connection: keep-alive", "", ""]
        await self._send(writer, key, "\r\n".join(head).encode("latin-1") + body)
        return True

    async def _play(
        self, step: str, key: str, req_headers: dict[str, str], writer: asyncio.StreamWriter
    ) -> bool:
        """Answer one request; False when the connection must not be used again."""
        name, _, arg = step.partition(":")
        good = orjson.dumps(completion(key))
        json_ct = (("Content-Type", "application/json"),)
        if name == "ok":
            return await self._respond(writer, key, 200, good)
        if name == "ok_text_plain":
            return await self._respond(writer, key, 200, good, (("Content-Type", "text/plain"),))
        if name == "ok_no_ctype":
            return await self._respond(writer, key, 200, good, ())
        if name == "ok_chunked":
            half = len(good) // 2
            data = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
                + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n"
                % (half, good[:half], len(good) - half, good[half:])
            )
            await self._send(writer, key, data)
            return True
        if name == "ok_http10":
            await self._send(
                writer, key, b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n" + good
            )
            return False
        if name == "nonjson200":
            return await self._respond(
                writer, key, 200, b"internal hiccup, try later", (("Content-Type", "text/plain"),)
            )
        if name == "html200":
            html = (("Content-Type", "text/html"),)
            return await self._respond(writer, key, 200, HTML_PORTAL, html)
        if name == "html502":
            return await self._respond(
                writer, key, 502, HTML_502, (("Content-Type", "text/html"),), "Bad Gateway"
            )
        if name == "empty200":
            return await self._respond(writer, key, 200, b"")
        if name == "list200":
            return await self._respond(writer, key, 200, b"[1, 2, 3]")
        if name == "error200":
            envelope = {"error": {"message": "upstream overloaded", "type": "server_error"}}
            return await self._respond(writer, key, 200, orjson.dumps(envelope))
        if name in ("huge", "huge_declared"):
            size = int(arg or 100) * MB
            await self._stream_huge(writer, key, size, declared=name == "huge_declared")
            return False
        if name == "short_body":
            head = _HEAD_LENGTH
            await self._send(writer, key, head % (len(good) + 100) + good)
            return False
        if name in ("reset_mid_body", "hang_mid_body"):
            head = _HEAD_LENGTH
            await self._send(writer, key, head % len(good) + good[: len(good) // 2])
            if name == "reset_mid_body":
                _reset(writer)
                return False
            await self._until_stopped()  # the client must give up first
            return False
        if name == "close_no_answer":
            return False
        if name == "hang":
            await self._until_stopped()
            return False
        if name == "drip":
            head = _HEAD_LENGTH
            await self._send(writer, key, head % (len(good) * 1000))
            while not self._stopped():
                await self._send(writer, key, b" ")
                await asyncio.sleep(0.05)
            return False
        if name == "bad_status":
            await self._send(writer, key, b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
            return False
        if name == "huge_headers":
            return await self._respond(writer, key, 200, good, (*json_ct, ("X-Pad", "p" * 100_000)))
        if name == "bad_gzip":
            return await self._respond(
                writer, key, 200, b"definitely not gzip", (*json_ct, ("Content-Encoding", "gzip"))
            )
        if name == "gzip_ok":
            return await self._respond(
                writer, key, 200, gzip.compress(good), (*json_ct, ("Content-Encoding", "gzip"))
            )
        if name == "redirect":
            location = f"http://127.0.0.1:{self.port}/elsewhere/chat/completions"
            return await self._respond(
                writer, key, int(arg or 302), b"", (("Location", location),), "Moved"
            )
        if name == "status":
            code = int(arg)
            scripted: dict[str, Any] = {"message": f"scripted {code}", "type": None, "code": None}
            return await self._respond(writer, key, code, orjson.dumps({"error": scripted}))
        if name == "echo_auth":
            code = int(arg or 401)
            presented = req_headers.get("authorization", "")
            envelope = {
                "error": {
                    "message": f"Incorrect API key provided: {presented}",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                }
            }
            return await self._respond(writer, key, code, orjson.dumps(envelope))
        if name.startswith("sse_"):
            await self._play_sse(name, arg, key, writer)
            return False
        if name == "json_labelled_sse":
            chunks = [
                {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                 "choices": [{"index": 0, "delta": {"role": "assistant", "content": "streamed"}}]},
                {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                 "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}},
            ]  # fmt: skip
            data = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
            return await self._respond(writer, key, 200, data + b"data: [DONE]\n\n")
        if name == "lone_surrogate":
            text = good.replace(b'"echo: ', b'"\\ud800 echo: ')
            return await self._respond(writer, key, 200, text)
        if name == "echo":
            presented = req_headers.get("authorization", "")
            return await self._play_echo(arg, presented.removeprefix("Bearer "), key, writer)
        raise ValueError(f"unknown fault step {step!r}")

    async def _play_echo(
        self, mode: str, secret: str, key: str, writer: asyncio.StreamWriter
    ) -> bool:
        json_ct = (("Content-Type", "application/json"),)
        sse_head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
        )
        if mode == "sse_error":
            event = {"error": {"message": f"Incorrect API key provided: {secret}", "code": "x"}}
            await self._send(writer, key, sse_head + b"data: " + orjson.dumps(event) + b"\n\n")
            return False
        if mode == "sse_text":
            await self._send(writer, key, sse_head + f"data: auth={secret}\n\n".encode())
            return False
        if mode == "sse_torn":
            chunk = {
                "id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {"content": f"key {secret}"}}],
            }  # fmt: skip
            await self._send(writer, key, sse_head + b"data: " + orjson.dumps(chunk) + b"\n\n")
            return False
        if mode == "location":
            location = f"http://127.0.0.1:{self.port}/login?key={secret}"
            return await self._respond(writer, key, 307, b"", (("Location", location),), "Moved")
        if mode == "request_id":
            good = orjson.dumps(completion(key))
            return await self._respond(writer, key, 200, good, (*json_ct, ("x-request-id", secret)))
        if mode == "escaped":
            inner = orjson.dumps({"auth": f"Bearer {secret}", "note": 'quote " here'}).decode()
            envelope = {"error": {"message": inner, "code": "bad"}}
            return await self._respond(writer, key, 400, orjson.dumps(envelope))
        if mode == "long":
            envelope = {"error": {"message": "x" * 490 + secret + "y" * 40, "code": "bad"}}
            return await self._respond(writer, key, 400, orjson.dumps(envelope))
        if mode == "plain":
            body = f"denied for {secret}".encode()
            return await self._respond(writer, key, 400, body, (("Content-Type", "text/plain"),))
        if mode == "nonjson200":
            body = f"<html>token {secret}</html>".encode()
            return await self._respond(writer, key, 200, body, (("Content-Type", "text/html"),))
        if mode == "sse_deltas":
            text = f"your key is {secret}, thanks"
            pieces = [text[i : i + 3] for i in range(0, len(text), 3)]
            base = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
            events = [
                {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": p},
                                      "finish_reason": None}]}
                for p in pieces
            ] + [
                {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}},
            ]  # fmt: skip
            data = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
            await self._send(writer, key, sse_head + data + b"data: [DONE]\n\n")
            return False
        if mode == "json_escaped":
            escaped = "".join(f"\\u{ord(c):04x}" for c in secret)
            good = orjson.dumps(completion("key=@@")).replace(b"@@", escaped.encode())
            return await self._respond(writer, key, 200, good, json_ct)
        raise ValueError(f"unknown echo mode {mode!r}")

    async def _play_sse(self, name: str, arg: str, key: str, writer: asyncio.StreamWriter) -> None:
        await self._send(
            writer,
            key,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
        )
        if name == "sse_flood":
            comment = b": keep-alive " + b"k" * 4000 + b"\n\n"
            sent, size = 0, int(arg or 100) * MB
            while sent < size and not self._stopped():
                await self._send(writer, key, comment)
                sent += len(comment)
            return
        if name == "sse_garbage":
            await self._send(writer, key, b"data: <html>oops</html>\n\ndata: [DONE]\n\n")
            return
        base = {
            "id": "chatcmpl-fault",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
        }
        first = {
            **base,
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": f"echo: {key[:100]}"},
                    "finish_reason": None,
                }
            ],
        }
        await self._send(writer, key, b"data: " + orjson.dumps(first) + b"\n\n")
        if name == "sse_torn":
            return
        last = {
            **base,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        }
        await self._send(writer, key, b"data: " + orjson.dumps(last) + b"\n\ndata: [DONE]\n\n")

    def _stopped(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    async def _until_stopped(self) -> None:
        assert self._stop is not None
        await self._stop.wait()

    async def _stream_huge(
        self, writer: asyncio.StreamWriter, key: str, size: int, *, declared: bool
    ) -> None:
        """Send ``size`` bytes of body from one reused buffer (the server stays small)."""
        if declared:
            head = _HEAD_LENGTH
            await self._send(writer, key, head % size)
        else:
            await self._send(
                writer,
                key,
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n",
            )
        sent = 0
        frame = b"%x\r\n%s\r\n" % (len(_CHUNK), _CHUNK)
        while sent < size and not self._stopped():
            await self._send(writer, key, _CHUNK if declared else frame)
            sent += len(_CHUNK)
        if not declared:
            await self._send(writer, key, b"0\r\n\r\n")


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0) instead of a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport = writer.transport
    transport.abort()
