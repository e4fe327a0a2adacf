"""What a run knows of itself while it goes, and the read-only view hooks get of it.

The engine (`batchrun._engine.lifecycle.Engine`) owns one `RunFacts`; whatever answers
the rows (a lane: request by request online, a shard in a provider's batch, a shard
on a cluster worker) fills it in: the counts, the tally of written lines, the quality
breaker's state, what is in flight, the pacing figures when there is client-side
pacing. Hooks never see the engine or a lane: they get a `RunState`, a window on the
facts whose every attribute is a property (as tenacity hands each strategy one
``RetryCallState``).

    facts = RunFacts(settings)
    state = RunState(facts, hooks)
    state.counts.pending, state.elapsed()
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from batchrun._output.breaker import QualityBreaker
from batchrun._output.summary import Counts
from batchrun._output.tally import Tally

if TYPE_CHECKING:
    from batchrun._engine.hooks import RunHooks
    from batchrun._output.quality import QualityCounts
    from batchrun._settings import Settings

__all__ = ["CountsView", "Pacing", "RunFacts", "RunState"]


class Pacing(Protocol):
    """Client-side pacing a hook may read (`batchrun._pacing.scheduler.Accounts`, or
    a cluster worker's leased one); a Batch API run has none."""

    @property
    def rate_limited(self) -> int: ...

    @property
    def concurrency_limit(self) -> int: ...

    def summary(self) -> dict[str, Any]: ...


@dataclass
class RunFacts:
    """A run's figures, filled in by the engine and its lane (never by a hook)."""

    settings: Settings
    counts: Counts = field(default_factory=Counts)
    tally: Tally = field(default_factory=Tally)
    breaker: QualityBreaker = field(default_factory=lambda: QualityBreaker(0.0))
    clock: Callable[[], float] = time.monotonic
    in_flight: int = 0
    """Requests on the wire now."""
    started: float = 0.0
    """``clock()`` when this process began sending (0: not yet)."""
    elapsed_before: float = 0.0
    """Seconds earlier processes of the run took."""
    stop_reason: str | None = None
    stop_note: str | None = None
    """Why the run stopped, in words, for summary.json (the budget, the breaker...)."""
    warnings: list[str] = field(default_factory=list)
    """What the hooks warned of before anything was sent."""
    max_tokens: int | None = None
    """max_tokens of the first request sent (0: none set), for quality messages."""
    pacing: Pacing | None = None

    def elapsed(self) -> float:
        """Seconds the run has taken, earlier processes included."""
        started = self.started
        return self.elapsed_before + (self.clock() - started if started else 0.0)


@dataclass(frozen=True, slots=True)
class CountsView:
    """Rows of the input by state, at one moment."""

    total: int
    succeeded: int
    failed: int
    invalid: int

    @property
    def pending(self) -> int:
        return max(0, self.total - self.succeeded - self.failed)


class RunState:
    """What a hook may read of a running run. Every attribute is a property: a hook
    cannot set one; the objects it returns (tally, quality counts) are the run's own
    and are read, never changed."""

    __slots__ = ("_facts", "_hooks")

    def __init__(self, facts: RunFacts, hooks: RunHooks) -> None:
        self._facts = facts
        self._hooks = hooks

    @property
    def settings(self) -> Settings:
        return self._facts.settings

    @property
    def run_dir(self) -> str:
        return str(self._facts.settings.out_dir)

    @property
    def counts(self) -> CountsView:
        c = self._facts.counts
        return CountsView(c.total, c.succeeded, c.failed, c.invalid)

    @property
    def tally(self) -> Tally:
        """Usage, retries, 429s and answer quality of every line written so far."""
        return self._facts.tally

    @property
    def judged_quality(self) -> QualityCounts:
        """The answers the quality breaker judges, by model and quality: every answer
        paid for under the run's request settings, earlier processes' included
        (`batchrun._output.breaker`)."""
        return self._facts.breaker.judged

    @property
    def in_flight(self) -> int:
        return self._facts.in_flight

    @property
    def started(self) -> float:
        return self._facts.started

    def elapsed(self) -> float:
        """Seconds the run has taken, earlier processes included."""
        return self._facts.elapsed()

    @property
    def stop_reason(self) -> str | None:
        return self._facts.stop_reason

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the hooks warned of before anything was sent (`RunHooks.before_send`)."""
        return tuple(self._facts.warnings)

    @property
    def max_tokens(self) -> int | None:
        """max_tokens of the first request sent (0: none set), for quality messages."""
        return self._facts.max_tokens

    @property
    def rate_limited(self) -> int:
        """429s this process has seen (0 without client-side pacing)."""
        pacing = self._facts.pacing
        return pacing.rate_limited if pacing is not None else 0

    @property
    def concurrency_limit(self) -> int:
        pacing = self._facts.pacing
        return pacing.concurrency_limit if pacing is not None else 0

    def pacing(self) -> dict[str, Any]:
        pacing = self._facts.pacing
        return pacing.summary() if pacing is not None else {}

    @property
    def figures(self) -> Mapping[str, Any]:
        """What the hooks report (`RunHooks.figures`), e.g. ``cost_usd``."""
        return self._hooks.figures(self)
