"""Ctrl-C and SIGTERM around a run: one watcher, and the run's errors raised as themselves.

The online runner, the batch driver and the cluster driver all run their body in a
task group that first installs the signal watcher (so a Ctrl-C from the first
instant is a clean stop), hand each signal to the run (``on_signal(signum)``, in the
event loop), and cancel the watcher when the body ends. An error of the body is
raised as itself, never wrapped in the task group's ExceptionGroup: a bad input must
reach the command line as its one-line error.

    result = await run_watched(lambda group: body(), on_signal=runner.on_signal)
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio
import anyio.abc

T = TypeVar("T")


async def watch_signals(
    on_signal: Callable[[int], None],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Hand every SIGINT and SIGTERM to ``on_signal`` until cancelled."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            on_signal(signum)


async def run_watched(
    body: Callable[[anyio.abc.TaskGroup], Awaitable[T]],
    on_signal: Callable[[int], None] | None,
) -> T:
    """``body(group)`` in a task group watching signals (``on_signal``; None: no
    watcher, e.g. a library call off the main thread), its error raised as itself."""
    outcome: list[T] = []
    error: Exception | None = None
    async with anyio.create_task_group() as group:
        if on_signal is not None:
            await group.start(watch_signals, on_signal)
        try:
            outcome.append(await body(group))
        except Exception as exc:  # raised below as itself, not in an ExceptionGroup
            error = exc
        finally:
            group.cancel_scope.cancel()
    if error is not None:
        raise error
    return outcome[0]


__all__ = ["run_watched", "watch_signals"]
