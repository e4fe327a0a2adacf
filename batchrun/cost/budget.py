"""Cost so far, in summary.json, and the ``--max-cost`` cap as an admission strategy.

`CostHooks` prices every flushed result (pricing.CostTotals, request by request) and
reports it: in summary.json, and as the live figure ``cost_usd`` other hooks read
(the progress display). `BudgetAdmission` is how a cap is kept: it admits a request
only if

    spent + worst case of everything in flight + worst case of this one <= cap

The worst case is every prompt token uncached plus the completion ceiling
(max_tokens x n; when a body sets none, the model's context window, else
`FALLBACK_CEILING`). When in-flight reservations are what blocks a request, it
waits for them to settle (their real cost is usually far below the worst case);
only when the spent money alone leaves no room does it stop the run (`BudgetExceeded`,
a `StopRun`), so a run stops within one request's worst case of the cap, never above.

    cost = CostHooks(settings)
    hooks = CompositeHooks(cost, BudgetAdmission(cost, cap=0.50))

Through the Batch API the same cap is kept per shard (`BatchBudget`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio

from batchrun.engine.hooks import RunHooks, RunState
from batchrun.errors import BudgetExceeded, ConfigError
from batchrun.input.sources import ScanResult
from batchrun.models import Outcome, Request
from batchrun.output.usage import FIELDS as USAGE_FIELDS
from batchrun.output.usage import Usage, model_of, usage_of
from batchrun.pacing.scheduler import Stopped
from batchrun.settings import Settings

if TYPE_CHECKING:
    from batchrun.cost.modelnames import ModelAdvice
    from batchrun.cost.prices import PriceBook

FALLBACK_CEILING = 16_384


class CostHooks(RunHooks):
    """What the run has cost so far (earlier processes included). Before sending, a
    model without a price that looks like a typo of a known one is a warning
    (`batchrun.cost.modelnames`; ``served``: asks the endpoint for its models)."""

    def __init__(
        self, settings: Settings, served: Callable[[], list[str] | None] | None = None
    ) -> None:
        from batchrun.cost.bill import CostTotals
        from batchrun.cost.modelnames import ModelAdvice
        from batchrun.cost.prices import PriceBook

        self.book = PriceBook.load(settings.prices)
        self.advice = ModelAdvice(self.book, served)
        self.capped = settings.max_cost is not None
        self.costs = CostTotals(self.book)
        self.saved = CostTotals(self.book)
        """What the reused answers (cache, in-run dedupe) would have cost."""

    @property
    def spent(self) -> float:
        return self.costs.spent

    def before_send(self, state: RunState, scan: ScanResult) -> list[str] | None:
        # under a cap an unpriced model is refused instead (BudgetAdmission)
        return None if self.capped else self.advice.warnings(scan.models)

    def on_start(self, state: RunState) -> None:
        from batchrun.cost.bill import CostTotals

        self.book.preload()
        # earlier processes of this run: priced from their per-model totals, the rows
        # answered through the Batch API at batch prices (a run that goes on online
        # after a batch part starts again from the files, so nothing counts twice);
        # reused answers (cache, in-run dedupe) are what was saved, never spent
        self.costs = CostTotals(self.book)
        self.saved = CostTotals(self.book)
        tally = state.tally
        batched = tally.batch_usage.by_model
        for model, usage in tally.usage.by_model.items():
            online = _minus(usage, batched.get(model))
            if online.total_tokens or online.prompt_tokens or online.completion_tokens:
                self.costs.add(model, online)
        for model, usage in batched.items():
            self.costs.add(model, usage, via_batch=True)
        for model, usage in tally.saved.by_model.items():
            self.saved.add(model, usage)

    def on_written(self, state: RunState, batch: list[Outcome]) -> str | None:
        for outcome in batch:
            if outcome.ok:
                usage = usage_of(outcome.body)
                if usage is not None:
                    if "reused" in outcome.extra:
                        self.saved.add(model_of(outcome.body), usage)
                    else:
                        via_batch = outcome.extra.get("via") == "batch"
                        self.costs.add(model_of(outcome.body), usage, via_batch=via_batch)
        return None

    def figures(self, state: RunState) -> dict[str, Any]:
        return {"cost_usd": self.spent}

    def summary_extra(self, state: RunState) -> dict[str, Any]:
        report = self.costs.report()
        if self.saved.by_model:
            report["saved_usd"] = round(self.saved.spent, 10)
        return report


def _minus(total: Usage, part: Usage | None) -> Usage:
    """``total`` less ``part`` (the usage of a model's rows that went online)."""
    if part is None:
        return total
    return Usage(*(getattr(total, name) - getattr(part, name) for name in USAGE_FIELDS))


def worst_case(body: dict[str, Any], book: PriceBook, *, via_batch: bool = False) -> float:
    """Most one request can cost (``via_batch``: through the Batch API); a body that
    sets no max tokens may use the model's whole context window."""
    from batchrun.cost.bill import worst_case_cost
    from batchrun.pacing.tokens import completion_ceiling, prompt_tokens

    model = str(body.get("model") or "unknown")
    price = book.price_for(model)
    if price is None:
        raise BudgetExceeded(
            f"--max-cost cannot be enforced: model {model!r} has no known price "
            "(add it to a --prices file)"
        )
    prompt = prompt_tokens(body)
    ceiling = completion_ceiling(body)
    if ceiling <= 0:
        window = getattr(price, "context_window", None)
        ceiling = max(1, window - prompt) if window else FALLBACK_CEILING
    return worst_case_cost(model, prompt, ceiling, book, via_batch=via_batch) or 0.0


def refuse_unpriced(models: Iterable[str], advice: ModelAdvice) -> None:
    """Under a cap every model needs a price: the ConfigError naming those without one,
    each with the known names it may have meant."""
    unpriced = advice.unpriced(models)
    if unpriced:
        from batchrun.cost.modelnames import ADVISED

        names = ", ".join(advice.described(m) for m in unpriced[:ADVISED])
        if len(unpriced) > ADVISED:
            names += f" and {len(unpriced) - ADVISED:,} more"
        from batchrun.cost.pricefile import ADD_A_PRICE

        raise ConfigError(
            f"--max-cost cannot be enforced: no known price for {names}; "
            f"{ADD_A_PRICE}, or run without --max-cost"
        )


def cap_reached(spent: float, cap: float, worst: float, *, how: str = "") -> str:
    """The message of a run the cap stops: what was spent, and what the next one needs."""
    from batchrun.report.tables import format_usd

    return (
        f"budget cap reached: spent {format_usd(spent)} of --max-cost {format_usd(cap)}; "
        f"the next request could cost up to {format_usd(worst)}{how}. Only a higher "
        "--max-cost continues the run (finished rows are kept and not paid again)."
    )


class BudgetAdmission(RunHooks):
    """Admit a request only while the cap leaves room for its worst case."""

    def __init__(self, cost: CostHooks, cap: float) -> None:
        self.cost = cost
        self.book = cost.book
        self.cap = cap
        self.reserved: dict[str, float] = {}
        self._settled = anyio.Event()
        self._stopped = False

    @property
    def spent(self) -> float:
        return self.cost.spent

    def before_send(self, state: RunState, scan: ScanResult) -> None:
        """Under a cap every model needs a price, known before the first send."""
        refuse_unpriced(scan.models, self.cost.advice)

    def worst_case(self, body: dict[str, Any]) -> float:
        return worst_case(body, self.book)

    async def admit(self, state: RunState, req: Request) -> None:
        worst = self.worst_case(req.body)
        while True:
            in_flight = sum(self.reserved.values())
            if self.spent + in_flight + worst <= self.cap:
                self.reserved[req.custom_id] = worst
                return
            if self._stopped:
                raise Stopped()  # the run stopped while this request waited for room
            if not self.reserved or self.spent + worst > self.cap:
                raise BudgetExceeded(cap_reached(self.spent, self.cap, worst))
            await self._settled.wait()

    def after_request(
        self, state: RunState, req: Request, tokens: int, body: dict[str, Any] | None
    ) -> None:
        # a success keeps its reservation until its cost is counted (on_written)
        if body is None and self.reserved.pop(req.custom_id, None) is not None:
            self._wake()

    def on_written(self, state: RunState, batch: list[Outcome]) -> str | None:
        for outcome in batch:
            self.reserved.pop(outcome.custom_id, None)
        self._wake()
        return None

    def on_stop(self, state: RunState, reason: str) -> None:
        self._stopped = True
        self._wake()

    def _wake(self) -> None:
        self._settled.set()
        self._settled = anyio.Event()

    def summary_extra(self, state: RunState) -> dict[str, Any]:
        return {"budget": {"max_cost_usd": self.cap, "spent_usd": round(self.spent, 6)}}


@dataclass
class BatchBudget:
    """``--max-cost`` through the Batch API, where a batch's cost is known only when it
    ends: a shard goes out only while

        spent + worst case of every open batch + worst case of this shard <= cap

    (`batchrun.batch.submit` plans shards within the room, records each shard's worst
    case in the step journal, and stops planning when a row does not fit). The worst
    case is `worst_case` at Batch API prices."""

    cap: float
    book: PriceBook
    spent: Callable[[], float]

    @classmethod
    def of(cls, settings: Settings, spent: Callable[[], float]) -> BatchBudget | None:
        if settings.max_cost is None:
            return None
        from batchrun.cost.prices import PriceBook

        return cls(settings.max_cost, PriceBook.load(settings.prices), spent)

    def worst_case(self, body: dict[str, Any]) -> float:
        return worst_case(body, self.book, via_batch=True)


def cost_hooks(
    settings: Settings, served: Callable[[], list[str] | None] | None = None
) -> list[RunHooks]:
    """The cost hook, and the budget's admission when a cap is set (``served``: the
    endpoint's model list, asked only for a model without a price)."""
    cost = CostHooks(settings, served)
    if settings.max_cost is None:
        return [cost]
    return [cost, BudgetAdmission(cost, settings.max_cost)]


__all__ = [
    "BatchBudget",
    "BudgetAdmission",
    "CostHooks",
    "cap_reached",
    "cost_hooks",
    "refuse_unpriced",
    "worst_case",
]
