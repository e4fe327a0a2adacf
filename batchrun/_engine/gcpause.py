"""Fewer young-generation collections while a run sends.

With hundreds of requests in flight, every request's objects (coroutine frames,
request and response objects, parsed bodies) outlive a collection of the youngest
generation, so CPython's default threshold (700 allocations) collects every few
requests and promotes their objects, which makes the older collections scan them
again: a third of the CPU at 1,024 in flight. `fewer_collections` raises the
youngest generation's threshold for the duration of the sending phase and puts the
previous thresholds back afterwards;
several runs in one process (threads, a batch run handing over) share one raised
setting, restored when the last one leaves. Garbage with cycles is still collected,
only less often: at most ``threshold`` more tracked objects wait for it.
See BENCHMARKS.md "Pipeline" for the measurement.

    >>> with fewer_collections(threshold_for(concurrency=1024)):  # doctest: +SKIP
    ...     ...  # send
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

PER_REQUEST = 100
"""Tracked objects one request in flight keeps alive (frames, request, response, parsed
body: about 100, counted with gc.get_objects() during a run at 1,024 in flight)."""
LEAST, MOST = 20_000, 200_000


def threshold_for(concurrency: int) -> int:
    """A young-generation threshold above what ``concurrency`` requests in flight keep
    alive: below it, collections come every few requests and find nothing to free."""
    return min(MOST, max(LEAST, PER_REQUEST * concurrency))


_lock = threading.Lock()
_depth = 0
_restore: tuple[int, int, int] | None = None
"""The thresholds to put back when the last run leaves (None: nothing was changed)."""
_raised = 0
"""The young threshold set by the first run in."""


@contextmanager
def fewer_collections(threshold: int = LEAST) -> Iterator[None]:
    global _depth, _restore, _raised
    with _lock:
        if _depth == 0:
            current = gc.get_threshold()
            # 0: automatic collection is off; a higher threshold: somebody chose it
            if 0 < current[0] < threshold:
                gc.set_threshold(threshold, current[1], current[2])
                _restore, _raised = current, threshold
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _restore is not None:
                if gc.get_threshold()[0] == _raised:  # nobody changed it meanwhile
                    gc.set_threshold(*_restore)
                _restore = None


__all__ = ["fewer_collections", "threshold_for"]
