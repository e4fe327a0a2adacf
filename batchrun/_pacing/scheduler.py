"""Which request goes next, and when: lanes of requests over per-model accounts.

A run's requests come in *lanes*, one per model when the input names several (each
lane its own pass over the input, keeping only its model's rows: memory stays
flat however the models interleave), else one lane. Workers ask the `Scheduler`
for the next request; it serves lanes round-robin, taking from the first whose
account has room and no wait. A model waiting for its quota holds one buffered
request, never a worker: while it waits, the other lanes keep every worker busy.

When no lane may send, one waiting worker keeps time (sleeps until the soonest lane
is ready) and the rest wait for a change: a request coming back, new headers, a
stop. The fast path (a lane ready now) never suspends and costs no cancel scope.

Retries are paced by the same accounts (`wait_for`). `stop` wakes everyone:
`next` returns None and `wait_for` raises `Stopped`, so nothing that is waiting is
sent after a stop.

    scheduler = Scheduler(accounts, [Lane(requests)], estimate=tokens_of)
    while (ticket := await scheduler.next()) is not None:
        ...   # send ticket.request; then scheduler.release(ticket.account, ok=...)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import anyio

from batchrun._models import Request
from batchrun._pacing.account import ModelAccount, SendMark
from batchrun._pacing.routing import route

if TYPE_CHECKING:
    from batchrun._pacing.pool import Member, Pool

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[None]]
EPSILON = 1e-6
"""Seconds of float residue not worth another sleep."""
TOLERANCE = 0.002
"""Deadlines this close to the timekeeper's count as the same one."""

last_send: ContextVar[SendMark | None] = ContextVar("batchrun_last_send", default=None)
"""The send the current task made last: the response it reads answers that one."""


class Stopped(Exception):
    """The run stopped while a request waited to be sent: it must not go out."""


