"""Dry run: what a job would send and what it could cost, without sending anything.

Counts, per model, the requests, their exact prompt tokens (the same tokenizer as the
TPM limiter, `batchrun._pacing.tokens.prompt_tokens`) and their completion-token ceiling
(``max_completion_tokens`` or ``max_tokens``, times ``n``). A request with no max
tokens has no ceiling: it is counted as *unbounded* and the high cost is reported as
unknown rather than guessed. When an earlier finished run is given
(`learn_from_run`), its average completion tokens per request give a typical case.

Cost range per model, from `batchrun._cost.bill` at `batchrun._cost.prices`:

- low  = prompt cost + typical completion cost (0 completion without a learned run)
- high = prompt cost + ceiling completion cost (null if any request is unbounded)

Both assume no cached-input discount, so a run with heavy prompt caching can cost
less than ``low``. Tiered prices are applied per request (by its prompt size).

`estimate_settings` adds the time the quota needs (``time``): with a pool of
endpoints, the time the pooled quota needs, and each endpoint's rows and cost at its
own prices (`batchrun._cost.pool`: rows split by each endpoint's share of the pooled
rate, as the routing sends them).

    >>> from batchrun._models import Request
    >>> book = PriceBook({"m": ModelPrice(input=1.0, output=2.0)}, use_genai_prices=False)
    >>> body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    >>> estimate([Request("r1", body, row=1)], book, None).models["m"].completion_ceiling
    10
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from batchrun._apis import APIS, EMBEDDINGS
from batchrun._cost.pool import PoolEstimate, pool_estimate
from batchrun._cost.price import ModelPrice
from batchrun._cost.prices import PriceBook
from batchrun._models import Request
from batchrun._output import lines
from batchrun._output.usage import model_of, usage_of
from batchrun._pacing.tokens import completion_ceiling, prompt_tokens
from batchrun._report.tables import align_table, format_usd
from batchrun._settings import Settings
from batchrun._values import Endpoint

UNKNOWN_MODEL = "unknown"


@dataclass(slots=True)
class _Bucket:
    """Requests of one model that pay the same tier's rates."""

    requests: int = 0
    prompt_tokens: int = 0
    ceiling_tokens: int = 0


@dataclass(slots=True)
class ModelEstimate:
    """What one model's requests hold and could cost."""

    model: str
    price: ModelPrice | None = None
    requests: int = 0
    prompt_tokens: int = 0
    completion_ceiling: int = 0
    """Sum of the ceilings of the bounded requests."""
    unbounded_requests: int = 0
    """Requests with no max tokens: their completion has no ceiling."""
    typical_completion_per_request: float | None = None
    buckets: dict[int, _Bucket] = field(default_factory=dict, repr=False)

    @property
    def typical_completion_tokens(self) -> float | None:
        if self.typical_completion_per_request is None:
            return None
        return self.typical_completion_per_request * self.requests

    def _cost(self, completion_of: Any, *, batch: bool = False) -> float | None:
        price = self.price
        if price is not None and batch:
            price = price.batch
        if price is None:
            return None
        total = 0.0
        for index, bucket in self.buckets.items():
            tiers = price.tiers
            rates = tiers[index - 1] if index and index <= len(tiers) else price.rates_for(0)
            completion = completion_of(bucket)
            total += (bucket.prompt_tokens * rates.input + completion * rates.output) / 1e6
        return total

    @property
    def prompt_cost(self) -> float | None:
        return self._cost(lambda bucket: 0)

    @property
    def cost_low(self) -> float | None:
        per_request = self.typical_completion_per_request or 0.0
        return self._cost(lambda bucket: bucket.requests * per_request)

    @property
    def cost_high(self) -> float | None:
        if self.unbounded_requests:
            return None
        return self._cost(lambda bucket: bucket.ceiling_tokens)

    @property
    def batch_low(self) -> float | None:
        """`cost_low` through the Batch API (None: the model has no batch price)."""
        per_request = self.typical_completion_per_request or 0.0
        return self._cost(lambda bucket: bucket.requests * per_request, batch=True)

    @property
    def batch_high(self) -> float | None:
        if self.unbounded_requests:
            return None
        return self._cost(lambda bucket: bucket.ceiling_tokens, batch=True)

    def to_dict(self) -> dict[str, Any]:
        typical = self.typical_completion_tokens
        data: dict[str, Any] = {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_ceiling_tokens": self.completion_ceiling,
            "unbounded_requests": self.unbounded_requests,
            "typical_completion_tokens": None if typical is None else round(typical),
            "cost_usd": {
                "prompt": _round(self.prompt_cost),
                "low": _round(self.cost_low),
                "high": _round(self.cost_high),
            },
            "price_source": None if self.price is None else self.price.source,
            "batch_api_cost_usd": {"low": _round(self.batch_low), "high": _round(self.batch_high)},
        }
        if self.price is None:
            data["cost_usd"]["reason"] = "no price known"
        elif self.unbounded_requests:
            data["cost_usd"]["reason"] = (
                f"{self.unbounded_requests} requests set no max_tokens: no upper bound"
            )
        return data


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 10)


