"""What tokens cost: a price per model, and the bill for a run's usage.

Prices come from two offline sources. A user price file (TOML, ``--prices FILE`` or
the job file's ``[prices]`` table) wins; otherwise the price table bundled inside the
`genai-prices` wheel answers. batchrun never asks genai-prices to fetch fresh prices:
it builds its own snapshot from the bundled data, so no price lookup touches the
network. A model neither source knows has no price: its cost is reported as null and
the model is listed by name, never priced at 0.

    >>> book = PriceBook({"m": ModelPrice(input=1.0, output=2.0)}, use_genai_prices=False)
    >>> usage = Usage(prompt_tokens=1_000_000, completion_tokens=500_000)
    >>> cost_of(usage, book.price_for("m")).total
    2.0

Arithmetic (USD per million tokens):

- input = (prompt_tokens - cached_tokens) x input price
- cached_input = cached_tokens x cached-input price (the input price when the model
  has no cached-input price)
- output = completion_tokens x output price. OpenAI's ``completion_tokens`` already
  include ``reasoning_tokens``, so reasoning is billed as output and never counted
  twice. (The one exception genai-prices knows, a separate reasoning rate, is applied
  to the reasoning part when present.)
- batch API: the same usage at the model's Batch API prices, where it has them.

Tiered prices (e.g. Gemini 2.5 Pro charges more for every token of a request whose
prompt exceeds 200k tokens) are read from genai-prices and applied with its rule: a
request whose prompt tokens exceed a tier's start pays that tier's rates for all its
tokens. That rule needs *one request's* prompt size, so:

- `cost_of` prices one request and picks its tier exactly; `CostTotals` adds requests
  one by one and is therefore exact for tiered models too. Use it while running.
- `cost_report` on usage totals cannot know which requests crossed a tier, so it
  prices tiered models at their base tier and says so in a ``note`` on that model.

Time-of-day prices (DeepSeek's off-peak discount) are priced at the peak rate, with a
note: a run spans hours and a budget must hold at any hour. Dated price changes are
resolved at ``PriceBook(at=...)``, now by default.

We do the arithmetic ourselves from genai-prices' numbers rather than calling its
``calc_price`` for every request: it is exact (tests compare both), ten times faster,
and splits input from cached input, which ``calc_price`` sums together. Non-token
charges genai-prices knows for a few models (per-request fees, web searches, audio or
image tokens, cache writes) are not in chat-completions usage and are not billed here.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import cache
from typing import Any

from batchrun.errors import ConfigError
from batchrun.output.usage import Usage

GENAI_PRICES = "genai-prices"
USER_FILE = "user file"
PER_MILLION = 1_000_000
_DIGITS = 10  # rounding of reported USD: hides float noise, keeps sub-cent costs

# --------------------------------------------------------------------------- prices


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceTier:
    """Rates for a request whose prompt tokens exceed ``above`` (USD per million)."""

    above: int
    input: float
    output: float
    cached_input: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelPrice:
    """One model's prices in USD per million tokens.

    ``batch`` holds the same model's Batch API prices (None when it has none): a
    price file's ``batch_multiplier`` or explicit ``batch_*`` keys are resolved into
    it when the file is read. ``tiers`` (ascending) replace the base rates for
    requests with larger prompts. ``matched`` names the genai-prices entry used.

        >>> ModelPrice(input=2.5, output=10.0, cached_input=1.25).rates_for(1000).input
        2.5
    """

    input: float
    output: float
    cached_input: float | None = None
    source: str = USER_FILE
    batch: ModelPrice | None = None
    tiers: tuple[PriceTier, ...] = ()
    output_reasoning: float | None = None
    matched: str | None = None
    context_window: int | None = None
    note: str | None = None

    def rates_for(self, prompt_tokens: int) -> PriceTier:
        """The rates a request with this many prompt tokens pays."""
        for tier in reversed(self.tiers):
            if prompt_tokens > tier.above:
                return tier
        return PriceTier(
            above=0, input=self.input, output=self.output, cached_input=self.cached_input
        )

    def tier_index(self, prompt_tokens: int) -> int:
        """0 for the base rates, i for ``tiers[i - 1]``."""
        for index in range(len(self.tiers), 0, -1):
            if prompt_tokens > self.tiers[index - 1].above:
                return index
        return 0

    def base_tier(self) -> ModelPrice:
        """These prices with the tiers dropped (used when only totals are known)."""
        if not self.tiers and (self.batch is None or not self.batch.tiers):
            return self
        batch = self.batch.base_tier() if self.batch is not None else None
        return replace(self, tiers=(), batch=batch)


@dataclass(frozen=True, slots=True)
class CostBreakdown:
    """What some usage cost, in USD, and what it would have cost via the Batch API."""

    input: float = 0.0
    cached_input: float = 0.0
    output: float = 0.0
    batch: float | None = None

    @property
    def total(self) -> float:
        return self.input + self.cached_input + self.output

    def __add__(self, other: CostBreakdown) -> CostBreakdown:
        batch = None if self.batch is None or other.batch is None else self.batch + other.batch
        return CostBreakdown(
            self.input + other.input,
            self.cached_input + other.cached_input,
            self.output + other.output,
            batch,
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
    return replace(standard, batch=_standard_cost(usage, price.batch).total)


def worst_case_cost(
    model: str, prompt_tokens: int, completion_ceiling: int, book: PriceBook
) -> float | None:
    """Most a request can cost: every prompt token uncached, every allowed output token.

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
    usage = Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_ceiling)
    if price.output_reasoning is not None and price.output_reasoning > price.output:
        usage.reasoning_tokens = completion_ceiling  # all of it could be dearer reasoning
    return _standard_cost(usage, price).total


