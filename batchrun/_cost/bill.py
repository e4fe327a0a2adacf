"""The bill for a run's usage at known prices. Pure arithmetic (USD per million tokens):

- input = (prompt_tokens - cached_tokens) x input price
- cached_input = cached_tokens x cached-input price (the input price when the model
  has no cached-input price)
- output = completion_tokens x output price. OpenAI's ``completion_tokens`` already
  include ``reasoning_tokens``, so reasoning is billed as output and never counted
  twice. (The one exception genai-prices knows, a separate reasoning rate, is applied
  to the reasoning part when present.)
- batch API: the same usage at the model's Batch API prices, where it has them.

Tiered prices apply genai-prices' rule: a request whose prompt tokens exceed a tier's
start pays that tier's rates for all its tokens. That rule needs *one request's*
prompt size, so `cost_of` prices one request and picks its tier exactly, and
`CostTotals` adds requests one by one (exact for tiered models too: use it while
running), while `cost_report` on usage totals cannot know which requests crossed a
tier, prices tiered models at their base tier and says so in a ``note``.

We do the arithmetic ourselves from genai-prices' numbers rather than calling its
``calc_price`` for every request: it is exact (tests compare both), ten times faster,
and splits input from cached input, which ``calc_price`` sums together. Non-token
charges genai-prices knows for a few models (per-request fees, web searches, audio or
image tokens, cache writes) are not in chat-completions usage and are not billed here.

    >>> book = PriceBook({"m": ModelPrice(input=1.0, output=2.0)}, use_genai_prices=False)
    >>> usage = Usage(prompt_tokens=1_000_000, completion_tokens=500_000)
    >>> cost_of(usage, book.price_for("m")).total
    2.0
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from batchrun._cost.price import PER_MILLION, ModelPrice
from batchrun._cost.prices import PriceBook
from batchrun._output.usage import Usage

_DIGITS = 10  # rounding of reported USD: hides float noise, keeps sub-cent costs


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """What some usage cost, in USD, what it costs via the Batch API (``batch``), and,
    for usage paid at Batch API prices, what it would have cost online (``online``;
    None when it was paid at online prices: then it is ``total``)."""

    input: float = 0.0
    cached_input: float = 0.0
    output: float = 0.0
    batch: float | None = None
    online: float | None = None

    @property
    def total(self) -> float:
        return self.input + self.cached_input + self.output

    @property
    def at_online_prices(self) -> float:
        """What the same usage costs sent online (the standard prices)."""
        return self.total if self.online is None else self.online

    def __add__(self, other: CostBreakdown) -> CostBreakdown:
        batch = None if self.batch is None or other.batch is None else self.batch + other.batch
        online = None
        if self.online is not None or other.online is not None:
            online = self.at_online_prices + other.at_online_prices
        return CostBreakdown(
            self.input + other.input,
            self.cached_input + other.cached_input,
            self.output + other.output,
            batch,
            online,
        )


def _standard_cost(usage: Usage, price: ModelPrice) -> CostBreakdown:
    rates = price.rates_for(usage.prompt_tokens)
    cached = min(max(usage.cached_tokens, 0), usage.prompt_tokens)
    cached_rate = rates.input if rates.cached_input is None else rates.cached_input
    output = usage.completion_tokens * rates.output
    if price.output_reasoning is not None and usage.reasoning_tokens:
        reasoning = min(usage.reasoning_tokens, usage.completion_tokens)
        output += reasoning * (price.output_reasoning - rates.output)
    return CostBreakdown(
        input=(usage.prompt_tokens - cached) * rates.input / PER_MILLION,
        cached_input=cached * cached_rate / PER_MILLION,
        output=output / PER_MILLION,
    )


def cost_of(usage: Usage, price: ModelPrice) -> CostBreakdown:
    """Cost of one request's usage (its prompt size picks the tier).

    >>> cost_of(Usage(prompt_tokens=10, cached_tokens=4, completion_tokens=5),
    ...         ModelPrice(input=1e6, cached_input=5e5, output=2e6)).total
    18.0
    """
    standard = _standard_cost(usage, price)
    if price.batch is None:
        return standard
    # (built, not `dataclasses.replace`d: once per answer, and replace costs 5x more)
    return CostBreakdown(
        standard.input,
        standard.cached_input,
        standard.output,
        _standard_cost(usage, price.batch).total,
    )


def worst_case_cost(
    model: str,
    prompt_tokens: int,
    completion_ceiling: int,
    book: PriceBook,
    *,
    via_batch: bool = False,
) -> float | None:
    """Most a request can cost: every prompt token uncached, every allowed output token
    (``via_batch``: at the model's Batch API prices, its standard ones when it has none).

    For the ``--max-cost`` cap. None when the model has no known price. The caller
    supplies the completion ceiling (``tokens.completion_ceiling``); when a body sets
    no max tokens, the caller must choose one (e.g. the model's ``context_window``).

        >>> book = PriceBook({"m": ModelPrice(input=1.0, output=2.0)}, use_genai_prices=False)
        >>> worst_case_cost("m", 1_000_000, 1_000_000, book)
        3.0
    """
    price = book.price_for(model)
    if price is None:
        return None
    if via_batch and price.batch is not None:
        price = price.batch
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_ceiling)
    if price.output_reasoning is not None and price.output_reasoning > price.output:
        usage.reasoning_tokens = completion_ceiling  # all of it could be dearer reasoning
    return _standard_cost(usage, price).total


@dataclass
class CostTotals:
    """Cost of a run, added request by request (so tiered prices are exact).

    >>> book = PriceBook({"m": ModelPrice(input=1.0, output=2.0)}, use_genai_prices=False)
    >>> totals = CostTotals(book)
    >>> totals.add("m", Usage(prompt_tokens=1_000_000)).total
    1.0
    """

    book: PriceBook
    by_model: dict[str, CostBreakdown] = field(default_factory=dict)
    unpriced: dict[str, int] = field(default_factory=dict)
    """Models with no known price, and how many requests they served."""
    by_mode: dict[str, float] = field(default_factory=dict)
    """USD spent on rows sent online and on rows answered through the Batch API."""
    priced_as: dict[str, str] = field(default_factory=dict)
    """Models answers named that have no price -> the model asked for, whose price
    they were charged at."""

    def add(
        self,
        model: str,
        usage: Usage,
        *,
        via_batch: bool = False,
        asked: str | None = None,
        book: PriceBook | None = None,
    ) -> CostBreakdown | None:
        """Price one request's usage; None (and the model remembered) when unpriced.
        A row answered through the Batch API (``via_batch``) pays the model's batch
        prices (its standard ones when it has none). An answer naming a model with no
        price (``gpt-4o-mini-2024-07-18-ft``, a deployment's name) is priced as the
        model its request ``asked`` for, and the report says so. ``book``: the prices
        of the endpoint that answered (a pool's endpoint with its own), else the run's."""
        price = self.price_for(model, asked, book)
        if price is None:
            self.unpriced[model] = self.unpriced.get(model, 0) + 1
            return None
        cost = cost_of(usage, price)
        if via_batch and price.batch is not None:
            paid = _standard_cost(usage, price.batch)
            cost = replace(paid, batch=paid.total, online=cost.total)
        mode = "batch" if via_batch else "online"
        self.by_mode[mode] = self.by_mode.get(mode, 0.0) + cost.total
        previous = self.by_model.get(model)
        self.by_model[model] = cost if previous is None else previous + cost
        return cost

    def price_for(
        self, model: str, asked: str | None = None, book: PriceBook | None = None
    ) -> ModelPrice | None:
        """``model``'s price, else (remembered) the price of the model ``asked`` for
        (in ``book``, else the run's)."""
        book = book if book is not None else self.book
        price = book.price_for(model)
        if price is None and asked and asked != model:
            price = book.price_for(asked)
            if price is not None:
                self.priced_as.setdefault(model, asked)
        return price

    @property
    def spent(self) -> float:
        """USD spent so far on priced models (for the budget cap)."""
        return sum(cost.total for cost in self.by_model.values())

    def report(self) -> dict[str, Any]:
        """The ``cost_usd`` and ``batch_api_cost_usd`` blocks of summary.json; with rows
        answered through the Batch API, ``cost_usd.by_mode`` splits what was paid."""
        report = _report(
            self.by_model, self.unpriced, self.book, tiered_from_totals=set(), asked=self.priced_as
        )
        if self.by_mode.get("batch") is not None:
            report["cost_usd"]["by_mode"] = {
                mode: round_usd(self.by_mode.get(mode, 0.0)) for mode in ("online", "batch")
            }
        return report


def cost_report(by_model: Mapping[str, Usage], book: PriceBook) -> dict[str, Any]:
    """The summary.json cost blocks, from usage totals per model.

    ``cost_usd.total`` covers only the priced models. When any model has no known
    price, ``complete`` is false and ``unpriced_models`` names them (their entries say
    ``"total": null``); when no model could be priced at all, the total is null.
    Tiered models are priced at their base tier here (totals hide which requests
    crossed a tier) and carry a ``note``; `CostTotals` prices them exactly.

        >>> r = cost_report({"x": Usage(prompt_tokens=5)}, PriceBook(use_genai_prices=False))
        >>> r["cost_usd"]["total"], r["cost_usd"]["unpriced_models"]
        (None, ['x'])
    """
    costs: dict[str, CostBreakdown] = {}
    unpriced: dict[str, int] = {}
    tiered: set[str] = set()
    for model, usage in by_model.items():
        price = book.price_for(model)
        if price is None:
            unpriced[model] = 0
            continue
        if price.tiers:
            tiered.add(model)
        costs[model] = cost_of(usage, price.base_tier())
    return _report(costs, unpriced, book, tiered)


def cost_of_totals(
    by_model: Mapping[str, Usage], book: PriceBook, *, via_batch: bool = False
) -> tuple[float, list[str]]:
    """USD of usage totals per model, and the models with no known price (not in it).

    Priced as `cost_report` prices totals (a tiered model at its base tier) and, with
    ``via_batch``, at the Batch API prices `CostTotals.add` gives a row answered
    through the Batch API (a model's standard prices when it has none).

    >>> price = ModelPrice(input=1.0, output=2.0, batch=ModelPrice(input=0.5, output=1.0))
    >>> book = PriceBook({"m": price}, use_genai_prices=False)
    >>> usage = {"m": Usage(prompt_tokens=1_000_000), "x": Usage(prompt_tokens=1)}
    >>> cost_of_totals(usage, book), cost_of_totals(usage, book, via_batch=True)
    ((1.0, ['x']), (0.5, ['x']))
    """
    total = 0.0
    unpriced = []
    for model, usage in by_model.items():
        price = book.price_for(model)
        if price is None:
            unpriced.append(model)
            continue
        price = price.base_tier()
        if via_batch and price.batch is not None:
            price = price.batch
        total += _standard_cost(usage, price).total
    return total, sorted(unpriced)


def round_usd(value: float) -> float:
    """A USD figure as summary.json keeps it: float noise hidden, sub-cent costs kept
    (a spend of $0.000000134 must not be written as 0)."""
    return round(value, _DIGITS)


def _report(
    costs: Mapping[str, CostBreakdown],
    unpriced: Iterable[str],
    book: PriceBook,
    tiered_from_totals: set[str],
    asked: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    unpriced_names = sorted(unpriced)
    by_model: dict[str, Any] = {}
    batch_by_model: dict[str, Any] = {}
    total = CostBreakdown()  # its batch stays None: the batch figure is summed apart
    batch_total = 0.0
    standard_of_batched = 0.0
    without_batch: list[str] = []
    for model in sorted(costs):
        cost = costs[model]
        price = book.price_for(model)
        instead = (asked or {}).get(model) if price is None else None
        if instead is not None:
            price = book.price_for(instead)
        entry: dict[str, Any] = {
            "input": round_usd(cost.input),
            "cached_input": round_usd(cost.cached_input),
            "output": round_usd(cost.output),
            "total": round_usd(cost.total),
            "price_source": price.source if price else None,
        }
        if price is not None and price.matched:
            entry["priced_as"] = price.matched
        notes = [price.note] if price is not None and price.note else []
        if instead is not None:
            entry["asked_model"] = instead
            notes.append(
                f"no price known for {model!r}: priced as {instead!r}, the model asked for"
            )
        if model in tiered_from_totals:
            notes.append("tiered prices: priced at the base tier from usage totals")
        if notes:
            entry["note"] = "; ".join(notes)
        by_model[model] = entry
        total = total + replace(cost, batch=None)
        if cost.batch is None:
            without_batch.append(model)
            batch_by_model[model] = None
        else:
            batch_by_model[model] = round_usd(cost.batch)
            batch_total += cost.batch
            standard_of_batched += cost.at_online_prices
    for model in unpriced_names:
        by_model[model] = {"total": None, "reason": "no price known"}
        batch_by_model[model] = None
    nothing_priced = not costs and bool(unpriced_names)
    batched = len(costs) - len(without_batch)
    return {
        "cost_usd": {
            "total": None if nothing_priced else round_usd(total.total),
            "input": None if nothing_priced else round_usd(total.input),
            "cached_input": None if nothing_priced else round_usd(total.cached_input),
            "output": None if nothing_priced else round_usd(total.output),
            "complete": not unpriced_names,
            "by_model": by_model,
            "unpriced_models": unpriced_names,
        },
        "batch_api_cost_usd": {
            "total": round_usd(batch_total) if batched else None,
            "standard_cost_of_same_models": round_usd(standard_of_batched) if batched else None,
            "complete": not unpriced_names and not without_batch,
            "by_model": batch_by_model,
            "models_without_batch_price": sorted(without_batch + unpriced_names),
        },
    }


# ------------------------------------------------------------------------ text table


__all__ = [
    "CostBreakdown",
    "CostTotals",
    "cost_of",
    "cost_of_totals",
    "cost_report",
    "round_usd",
    "worst_case_cost",
]