@dataclass(slots=True)
class EstimateReport:
    """Per-model estimates of one job, plus what they add up to."""

    models: dict[str, ModelEstimate] = field(default_factory=dict)
    learned_from: str | None = None
    near_names: dict[str, list[str]] = field(default_factory=dict)
    """Unpriced model -> the known names it may have meant (a typo?)."""
    pool: PoolEstimate | None = None
    """The time the quota needs and each endpoint's rows and cost (`batchrun._cost.pool`);
    None: not asked (`estimate` alone)."""
    pooled: bool = False
    """The job declares a pool of endpoints (a table of them is shown)."""

    @property
    def requests(self) -> int:
        return sum(m.requests for m in self.models.values())

    @property
    def prompt_tokens(self) -> int:
        return sum(m.prompt_tokens for m in self.models.values())

    @property
    def completion_ceiling(self) -> int:
        return sum(m.completion_ceiling for m in self.models.values())

    @property
    def unbounded_requests(self) -> int:
        return sum(m.unbounded_requests for m in self.models.values())

    @property
    def unpriced_models(self) -> list[str]:
        return sorted(name for name, m in self.models.items() if m.price is None)

    def _sum(self, values: Iterable[float | None]) -> float | None:
        known = [v for v in values if v is not None]
        return sum(known) if known else None

    def to_dict(self) -> dict[str, Any]:
        """The estimate as JSON-ready data (``batchrun estimate --json``)."""
        models = self.models.values()
        high = (
            None
            if self.unbounded_requests
            else self._sum(m.cost_high for m in models if m.price is not None)
        )
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_ceiling_tokens": self.completion_ceiling,
            "unbounded_requests": self.unbounded_requests,
            "learned_from": self.learned_from,
            "cost_usd": {
                "low": _round(self._sum(m.cost_low for m in models)),
                "high": _round(high),
                "complete": not self.unpriced_models,
                "unpriced_models": self.unpriced_models,
                "did_you_mean": {m: n for m, n in self.near_names.items() if n},
            },
            "batch_api_cost_usd": self._batch_totals(),
            "by_model": {name: self.models[name].to_dict() for name in sorted(self.models)},
            "time": None if self.pool is None else self.pool.to_dict(),
        }

    def _batch_totals(self) -> dict[str, Any]:
        """The same range through the Batch API (``--batch-api``), for the models that
        have batch prices."""
        models = [m for m in self.models.values() if m.price is not None]
        priced = [m for m in models if m.price is not None and m.price.batch is not None]
        high = None if self.unbounded_requests else self._sum(m.batch_high for m in priced)
        return {
            "low": _round(self._sum(m.batch_low for m in priced)),
            "high": _round(high),
            "complete": len(priced) == len(models) and not self.unpriced_models,
            "models_without_batch_price": sorted(m.model for m in models if m not in priced),
        }


