"""One read of the input for every model's lane.

When the input names several models, each gets a lane (`batchrun._pacing.scheduler`):
a model waiting for its quota must never hold up another. Each lane used to be its
own pass over the input, keeping only its model's rows: 1,000 models read a 20,000-row
input 1,000 times (49 s) and held 1,000 files open (``Too many open files`` under
``ulimit -n 1024``). Now one pass (`SharedRead`) hands each request to its model's
lane, through a small queue per lane:

* a lane with nothing queued reads on for itself, queueing what belongs to others;
* a lane's queue holds at most `SharedRead.buffer` requests (memory stays bounded
  however the models interleave): when the pass meets a request for a full queue, it
  stops (back-pressure) and keeps that one request aside until there is room, unless
  the full lane is *slow*, waiting for its quota (its head has waited `SLOW_AFTER`
  seconds, or its account says it will): then that lane leaves the shared pass and
  reads on by itself from where the pass is (the old way, for that model only: one
  more read, one more open file), so a slow model never holds up a fast one. At most
  `MAX_OWN_PASSES` lanes do so at once; beyond, back-pressure again.

Which rows were read by whom is exact: the shared pass skips the rows of a lane that
left it (before deciding anything about them) and says how far it has looked
(`Cursor`); the lane's own pass starts after that, so no row is sent twice or missed.

    split = SharedRead(read_all, read_one, ["a", "b"], accounts, clock=clock)
    scheduler = Scheduler(accounts, split.lanes, estimate=tokens_of)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from batchrun._models import Request
from batchrun._pacing.scheduler import Accounts, Clock, Lane

if TYPE_CHECKING:
    from batchrun._pacing.pool import Pool

TOTAL_BUFFER = 65_536
"""Requests all lanes' queues hold at most together (when there are few models)."""
MIN_BUFFER = 16
"""...but never fewer than this a lane (many models: the queues are bounded by that)."""
SLOW_AFTER = 1.0
"""Seconds a lane's head has waited (or its account says it will) to count as slow."""
MAX_OWN_PASSES = 64
"""Lanes reading by themselves at most (each holds the input file open)."""


class Cursor:
    """How far the shared pass has looked: the index of the last request it examined."""

    __slots__ = ("index",)

    def __init__(self) -> None:
        self.index = -1


SharedPass = Callable[[Callable[[str], bool], Cursor], Iterator[Request]]
"""``(skip, cursor)`` -> the pending requests of every model in input order, leaving out
(before deciding anything about them) those whose model ``skip`` names, and setting
``cursor.index`` to each request's index as it is examined."""
OwnPass = Callable[[str, int], Iterator[Request]]
"""``(model, start)`` -> that model's pending requests from index ``start`` on."""


class ModelLane(Lane):
    """One model's lane, fed by a `SharedRead` (or, once slow, by its own pass)."""

    def __init__(self, split: SharedRead, model: str, clock: Clock) -> None:
        super().__init__(iter(()), clock, model=model)
        self._split = split
        self.queue: deque[Request] = deque()
        self.own_start: int | None = None
        """Set when the lane left the shared pass: its own pass starts at this index."""
        self.own: Iterator[Request] | None = None
        self.own_done = False

    def peek(self) -> Request | None:
        if self.head is None and not self.exhausted:
            req = self._split.next_for(self)
            if req is None:
                self.exhausted = self._split.finished(self)
                return None
            self.head = req
            self.tokens = None
            self.since = self._clock()
        return self.head