# ------------------------------------------------------------------------ price book


_DATE_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8})$")


def _name_candidates(model: str) -> list[str]:
    """The name, then without ``provider/`` prefixes, then without a date suffix."""
    names = [model]
    parts = model.split("/")
    names += ["/".join(parts[i:]) for i in range(1, len(parts))]
    names += [undated for name in list(names) if (undated := _DATE_SUFFIX.sub("", name)) != name]
    return names


class PriceBook:
    """Answers "what does this model cost?": user prices first, then genai-prices.

    Lookups are cached per model name. ``at`` fixes the date used to pick dated
    genai-prices entries (default: now), so tests and re-priced old runs agree.

        >>> book = PriceBook.load(None)
        >>> book.price_for("gpt-4o").source
        'genai-prices'
    """

    def __init__(
        self,
        user_prices: Mapping[str, ModelPrice] | None = None,
        *,
        use_genai_prices: bool = True,
        at: datetime | None = None,
    ) -> None:
        self.user_prices = dict(user_prices or {})
        self.use_genai_prices = use_genai_prices
        self.at = at
        self._cache: dict[str, ModelPrice | None] = {}

    @classmethod
    def load(
        cls,
        user_file: str | None = None,
        *,
        job_prices: Mapping[str, Any] | None = None,
        job_origin: str = "job file",
        at: datetime | None = None,
    ) -> PriceBook:
        """Read the user price file (and the job file's ``[prices]`` table).

        ``job_prices`` is the job file's parsed ``prices`` table, same shape as a price
        file; the ``--prices`` file wins over it for a model in both. Every problem in
        a file is reported at once in one `ConfigError`.
        """
        prices: dict[str, ModelPrice] = {}
        if job_prices is not None:
            prices.update(parse_price_table(job_prices, job_origin, key_prefix="prices."))
        if user_file is not None:
            prices.update(read_price_file(user_file))
        return cls(prices, at=at)

    def preload(self) -> None:
        """Load the genai-prices table now (~0.2-0.4 s) rather than at the first
        result, where it would stall the event loop with requests in flight."""
        if self.use_genai_prices:
            _snapshot()

    def price_for(self, model: str) -> ModelPrice | None:
        """The price of a model, or None when no source knows it."""
        try:
            return self._cache[model]
        except KeyError:
            pass
        price = self._lookup(model)
        self._cache[model] = price
        return price

    def _lookup(self, model: str) -> ModelPrice | None:
        for name in _name_candidates(model):
            if name in self.user_prices:
                return self.user_prices[name]
        if not self.use_genai_prices or not model:
            return None
        return _genai_price(model, self.at or datetime.now(tz=UTC))


# ------------------------------------------------------------- genai-prices adapter


@cache
def _snapshot() -> Any:
    """Our own snapshot of the wheel's bundled table.

    genai-prices' ``get_snapshot()`` returns a fetched snapshot once anyone in the
    process starts its ``UpdatePrices`` background task; building ours from the
    bundled ``data.providers`` keeps prices offline and reproducible regardless.
    """
    from genai_prices import data
    from genai_prices.data_snapshot import DataSnapshot

    return DataSnapshot(providers=data.providers, from_auto_update=False)


