"""How a job's rows, time and cost divide over its endpoints. Pure.

A pool routes each request to the endpoint that can take it soonest
(`batchrun._pacing.routing`), so in the steady state each endpoint serving a model
takes that model's rows at its own pace: its share is its rate over the pooled
rate, whatever the weights (weight only breaks ties between endpoints with room).
An endpoint's rate for a model is what its quotas allow for that model's average
request: its rpm, and its tpm over the tokens one request is charged (prompt and
completion ceiling, as the TPM limiter charges them), whichever is lower. Quotas
are per model (OpenAI's are), so models go in parallel: the pool's time is its
slowest model's.

Its quotas are the endpoint's ``rpm``/``tpm`` (its own, else ``[limits]``'), and for
a simulated endpoint the simulator's ``sim_rpm``/``sim_tpm`` too. An endpoint with
no known quota (a vLLM replica paced by its answers alone) has no rate to divide
by: the time is unknown and its model's rows are split by weight.

Each endpoint's cost is its share of the model's tokens at its own prices (a relay's,
a negotiated rate), the model looked up by its name there first (an Azure
deployment priced in the endpoint's price file), then by the job's.

Through the Batch API (``via_batch``) the rows go to the ``batch = true`` endpoints
only, split by weight as the run splits them (`batchrun._batch.pool.endpoint_for`), at
their batch prices; a batch has no per-minute pace, so there is no time.

    >>> from batchrun._settings import Endpoint, Quota
    >>> a = Endpoint("a", "https://a/v1", rpm=Quota(600.0))
    >>> b = Endpoint("b", "https://b/v1", rpm=Quota(1200.0))
    >>> [round(r, 1) for r in (rate(a, "m", 100), rate(b, "m", 100))]
    [600.0, 1200.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from batchrun._values import Endpoint

if TYPE_CHECKING:
    from batchrun._cost.estimate import ModelEstimate
    from batchrun._cost.prices import PriceBook

UNBOUNDED_COMPLETION = 256
"""Completion tokens the TPM limiter charges a request that sets no max tokens."""


@dataclass(slots=True)
class ModelPace:
    """One model's rows over the pool."""

    requests: int
    requests_per_minute: float | None
    """The pooled rate (None: an endpoint serving it has no known quota)."""
    minutes: float | None
    limited_by: str | None = None
    """"rpm" or "tpm": which quota binds for the pool (None: unknown)."""


@dataclass(slots=True)
class EndpointShare:
    """One endpoint's part of the job."""

    name: str
    rows: float = 0.0
    requests_per_minute: dict[str, float | None] = field(default_factory=dict)
    """Model -> its rate there (None: no known quota)."""
    cost_low: float | None = 0.0
    cost_high: float | None = 0.0
    unpriced: list[str] = field(default_factory=list)
    """Models without a price at this endpoint (not in its cost)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": round(self.rows, 1),
            "requests_per_minute": {m: _round(r) for m, r in self.requests_per_minute.items()},
            "cost_usd": {"low": _round(self.cost_low), "high": _round(self.cost_high)},
            "unpriced_models": sorted(self.unpriced),
        }


@dataclass(slots=True)
class PoolEstimate:
    """The time the pooled quota needs, and each endpoint's rows and cost."""

    models: dict[str, ModelPace] = field(default_factory=dict)
    endpoints: dict[str, EndpointShare] = field(default_factory=dict)
    no_quota: list[str] = field(default_factory=list)
    """Endpoints without a known quota (the time is unknown)."""
    via_batch: bool = False
    """Through the Batch API: split by weight over the batch endpoints, no time."""

    @property
    def minutes(self) -> float | None:
        """The slowest model's time (models are paced apart); None when unknown."""
        times = [m.minutes for m in self.models.values()]
        if not times or any(t is None for t in times):
            return None
        return max(t for t in times if t is not None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "minutes": _round(self.minutes),
            "by_model": {
                name: {
                    "requests": pace.requests,
                    "requests_per_minute": _round(pace.requests_per_minute),
                    "minutes": _round(pace.minutes),
                    "limited_by": pace.limited_by,
                }
                for name, pace in sorted(self.models.items())
            },
            "endpoints": {name: e.to_dict() for name, e in self.endpoints.items()},
            "no_quota": list(self.no_quota),
            "via_batch": self.via_batch,
        }