def estimate(
    requests: Iterable[Request],
    book: PriceBook,
    default_model: str | None,
    learned: Mapping[str, float] | None = None,
    *,
    learned_from: str | None = None,
) -> EstimateReport:
    """Count a job's requests per model and price the range; sends nothing.

    ``default_model`` is used for bodies without a ``model``. ``learned`` maps model
    names to average completion tokens per request (see `learn_from_run`); names are
    matched loosely (``provider/`` prefix and date suffix ignored), since a response
    names ``gpt-4o-2024-08-06`` where the request said ``gpt-4o``. ``learned_from``
    (the earlier run's directory) is only shown in the report.

        >>> estimate([], PriceBook(use_genai_prices=False), None).requests
        0
    """
    report = EstimateReport(learned_from=learned_from if learned else None)
    models = report.models
    for request in requests:
        body = request.body
        model = body.get("model")
        if not isinstance(model, str) or not model:
            model = default_model or UNKNOWN_MODEL
        entry = models.get(model)
        if entry is None:
            entry = models[model] = ModelEstimate(model, book.price_for(model))
            entry.typical_completion_per_request = _learned_for(model, learned)
        prompt = prompt_tokens(body, model, request.api)
        ceiling = completion_ceiling(body, api=request.api)
        entry.requests += 1
        entry.prompt_tokens += prompt
        if ceiling:
            entry.completion_ceiling += ceiling
        elif request.api != EMBEDDINGS:  # an embeddings answer has no tokens to bound
            entry.unbounded_requests += 1
        price = entry.price
        index = price.tier_index(prompt) if price is not None and price.tiers else 0
        bucket = entry.buckets.get(index)
        if bucket is None:
            bucket = entry.buckets[index] = _Bucket()
        bucket.requests += 1
        bucket.prompt_tokens += prompt
        bucket.ceiling_tokens += ceiling
    return report


_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")


def _canonical(model: str) -> str:
    return _DATE_SUFFIX.sub("", model.rsplit("/", 1)[-1]).lower()


def _learned_for(model: str, learned: Mapping[str, float] | None) -> float | None:
    if not learned:
        return None
    if model in learned:
        return learned[model]
    wanted = _canonical(model)
    for name, average in learned.items():
        if _canonical(name) == wanted:
            return average
    return None


def learn_from_run(run_dir: str) -> dict[str, float]:
    """Average completion tokens per request, per model, from a run's results.jsonl.

    Streams the file; torn or foreign lines and responses without usage are skipped.
    Models are named as the responses name them. Missing file: an empty dict.

        >>> learn_from_run("/nonexistent")
        {}
    """
    path = os.path.join(run_dir, "results.jsonl")
    sums: dict[str, list[int]] = {}
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return {}
    with handle:
        for line in handle:
            try:
                answer = lines.decode(line)
            except ValueError:
                continue
            if not answer.ok:
                continue
            body = answer.body
            usage = usage_of(body)
            if usage is None:
                continue
            counts = sums.setdefault(model_of(body), [0, 0])
            counts[0] += 1
            counts[1] += usage.completion_tokens
    return {model: total / n for model, (n, total) in sorted(sums.items())}