def _genai_price(model: str, at: datetime) -> ModelPrice | None:
    snapshot = _snapshot()
    attempts: list[tuple[str, str | None]] = [(model, None)]
    parts = model.split("/")
    for i in range(1, len(parts)):
        rest = "/".join(parts[i:])
        attempts += [(rest, parts[i - 1]), (rest, None)]
    for ref, provider_id in attempts:
        try:
            provider, info = snapshot.find_provider_model(ref, None, provider_id, None)
        except (LookupError, ValueError):
            continue
        price = _from_genai(info, f"{provider.id}:{info.id}", at)
        if price is not None:
            return price
    return None


def _peak_time(info: Any, at: datetime) -> datetime | None:
    """For time-of-day prices (DeepSeek's off-peak hours): the dearest time on ``at``'s day.

    A run's requests are spread over hours, and a budget must hold at any hour, so
    such models are priced at their peak rate (and say so) rather than at ``at``.
    """
    from genai_prices.types import TimeOfDateConstraint

    conditions = info.prices if isinstance(info.prices, list) else []
    boundaries = [
        moment
        for conditional in conditions
        if isinstance(conditional.constraint, TimeOfDateConstraint)
        for moment in (conditional.constraint.start_time, conditional.constraint.end_time)
    ]
    if not boundaries:
        return None
    day = at.astimezone(UTC)
    candidates = [day] + [
        day.replace(hour=t.hour, minute=t.minute, second=0, microsecond=0) for t in boundaries
    ]

    def dearness(moment: datetime) -> float:
        prices = info.get_prices(moment)
        return sum(
            float(getattr(prices, key, None) or 0)
            for key in ("input_mtok", "cache_read_mtok", "output_mtok")
            if not hasattr(getattr(prices, key, None), "tiers")
        )

    return max(candidates, key=dearness)


def _from_genai(info: Any, matched: str, at: datetime) -> ModelPrice | None:
    peak = _peak_time(info, at)
    if peak is not None:
        at = peak
    standard = _convert(info.get_prices(at), matched, info.context_window)
    if standard is None:
        return None
    if peak is not None:
        standard = replace(standard, note="time-of-day prices: priced at the peak rate")
    has_batch = any(
        variant.when == {"processing": "batch"}
        and (variant.constraint is None or variant.constraint.active(at))
        for variant in info.price_variants or ()
    )
    if not has_batch:
        return standard
    # genai-prices resolves the batch variant over the standard prices: a key the
    # variant omits (often the cached-input rate) keeps its standard value.
    batch = _convert(info.get_prices(at, {"processing": "batch"}), matched, info.context_window)
    return replace(standard, batch=batch)


def _convert(prices: Any, matched: str, context_window: int | None) -> ModelPrice | None:
    from genai_prices.types import TieredPrices

    raw = {
        "input": getattr(prices, "input_mtok", None),
        "cached_input": getattr(prices, "cache_read_mtok", None),
        "output": getattr(prices, "output_mtok", None),
    }
    if raw["input"] is None and raw["output"] is None:
        return None  # priced per request, per image, ...: not a token price
    starts = sorted({t.start for v in raw.values() if isinstance(v, TieredPrices) for t in v.tiers})

    def rate(value: Any, prompt_over: int | None) -> float | None:
        if value is None:
            return None
        if not isinstance(value, TieredPrices):
            return float(value)
        applicable = value.base
        if prompt_over is not None:
            for tier in value.tiers:  # ascending; the last one started applies
                if tier.start <= prompt_over:
                    applicable = tier.price
        return float(applicable)

    tiers = tuple(
        PriceTier(
            above=start,
            input=rate(raw["input"], start) or 0.0,
            output=rate(raw["output"], start) or 0.0,
            cached_input=rate(raw["cached_input"], start),
        )
        for start in starts
    )
    reasoning = getattr(prices, "output_reasoning_mtok", None)
    return ModelPrice(
        input=rate(raw["input"], None) or 0.0,
        output=rate(raw["output"], None) or 0.0,
        cached_input=rate(raw["cached_input"], None),
        source=GENAI_PRICES,
        tiers=tiers,
        output_reasoning=None if isinstance(reasoning, TieredPrices) else rate(reasoning, None),
        matched=matched,
        context_window=context_window,
    )


# ------------------------------------------------------------------- user price file

_PRICE_KEYS = ("input", "cached_input", "output")
_BATCH_KEYS = ("batch_input", "batch_cached_input", "batch_output")
_ALLOWED_KEYS = frozenset(_PRICE_KEYS + _BATCH_KEYS + ("batch_multiplier",))
_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else '"' + name.replace('"', '\\"') + '"'


