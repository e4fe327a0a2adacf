"""A run's pool of endpoints, built from its settings: accounts, caps and clients.

`Settings.pool` says what each endpoint is (complete: what a declaration leaves out
comes from ``[endpoint]`` and ``[limits]``); this module makes what the online lane
sends through: one `batchrun._pacing.pool.Member` per endpoint (its own per-model
accounts with its rpm/tpm and concurrency, its breaker, its weight and model names)
and one `batchrun._transport.client.ChatClient` per endpoint (its URL, key, auth
style and headers; the key is registered to be scrubbed and never written).

    pool = build_pool(settings, clock)
    clients = pool_clients(settings, endpoint_keys(settings), transport=None, clock=clock)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from batchrun._pacing.pool import Member, Pool
from batchrun._pacing.scheduler import Accounts
from batchrun._settings import Settings
from batchrun._transport.client import ChatClient
from batchrun._values import Endpoint


def endpoint_limits(endpoint: Endpoint) -> dict[str, Any]:
    """One endpoint's `Accounts` arguments: its own rpm/tpm (for every model, and per
    model by the job's names) and its cap on requests in flight (plain values: what
    the quota actor of a cluster run is made with, `batchrun._scale.quota`)."""
    rpm, tpm = endpoint.rpm, endpoint.tpm
    by_model: dict[str, tuple[float | None, float | None]] = {}
    for model, amount in rpm.by_model if rpm is not None else ():
        by_model[model] = (amount, by_model.get(model, (None, None))[1])
    for model, amount in tpm.by_model if tpm is not None else ():
        by_model[model] = (by_model.get(model, (None, None))[0], amount)
    return {
        "concurrency": endpoint.concurrency or 64,
        "rpm": rpm.default if rpm is not None else None,
        "tpm": tpm.default if tpm is not None else None,
        "by_model": by_model,
    }


def member_accounts(endpoint: Endpoint, clock: Callable[[], float]) -> Accounts:
    """The per-model accounts of one endpoint (`endpoint_limits`)."""
    return Accounts(**endpoint_limits(endpoint), clock=clock)


def build_pool(
    settings: Settings,
    clock: Callable[[], float],
    accounts: Callable[[Endpoint], Accounts] | None = None,
) -> Pool:
    """The running pool of ``settings`` (`Settings.pool`, in declaration order);
    ``accounts``: each endpoint's (default `member_accounts`; a shard of a cluster
    run's lease from the run's quota actor, `batchrun._scale.lease.LeasedAccounts`)."""
    members = [
        Member(
            e.name,
            accounts(e) if accounts is not None else member_accounts(e, clock),
            order=order,
            weight=e.weight or 1.0,
            cap=e.concurrency,
            models=None if e.models is None else dict(e.models),
            identity=e.identity,
        )
        for order, e in enumerate(settings.pool())
    ]
    return Pool(members, clock)


def pool_clients(
    settings: Settings,
    keys: Mapping[str, str | None],
    *,
    transport: httpx.AsyncBaseTransport | None,
    clock: Callable[[], float],
) -> dict[str, ChatClient]:
    """One client per endpoint, by its name: its URL, key, auth and headers (an
    injected ``transport`` serves them all: a test tells them apart by URL)."""
    return {
        e.name: ChatClient(
            **e.connection(keys),
            timeout=settings.timeout,
            total_timeout=settings.total_timeout,
            max_response_bytes=settings.max_response_bytes,
            transport=transport,
            max_connections=e.concurrency or settings.concurrency,
            clock=clock,
        )
        for e in settings.pool()
    }


def warn_once(notes: list[str], warning: str, *, quiet: bool = False) -> None:
    """An endpoint taken out of the pool: said once, now (stderr) and in the run's
    ``notes``."""
    if warning in notes:
        return
    notes.append(warning)
    if not quiet:
        print(f"batchrun: warning: {warning}", file=sys.stderr, flush=True)


__all__ = ["build_pool", "endpoint_limits", "member_accounts", "pool_clients", "warn_once"]