def format_estimate(report: EstimateReport) -> str:
    """Terminal table of an estimate: one row per model, then the totals and caveats."""
    header = ("model", "requests", "prompt tok", "ceiling tok", "typical tok", "low", "high")
    rows: list[tuple[str, ...]] = []
    for name in sorted(report.models):
        m = report.models[name]
        typical = m.typical_completion_tokens
        high = "unbounded" if m.unbounded_requests else format_usd(m.cost_high)
        rows.append(
            (
                name,
                f"{m.requests:,}",
                f"{m.prompt_tokens:,}",
                f"{m.completion_ceiling:,}" + ("+" if m.unbounded_requests else ""),
                "-" if typical is None else f"{round(typical):,}",
                "no price" if m.price is None else format_usd(m.cost_low),
                "no price" if m.price is None else high,
            )
        )
    data = report.to_dict()
    rows.append(
        (
            "total",
            f"{report.requests:,}",
            f"{report.prompt_tokens:,}",
            f"{report.completion_ceiling:,}" + ("+" if report.unbounded_requests else ""),
            "",
            format_usd(data["cost_usd"]["low"]),
            "unbounded" if report.unbounded_requests else format_usd(data["cost_usd"]["high"]),
        )
    )
    lines = align_table([header, *rows])
    if report.unbounded_requests:
        lines.append(
            f"{report.unbounded_requests:,} requests set no max_tokens/max_completion_tokens "
            "(Responses: max_output_tokens): their output, and so the high cost, has no "
            "upper bound"
        )
    if report.unpriced_models:
        from batchrun._cost.modelnames import did_you_mean

        named = [
            f"{m} ({did_you_mean(report.near_names[m])})" if report.near_names.get(m) else m
            for m in report.unpriced_models
        ]
        lines.append(
            "incomplete: no price known for "
            + ", ".join(named)
            + " (not in the totals; add them to a --prices file)"
        )
    if report.learned_from:
        lines.append(f"typical case learned from {report.learned_from}")
    else:
        lines.append("low assumes 0 completion tokens (no earlier run to learn from)")
    batch = data["batch_api_cost_usd"]
    if batch["low"] is not None:
        high = "unbounded" if report.unbounded_requests else format_usd(batch["high"])
        line = f"through the Batch API (--batch-api): {format_usd(batch['low'])} to {high}"
        if batch["models_without_batch_price"]:
            line += " (without " + ", ".join(batch["models_without_batch_price"]) + ")"
        lines.append(line)
    lines.append("costs assume no cached-input discount")
    if report.pool is not None:
        lines.extend(_pool_lines(report.pool, pooled=report.pooled))
    return "\n".join(lines)


def _pool_lines(pool: PoolEstimate, *, pooled: bool) -> list[str]:
    """The time at the quota, and with a pool one row per endpoint."""
    out: list[str] = []
    minutes = pool.minutes
    if pool.via_batch:
        out.append(
            "through the Batch APIs of the batch = true endpoints: rows split by weight, "
            "at their batch prices (each batch within 24 h)"
        )
    elif minutes is not None:
        rates = ", ".join(
            f"{name} {pace.requests_per_minute:,.0f}/min ({pace.limited_by})"
            for name, pace in sorted(pool.models.items())
            if pace.requests_per_minute is not None
        )
        where = "the pooled quota" if pooled else "the quota"
        out.append(f"time at {where}: {format_minutes(minutes)} ({rates})")
    elif pooled:
        out.append(
            "time at the pooled quota: unknown: no quota known for "
            + ", ".join(pool.no_quota)
            + " (give it rpm or tpm)"
        )
    if not pooled:
        return out
    header = ("endpoint", "rows", "share", "low", "high")
    total = sum(e.rows for e in pool.endpoints.values()) or 1.0
    rows = [
        (
            name,
            f"{share.rows:,.0f}",
            f"{share.rows / total:.0%}",
            format_usd(share.cost_low),
            format_usd(share.cost_high) if share.cost_high is not None else "unbounded",
        )
        for name, share in pool.endpoints.items()
    ]
    out.extend(align_table([header, *rows]))
    out.extend(
        f"{name}: no price known for {', '.join(sorted(set(share.unpriced)))} at this endpoint"
        for name, share in pool.endpoints.items()
        if share.unpriced
    )
    return out


