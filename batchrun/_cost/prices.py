"""What a model costs: a price per model, from a user price file or genai-prices.

Prices come from two offline sources. A user price file (TOML, ``--prices FILE``,
`batchrun._cost.pricefile`) wins; otherwise the price table bundled inside the
`genai-prices` wheel answers (`batchrun._cost.genai`). batchrun never asks genai-prices
to fetch fresh prices: it builds its own snapshot from the bundled data, so no price
lookup touches the network. A model neither source knows has no price: its cost is
reported as null and the model is listed by name, never priced at 0. What a run's
usage costs at these prices is `batchrun._cost.bill`.

    >>> book = PriceBook({"m": ModelPrice(input=1.0, output=2.0)}, use_genai_prices=False)
    >>> book.price_for("m").output
    2.0
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from batchrun._cost.price import GENAI_PRICES, INLINE, PER_MILLION, USER_FILE, ModelPrice, PriceTier

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
    def load(cls, user_prices: Any = None, *, at: datetime | None = None) -> PriceBook:
        """The book of a run's ``prices`` setting: a price file's path, or a
        `batchrun._settings.Prices` (file and/or inline entries), or that as run.json
        records it (every problem at once, in one ConfigError)."""
        from batchrun._cost.pricefile import user_prices as load_user_prices

        return cls(load_user_prices(user_prices), at=at)

    def preload(self) -> None:
        """Load the genai-prices table now (~0.2-0.4 s) rather than at the first
        result, where it would stall the event loop with requests in flight."""
        if self.use_genai_prices:
            from batchrun._cost.genai import snapshot

            snapshot()

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
        from batchrun._cost.genai import genai_price

        return genai_price(model, self.at or datetime.now(tz=UTC))


__all__ = [
    "GENAI_PRICES",
    "INLINE",
    "PER_MILLION",
    "USER_FILE",
    "ModelPrice",
    "PriceBook",
    "PriceTier",
]
