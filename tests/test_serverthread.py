"""`batchrun._serverthread.ServerThread`: the start/stop both SimThread and the live
report's LiveServer use (their own tests run real servers through it)."""

from __future__ import annotations

import threading

import pytest

from batchrun._serverthread import ServerThread


class Recorder(ServerThread):
    thread_name = "test-server"
    what = "the test server"

    def __init__(self, fail: BaseException | None = None) -> None:
        super().__init__()
        self.fail = fail
        self.events: list[tuple[str, str]] = []

    async def _open(self) -> None:
        self.events.append(("open", threading.current_thread().name))
        if self.fail is not None:
            raise self.fail

    async def _close(self) -> None:
        self.events.append(("close", threading.current_thread().name))


def test_opens_on_its_thread_calls_there_and_closes_on_stop() -> None:
    with Recorder() as server:
        assert server.events == [("open", "test-server")]
        assert server._call(lambda: threading.current_thread().name) == "test-server"
    assert server.events == [("open", "test-server"), ("close", "test-server")]
    assert server._thread is not None and not server._thread.is_alive()
    # stopped: a call runs directly, a second stop does nothing
    assert server._call(lambda: threading.current_thread().name) == "MainThread"
    server.stop()


def test_what_open_raised_start_raises_and_nothing_is_closed() -> None:
    server = Recorder(OSError("address in use"))
    with pytest.raises(OSError, match="address in use"):
        server.start()
    assert server.events == [("open", "test-server")]
    assert server._thread is not None and not server._thread.is_alive()
    server.stop()  # never listened: nothing to stop