def format_minutes(minutes: float) -> str:
    """A duration for people: ``45 s``, ``12.5 min``, ``3.2 h``.

    >>> format_minutes(0.75), format_minutes(12.5), format_minutes(192)
    ('45 s', '12.5 min', '3.2 h')
    """
    if minutes < 1:
        return f"{minutes * 60:.0f} s"
    if minutes < 120:
        return f"{minutes:.1f} min"
    return f"{minutes / 60:.1f} h"


def estimate_settings(settings: Settings) -> EstimateReport:
    """The estimate of a run's settings: its input checked exactly as a run would (bad
    rows and duplicate ids are reported), every request counted and priced; typical
    answer lengths learned from ``out_dir`` when it holds an earlier run. A cascade is
    estimated at its most: every row sent to every one of its models."""
    from batchrun._input.select import source_for

    if settings.cascade is not None:
        # a cascade at its most: every row escalated to every model (each row once per
        # model, as a comparison of the models is counted)
        settings = replace(
            settings,
            cascade=None,
            model=settings.cascade.models,
            confidence=settings.judged_by(),
        )
    book = PriceBook.load(settings.prices)
    source = source_for(settings)
    to_send = _what_a_run_sends(settings, source)
    out_dir = settings.out_dir
    learned = learn_from_run(out_dir) if out_dir else {}
    report = estimate(
        to_send,
        book,
        settings.default_model,
        learned,
        learned_from=out_dir if learned else None,
    )
    from batchrun._cost.modelnames import ADVISED, ModelAdvice

    advice = ModelAdvice(book)  # the price table's names: an estimate asks no endpoint
    report.near_names = {m: advice.nearest(m) for m in report.unpriced_models[:ADVISED]}
    books: dict[str, PriceBook] = {}

    def book_of(endpoint: Endpoint) -> PriceBook:
        if endpoint.prices is None:
            return book
        known = books.get(endpoint.name)
        if known is None:
            known = books[endpoint.name] = PriceBook.load(endpoint.prices)
        return known

    via_batch = settings.mode == "batch" and bool(settings.endpoints)
    report.pool = pool_estimate(report.models, settings.pool(), book_of, via_batch=via_batch)
    report.pooled = bool(settings.endpoints)
    return report


def _what_a_run_sends(settings: Settings, source: Any) -> Iterator[Request]:
    """The requests a run of these settings pays for: a pilot's rows only, and one of
    each group of identical requests (in-run dedupe, by the cache policy). Checks the
    input as a run would."""
    from batchrun._cache.dedup import RequestGroups
    from batchrun._cache.store import api_scope, cacheable, scoped_key
    from batchrun._input.pilot import PilotPicker

    picker = None
    if settings.is_pilot:
        picker = PilotPicker(
            limit=settings.limit,
            sample=None if settings.limit is not None else settings.sample,
            seed=settings.seed,
        )
    policy = settings.cache_policy
    groups = RequestGroups() if settings.dedupe and policy != "off" else None
    endpoint = settings.base_url.rstrip("/") + "/chat/completions"
    scopes = {api: api_scope(endpoint, api) for api in APIS}

    def observe(req: Request, payload: bytes) -> None:
        if picker is not None:
            picker.observe(req, payload)
        if groups is not None:
            if cacheable(req.body, policy, req.api):  # type: ignore[arg-type]
                groups.add(scoped_key(scopes[req.api], payload))
            else:
                groups.add_unique()

    source.scan(observe=observe, keep_bodies=False)
    selection = picker.finish() if picker is not None else None
    plan = groups.finish() if groups is not None else None
    paid: set[int] = set()  # groups already paid for (by their leader's index)
    for index, req in enumerate(source.requests()):
        if selection is not None and not selection.wants(req):
            continue
        if plan is not None and plan.followers:
            leader = plan.leader_of(index)
            group = index if leader is None else leader
            if group in paid:
                continue  # answered by the request sent for its group
            if leader is not None or plan.followers_of(index):
                paid.add(group)
        yield req
