"""A pool of endpoints while a run goes: each endpoint's accounts, cap and breaker.

`batchrun._pacing.routing` says, purely, which endpoint takes a request; this module
holds what it asks about. Each endpoint of the pool (`Member`) has its own
`batchrun._pacing.scheduler.Accounts` (one `ModelAccount` per model, fed by that
endpoint's headers and 429s, bounded by its own rpm/tpm), its own cap on requests in
flight over all its models, its weight, its breaker
(`batchrun._pacing.circuit.EndpointBreaker`) and the names it gives the job's models.

`Pool` is what the scheduler routes over (`Pool.route`: the soonest endpoint serving
the model) and what a hook reads as the run's pacing (`rate_limited`,
`concurrency_limit`, `summary`, as `Accounts` offers them). A pool of one is never
built: a run without ``[endpoints.NAME]`` keeps the single `Accounts` path.

    pool = Pool([Member("a", Accounts(concurrency=8), order=0),
                 Member("b", Accounts(concurrency=8), order=1)])
    choice = pool.route("gpt-4o-mini", tokens=0, now=clock())   # (member, wait, full)
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from typing import Any

from batchrun._pacing.account import ModelAccount
from batchrun._pacing.circuit import EndpointBreaker, stranded
from batchrun._pacing.routing import Candidate, candidate, route
from batchrun._pacing.scheduler import Accounts, Clock


class Member:
    """One endpoint of a running pool (see the module docstring).

    ``models``: the job's model -> its name there; None: every model, by the job's
    names. ``cap``: its own cap on requests in flight, over all its models."""

    __slots__ = ("name", "accounts", "breaker", "order", "weight", "cap", "models", "identity")

    def __init__(
        self,
        name: str,
        accounts: Accounts,
        *,
        order: int = 0,
        weight: float = 1.0,
        cap: int | None = None,
        models: Mapping[str, str] | None = None,
        identity: str | None = None,
        breaker: EndpointBreaker | None = None,
    ) -> None:
        self.name = name
        self.accounts = accounts
        self.breaker = breaker if breaker is not None else EndpointBreaker(name)
        self.order = order
        self.weight = weight
        self.cap = cap
        self.models = dict(models) if models is not None else None
        self.identity = identity if identity is not None else name
        """What its result lines name as ``batchrun._endpoint``."""

    def serves(self, model: str) -> bool:
        return self.models is None or model in self.models

    def model_name(self, model: str) -> str:
        """The job's ``model`` as this endpoint names it."""
        if self.models is None:
            return model
        return self.models.get(model, model)

    @property
    def in_flight(self) -> int:
        """Requests on the wire there now, all its models'."""
        return self.accounts.in_flight

    def candidate(self, model: str, tokens: int, now: float) -> Candidate | None:
        """Its answer to "how soon could you take a request of ``tokens`` for
        ``model``?" (`batchrun._pacing.routing.candidate`); None: out for it."""
        return candidate(
            self.name,
            self.accounts[model],
            self.breaker,
            tokens=tokens,
            now=now,
            in_flight=self.in_flight,
            cap=self.cap,
            weight=self.weight,
            order=self.order,
        )


class Pool:
    """Every endpoint of a running pool (see the module docstring)."""

    def __init__(self, members: list[Member], clock: Clock = time.monotonic) -> None:
        self.members = members
        self.by_name = {m.name: m for m in members}
        self.clock = clock
        self._serving: dict[str, list[Member]] = {}

    def serving(self, model: str) -> list[Member]:
        """The endpoints that serve ``model``, in declaration order."""
        found = self._serving.get(model)
        if found is None:
            found = self._serving[model] = [m for m in self.members if m.serves(model)]
        return found

    def candidates(self, model: str, tokens: int, now: float) -> list[Candidate]:
        out = []
        for member in self.serving(model):
            c = member.candidate(model, tokens, now)
            if c is not None:
                out.append(c)
        return out

    def route(self, model: str, tokens: int, now: float) -> tuple[Member, float, bool] | None:
        """The endpoint that can take a request of ``tokens`` for ``model`` soonest,
        its wait (inf: until a request of the pool comes back), and whether some
        endpoint serving it is full (a request coming back there may make it sooner:
        the waiter must be woken by it); None when no endpoint serving it is left."""
        candidates = self.candidates(model, tokens, now)
        chosen = route(candidates)
        if chosen is None:
            return None
        full = any(c.wait == math.inf for c in candidates)
        return self.by_name[chosen.endpoint], chosen.wait, full

    def needs_token_estimates(self, model: str) -> bool:
        return any(m.accounts[model].needs_token_estimates for m in self.serving(model))

    def probe_ends(self, model: str, now: float) -> float:
        """Seconds until a slow start of ``model`` on some endpoint ends by itself
        (inf: none is in one)."""
        soonest = math.inf
        for member in self.serving(model):
            account = member.accounts[model]
            if account.probing:
                soonest = min(soonest, max(0.0, account.probe_until - now))
        return soonest

    def stranded(self, models: list[str]) -> dict[str, list[str]]:
        """`batchrun._pacing.circuit.stranded` for this pool."""
        serving = {model: [m.name for m in self.serving(model)] for model in models}
        return stranded(models, serving, {m.name: m.breaker for m in self.members})

    @property
    def breakers(self) -> dict[str, EndpointBreaker]:
        return {m.name: m.breaker for m in self.members}

    # -- what a hook reads (the `batchrun._engine.state.Pacing` surface) ----------------
    def __getitem__(self, model: str) -> ModelAccount:
        """The account of ``model`` on the first endpoint serving it (what the shared
        read of the input asks to tell a slow model from a fast one)."""
        serving = self.serving(model)
        return (serving[0] if serving else self.members[0]).accounts[model]

    def __iter__(self) -> Iterator[ModelAccount]:
        for member in self.members:
            yield from member.accounts

    @property
    def rate_limited(self) -> int:
        return sum(m.accounts.rate_limited for m in self.members)

    @property
    def concurrency_limit(self) -> int:
        return sum(m.accounts.concurrency_limit for m in self.members)

    def summary(self) -> dict[str, Any]:
        """Pacing for summary.json: totals over the pool, and each endpoint's own
        (with its breaker's state and trips)."""
        per = {m.name: m.accounts.summary() for m in self.members}
        total: dict[str, Any] = {
            "concurrency_limit": self.concurrency_limit,
            "cooldown_s": round(sum(p["cooldown_s"] for p in per.values()), 3),
            "header_waits": sum(p["header_waits"] for p in per.values()),
            "paced_s": round(sum(p["paced_s"] for p in per.values()), 3),
            "rate_limited_seen": sum(p["rate_limited_seen"] for p in per.values()),
            "isolated_429": sum(p["isolated_429"] for p in per.values()),
            "server_rpm": _total(p["server_rpm"] for p in per.values()),
            "server_tpm": _total(p["server_tpm"] for p in per.values()),
        }
        for member in self.members:
            per[member.name]["breaker"] = member.breaker.state
            per[member.name]["breaker_trips"] = member.breaker.trips
        total["by_endpoint"] = per
        return total


def _total(values: Iterator[float | None]) -> float | None:
    """The pooled server quota, when every endpoint said its own."""
    seen = list(values)
    if not seen or any(v is None for v in seen):
        return None
    return float(sum(v for v in seen if v is not None))


__all__ = ["Member", "Pool"]
