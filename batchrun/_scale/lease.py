"""One quota for every worker of a cluster run, drawn in leases. Pure (no Ray here).

A single process paces each model by its `ModelAccount` (the user's buckets, the mirror
of the server's buckets read from headers, cooldowns, AIMD, slow start). On a cluster
the same accounts live in one place, a `QuotaBook` (held by one Ray actor,
`batchrun._scale.quota`), and each worker's scheduler paces against a `LeasedAccount`
instead: a local account that may send what its current *lease* allows and asks the
book for the next one in the background, so the book is asked once per lease, not
once per request.

A lease is either

* counted: ``requests`` requests and ``tokens`` tokens, charged to the shared
  account when granted (a mark of the account's totals at that moment goes with it,
  so headers read later are corrected as in one process), valid `COUNTED_SECONDS`;
  what is left when it expires or is replaced goes back to the account; or
* a time slice (``requests = inf``): the model has no known quota (no headers, no
  ``--rpm``), so nothing needs counting; it lasts `SLICE_SECONDS`.

When the account has no room the book answers with a ``wait`` (a cooldown after an
exhausting 429, or the time until the buckets refill) and grants nothing. A worker
reports back, with its next request for a lease, what the book needs to keep the
account true: the newest rate-limit headers (with the lease they were sent under),
every 429, how many answers came back (the slow start ends; the 429 clustering
window), how many came back ok (AIMD growth), tokens an estimate over-charged, and
what is left of the lease it drops. Slow start is cluster-wide: while the server's
headers are unknown, one request in the whole cluster.

    >>> book = QuotaBook(concurrency=8, rpm=60, clock=lambda: 0.0)
    >>> grant = book.lease("w1", "m", want=5, tokens_each=0, report=Report())
    >>> grant.requests, grant.limit          # slow start: one request, cluster-wide
    (1.0, 8.0)
    >>> book.lease("w2", "m", want=5, tokens_each=0, report=Report()).wait > 0
    True

A pool of endpoints (`batchrun._pacing.pool`) has one account per endpoint and
model, each bounded by that endpoint's own rpm/tpm and concurrency: the book is
given each endpoint's limits (``endpoints``) and an account is named by
`account_key` (``"NAME:MODEL"``); a worker's `LeasedAccounts.endpoint` is one
endpoint's view, whose accounts lease under those names. So every worker routes over
the pool as one process does while the cluster holds each endpoint's quota once,
and the headers a worker reads from an endpoint feed that endpoint's account.

    >>> pooled = QuotaBook(concurrency=8, endpoints={"a": {"concurrency": 4, "rpm": 60},
    ...                                              "b": {"concurrency": 2}})
    >>> pooled.account(account_key("a", "m")).maximum, pooled.account("b:m").maximum
    (4, 2)
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchrun._pacing.account import AccountStats, ModelAccount, SendMark
from batchrun._pacing.buckets import QuotaMirror
from batchrun._pacing.headers import RateLimitSnapshot
from batchrun._pacing.pool import Member, Pool
from batchrun._pacing.scheduler import Accounts

COUNTED_SECONDS = 0.5
"""A counted lease's life: what a worker has not sent by then goes back."""
SLICE_SECONDS = 1.0
"""A time slice's life, for a model with no known quota."""
MAX_LEASE = 64
"""Most requests one counted lease carries, unless the quota refills faster than
`MAX_LEASE` in `LEASE_SHARE_SECONDS` (see `largest_lease`)."""
HIGH_RATE_LEASE = 4096
"""Most requests one counted lease carries under a high quota: a worker sending 20,000
requests/s spends 64 in 3 ms, less than one call to the book takes."""
LEASE_SHARE_SECONDS = 0.05
"""A lease above `MAX_LEASE` holds at most this many seconds of the quota's refill, so
one worker's lease never keeps what the others need for long."""
POLL = 0.002
"""Seconds a worker's scheduler waits before looking again while a lease is on its way."""
EPSILON = 1e-6
KEPT_MARKS = 4096


@dataclass
class RateLimitEvent:
    """One 429 as a worker saw it."""

    retry_after: float | None
    explicit: bool
    tokens: int
    snapshot: RateLimitSnapshot | None
    lease_id: int | None


