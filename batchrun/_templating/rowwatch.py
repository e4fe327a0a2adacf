"""How long one row's template may render, and a way to stop it while it does.

Checking the input renders every row's prompt before anything is sent. A Jinja
template can loop (``{% for %}`` over ``range(100000)`` inside another: 10^10 steps),
and a row whose rendering never ends held the run for minutes, deaf to Ctrl-C: the
scan looks at its stop flag between rows only. So while a scan runs, a `RowWatch`
is set for its thread (`watched`): each render starts its clock, and the template's
loops and calls tick it (`batchrun._templating.jinja`); every `CHECK_EVERY` ticks it looks
at the time, which ends the row with `TooSlow` past `RENDER_LIMIT_S` (the row is a bad
row, named), and at the stop flag, which ends the scan with `Interrupted`.

Outside a scan (the sending pass renders rows the scan accepted, a user calling a
template) nothing is watched: a row is never refused there for what it was accepted.

    with watched(should_stop):
        for row in rows:
            render(row)     # TooSlow after RENDER_LIMIT_S; Interrupted on a Ctrl-C
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

RENDER_LIMIT_S = 2.0
"""Seconds one row's prompt may take to render while the input is checked. A prompt
renders in microseconds (BENCHMARKS.md, "Jinja templates"); two seconds a row would
be 23 days for a million rows: such a template is a mistake, not a workload."""
CHECK_EVERY = 1024
"""Ticks (loop steps, calls) between two looks at the clock and the stop flag."""

T = TypeVar("T")


class Interrupted(Exception):
    """The scan was asked to stop (Ctrl-C while the input is being checked)."""


class TooSlow(Exception):
    """One row's rendering ran past the limit (caught by the template, which names
    the row)."""

    def __init__(self, limit_s: float) -> None:
        super().__init__(f"took over {limit_s:g} s")
        self.limit_s = limit_s


class RowWatch:
    """The clock of the row being rendered, and the scan's stop flag.

    ``start`` when a row begins; ``tick`` at every loop step or call (cheap: a count);
    every `CHECK_EVERY` ticks, the time and the flag are looked at.
    """

    __slots__ = ("limit_s", "should_stop", "clock", "deadline", "ticks")

    def __init__(
        self,
        should_stop: Callable[[], bool] | None = None,
        *,
        limit_s: float = RENDER_LIMIT_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit_s = limit_s
        self.should_stop = should_stop
        self.clock = clock
        self.deadline = float("inf")
        self.ticks = 0

    def start(self) -> None:
        self.deadline = self.clock() + self.limit_s
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks % CHECK_EVERY == 0:
            self.check()

    def check(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Interrupted()
        if self.clock() > self.deadline:
            raise TooSlow(self.limit_s)


_local = threading.local()


def current() -> RowWatch | None:
    """The watch of this thread's scan, or None outside a scan."""
    watch: RowWatch | None = getattr(_local, "watch", None)
    return watch


@contextmanager
def watched(
    should_stop: Callable[[], bool] | None = None,
    *,
    limit_s: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[RowWatch]:
    """Watch the rows rendered in this thread for the block (a scan); ``limit_s``
    defaults to `RENDER_LIMIT_S`."""
    previous = current()
    limit = RENDER_LIMIT_S if limit_s is None else limit_s
    watch = _local.watch = RowWatch(should_stop, limit_s=limit, clock=clock)
    try:
        yield watch
    finally:
        _local.watch = previous


def ticking(iterable: Iterable[T]) -> Iterable[T]:
    """``iterable``, ticking the watch at every step (itself when nothing watches)."""
    watch = current()
    if watch is None:
        return iterable
    return _ticked(iterable, watch.tick)


def _ticked(iterable: Iterable[T], tick: Callable[[], Any]) -> Iterator[T]:
    for item in iterable:
        tick()
        yield item


__all__ = [
    "CHECK_EVERY",
    "RENDER_LIMIT_S",
    "Interrupted",
    "RowWatch",
    "TooSlow",
    "current",
    "ticking",
    "watched",
]
