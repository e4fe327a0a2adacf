"""The quota actor every worker of a cluster run shares, and each worker's lease client.

`QuotaService` is a plain class; the driver makes it a Ray actor
(``ray.remote(QuotaService)``, one per run, no CPU of its own, one call at a time so
calls from one worker are applied in the order sent). It holds the `QuotaBook` (every
model's account: buckets, header mirror, cooldowns, AIMD, slow start), the
`BudgetBook` of ``--max-cost``, the run's stop flag, and the API key while the run
lasts (see `QuotaService.set_key`).

`LeaseClient` runs in each worker process: a thread that keeps every model's
`LeasedAccount` supplied with leases (asking ahead, before the current one runs out)
and carries the worker's reports to the actor, so the event loop that sends requests
never waits for the actor.

    service = ray.remote(QuotaService).options(num_cpus=0).remote(settings_dict)
    client = LeaseClient(service, "shard-3", concurrency=64); client.start()
    runner = Runner(cfg, accounts=client.accounts, ...)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from batchrun._scale.budget import BudgetBook
from batchrun._scale.lease import Grant, LeasedAccounts, QuotaBook, Report
from batchrun._settings import Settings

IDLE_SECONDS = 0.05
"""The lease thread looks at its accounts at least this often."""
REPORT_SECONDS = 0.5
"""An idle worker's pending reports (oks, refunds) go out at least this often."""
GIVE_UP_AFTER = 40
"""Failed calls in a row (~2 s) after which the actor is taken to be gone: the worker
stops (what it wrote stays; a rerun resumes) instead of waiting for leases forever."""


