"""A server on its own event loop in a background thread, started and stopped from
sync code (test fixtures, the CLI, a notebook).

`ServerThread` owns the thread and the loop; a subclass says how its server opens
(`_open`, which sets the real port) and closes (`_close`). ``start()`` returns once
the server listens, or raises what opening it raised; ``stop()`` closes it and joins
the thread; the object is also a context manager. The simulator's `SimThread` and the
live report's `LiveServer` are both one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any, Self

JOIN_SECONDS = 30.0
"""How long ``start()`` waits for the server to listen, and ``stop()`` for the thread."""


class ServerThread:
    """Runs ``_open()`` ... ``_close()`` on a fresh event loop in a daemon thread."""

    thread_name = "batchrun-server"
    what = "the server"
    """Named in the error when the server does not start in time."""

    def __init__(self) -> None:
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    async def _open(self) -> None:
        """Start serving (on the thread's loop); what it raises, ``start()`` raises."""
        raise NotImplementedError

    async def _close(self) -> None:
        """Stop serving (on the thread's loop), once ``stop()`` was called."""
        raise NotImplementedError

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        if not self._ready.wait(JOIN_SECONDS):
            raise RuntimeError(f"{self.what} did not start within {JOIN_SECONDS:g} s")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(JOIN_SECONDS)
        self._loop = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` run on the server's loop (directly while it is not running)."""
        if self._loop is None:
            return fn()

        async def call() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), self._loop).result(JOIN_SECONDS)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._main(loop))
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()

    async def _main(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stop = asyncio.Event()
        try:
            await self._open()
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self._loop = loop
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self._close()