@dataclass
class Report:
    """What a worker tells the book about one model since its last lease."""

    snapshot: RateLimitSnapshot | None = None
    snapshot_lease: int | None = None
    rate_limited: list[RateLimitEvent] = field(default_factory=list)
    answered: int = 0
    ok: int = 0
    token_refund: float = 0.0
    returned_requests: float = 0.0
    returned_tokens: float = 0.0

    def empty(self) -> bool:
        return (
            self.snapshot is None
            and not self.rate_limited
            and not self.answered
            and not self.ok
            and not self.token_refund
            and not self.returned_requests
            and not self.returned_tokens
        )


@dataclass(frozen=True)
class Grant:
    """The book's answer: a lease (``requests`` > 0), or how long to wait for one."""

    lease_id: int | None = None
    requests: float = 0.0
    tokens: float = 0.0
    seconds: float = 0.0
    wait: float = 0.0
    limit: float = 1.0
    """Requests of this model a worker may have in flight (AIMD, shared)."""
    needs_tokens: bool = False
    server_rpm: float | None = None
    server_tpm: float | None = None
    stop: str | None = None
    """The run is stopping (Ctrl-C at the driver): send nothing more."""
    largest: int = MAX_LEASE
    """The most one lease of this model may carry now (`largest_lease`)."""


def account_key(endpoint: str | None, model: str) -> str:
    """The book's name for the account of ``model`` on pool endpoint ``endpoint``
    (None: the run's one endpoint, the model's name). An endpoint's name has no
    ``:`` (`batchrun._checks`), so the first one splits it off again."""
    return model if endpoint is None else f"{endpoint}:{model}"