class QuotaService:
    """The body of the quota actor (see the module docstring)."""

    def __init__(
        self,
        *,
        concurrency: int,
        rpm: float | None,
        tpm: float | None,
        by_model: dict[str, tuple[float | None, float | None]],
        max_cost: float | None,
        spent: float = 0.0,
        endpoints: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.book = QuotaBook(
            concurrency=concurrency, rpm=rpm, tpm=tpm, by_model=by_model, endpoints=endpoints
        )
        self.budget = BudgetBook(max_cost, spent) if max_cost is not None else None
        self._key: str | None = None
        self._keys: dict[str, str | None] = {}

    # -- the key ---------------------------------------------------------------------
    def set_key(self, key: str | None, keys: dict[str, str | None] | None = None) -> None:
        """The API key (``keys``: a pool's, each endpoint's by its name), sent by the
        driver in an actor call and kept in this process's memory only. Actor calls
        are not recorded by Ray (unlike the arguments of the actor's creation, or a
        runtime environment, which Ray keeps and shows), so the key never reaches
        Ray's logs, its dashboard or its object spill files; workers fetch it with
        `key` (`keys`), and it is gone when the run's actor is."""
        self._key = key
        self._keys = dict(keys or {})

    def key(self) -> str | None:
        return self._key

    def keys(self) -> dict[str, str | None]:
        return self._keys

    # -- quota -----------------------------------------------------------------------
    def lease(self, worker: str, model: str, want: int, tokens_each: int, report: Report) -> Grant:
        return self.book.lease(worker, model, want=want, tokens_each=tokens_each, report=report)

    def report(self, worker: str, model: str, report: Report) -> None:
        self.book.apply(worker, model, report)

    def stop(self, reason: str) -> None:
        self.book.stop(reason)

    def summary(self) -> dict[str, Any]:
        out = self.book.summary()
        if self.budget is not None:
            out["budget"] = self.budget.summary()
        return out

    # -- budget ----------------------------------------------------------------------
    def reserve(self, worker: str, amount: float, worst: float) -> tuple[float, bool]:
        if self.budget is None:
            return amount, False
        return self.budget.reserve(worker, amount, worst)

    def settle(self, worker: str, spent: float, released: float) -> None:
        if self.budget is not None:
            self.budget.settle(worker, spent, released)


class LeaseClient:
    """A worker's thread that keeps its `LeasedAccounts` supplied (see module docstring).

    ``on_stop(reason)`` is called (from the thread) when the actor says the run stops.
    """

    def __init__(
        self,
        service: Any,
        worker: str,
        *,
        concurrency: int,
        on_stop: Callable[[str], None] | None = None,
        get: Callable[[Any], Any] | None = None,
    ) -> None:
        if get is None:
            import ray

            get = ray.get
        self.service = service
        self.worker = worker
        self.on_stop = on_stop
        self._get = get
        self._event = threading.Event()
        self._closed = False
        self.accounts = LeasedAccounts(concurrency=concurrency, wake=self._event.set)
        self._thread = threading.Thread(target=self._loop, name="batchrun-leases", daemon=True)
        self._stopped = False
        self.calls = 0
        self.errors: list[str] = []

    def start(self) -> LeaseClient:
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread and hand back what every lease has left, with the last reports."""
        self._closed = True
        self._event.set()
        self._thread.join(timeout=10)
        now = time.monotonic()
        for account in self.accounts.leased():
            report = account.close(now)
            if not report.empty():
                try:
                    self._get(self.service.report.remote(self.worker, account.key, report))
                except Exception as exc:  # the actor is gone: nothing to give back to
                    self.errors.append(str(exc))

    def _loop(self) -> None:
        last_report: dict[str, float] = {}
        failures = 0
        while not self._closed:
            # wake when the book said a lease may be had again, or a while later
            now = time.monotonic()
            waits = [a.wait_until - now for a in self.accounts.leased() if a.wait_until > now]
            self._event.wait(min([IDLE_SECONDS, *waits]))
            self._event.clear()
            for account in self.accounts.leased():
                if self._closed:
                    return
                now = time.monotonic()
                if account.needs_lease(now):
                    want, report = account.start_request(now)
                    try:
                        grant = self._get(
                            self.service.lease.remote(
                                self.worker, account.key, want, account.want_tokens, report
                            )
                        )
                    except Exception as exc:
                        account.failed_request()
                        self.errors.append(str(exc))
                        failures += 1
                        if failures >= GIVE_UP_AFTER and not self._stopped:
                            self._stopped = True
                            if self.on_stop is not None:
                                self.on_stop("quota_lost")
                        time.sleep(IDLE_SECONDS)
                        continue
                    failures = 0
                    self.calls += 1
                    last_report[account.key] = now
                    account.refill(grant, time.monotonic())
                    if grant.stop is not None and not self._stopped:
                        self._stopped = True
                        if self.on_stop is not None:
                            self.on_stop(grant.stop)
                elif (
                    account.pending_report()
                    and now - last_report.get(account.key, 0.0) >= REPORT_SECONDS
                ):
                    last_report[account.key] = now
                    self.service.report.remote(self.worker, account.key, account.take_report())


def start_quota_service(ray: Any, cfg: Settings, *, spent: float = 0.0) -> Any:
    """The `QuotaService` actor for a run on the cluster (its quotas, concurrency and
    cost cap; ``spent``: what earlier processes spent of the cap), on the driver's node:
    a worker node lost mid-run (preempted, scaled down) must not take the run's one
    quota account with it. Not soft: Ray 2.60 put a soft-pinned actor of no CPU on a
    worker node beside a head with no CPUs (checked on a 3-node cluster). A pool's
    endpoints each have their accounts there, with their own limits
    (`batchrun._engine.pool.endpoint_limits`)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from batchrun._engine.pool import endpoint_limits

    here = ray.get_runtime_context().get_node_id()
    actor = ray.remote(QuotaService).options(
        num_cpus=0,
        max_concurrency=1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
    )
    return actor.remote(
        concurrency=cfg.concurrency,
        rpm=cfg.rpm.default,
        tpm=cfg.tpm.default,
        by_model=cfg.limits_by_model(),
        max_cost=cfg.max_cost,
        spent=spent,
        endpoints={e.name: endpoint_limits(e) for e in cfg.pool()} if cfg.endpoints else None,
    )


__all__ = ["LeaseClient", "QuotaService", "start_quota_service"]