class Accounts:
    """Every model's account on one endpoint, made on first use.

    ``rpm``/``tpm`` apply to each model; ``by_model`` overrides them for some.
    """

    def __init__(
        self,
        *,
        concurrency: int,
        rpm: float | None = None,
        tpm: float | None = None,
        by_model: dict[str, tuple[float | None, float | None]] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.concurrency = concurrency
        self.rpm = rpm
        self.tpm = tpm
        self.by_model = dict(by_model or {})
        self.clock = clock
        self._accounts: dict[str, ModelAccount] = {}

    def __getitem__(self, model: str) -> ModelAccount:
        account = self._accounts.get(model)
        if account is None:
            rpm, tpm = self.by_model.get(model, (None, None))
            account = self._accounts[model] = ModelAccount(
                model,
                concurrency=self.concurrency,
                rpm=rpm if rpm is not None else self.rpm,
                tpm=tpm if tpm is not None else self.tpm,
                now=self.clock(),
            )
        return account

    def __iter__(self) -> Iterator[ModelAccount]:
        return iter(list(self._accounts.values()))

    @property
    def in_flight(self) -> int:
        """Requests in flight, all models' (no copy: a pool asks at every route)."""
        return sum(a.in_flight for a in self._accounts.values())

    @property
    def rate_limited(self) -> int:
        return sum(a.stats.rate_limited for a in self)

    @property
    def concurrency_limit(self) -> int:
        """Requests that may be in flight now, over every model (at most ``concurrency``)."""
        accounts = list(self)
        if not accounts:
            return self.concurrency
        return min(self.concurrency, sum(a.size for a in accounts))

    def summary(self) -> dict[str, Any]:
        """Pacing for summary.json: totals over models, and each model's own."""
        per = {a.model: a.summary() for a in self}
        total: dict[str, Any] = {
            "concurrency_limit": self.concurrency_limit,
            "cooldown_s": round(sum(a.stats.cooldown_s for a in self), 3),
            "header_waits": sum(a.stats.header_waits for a in self),
            "paced_s": round(sum(a.stats.paced_s for a in self), 3),
            "rate_limited_seen": sum(a.stats.rate_limited for a in self),
            "isolated_429": sum(a.stats.isolated_429 for a in self),
            "server_rpm": _one(a.requests.limit for a in self),
            "server_tpm": _one(a.tokens.limit for a in self),
        }
        if len(per) > 1:
            total["by_model"] = per
        return total


def _one(values: Iterator[float | None]) -> float | None:
    seen = {v for v in values if v is not None}
    return seen.pop() if len(seen) == 1 else None


def model_of_request(req: Request) -> str:
    model = req.body.get("model")
    return model if isinstance(model, str) else ""


class Lane:
    """A stream of requests, and the one at its head waiting for its account.

    ``model``: when every request of the lane is for one model (a lane per model, or
    an input naming one), its account is looked up once instead of per request.
    """

    def __init__(
        self, requests: Iterator[Request], clock: Clock = time.monotonic, model: str | None = None
    ) -> None:
        self._requests = requests
        self._clock = clock
        self.model = model
        self.head: Request | None = None
        self.tokens: int | None = None
        self.since = 0.0
        """When the head became the head: its wait to be sent starts there."""
        self.exhausted = False
        self.routed: tuple[int, float, ModelAccount | None, bool] | None = None
        """In a pool: the head's last route (the scheduler's version then, when it may
        go, whose quota it waits for), reused until something changes."""

    def peek(self) -> Request | None:
        if self.head is None and not self.exhausted:
            self.head = next(self._requests, None)
            self.tokens = None
            self.since = self._clock()
            if self.head is None:
                self.exhausted = True
        return self.head


@dataclass(slots=True)
class Ticket:
    """A request that may go now: its account was charged for it."""

    request: Request
    account: ModelAccount
    tokens: int
    since: float
    """When it started waiting to be sent."""
    member: Member | None = None
    """The endpoint of a pool it goes to (None: the run's one endpoint)."""


class Scheduler:
    def __init__(
        self,
        accounts: Accounts | Pool,
        lanes: list[Lane],
        *,
        estimate: Callable[[Request], int],
        sleep: Sleep = anyio.sleep,
        pool: Pool | None = None,
    ) -> None:
        self.accounts = accounts
        self.pool = pool
        """A pool of endpoints (`batchrun._pacing.pool`): each request goes to the one
        that can take it soonest; None: every request goes to ``accounts``."""
        self.lanes = lanes
        self.estimate = estimate
        self.clock = accounts.clock
        self.sleep = sleep
        self.stopped = False
        self._next_lane = 0
        self._changed = anyio.Event()
        self._crowded = 0
        """Waiters that found a model with no room (a request coming back wakes them)."""
        self._tick_at = float("inf")
        """When the earliest timed waiter wakes everybody (inf: nobody keeps time)."""
        self._version = 0
        """Bumped by every change a route depends on (a send, a request back, a
        notify): a lane's head routed at this version keeps its answer till then."""
        self._retrying: dict[str, int] = {}
        """In a pool: retries waiting for an endpoint, by model (they go first)."""

    # -- taking requests -----------------------------------------------------------
    async def next(self) -> Ticket | None:
        """The next request that may go now (waits if none may); None when every lane
        is empty or the run stopped."""
        while True:
            if self.stopped:
                return None
            now = self.clock()
            soonest = float("inf")
            blocker: ModelAccount | None = None
            live = False
            crowded = False
            lanes = self.lanes
            n = len(lanes)
            for k in range(n):
                index = (self._next_lane + k) % n
                lane = lanes[index]
                req = lane.peek()
                if req is None:
                    continue
                live = True
                if self.pool is not None:
                    routed = self._routed(lane, req, now)
                    if isinstance(routed, Ticket):
                        self._next_lane = (index + 1) % n
                        return routed
                    wait, account_or_none, full = routed
                    if full or wait == float("inf"):
                        crowded = True  # a request coming back may let it go sooner
                    if account_or_none is not None and wait < soonest:
                        soonest, blocker = wait, account_or_none
                    elif wait < soonest:
                        soonest, blocker = wait, None
                    continue
                account = self.accounts[
                    lane.model if lane.model is not None else model_of_request(req)
                ]
                if not account.has_room(now):
                    # its requests in flight coming back will wake us; a slow start
                    # also ends by itself
                    crowded = True
                    if account.probing and account.probe_until - now < soonest:
                        soonest, blocker = account.probe_until - now, None
                    continue
                if lane.tokens is None:
                    lane.tokens = self.estimate(req) if account.needs_token_estimates else 0
                wait = account.delay(lane.tokens, now)
                if wait <= EPSILON:
                    self._next_lane = (index + 1) % n
                    tokens = lane.tokens
                    lane.head = None
                    last_send.set(account.take(tokens, now))
                    return Ticket(req, account, tokens, lane.since)
                if wait < soonest:
                    soonest, blocker = wait, account
            if not live:
                return None
            await self._idle(soonest, blocker, crowded)

    def _routed(
        self, lane: Lane, req: Request, now: float
    ) -> Ticket | tuple[float, ModelAccount | None, bool]:
        """The head of ``lane`` routed over the pool: its ticket when an endpoint can
        take it now, else how long until one may (inf: until a request comes back, or
        a slow start ends), whose quota that wait is, and whether an endpoint serving
        it is full (a request back there may let it go sooner)."""
        pool = self.pool
        assert pool is not None
        model = lane.model if lane.model is not None else model_of_request(req)
        if model in self._retrying:  # a retry of its model waits: it goes first
            return float("inf"), None, True
        known = lane.routed
        if known is not None and known[0] == self._version and now < known[1] - EPSILON:
            # nothing changed since this head was routed and its time has not come:
            # the same answer (a wake-up of every waiter re-routes once, not per waiter)
            return known[1] - now, known[2], known[3]
        if lane.tokens is None:
            lane.tokens = self.estimate(req) if pool.needs_token_estimates(model) else 0
        tokens = lane.tokens
        chosen = pool.route(model, tokens, now)
        if chosen is None:  # no endpoint left for it: the sender stops the run
            return float("inf"), None, True
        member, wait, full = chosen
        account = member.accounts[model]
        if wait <= EPSILON:
            lane.head = None
            lane.routed = None
            self._version += 1
            last_send.set(account.take(tokens, now))
            member.breaker.sent(now)
            return Ticket(req, account, tokens, lane.since, member)
        blocker: ModelAccount | None = account
        if wait == float("inf"):
            wait, blocker = min(wait, pool.probe_ends(model, now)), None
        lane.routed = (self._version, now + wait, blocker, full)
        return wait, blocker, full

    async def wait_for_route(
        self,
        model: str,
        tokens: int,
        avoid: str | None = None,
        avoid_until: float = float("inf"),
    ) -> tuple[Member, ModelAccount]:
        """Pace one more attempt (a retry) over the pool: the endpoint serving
        ``model`` that can take it soonest, re-asked at every change (never bound to
        one that is cooling down); ``avoid``: the endpoint it just failed on, which
        it may not go back to before ``avoid_until`` (its back-off, its Retry-After;
        inf: while another serves the model). Any other endpoint takes it as soon as
        it has room. Raises `Stopped` (also when no endpoint is left for the model).

        A retry goes before the rows not sent yet: while one waits, `next` sends no
        new request of its model, so a retry is never starved by fresh rows taking
        every refill of the quota."""
        pool = self.pool
        assert pool is not None
        self._retrying[model] = self._retrying.get(model, 0) + 1
        try:
            while True:
                if self.stopped:
                    raise Stopped()
                now = self.clock()
                candidates = pool.candidates(model, tokens, now)
                if avoid is not None:
                    if avoid_until == float("inf"):
                        candidates = [c for c in candidates if c.name != avoid] or candidates
                    elif avoid_until > now:
                        candidates = [
                            replace(c, wait=max(c.wait, avoid_until - now))
                            if c.name == avoid
                            else c
                            for c in candidates
                        ]
                chosen = route(candidates)
                if chosen is None:
                    raise Stopped()  # no endpoint left: the run is stopping
                full = any(c.wait == float("inf") for c in candidates)
                member, wait = pool.by_name[chosen.endpoint], chosen.wait
                if wait <= EPSILON:
                    account = member.accounts[model]
                    self._version += 1
                    last_send.set(account.take(tokens, now))
                    member.breaker.sent(now)
                    return member, account
                if wait == float("inf"):
                    wait = pool.probe_ends(model, now)
                await self._idle(wait, None, full or wait == float("inf"))
        finally:
            self._retrying[model] -= 1
            if not self._retrying[model]:
                del self._retrying[model]
                self.notify()  # fresh rows of the model may go again

    async def wait_for(self, account: ModelAccount, tokens: int) -> None:
        """Pace one more attempt of a request already out (a retry). Raises `Stopped`."""
        while True:
            if self.stopped:
                raise Stopped()
            now = self.clock()
            crowded = not account.has_room(now)
            if not crowded:
                wait = account.delay(tokens, now)
                if wait <= EPSILON:
                    last_send.set(account.take(tokens, now))
                    return
            elif account.probing:
                # a slow start ends by itself (as in `next`): the one request it lets
                # through may be held elsewhere (waiting for --max-cost's room)
                wait = max(0.0, account.probe_until - now)
            else:
                wait = float("inf")
            await self._idle(wait, account, crowded)

    def release(self, account: ModelAccount, *, ok: bool) -> None:
        """A request is back: room for the next one (waking only those who wait for
        room: a sender waiting for a refill would look, find none, and sleep again)."""
        account.release(ok=ok)
        self._version += 1
        if self._crowded:
            self.notify()

    # -- waiting -------------------------------------------------------------------
    def notify(self) -> None:
        """Something changed (a request back, new headers, a stop): look again."""
        self._version += 1
        self._changed.set()
        self._changed = anyio.Event()

    def stop(self) -> None:
        self.stopped = True
        self.notify()

    async def _idle(self, wait: float, blocker: ModelAccount | None, crowded: bool) -> None:
        """Wait ``wait`` seconds at most, or until something changes.

        Only a waiter whose deadline is earlier than the current timekeeper's (by more
        than `TOLERANCE`: the same ready time computed a little later must not make a
        second keeper) sleeps itself; everybody else waits for a change. A keeper whose
        timer rings wakes everybody. In a pool, one woken by a change gives up keeping
        time and wakes those waiting once more: a waiter that arrived after the change saw it
        still keeping time and trusted it (with one endpoint the old keeper, looking
        again, always kept time again; in a pool its lane may now wait behind a retry,
        and nobody would). With one endpoint a keeper woken by a change wakes nobody
        (whoever made the change already did). Wake-ups do not chase each other.
        """
        changed = self._changed
        self._crowded += crowded
        try:
            deadline = self.clock() + wait
            if wait == float("inf") or deadline >= self._tick_at - TOLERANCE:
                await changed.wait()
                return
            self._tick_at = deadline
            if blocker is not None:
                blocker.stats.header_waits += 1
                blocker.stats.paced_s += wait
            rang = False
            async with anyio.create_task_group() as tg:

                async def ring() -> None:
                    nonlocal rang
                    await self.sleep(wait)
                    rang = True
                    tg.cancel_scope.cancel()

                tg.start_soon(ring)
                await changed.wait()
                tg.cancel_scope.cancel()
            if self._tick_at == deadline:
                self._tick_at = float("inf")
                if not rang and self.pool is not None:
                    # woken by a change before its time: a waiter that came after the
                    # change (and trusted this keeper) would otherwise wait for ever
                    # when this one, looking again, no longer keeps time (its lane
                    # now waits behind a retry of the pool)
                    self.notify()
            if rang:
                self.notify()  # time is up: everybody looks again
        finally:
            self._crowded -= crowded


__all__ = [
    "Accounts",
    "Lane",
    "Scheduler",
    "Stopped",
    "Ticket",
    "last_send",
    "model_of_request",
]