class QuotaBook:
    """Every model's `ModelAccount` for the whole cluster, granting leases;
    ``endpoints``: a pool's, each endpoint's `Accounts` arguments by its name (the
    accounts are then named by `account_key`)."""

    def __init__(
        self,
        *,
        concurrency: int,
        rpm: float | None = None,
        tpm: float | None = None,
        by_model: dict[str, tuple[float | None, float | None]] | None = None,
        endpoints: Mapping[str, Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.accounts = Accounts(
            concurrency=concurrency, rpm=rpm, tpm=tpm, by_model=by_model, clock=clock
        )
        self.pool = {
            name: Accounts(**limits, clock=clock) for name, limits in (endpoints or {}).items()
        }
        """A pool's accounts, by endpoint (empty: the run has one endpoint)."""
        self.clock = clock
        self.stop_reason: str | None = None
        self.leases = 0
        """Leases granted (how often the book was asked with room to give)."""
        self.asked = 0
        self._marks: OrderedDict[int, SendMark] = OrderedDict()
        self._next_id = 0
        self._probe: dict[str, float] = {}
        """model -> when the slow start's one request was granted."""
        self._workers: dict[str, float] = {}

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason

    def account(self, key: str) -> Any:
        """The `ModelAccount` named ``key`` (`account_key`)."""
        if not self.pool:
            return self.accounts[key]
        endpoint, _, model = key.partition(":")
        return self.pool[endpoint][model]

    def active_workers(self, now: float) -> int:
        return max(1, sum(1 for seen in self._workers.values() if now - seen < 5.0))

    # -- a worker's report -----------------------------------------------------------
    def apply(self, worker: str, model: str, report: Report) -> None:
        now = self.clock()
        self._workers[worker] = now
        account = self.account(model)
        if report.returned_requests > 0 or report.returned_tokens > 0:
            account.requests.refund(report.returned_requests, now)
            account.tokens.refund(report.returned_tokens, now)
            if account.user_requests is not None:
                account.user_requests.refund(report.returned_requests, now)
            if account.user_tokens is not None and report.returned_tokens > 0:
                account.user_tokens.refund(report.returned_tokens, now)
        if report.snapshot is not None:
            mark = self._marks.get(report.snapshot_lease or -1)
            account.observe(report.snapshot, mark, now)
        for _ in range(report.answered):
            account.answered(had_headers=report.snapshot is not None, now=now)
        if report.answered:
            self._probe.pop(model, None)
        for event in report.rate_limited:
            mark = self._marks.get(event.lease_id or -1)
            account.observe(event.snapshot, mark, now)
            account.rate_limited(
                event.retry_after,
                explicit=event.explicit,
                tokens=event.tokens,
                snapshot=event.snapshot,
                now=now,
            )
            self._probe.pop(model, None)
        if report.ok and account.limit < account.maximum:
            # one process grows its limit by 1/limit per success; every worker holds
            # `limit`, so the cluster's grows as fast when each success counts 1/workers
            grown = account.limit + report.ok / (account.limit * self.active_workers(now))
            account.limit = min(float(account.maximum), grown)
        if report.token_refund > 0:
            account.settle_tokens(int(report.token_refund), 0, now)

    # -- a lease -------------------------------------------------------------------
    def lease(
        self, worker: str, model: str, *, want: int, tokens_each: int, report: Report
    ) -> Grant:
        """Apply ``report``, then grant up to ``want`` requests of ``tokens_each``."""
        self.asked += 1
        self.apply(worker, model, report)
        now = self.clock()
        account = self.account(model)
        largest = largest_lease(account)
        info: dict[str, Any] = {
            "largest": largest,
            "limit": account.limit,
            "needs_tokens": account.needs_token_estimates,
            "server_rpm": account.requests.limit,
            "server_tpm": account.tokens.limit,
        }
        if self.stop_reason is not None:
            return Grant(stop=self.stop_reason, **info)
        if account.probing:
            if now >= account.probe_until:
                account.probing = False  # a slow first answer must not hold the run
            else:
                granted_at = self._probe.get(model)
                if granted_at is not None:
                    return Grant(wait=min(0.05, account.probe_until - now), **info)
                self._probe[model] = now
        tokens_each = tokens_each if account.needs_token_estimates else 0
        wait = account.delay(tokens_each, now)
        if wait > EPSILON:
            return Grant(wait=wait, **info)
        if not account.bounded and not account.probing:
            self.leases += 1
            return Grant(
                self._remember(account.take(0, now)),
                math.inf,
                math.inf,
                SLICE_SECONDS,
                **info,
            )
        want = 1 if account.probing else max(1, min(want, largest))
        # in flight is each worker's business: charged here, not counted
        granted = max(1, account.room(tokens_each, now, want, EPSILON))
        mark = account.take_many(granted, tokens_each, now)
        self.leases += 1
        return Grant(
            self._remember(mark),
            float(granted),
            float(granted * tokens_each) if tokens_each else math.inf,
            COUNTED_SECONDS,
            **info,
        )

    def _remember(self, mark: SendMark) -> int:
        self._next_id += 1
        self._marks[self._next_id] = mark
        if len(self._marks) > KEPT_MARKS:
            self._marks.popitem(last=False)
        return self._next_id

    def summary(self) -> dict[str, Any]:
        """Pacing for summary.json (a pool's: `Pool.summary`'s shape, each endpoint's
        accounts as the cluster shares them)."""
        if self.pool:
            members = [Member(name, accounts) for name, accounts in self.pool.items()]
            paced = Pool(members).summary()
            for row in paced["by_endpoint"].values():
                del row["breaker"], row["breaker_trips"]  # each worker's own
        else:
            paced = self.accounts.summary()
        return {**paced, "leases": self.leases, "lease_requests": self.asked}


def largest_lease(account: ModelAccount) -> int:
    """`MAX_LEASE`, or more for a quota that refills faster than `MAX_LEASE` in
    `LEASE_SHARE_SECONDS` (up to `HIGH_RATE_LEASE`): the slowest known requests
    bucket's refill over that time."""
    rates = [account.requests.rate] if account.requests.limit is not None else []
    if account.user_requests is not None:
        rates.append(account.user_requests.rate)
    if not rates:  # only tokens are counted: their buckets bound the lease
        return MAX_LEASE
    share = int(min(rates) * LEASE_SHARE_SECONDS)
    return max(MAX_LEASE, min(HIGH_RATE_LEASE, share))


# -- the worker's side ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LeaseMark:
    """What `LeasedAccount.take` hands the runner (it comes back with the headers)."""

    account: LeasedAccount
    lease_id: int | None


class LeasedAccount:
    """A worker's account of one model: what its lease allows, and what to report.

    It has `ModelAccount`'s interface as far as the scheduler and the runner use it;
    `refill` (the lease client's business) swaps leases in from another thread, so
    every change happens under one lock.
    """

    def __init__(
        self, model: str, *, concurrency: int, wake: Callable[[], None], key: str | None = None
    ) -> None:
        self.model = model
        self.key = model if key is None else key
        """Its account's name at the book (`account_key`)."""
        self.maximum = max(1, concurrency)
        self.limit = float(self.maximum)
        self.in_flight = 0
        self.probing = False
        self.probe_until = 0.0
        self.requests = QuotaMirror()
        """Only its ``limit`` (the server's, as the book knows it), for summaries."""
        self.tokens = QuotaMirror()
        self.stats = AccountStats()
        self.needs_token_estimates = False
        self.want = 1
        """Requests to ask for next time: doubles when a lease runs out, halves when
        one expires half unused."""
        self.demand_at = float("-inf")
        self.want_tokens = 0
        """The token estimate of the request waiting to go (what a lease must cover)."""
        self._wake = wake
        self._lock = threading.Lock()
        self._lease: Grant | None = None
        self._left_requests = 0.0
        self._left_tokens = 0.0
        self._expires = float("-inf")
        self._wait_until = float("-inf")
        self._asking = False
        self._report = Report()
        self.stop_reason: str | None = None

    # -- the scheduler's side --------------------------------------------------------
    @property
    def size(self) -> int:
        return max(1, int(self.limit))

    def has_room(self, now: float) -> bool:
        return self.in_flight < self.limit or self.in_flight < 1

    def delay(self, tokens: int, now: float) -> float:
        """0 when the lease covers one more request of ``tokens``; else how long to
        wait (the book's wait, or a short poll while the next lease is on its way)."""
        self.demand_at = now
        self.want_tokens = tokens
        if self._covers(tokens, now):
            return 0.0
        if self.stop_reason is not None:
            return math.inf  # the runner is being stopped; nothing more goes
        if now < self._wait_until:
            return self._wait_until - now
        self._wake()
        return POLL

    def _covers(self, tokens: int, now: float) -> bool:
        return (
            now < self._expires
            and self._left_requests >= 1
            and (tokens <= self._left_tokens or not self.needs_token_estimates)
        )

    def take(self, tokens: int, now: float) -> LeaseMark:
        with self._lock:
            self.in_flight += 1
            self._left_requests -= 1
            if self.needs_token_estimates:
                self._left_tokens -= tokens
            lease_id = self._lease.lease_id if self._lease is not None else None
            low = self._left_requests < self.want / 2
        if low and not math.isinf(self._left_requests):
            self._wake()  # ask for the next lease before this one runs out
        return LeaseMark(self, lease_id)

    def release(self, *, ok: bool) -> None:
        with self._lock:
            self.in_flight -= 1
            if ok:
                self._report.ok += 1

    # -- the runner's side: what the server said ----------------------------------------
    def settle_tokens(self, estimated: int, actual: int | None, now: float) -> None:
        if actual is not None and actual < estimated:
            with self._lock:
                self._report.token_refund += estimated - actual

    def answered(self, *, had_headers: bool, now: float) -> None:
        with self._lock:
            self._report.answered += 1

    def observe(self, snapshot: RateLimitSnapshot | None, mark: Any, now: float) -> None:
        if snapshot is None:
            return
        lease_id = mark.lease_id if isinstance(mark, LeaseMark) else None
        with self._lock:
            self._report.snapshot = snapshot
            self._report.snapshot_lease = lease_id

    def rate_limited(
        self,
        retry_after: float | None,
        *,
        explicit: bool,
        tokens: int,
        snapshot: RateLimitSnapshot | None,
        now: float,
    ) -> bool:
        """A 429: reported at once, and this worker's lease is dropped (the book says
        whether the quota is exhausted, for every worker)."""
        self.stats.rate_limited += 1
        lease_id = None
        with self._lock:
            if self._lease is not None:
                lease_id = self._lease.lease_id
            self._report.rate_limited.append(
                RateLimitEvent(retry_after, explicit, tokens, snapshot, lease_id)
            )
            self._drop(now)
        self._wake()
        return False

    # -- the lease client's side -------------------------------------------------------
    def needs_lease(self, now: float) -> bool:
        """Ask the book now? Only while the scheduler wants to send (recent demand)."""
        if self._asking or now < self._wait_until or self.stop_reason is not None:
            return False
        if self._report.rate_limited:
            return True
        if now - self.demand_at > 1.0:
            return False  # idle: a report alone can wait for the next lease
        if now >= self._expires:
            return True
        if math.isinf(self._left_requests):
            return self._expires - now < (self._lease.seconds if self._lease else 1.0) / 2
        return self._left_requests < max(1.0, self.want / 2)

    def start_request(self, now: float) -> tuple[int, Report]:
        """The report to send with the next request (what is left of the lease goes
        back only if it expired: a live lease keeps being spent meanwhile)."""
        with self._lock:
            self._asking = True
            if now >= self._expires:
                self._drop(now)
            report, self._report = self._report, Report()
            return self.want, report

    def refill(self, grant: Grant, now: float) -> None:
        """Install the book's answer."""
        with self._lock:
            self._asking = False
            self.limit = grant.limit
            self.needs_token_estimates = grant.needs_tokens
            self.requests.limit = grant.server_rpm
            self.tokens.limit = grant.server_tpm
            if grant.stop is not None:
                self.stop_reason = grant.stop
                self._drop(now)
                return
            if grant.requests <= 0:
                self._wait_until = now + grant.wait
                if grant.wait > 0:
                    self.stats.header_waits += 1
                return
            if self._lease is not None and not math.isinf(self._left_requests):
                if self._left_requests <= 0:
                    self.want = self.want * 2
            self.want = min(self.want, grant.largest)
            self._drop(now)
            self._lease = grant
            self._left_requests = grant.requests
            self._left_tokens = grant.tokens
            self._expires = now + grant.seconds

    def failed_request(self) -> None:
        with self._lock:
            self._asking = False

    def _drop(self, now: float) -> None:
        """Give back what the current lease has left (lock held)."""
        if self._lease is not None and not math.isinf(self._left_requests):
            left = max(0.0, self._left_requests)
            if left >= self.want / 2 and self.want > 1:
                self.want = max(1, self.want // 2)
            self._report.returned_requests += left
            if self.needs_token_estimates and not math.isinf(self._left_tokens):
                self._report.returned_tokens += max(0.0, self._left_tokens)
        self._lease = None
        self._left_requests = 0.0
        self._left_tokens = 0.0
        self._expires = float("-inf")

    @property
    def wait_until(self) -> float:
        """When the book said a lease may be had again (-inf: no wait)."""
        return self._wait_until

    def pending_report(self) -> bool:
        return not self._report.empty()

    def take_report(self) -> Report:
        """The report so far (a new one starts)."""
        with self._lock:
            report, self._report = self._report, Report()
        return report

    def close(self, now: float) -> Report:
        """No more sends: the last report, with what the lease has left given back."""
        with self._lock:
            self.stop_reason = self.stop_reason or "closed"
            self._drop(now)
            report, self._report = self._report, Report()
        return report

    def summary(self) -> dict[str, Any]:
        return {
            "concurrency_limit": self.size,
            "cooldown_s": 0.0,
            "header_waits": self.stats.header_waits,
            "paced_s": round(self.stats.paced_s, 3),
            "rate_limited_seen": self.stats.rate_limited,
            "isolated_429": 0,
            "server_rpm": self.requests.limit,
            "server_tpm": self.tokens.limit,
        }


class LeasedAccounts(Accounts):
    """A worker's accounts: one `LeasedAccount` per model, filled by a lease client.

    In a pool, `endpoint` gives each endpoint's own view (its models' accounts, with
    its concurrency), and `leased` lists every view's accounts too: one lease client
    keeps them all supplied."""

    def __init__(
        self,
        *,
        concurrency: int,
        wake: Callable[[], None],
        endpoint: str | None = None,
        every: list[LeasedAccount] | None = None,
    ) -> None:
        super().__init__(concurrency=concurrency)
        self._wake = wake
        self._endpoint = endpoint
        self._every: list[LeasedAccount] = [] if every is None else every
        """Every account of this worker, each endpoint's view's too (shared)."""

    def __getitem__(self, model: str) -> Any:
        account: Any = self._accounts.get(model)
        if account is None:
            key = account_key(self._endpoint, model)
            account = LeasedAccount(model, concurrency=self.concurrency, wake=self._wake, key=key)
            self._accounts[model] = account
            self._every.append(account)
            self._wake()
        return account

    def endpoint(self, name: str, *, concurrency: int) -> LeasedAccounts:
        """Pool endpoint ``name``'s accounts (its concurrency: what each model's may
        have in flight in this worker, as `batchrun._engine.pool.member_accounts`)."""
        return LeasedAccounts(
            concurrency=concurrency, wake=self._wake, endpoint=name, every=self._every
        )

    def leased(self) -> list[LeasedAccount]:
        return list(self._every)


__all__ = [
    "Grant",
    "LeaseMark",
    "LeasedAccount",
    "LeasedAccounts",
    "QuotaBook",
    "RateLimitEvent",
    "Report",
    "account_key",
]
