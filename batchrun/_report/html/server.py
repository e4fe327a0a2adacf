"""The live page: a small read-only HTTP server for one run directory.

It serves exactly two things: ``/`` (the report page, with the data of the moment
inline and told to poll) and ``/data.json`` (the data the page polls every few
seconds). No other path answers, so no file of the directory, nor any other, can be
fetched through it. It binds to 127.0.0.1 unless told otherwise, and while it is on
loopback it answers only requests whose Host header names a loopback address, so a
web page in the same browser cannot read it through DNS rebinding.

Loopback is open to every user of the machine, and the page shows prompts and
answers that the run directory keeps to its owner (0600): so every request must
carry the server's token, 32 random bytes made when it starts, as Jupyter does
(``http://127.0.0.1:PORT/?token=...``, the URL printed). The page passes it on to
its data requests; a request without it, or with another, gets 403 and nothing else
(compared in constant time). The token lives in the server's memory and in the URL
it gives out, never in a file.

The data is rebuilt at most once per `LiveReport.min_interval` seconds whatever the
number of viewers, in a worker thread so the server keeps answering, and each rebuild
reads only the output lines appended since the last one (`OutputScan`).

    with serve_run_dir("runs/a") as url:        # doctest: +SKIP
        print("watch the run at", url)
        run_the_batch()
"""

from __future__ import annotations

import asyncio
import hmac
import html
import ipaddress
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from batchrun._report.html.data import OutputScan, build_page_data
from batchrun._report.html.page import csp, page_json, render_html
from batchrun.errors import RunDirError

DATA_PATH = "data.json"
TOKEN_PARAM = "token"
_WAITING = (
    "<!doctype html><html><head><meta charset='utf-8'>"
    "<meta http-equiv='refresh' content='2'><title>batchrun: waiting</title></head>"
    "<body><p>Waiting for the run to start: {message}</p></body></html>"
)
POLL_SECONDS = 3.0


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost.

    >>> is_loopback("127.0.0.1"), is_loopback("[::1]"), is_loopback("0.0.0.0")
    (True, True, False)
    """
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(header: str) -> str:
    """The host part of a Host header (``[::1]:8000`` -> ``::1``)."""
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class LiveReport:
    """The page data for one run directory, rebuilt when asked and not too often."""

    def __init__(self, run_dir: str, min_interval: float = 1.0) -> None:
        self.run_dir = run_dir
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._scan: OutputScan | None = None
        self._data: dict[str, Any] | None = None
        self._built = 0.0

    def data(self) -> dict[str, Any]:
        """The latest data; rebuilt when the last build is older than min_interval."""
        with self._lock:
            now = time.monotonic()
            if self._data is None or now - self._built >= self.min_interval:
                if self._scan is None or not self._scan.options:
                    # kept once run.json is there: the scan's sample needs its schema
                    self._scan = OutputScan(self.run_dir)
                self._data = build_page_data(self.run_dir, scan=self._scan)
                self._built = now
            return self._data


class LiveServer:
    """The live page's HTTP server, on its own event loop in a background thread.

    Like `batchrun.sim.SimThread`: ``start()`` returns once the socket listens
    (``url`` then holds the real port), ``stop()`` closes it; also a context manager.
    """

    def __init__(
        self,
        run_dir: str,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        poll_s: float = POLL_SECONDS,
    ) -> None:
        self.report = LiveReport(run_dir, min_interval=min(1.0, poll_s))
        self.token = secrets.token_urlsafe(32)
        """Every request carries it (``?token=``); printed in `url`, never written."""
        self.host = host
        self.port = port
        self.poll_s = poll_s
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The page's address, token included: the only way in."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/?{TOKEN_PARAM}={self.token}"

    def start(self) -> LiveServer:
        self._thread = threading.Thread(target=self._run, name="batchrun-live", daemon=True)
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the live report server did not start within 30 s")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
        self._loop = None

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(loop))
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stop = asyncio.Event()
        app = web.Application(middlewares=[self._guard])
        app.router.add_get("/", self._page)
        app.router.add_get("/" + DATA_PATH, self._data)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        try:
            await runner.setup()
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            sock = socket.create_server((self.host, self.port), family=family)
            self.port = sock.getsockname()[1]
            await web.SockSite(runner, sock).start()
        except BaseException as exc:  # reported to the starting thread
            await runner.cleanup()
            self._error = exc
            self._ready.set()
            return
        self._loop = loop
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await runner.cleanup()

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Loopback servers answer loopback Host names only; every request carries the
        token; every answer is no-store."""
        if is_loopback(self.host) and not is_loopback(_host_of(request.host)):
            raise web.HTTPForbidden(text="this report answers on loopback only\n")
        given = request.query.get(TOKEN_PARAM, "")
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            raise web.HTTPForbidden(
                text="this report needs its token: open the URL batchrun printed\n",
                headers={"Cache-Control": "no-store"},
            )
        response: web.StreamResponse = await handler(request)
        response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    async def _page(self, request: web.Request) -> web.Response:
        try:
            data = await asyncio.to_thread(self.report.data)
        except RunDirError as exc:  # served before the run wrote run.json: try again soon
            return web.Response(
                text=_WAITING.format(message=html.escape(str(exc))),
                content_type="text/html",
                headers={"Content-Security-Policy": csp(live=True), "Retry-After": "2"},
            )
        live = {"url": f"{DATA_PATH}?{TOKEN_PARAM}={self.token}", "poll_s": self.poll_s}
        page = render_html(data, live=live)
        return web.Response(
            text=page,
            content_type="text/html",
            headers={"Content-Security-Policy": csp(live=True)},
        )

    async def _data(self, request: web.Request) -> web.Response:
        try:
            data = await asyncio.to_thread(self.report.data)
        except RunDirError as exc:
            return web.json_response({"error": str(exc)}, status=503)
        return web.Response(text=page_json(data), content_type="application/json")


SNAPSHOT_SECONDS = 10.0
"""How often the page of a run on object storage reads the prefix again."""


@contextmanager
def serve_run_dir(
    run_dir: str, host: str = "127.0.0.1", port: int = 0, *, poll_s: float = POLL_SECONDS
) -> Iterator[str]:
    """Serve the live report page of ``run_dir`` for the block's duration; yields its URL.

    The directory need not exist yet (``batchrun run --serve`` starts the page before
    the run creates it): until its run.json is written the page says it is waiting
    and reloads, and ``data.json`` answers 503. ``port=0`` takes a free port. Binding
    anywhere but loopback shows the run's prompts and answers to whoever can reach
    the port: only when asked to.

    A run on object storage (``s3://bucket/prefix``) is served from a local snapshot
    taken again every `SNAPSHOT_SECONDS` (`batchrun._output.mirror.snapshot`: the
    segments it has read once are kept, so each time fetches only the new ones).
    """
    from batchrun._output.store import is_object_storage

    if not is_object_storage(run_dir):
        with LiveServer(run_dir, host, port, poll_s=poll_s) as server:
            yield server.url
        return
    from batchrun._output.mirror import snapshot

    local = snapshot(run_dir)
    stop = threading.Event()

    def again() -> None:
        while not stop.wait(SNAPSHOT_SECONDS):
            try:
                snapshot(run_dir)
            except Exception:  # unreachable for now: the page shows the last one
                continue

    thread = threading.Thread(target=again, name="batchrun-snapshot", daemon=True)
    thread.start()
    try:
        with LiveServer(local, host, port, poll_s=poll_s) as server:
            yield server.url
    finally:
        stop.set()
        thread.join()
