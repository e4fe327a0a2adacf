"""The genai-prices adapter: its bundled price table, read offline, as `ModelPrice`s.

Tiered prices (e.g. Gemini 2.5 Pro charges more for every token of a request whose
prompt exceeds 200k tokens) are read with their tiers; time-of-day prices
(DeepSeek's off-peak discount) are taken at the peak rate, with a note: a run spans
hours and a budget must hold at any hour. Dated price changes are resolved at the
date asked for.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from functools import cache
from typing import Any

from batchrun._cost.price import GENAI_PRICES, ModelPrice, PriceTier


@cache
def snapshot() -> Any:
    """Our own snapshot of the wheel's bundled table.

    genai-prices' ``getsnapshot()`` returns a fetched snapshot once anyone in the
    process starts its ``UpdatePrices`` background task; building ours from the
    bundled ``data.providers`` keeps prices offline and reproducible regardless.
    """
    from genai_prices import data
    from genai_prices.data_snapshot import DataSnapshot

    return DataSnapshot(providers=data.providers, from_auto_update=False)


FALLBACK_PROVIDER = "openai"
"""The provider a bare name is looked up with when no provider claims it."""


def _entries(model: str) -> Iterator[tuple[Any, Any]]:
    """(provider, model info) of every genai-prices entry the name may mean: the name,
    then without ``provider/`` prefixes (with that provider, then any), then the bare
    name as an OpenAI model. genai-prices finds a bare name's provider by patterns
    (``gpt-*``, ``o1``...) that miss some of OpenAI's own models (its embedding models,
    ``chatgpt-4o-latest``); batchrun speaks OpenAI's API, so a name no provider claims
    is looked up in OpenAI's table last."""
    table = snapshot()
    attempts: list[tuple[str, str | None]] = [(model, None)]
    parts = model.split("/")
    for i in range(1, len(parts)):
        rest = "/".join(parts[i:])
        attempts += [(rest, parts[i - 1]), (rest, None)]
    attempts.append((parts[-1], FALLBACK_PROVIDER))
    for ref, provider_id in attempts:
        try:
            yield table.find_provider_model(ref, None, provider_id, None)
        except (LookupError, ValueError):
            continue


def genai_price(model: str, at: datetime) -> ModelPrice | None:
    for provider, info in _entries(model):
        price = _from_genai(info, f"{provider.id}:{info.id}", at)
        if price is not None:
            return price
    return None


def genai_context_window(model: str) -> int | None:
    """The model's context window in tokens, as genai-prices' table gives it (None:
    not in the table, or the entry says none).

    >>> genai_context_window("gpt-4o-mini"), genai_context_window("no-such-model")
    (128000, None)
    """
    for _provider, info in _entries(model):
        window = getattr(info, "context_window", None)
        if isinstance(window, int) and window > 0:
            return window
    return None


def model_names() -> list[str]:
    """Every model name the table knows (each provider's ids), for "did you mean"."""
    names: dict[str, None] = {}
    for provider in snapshot().providers:
        for info in provider.models:
            names.setdefault(info.id)
    return list(names)


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


__all__ = ["genai_context_window", "genai_price", "model_names", "snapshot"]