def read_price_file(path: str) -> dict[str, ModelPrice]:
    """Parse a TOML price file into model prices; see ``jobs/prices.example.toml``."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read price file: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_price_table(data, path)


def parse_price_table(
    data: Mapping[str, Any], origin: str, *, key_prefix: str = ""
) -> dict[str, ModelPrice]:
    """Validate a parsed price table ``{"models": {name: {input, output, ...}}}``.

    Collects every problem (unknown key, negative or non-number price, missing input
    or output, conflicting batch keys) and raises them together, each with its key path.

        >>> parse_price_table({"models": {"m": {"input": 0, "output": 0}}}, "x.toml")["m"].output
        0.0
    """
    problems: list[str] = []
    prices: dict[str, ModelPrice] = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{origin}: {key_prefix or 'price table'} must be a table")
    for key in data:
        if key != "models":
            problems.append(f"{key_prefix}{_key(key)}: unknown key (expected [models.NAME] tables)")
    models = data.get("models", {})
    if not isinstance(models, Mapping):
        problems.append(f"{key_prefix}models: must be a table of models")
        models = {}
    for name, entry in models.items():
        where = f"{key_prefix}models.{_key(name)}"
        if not isinstance(entry, Mapping):
            problems.append(f"{where}: must be a table with input and output prices")
            continue
        price = _parse_model(entry, where, problems)
        if price is not None:
            prices[name] = price
    if problems:
        listed = "\n".join(f"  {origin}: {problem}" for problem in problems)
        count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
        raise ConfigError(f"{origin}: {count} in prices:\n{listed}")
    return prices


def _parse_model(entry: Mapping[str, Any], where: str, problems: list[str]) -> ModelPrice | None:
    before = len(problems)
    for key in entry:
        if key not in _ALLOWED_KEYS:
            allowed = ", ".join(sorted(_ALLOWED_KEYS))
            problems.append(f"{where}.{_key(key)}: unknown key (allowed: {allowed})")
    values: dict[str, float] = {}
    for key in sorted(_ALLOWED_KEYS & entry.keys()):
        value = entry[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{where}.{key}: must be a number, got {value!r}")
        elif not math.isfinite(value) or value < 0:
            problems.append(f"{where}.{key}: must be a finite number >= 0, got {value!r}")
        else:
            values[key] = float(value)
    for key in ("input", "output"):
        if key not in entry:
            problems.append(f"{where}: missing {key} (USD per million tokens)")
    batch_given = [key for key in _BATCH_KEYS if key in entry]
    if "batch_multiplier" in entry and batch_given:
        problems.append(f"{where}: give batch_multiplier or batch_* prices, not both")
    elif batch_given and not {"batch_input", "batch_output"} <= entry.keys():
        problems.append(f"{where}: batch prices need both batch_input and batch_output")
    if len(problems) > before:
        return None

    cached = values.get("cached_input")
    batch: ModelPrice | None = None
    if "batch_multiplier" in values:
        factor = values["batch_multiplier"]
        batch = ModelPrice(
            input=values["input"] * factor,
            output=values["output"] * factor,
            cached_input=None if cached is None else cached * factor,
        )
    elif "batch_input" in values:
        # same rule as genai-prices: no batch cached rate -> the standard cached rate
        batch = ModelPrice(
            input=values["batch_input"],
            output=values["batch_output"],
            cached_input=values.get("batch_cached_input", cached),
        )
    return ModelPrice(
        input=values["input"], output=values["output"], cached_input=cached, batch=batch
    )


# ---------------------------------------------------------------------- cost report


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

    def add(self, model: str, usage: Usage) -> CostBreakdown | None:
        """Price one request's usage; None (and the model remembered) when unpriced."""
        price = self.book.price_for(model)
        if price is None:
            self.unpriced[model] = self.unpriced.get(model, 0) + 1
            return None
        cost = cost_of(usage, price)
        previous = self.by_model.get(model)
        self.by_model[model] = cost if previous is None else previous + cost
        return cost

    @property
    def spent(self) -> float:
        """USD spent so far on priced models (for the budget cap)."""
        return sum(cost.total for cost in self.by_model.values())

    def report(self) -> dict[str, Any]:
        """The ``cost_usd`` and ``batch_api_cost_usd`` blocks of summary.json."""
        return _report(self.by_model, self.unpriced, self.book, tiered_from_totals=set())


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


def _usd(value: float) -> float:
    return round(value, _DIGITS)


