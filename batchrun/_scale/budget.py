"""``--max-cost`` for a whole cluster: one budget, held in reservations by workers.

A single process admits a request when ``spent + worst case in flight + this
request's worst case <= cap`` (`batchrun._cost.budget`). On a cluster the spent money
and the reservations live in one `BudgetBook` (in the quota actor); each worker holds
a *share* of the cap, drawn a few requests' worst case at a time, and admits its
requests against that share as one process does. A worker hands back, in one message,
what its written requests really cost and the reservations they held, so

    spent + every worker's share <= cap

always holds: the cluster never goes over the cap. When the money left is less than
a worker's next worst case, that worker waits while reservations elsewhere may
settle, and stops (`BudgetExceeded`) only when the money *spent* leaves no room: the
run ends within one worst-case request per worker of the cap.

    >>> book = BudgetBook(cap=1.0)
    >>> book.reserve("w1", amount=0.6, worst=0.2), book.reserve("w2", amount=0.6, worst=0.5)
    ((0.6, False), (0.0, False))
    >>> book.settle("w1", spent=0.1, released=0.6); book.reserve("w2", amount=0.6, worst=0.5)
    (0.6, False)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from batchrun._cost.bill import round_usd
from batchrun._cost.budget import BudgetAdmission, CostHooks, Reserving
from batchrun._engine.hooks import RunState
from batchrun._input.sources import ScanResult
from batchrun._models import Outcome, Request
from batchrun.errors import BudgetExceeded

CHUNK_REQUESTS = 8
"""A worker asks for this many worst cases at a time (fewer near the cap)."""
WAIT_SECONDS = 0.05
"""How often a worker with nothing in flight looks again for room freed elsewhere."""


class BudgetBook:
    """The cap, the money spent and each worker's share. Pure."""

    def __init__(self, cap: float, spent: float = 0.0) -> None:
        self.cap = cap
        self.spent = spent
        self.held: dict[str, float] = {}

    def reserve(self, worker: str, amount: float, worst: float) -> tuple[float, bool]:
        """Grant up to ``amount`` (never less than ``worst``, else nothing). The flag
        says no room will ever come: the money spent leaves less than ``worst``."""
        room = self.cap - self.spent - sum(self.held.values())
        if room >= worst:
            granted = max(worst, min(amount, room))
            self.held[worker] = self.held.get(worker, 0.0) + granted
            return granted, False
        return 0.0, self.spent + worst > self.cap

    def settle(self, worker: str, spent: float, released: float) -> None:
        """``spent``: what requests written since cost; ``released``: their reservations
        (and any share the worker no longer needs)."""
        self.spent += spent
        self.held[worker] = max(0.0, self.held.get(worker, 0.0) - released)

    def summary(self) -> dict[str, Any]:
        return {"max_cost_usd": self.cap, "spent_usd": round_usd(self.spent)}


Reserve = Callable[[float, float], Awaitable[tuple[float, bool]]]
Settle = Callable[[float, float], None]


class SharedBudget(Reserving):
    """A worker's admission against its share of the cluster's budget.

    ``reserve(amount, worst)`` asks the book for more (awaited: it happens once per
    `CHUNK_REQUESTS` requests); ``settle(spent, released)`` reports back (not awaited).
    """

    def __init__(self, cost: CostHooks, cap: float, reserve: Reserve, settle: Settle) -> None:
        super().__init__()
        self.local = BudgetAdmission(cost, cap)  # its worst case and its price checks
        self.cost = cost
        self.cap = cap
        self._reserve = reserve
        self._settle = settle
        self.share = 0.0
        """What this worker holds of the cap (reservations in flight included)."""
        self._reported = 0.0

    def before_send(self, state: RunState, scan: ScanResult) -> None:
        self.local.before_send(state, scan)

    def on_start(self, state: RunState) -> None:
        # earlier processes' spending is in the book already (the driver counted it)
        self._reported = self.cost.spent

    def worst_case(self, body: dict[str, Any]) -> float:
        return self.local.worst_case(body)

    def has_room(self, worst: float) -> bool:
        """Room in this worker's share (asking the book for more is `admit`'s)."""
        return self.share - sum(self.reserved.values()) >= worst

    async def wait_for_room(self, worst: float) -> None:
        """Ask the book for more of the cap; when none is free now, wait for this
        worker's requests in flight (or, with none, a while: others may free some)."""
        granted, hopeless = await self._reserve(worst * CHUNK_REQUESTS, worst)
        if granted > 0:
            self.share += granted
            return
        if hopeless:
            from batchrun._report.tables import format_usd

            raise BudgetExceeded(
                f"budget cap reached: the cluster spent {format_usd(self.cost.spent)} "
                f"here and more on other workers, of --max-cost {format_usd(self.cap)}; "
                f"the next request could cost up to {format_usd(worst)}. Only a higher "
                "--max-cost continues the run (finished rows are kept and not paid again)."
            )
        if self.reserved:
            await self._settled.wait()  # our own requests in flight will free some
        else:
            with anyio.move_on_after(WAIT_SECONDS):
                await self._settled.wait()

    def after_request(
        self, state: RunState, req: Request, tokens: int, body: dict[str, Any] | None
    ) -> None:
        if body is None:
            worst = self.reserved.pop(req.custom_id, None)
            if worst is not None:
                self._hand_back(worst)

    def on_written(self, state: RunState, batch: list[Outcome]) -> str | None:
        released = 0.0
        for outcome in batch:
            released += self.reserved.pop(outcome.custom_id, 0.0)
        self._hand_back(released)
        return None

    def _hand_back(self, released: float) -> None:
        """Report what was spent since the last report and give back ``released``;
        a share beyond what the requests in flight need goes back too."""
        spent = self.cost.spent - self._reported
        self._reported = self.cost.spent
        self.share -= released
        in_flight = sum(self.reserved.values())
        if not self.reserved:
            released += self.share
            self.share = 0.0
        elif self.share > 2 * in_flight:
            extra = self.share - in_flight
            released += extra
            self.share -= extra
        self._settle(spent, released)
        self._wake()

    def on_end(self, state: RunState, summary: dict[str, Any]) -> list[str] | None:
        self.reserved.clear()
        self._hand_back(0.0)
        return None

    def summary_extra(self, state: RunState) -> dict[str, Any]:
        return {"budget": {"max_cost_usd": self.cap, "spent_usd": round_usd(self.cost.spent)}}


__all__ = ["BudgetBook", "SharedBudget"]