class SharedRead:
    """The one pass over the input, and the lanes it feeds (`lanes`, one per model)."""

    def __init__(
        self,
        shared: SharedPass,
        own: OwnPass,
        models: Sequence[str],
        accounts: Accounts | Pool,
        *,
        clock: Clock,
        buffer: int | None = None,
        max_own_passes: int = MAX_OWN_PASSES,
        slow_after: float = SLOW_AFTER,
    ) -> None:
        self.lanes = [ModelLane(self, m, clock) for m in models]
        self._by_model = {lane.model: lane for lane in self.lanes}
        self._own = own
        self._accounts = accounts
        self._clock = clock
        self.buffer = buffer or max(MIN_BUFFER, TOTAL_BUFFER // max(1, len(models)))
        self.max_own_passes = max_own_passes
        self.slow_after = slow_after
        self._left: set[str] = set()
        """Models whose lanes left the shared pass (it skips their rows)."""
        self._cursor = Cursor()
        self._shared: Iterator[Request] | None = shared(self._left.__contains__, self._cursor)
        self._held: tuple[Request, ModelLane] | None = None
        """A request read for a lane whose queue was full, waiting for room."""
        self.reads = 1
        """Passes over the input started: the shared one, and each lane's own."""
        self.own_open = 0

    # -- what a lane asks ------------------------------------------------------------
    def next_for(self, lane: ModelLane) -> Request | None:
        """The lane's next request, or None: none yet (back-pressure), or no more
        (`finished` tells which)."""
        if lane.queue:
            return lane.queue.popleft()
        if lane.own_start is not None and not lane.own_done:
            req = self._own_next(lane)
            if req is not None:
                return req
        # (a lane that left reads the shared pass too once its own is done: requests
        # of its model the shared pass had looked at may still be on their way, held
        # back by a cache lookup)
        return self._read_for(lane)

    def finished(self, lane: ModelLane) -> bool:
        if lane.queue or (lane.own_start is not None and not lane.own_done):
            return False
        return self._shared is None and self._held is None

    # -- the shared pass -------------------------------------------------------------
    def _read_for(self, lane: ModelLane) -> Request | None:
        held = self._held
        if held is not None:
            if not self._deliver(*held):
                return None  # still no room there: nothing more is read meanwhile
            self._held = None
            if lane.queue:
                return lane.queue.popleft()
        shared = self._shared
        by_model = self._by_model
        while shared is not None:
            req = next(shared, None)
            if req is None:
                self._shared = None
                break
            model = req.body.get("model")
            target = by_model.get(model) if isinstance(model, str) else None
            if target is None:
                continue  # a model no lane serves (the scan found none such)
            if target is lane:
                return req
            if not self._deliver(req, target):
                self._held = (req, target)
                return None
        return None

    def _deliver(self, req: Request, target: ModelLane) -> bool:
        """Queue ``req`` for ``target``; False when its queue is full and it is not slow
        enough to leave the shared pass (the pass must wait)."""
        if len(target.queue) < self.buffer or target.own_start is not None:
            target.queue.append(req)
            return True
        if self.own_open < self.max_own_passes and self._slow(target):
            self._leave(target)
            target.queue.append(req)
            return True
        return False

    def _slow(self, lane: ModelLane) -> bool:
        """Waiting for its quota: the head has waited long, or its account says it will."""
        if lane.head is None:
            return False
        now = self._clock()
        if now - lane.since >= self.slow_after:
            return True
        account = self._accounts[lane.model or ""]
        return account.has_room(now) and account.delay(lane.tokens or 0, now) >= self.slow_after

    def _leave(self, lane: ModelLane) -> None:
        """The lane reads on by itself after what the shared pass has looked at; the
        shared pass skips its rows from now on."""
        lane.own_start = self._cursor.index + 1
        self._left.add(lane.model or "")
        self.own_open += 1

    # -- a lane's own pass -----------------------------------------------------------
    def _own_next(self, lane: ModelLane) -> Request | None:
        if lane.own is None:
            assert lane.own_start is not None and lane.model is not None
            lane.own = self._own(lane.model, lane.own_start)
            self.reads += 1
        req = next(lane.own, None)
        if req is None:
            lane.own = None  # closes its file
            lane.own_done = True
            self.own_open -= 1
        return req


__all__ = [
    "MAX_OWN_PASSES",
    "MIN_BUFFER",
    "SLOW_AFTER",
    "TOTAL_BUFFER",
    "Cursor",
    "ModelLane",
    "SharedRead",
]
