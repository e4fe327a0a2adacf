"""One model's price (USD per million tokens, with tiers and Batch API rates) and
where a price came from: the values the price file reader (`batchrun._cost.pricefile`),
the genai-prices snapshot (`batchrun._cost.genai`) and the price book
(`batchrun._cost.prices`) share, below all three.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

GENAI_PRICES = "genai-prices"
USER_FILE = "user file"
INLINE = "inline prices"
"""A price given in a job file's [prices.models] or Python's ``prices=``."""
PER_MILLION = 1_000_000


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

    def rates_for(self, prompt_tokens: int) -> PriceTier | ModelPrice:
        """The rates (``input``, ``output``, ``cached_input``) a request with this many
        prompt tokens pays: a tier's, else these prices' own (nothing built: this runs
        once or twice for every answer)."""
        for tier in reversed(self.tiers):
            if prompt_tokens > tier.above:
                return tier
        return self

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