def _report(
    costs: Mapping[str, CostBreakdown],
    unpriced: Iterable[str],
    book: PriceBook,
    tiered_from_totals: set[str],
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
        entry: dict[str, Any] = {
            "input": _usd(cost.input),
            "cached_input": _usd(cost.cached_input),
            "output": _usd(cost.output),
            "total": _usd(cost.total),
            "price_source": price.source if price else None,
        }
        if price is not None and price.matched:
            entry["priced_as"] = price.matched
        notes = [price.note] if price is not None and price.note else []
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
            batch_by_model[model] = _usd(cost.batch)
            batch_total += cost.batch
            standard_of_batched += cost.total
    for model in unpriced_names:
        by_model[model] = {"total": None, "reason": "no price known"}
        batch_by_model[model] = None
    nothing_priced = not costs and bool(unpriced_names)
    batched = len(costs) - len(without_batch)
    return {
        "cost_usd": {
            "total": None if nothing_priced else _usd(total.total),
            "input": None if nothing_priced else _usd(total.input),
            "cached_input": None if nothing_priced else _usd(total.cached_input),
            "output": None if nothing_priced else _usd(total.output),
            "complete": not unpriced_names,
            "by_model": by_model,
            "unpriced_models": unpriced_names,
        },
        "batch_api_cost_usd": {
            "total": _usd(batch_total) if batched else None,
            "standard_cost_of_same_models": _usd(standard_of_batched) if batched else None,
            "complete": not unpriced_names and not without_batch,
            "by_model": batch_by_model,
            "models_without_batch_price": sorted(without_batch + unpriced_names),
        },
    }


# ------------------------------------------------------------------------ text table


def align_table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Plain-text columns: the first left-aligned, the rest right-aligned (numbers).

    >>> align_table([("model", "cost"), ("m", "$1.00")])
    ['model   cost', 'm      $1.00']
    """
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


def format_usd(value: float | None) -> str:
    """``$1,234.56`` for large amounts, more decimals for small ones, ``-`` for None."""
    if value is None:
        return "-"
    if value >= 100:
        return f"${value:,.2f}"
    if value >= 0.01 or value == 0:
        return f"${value:.4f}"
    return f"${value:.6f}"


def format_cost_table(report: Mapping[str, Any]) -> str:
    """Plain-text table of a `cost_report`: model, input, cached, output, total, batch API.

    >>> price = ModelPrice(input=2.0, output=8.0, batch=ModelPrice(input=1.0, output=4.0))
    >>> book = PriceBook({"m": price}, use_genai_prices=False)
    >>> usage = {"m": Usage(prompt_tokens=10**6, completion_tokens=250_000), "x": Usage()}
    >>> print(format_cost_table(cost_report(usage, book)))
    model    input   cached   output     total  batch API
    m      $2.0000  $0.0000  $2.0000   $4.0000    $2.0000
    x            -        -        -  no price          -
    total  $2.0000  $0.0000  $2.0000   $4.0000    $2.0000
    incomplete: no price known for x (not in the total)
    """
    cost = report["cost_usd"]
    batch = report["batch_api_cost_usd"]
    header = ("model", "input", "cached", "output", "total", "batch API")
    rows: list[tuple[str, ...]] = []
    for model, entry in cost["by_model"].items():
        if entry.get("total") is None:
            rows.append((model, "-", "-", "-", "no price", "-"))
            continue
        rows.append(
            (
                model,
                format_usd(entry["input"]),
                format_usd(entry["cached_input"]),
                format_usd(entry["output"]),
                format_usd(entry["total"]),
                format_usd(batch["by_model"].get(model)),
            )
        )
    rows.append(
        (
            "total",
            format_usd(cost["input"]),
            format_usd(cost["cached_input"]),
            format_usd(cost["output"]),
            format_usd(cost["total"]),
            format_usd(batch["total"]),
        )
    )
    lines = align_table([header, *rows])
    if cost["unpriced_models"]:
        names = ", ".join(cost["unpriced_models"])
        lines.append(f"incomplete: no price known for {names} (not in the total)")
    no_batch = [m for m in batch["models_without_batch_price"] if m not in cost["unpriced_models"]]
    if batch["total"] is not None and no_batch:
        names = ", ".join(no_batch)
        lines.append(f"batch API total excludes models without batch prices: {names}")
    for model, entry in cost["by_model"].items():
        if "note" in entry:
            lines.append(f"{model}: {entry['note']}")
    return "\n".join(lines)
