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

Nothing paid for passes the cap uncounted: an answer naming a model with no price
(a fine-tune's, a deployment's, ``null``) is priced as the model asked for; a 200
that could not be read (not JSON, over --max-response-bytes) was probably billed and
counts at its request's worst case (`unread_usage`), and its one retry goes only if
the cap has room for another worst case at once (`BudgetAdmission.readmit`); an answer
without usage counts, for the cap, at its reservation.

    cost = CostHooks(settings)
    hooks = CompositeHooks(cost, BudgetAdmission(cost, cap=0.50))

Through the Batch API the same cap is kept per shard (`BatchBudget`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from batchrun._engine.hooks import RunHooks, RunState
from batchrun._input.sources import ScanResult
from batchrun._models import Outcome, Request
from batchrun._output.tally import UnreadBilled
from batchrun._output.usage import FIELDS as USAGE_FIELDS
from batchrun._output.usage import Usage, model_of, usage_of
from batchrun._pacing.scheduler import Stopped
from batchrun._settings import Settings
from batchrun._values import Endpoint
from batchrun.errors import BudgetExceeded, ConfigError

if TYPE_CHECKING:
    from batchrun._cost.bill import CostTotals
    from batchrun._cost.modelnames import ModelAdvice
    from batchrun._cost.prices import PriceBook

FALLBACK_CEILING = 16_384


class CostHooks(RunHooks):
    """What the run has cost so far (earlier processes included). Before sending, a
    model without a price that looks like a typo of a known one is a warning
    (`batchrun._cost.modelnames`; ``served``: asks the endpoint for its models)."""

    def __init__(
        self, settings: Settings, served: Callable[[], list[str] | None] | None = None
    ) -> None:
        from batchrun._cost.bill import CostTotals
        from batchrun._cost.modelnames import ModelAdvice
        from batchrun._cost.prices import PriceBook

        self.book = PriceBook.load(settings.prices)
        self.advice = ModelAdvice(self.book, served)
        self.capped = settings.max_cost is not None
        self.costs = CostTotals(self.book)
        self.saved = CostTotals(self.book)
        """What the reused answers (cache, in-run dedupe) would have cost."""
        self.unread = UnreadBilled()
        self.unread_usd = 0.0
        """Unreadable answers paid for, and what they were counted at (in `costs`)."""
        self.members = settings.pool() if settings.endpoints else []
        self.pool = [e.name for e in self.members]
        """A pool's endpoint names: each answer is priced at the prices of the
        endpoint that gave it (its own price file, else the run's)."""
        self.books = {
            e.name: PriceBook.load(e.prices)
            for e in settings.pool()
            if settings.endpoints and e.prices is not None
        }
        self.by_endpoint: dict[str, CostTotals] = {}

    @property
    def spent(self) -> float:
        return self.costs.spent

    def before_send(self, state: RunState, scan: ScanResult) -> list[str] | None:
        # under a cap an unpriced model is refused instead (BudgetAdmission)
        return None if self.capped else self.advice.warnings(scan.models)

    def on_start(self, state: RunState) -> None:
        from batchrun._cost.bill import CostTotals

        self.book.preload()
        # earlier processes of this run: priced from their per-model totals, the rows
        # answered through the Batch API at batch prices (a run that goes on online
        # after a batch part starts again from the files, so nothing counts twice);
        # reused answers (cache, in-run dedupe) are what was saved, never spent
        self.costs = CostTotals(self.book)
        self.saved = CostTotals(self.book)
        self.unread = UnreadBilled()
        self.unread_usd = 0.0
        tally = state.tally
        asked = tally.asked
        batched = tally.batch_usage.by_model
        self.by_endpoint = {}
        routed: dict[str, Usage] = {}
        routed_batch: dict[str, Usage] = {}
        for name, counted in tally.by_endpoint.items():
            for model, usage in counted.usage.by_model.items():
                # a pool's endpoint: what its Batch API answered at its batch prices
                in_batches = counted.batch_usage.by_model.get(model)
                online = _minus(usage, in_batches)
                if _some(online):
                    self._add_routed(name, model, online, asked.get(model))
                if in_batches is not None and _some(in_batches):
                    self._add_routed(name, model, in_batches, asked.get(model), via_batch=True)
                    routed_batch.setdefault(model, Usage()).add(in_batches)
                routed.setdefault(model, Usage()).add(online)
        for model, usage in tally.usage.by_model.items():
            # what no endpoint of a pool answered (one endpoint; a pool joined later)
            online = _minus(_minus(usage, batched.get(model)), routed.get(model))
            if _some(online):
                self.costs.add(model, online, asked=asked.get(model))
        for model, usage in batched.items():
            rest = _minus(usage, routed_batch.get(model))
            if _some(rest):
                self.costs.add(model, rest, via_batch=True, asked=asked.get(model))
        for model, usage in tally.saved.by_model.items():
            self.saved.add(model, usage, asked=asked.get(model))
        for model, unread in tally.unread.items():
            self._add_unread(model, unread)

    def on_written(self, state: RunState, batch: list[Outcome]) -> str | None:
        for outcome in batch:
            asked = outcome.asked_model
            unread = outcome.billed_unread
            if unread is not None and asked:
                one = UnreadBilled()
                one.add(unread)
                self._add_unread(asked, one)
            if outcome.ok:
                usage = usage_of(outcome.body)
                if usage is not None:
                    model = model_of(outcome.body, asked)
                    if outcome.reused is not None:
                        self.saved.add(model, usage, asked=asked)
                    elif outcome.route:
                        via_batch = outcome.via == "batch"
                        self._add_routed(
                            outcome.route[-1], model, usage, asked, via_batch=via_batch
                        )
                    else:
                        via_batch = outcome.via == "batch"
                        self.costs.add(model, usage, via_batch=via_batch, asked=asked)
        return None

    def worst_case(self, body: dict[str, Any]) -> float:
        """Most one request can cost: in a pool, on the dearest endpoint serving its
        model (each at its own prices, by its own name for the model when it has a
        price there), so ``--max-cost`` holds wherever the request goes."""
        if not self.members:
            return worst_case(body, self.book)
        return pool_worst_case(body, self.members, self.books, self.book)

    def _add_routed(
        self, name: str, model: str, usage: Usage, asked: str | None, *, via_batch: bool = False
    ) -> None:
        """An answer endpoint ``name`` of the pool gave (``via_batch``: in one of its
        batches): priced at its prices (batch ones), in the run's cost and its own."""
        from batchrun._cost.bill import CostTotals

        book = self.books.get(name)
        self.costs.add(model, usage, via_batch=via_batch, asked=asked, book=book)
        own = self.by_endpoint.get(name)
        if own is None:
            own = self.by_endpoint[name] = CostTotals(book if book is not None else self.book)
        own.add(model, usage, via_batch=via_batch, asked=asked)

    def _add_unread(self, model: str, unread: UnreadBilled) -> None:
        """Count unreadable answers paid for at their worst case, as ``model``."""
        usage = unread_usage(model, unread, self.book)
        cost = self.costs.add(model, usage)
        self.unread.add_totals(unread)
        if cost is not None:
            self.unread_usd += cost.total

    def figures(self, state: RunState) -> dict[str, Any]:
        return {"cost_usd": self.spent}

    def summary_extra(self, state: RunState) -> dict[str, Any]:
        from batchrun._cost.bill import round_usd

        report = self.costs.report()
        if self.pool:
            report["cost_usd"]["by_endpoint"] = {
                name: round_usd(self.by_endpoint[name].spent) if name in self.by_endpoint else 0.0
                for name in self.pool
            }
        if self.saved.by_model:
            report["saved_usd"] = round_usd(self.saved.spent)
        if self.unread.attempts:
            # in the totals above, at their worst case: what they really cost is unknown
            report["cost_usd"]["unreadable_answers"] = {
                "attempts": self.unread.attempts,
                "worst_case_usd": round_usd(self.unread_usd),
            }
        return report

    def on_end(self, state: RunState, summary: dict[str, Any]) -> list[str] | None:
        from batchrun._report.tables import format_usd

        notes = [
            f"answers name the model {model!r}, which has no known price: priced as "
            f"{asked!r}, the model asked for"
            for model, asked in sorted(self.costs.priced_as.items())
        ]
        if self.unread.attempts:
            notes.append(
                f"{self.unread.attempts:,} answers were paid for but could not be read "
                f"(errors.jsonl says which): the cost counts them at their worst case, "
                f"{format_usd(self.unread_usd)}"
            )
        return notes


def _some(usage: Usage) -> bool:
    """Whether ``usage`` holds any tokens (a part left after subtracting may not)."""
    return bool(usage.total_tokens or usage.prompt_tokens or usage.completion_tokens)


def _minus(total: Usage, part: Usage | None) -> Usage:
    """``total`` less ``part`` (the usage of a model's rows that went online)."""
    if part is None:
        return total
    return Usage(*(getattr(total, name) - getattr(part, name) for name in USAGE_FIELDS))


def pool_worst_case(
    body: dict[str, Any],
    members: Iterable[Endpoint],
    books: Mapping[str, PriceBook],
    book: PriceBook,
    *,
    via_batch: bool = False,
) -> float:
    """`worst_case` on the dearest of ``members`` serving the body's model, each at its
    own prices (``books`` by name, else ``book``) and by its own name for the model
    when it has a price there."""
    model = str(body.get("model") or "")
    most = 0.0
    for member in members:
        if not member.serves(model):
            continue
        own = books.get(member.name, book)
        remote = member.model_name(model)
        if remote != model and own.price_for(remote) is not None:
            most = max(most, worst_case({**body, "model": remote}, own, via_batch=via_batch))
        else:
            most = max(most, worst_case(body, own, via_batch=via_batch))
    return most


def worst_case(body: dict[str, Any], book: PriceBook, *, via_batch: bool = False) -> float:
    """Most one request can cost (``via_batch``: through the Batch API); a body that
    sets no max tokens may use the model's whole context window."""
    from batchrun._apis import EMBEDDINGS, api_of_body
    from batchrun._cost.bill import worst_case_cost
    from batchrun._pacing.tokens import completion_ceiling, prompt_tokens

    model = str(body.get("model") or "unknown")
    price = book.price_for(model)
    if price is None:
        raise BudgetExceeded(
            f"--max-cost cannot be enforced: model {model!r} has no known price "
            "(add it to a --prices file)"
        )
    api = api_of_body(body)
    prompt = prompt_tokens(body, api=api)
    ceiling = completion_ceiling(body, api=api)
    if ceiling <= 0 and api != EMBEDDINGS:  # an embeddings answer is vectors, not tokens
        window = getattr(price, "context_window", None)
        ceiling = max(1, window - prompt) if window else FALLBACK_CEILING
    return worst_case_cost(model, prompt, ceiling, book, via_batch=via_batch) or 0.0


def unread_usage(model: str, unread: UnreadBilled, book: PriceBook) -> Usage:
    """The worst case of answers paid for but unreadable: every prompt token and the
    completion ceiling their bodies set (the model's context window, else
    `FALLBACK_CEILING`, for a body that sets none), as ``worst_case`` counts them.

    >>> from batchrun._cost.prices import ModelPrice, PriceBook
    >>> book = PriceBook({"m": ModelPrice(input=1.0, output=2.0)}, use_genai_prices=False)
    >>> unread_usage("m", UnreadBilled(2, 20, 100), book).completion_tokens
    100
    """
    completion = unread.completion_tokens
    if unread.open_attempts:
        price = book.price_for(model)
        window = getattr(price, "context_window", None) if price is not None else None
        if window:
            completion += max(
                unread.open_attempts, unread.open_attempts * window - unread.open_prompt_tokens
            )
        else:
            completion += unread.open_attempts * FALLBACK_CEILING
    return Usage(
        prompt_tokens=unread.prompt_tokens,
        completion_tokens=completion,
        total_tokens=unread.prompt_tokens + completion,
    )


def refuse_unpriced(models: Iterable[str], advice: ModelAdvice) -> None:
    """Under a cap every model needs a price: the ConfigError naming those without one,
    each with the known names it may have meant."""
    unpriced = advice.unpriced(models)
    if unpriced:
        from batchrun._cost.modelnames import ADVISED

        names = ", ".join(advice.described(m) for m in unpriced[:ADVISED])
        if len(unpriced) > ADVISED:
            names += f" and {len(unpriced) - ADVISED:,} more"
        from batchrun._cost.pricefile import ADD_A_PRICE

        raise ConfigError(
            f"--max-cost cannot be enforced: no known price for {names}; "
            f"{ADD_A_PRICE}, or run without --max-cost"
        )


def cap_reached(spent: float, cap: float, worst: float, *, how: str = "") -> str:
    """The message of a run the cap stops: what was spent, and what the next one needs."""
    from batchrun._report.tables import format_usd

    return (
        f"budget cap reached: spent {format_usd(spent)} of --max-cost {format_usd(cap)}; "
        f"the next request could cost up to {format_usd(worst)}{how}. Only a higher "
        "--max-cost continues the run (finished rows are kept and not paid again)."
    )


class Reserving(RunHooks):
    """What every budget admission does the same way: requests in flight hold their
    worst case (`reserved`), a stop or a release wakes the requests waiting for room,
    and the retry of a paid answer takes another worst case only if there is room
    now. What room there is, is each admission's own (`has_room`)."""

    def __init__(self) -> None:
        self.reserved: dict[str, float] = {}
        """Worst cases held by requests in flight (a billed attempt's retry adds one)."""
        self._settled = anyio.Event()
        self._stopped = False

    def worst_case(self, body: dict[str, Any]) -> float:
        raise NotImplementedError

    def has_room(self, worst: float) -> bool:
        """Room for one more request that could cost ``worst``, beside those in flight."""
        raise NotImplementedError

    async def wait_for_room(self, worst: float) -> None:
        """Wait until there may be room for ``worst`` (requests in flight released some);
        `BudgetExceeded` when there never will be."""
        raise NotImplementedError

    async def admit(self, state: RunState, req: Request) -> None:
        """Send ``req`` once there is room for its worst case, which it then holds."""
        worst = self.worst_case(req.body)
        while True:
            if self.has_room(worst):
                self.reserved[req.custom_id] = worst
                return
            if self._stopped:
                raise Stopped()  # the run stopped while this request waited for room
            await self.wait_for_room(worst)

    def readmit(self, state: RunState, req: Request) -> bool:
        """The retry of an answer paid for holds another worst case, if there is room
        now: waiting for room while holding one could wait for ever (every request in
        flight may be such a retry)."""
        worst = self.worst_case(req.body)
        if not self.has_room(worst):
            return False
        self.reserved[req.custom_id] = self.reserved.get(req.custom_id, 0.0) + worst
        return True

    def on_stop(self, state: RunState, reason: str) -> None:
        self._stopped = True
        self._wake()

    def _wake(self) -> None:
        self._settled.set()
        self._settled = anyio.Event()


class BudgetAdmission(Reserving):
    """Admit a request only while the cap leaves room for its worst case."""

    def __init__(self, cost: CostHooks, cap: float) -> None:
        super().__init__()
        self.cost = cost
        self.book = cost.book
        self.cap = cap
        self.unmetered = 0.0
        self.unmetered_answers = 0
        """Answers that came without usage: counted, for the cap, at their reservation."""

    @property
    def spent(self) -> float:
        return self.cost.spent + self.unmetered

    def before_send(self, state: RunState, scan: ScanResult) -> None:
        """Under a cap every model needs a price, known before the first send."""
        refuse_unpriced(scan.models, self.cost.advice)

    def worst_case(self, body: dict[str, Any]) -> float:
        return self.cost.worst_case(body)

    def has_room(self, worst: float) -> bool:
        return self.spent + sum(self.reserved.values()) + worst <= self.cap

    async def wait_for_room(self, worst: float) -> None:
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
            held = self.reserved.pop(outcome.custom_id, None)
            if held is not None and outcome.answered_fresh and usage_of(outcome.body) is None:
                # no usage, no cost known: the cap counts what the answer could have cost
                self.unmetered += held
                self.unmetered_answers += 1
        self._wake()
        return None

    def on_end(self, state: RunState, summary: dict[str, Any]) -> list[str] | None:
        if not self.unmetered_answers:
            return None
        from batchrun._report.tables import format_usd

        return [
            f"--max-cost: {self.unmetered_answers:,} answers carried no usage; the cap "
            f"counted each at its worst case ({format_usd(self.unmetered)} in all)"
        ]

    def summary_extra(self, state: RunState) -> dict[str, Any]:
        from batchrun._cost.bill import round_usd

        budget: dict[str, Any] = {"max_cost_usd": self.cap, "spent_usd": round_usd(self.spent)}
        if self.unmetered_answers:
            budget["answers_without_usage"] = self.unmetered_answers
            budget["counted_at_worst_case_usd"] = round_usd(self.unmetered)
        return {"budget": budget}


@dataclass
class BatchBudget:
    """``--max-cost`` through the Batch API, where a batch's cost is known only when it
    ends: a shard goes out only while

        spent + worst case of every open batch + worst case of this shard <= cap

    (`batchrun._batch.submit` plans shards within the room, records each shard's worst
    case in the step journal, and stops planning when a row does not fit). The worst
    case is `worst_case` at Batch API prices; in a pool, on the dearest batch endpoint
    serving the model, at its own (`pool_worst_case`)."""

    cap: float
    book: PriceBook
    spent: Callable[[], float]
    members: tuple[Endpoint, ...] = ()
    """A pool's batch endpoints (empty: the run's one endpoint)."""
    books: Mapping[str, PriceBook] = field(default_factory=dict)

    @classmethod
    def of(cls, settings: Settings, spent: Callable[[], float]) -> BatchBudget | None:
        if settings.max_cost is None:
            return None
        from batchrun._cost.prices import PriceBook

        members = tuple(e for e in settings.pool() if e.batch) if settings.endpoints else ()
        books = {e.name: PriceBook.load(e.prices) for e in members if e.prices is not None}
        return cls(settings.max_cost, PriceBook.load(settings.prices), spent, members, books)

    def worst_case(self, body: dict[str, Any]) -> float:
        if not self.members:
            return worst_case(body, self.book, via_batch=True)
        return pool_worst_case(body, self.members, self.books, self.book, via_batch=True)


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
    "Reserving",
    "cap_reached",
    "cost_hooks",
    "refuse_unpriced",
    "worst_case",
]