def quotas(endpoint: Endpoint, model: str) -> tuple[float | None, float | None]:
    """(rpm, tpm) the endpoint allows ``model``: its quotas, and a simulator's own
    (the lower of the two when both are known)."""

    def lower(a: float | None, b: float | None) -> float | None:
        return b if a is None else a if b is None else min(a, b)

    rpm = endpoint.rpm.for_model(model) if endpoint.rpm is not None else None
    tpm = endpoint.tpm.for_model(model) if endpoint.tpm is not None else None
    if endpoint.is_sim:
        rpm = lower(rpm, endpoint.sim_rpm)
        tpm = lower(tpm, endpoint.sim_tpm)
    return rpm, tpm


def rate(endpoint: Endpoint, model: str, tokens_per_request: float) -> float:
    """Requests a minute ``endpoint`` allows ``model`` for requests of that size
    (inf: no known quota)."""
    rpm, tpm = quotas(endpoint, model)
    by_tokens = tpm / tokens_per_request if tpm is not None and tokens_per_request > 0 else math.inf
    return min(rpm if rpm is not None else math.inf, by_tokens)


def pool_estimate(
    models: Mapping[str, ModelEstimate],
    pool: Sequence[Endpoint],
    book_of: Callable[[Endpoint], PriceBook],
    *,
    via_batch: bool = False,
) -> PoolEstimate:
    """Split each model's requests (`batchrun._cost.estimate.ModelEstimate`) over the
    endpoints of ``pool`` serving it, and price each part with ``book_of(endpoint)``
    (``via_batch``: over its batch endpoints by weight, at batch prices)."""
    if via_batch:
        pool = [e for e in pool if e.batch]
    out = PoolEstimate(endpoints={e.name: EndpointShare(e.name) for e in pool}, via_batch=via_batch)
    no_quota: set[str] = set()
    for name, entry in models.items():
        serving = [e for e in pool if e.serves(name)] or list(pool)
        charged = entry.prompt_tokens + entry.completion_ceiling
        charged += UNBOUNDED_COMPLETION * entry.unbounded_requests
        per_request = charged / entry.requests if entry.requests else 0.0
        rates = {e.name: rate(e, name, per_request) for e in serving}
        unknown = [n for n, r in rates.items() if math.isinf(r)]
        no_quota.update(unknown)
        pooled = sum(rates.values())
        if via_batch or unknown or pooled <= 0:
            weights = {e.name: e.weight or 1.0 for e in serving}
            total = sum(weights.values())
            shares = {n: w / total for n, w in weights.items()}
            out.models[name] = ModelPace(entry.requests, None, None)
        else:
            shares = {n: r / pooled for n, r in rates.items()}
            by_requests = all(rates[e.name] == quotas(e, name)[0] for e in serving)
            limit = "rpm" if by_requests else "tpm"
            out.models[name] = ModelPace(entry.requests, pooled, entry.requests / pooled, limit)
        for endpoint in serving:
            share = out.endpoints[endpoint.name]
            part = shares[endpoint.name]
            share.rows += part * entry.requests
            known = rates[endpoint.name]
            share.requests_per_minute[name] = None if math.isinf(known) else known
            _add_cost(share, entry, endpoint, book_of(endpoint), part, via_batch=via_batch)
    out.no_quota = [] if via_batch else [e.name for e in pool if e.name in no_quota]
    return out


def _add_cost(
    share: EndpointShare,
    entry: ModelEstimate,
    endpoint: Endpoint,
    book: PriceBook,
    part: float,
    *,
    via_batch: bool = False,
) -> None:
    """Add ``part`` of ``entry``'s cost at the endpoint's prices to its share (its batch
    prices when it has them, as a run pays)."""
    price = book.price_for(endpoint.model_name(entry.model)) or book.price_for(entry.model)
    if price is None:
        share.unpriced.append(entry.model)
        return
    priced = replace(entry, price=price)
    low, high = priced.cost_low, priced.cost_high
    if via_batch and price.batch is not None:
        low, high = priced.batch_low, priced.batch_high
    share.cost_low = None if share.cost_low is None or low is None else share.cost_low + part * low
    share.cost_high = (
        None if share.cost_high is None or high is None else share.cost_high + part * high
    )


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 10)


__all__ = ["EndpointShare", "ModelPace", "PoolEstimate", "pool_estimate", "quotas", "rate"]
