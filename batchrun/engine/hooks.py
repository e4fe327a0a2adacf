"""Extension points of a run, and the read-only state they see.

A hook (the progress display, the cost and budget, results.parquet and the
evaluation) is told what happens to a run and is given a `RunState`: the run's
figures, read-only, never the runner itself (as tenacity hands each strategy one
``RetryCallState``). What a hook has to say back, it returns: figures for the others
(`RunHooks.figures`, e.g. the cost so far), keys for summary.json, notes for the
user, a reason to stop. Nothing is written onto the runner from outside.

    class StopAfter(RunHooks):
        def on_written(self, state, batch):
            return "SIGINT" if state.counts.succeeded >= 10 else None
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchrun.engine.runner import Runner
    from batchrun.input.sources import ScanResult
    from batchrun.models import Outcome, Request
    from batchrun.output.quality import QualityCounts
    from batchrun.output.tally import Tally
    from batchrun.settings import Settings


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

    __slots__ = ("_runner",)

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    @property
    def settings(self) -> Settings:
        return self._runner.cfg

    @property
    def run_dir(self) -> str:
        return str(self._runner.cfg.out_dir)

    @property
    def counts(self) -> CountsView:
        c = self._runner.counts
        return CountsView(c.total, c.succeeded, c.failed, c.invalid)

    @property
    def tally(self) -> Tally:
        """Usage, retries, 429s and answer quality of every line written so far."""
        return self._runner.tally

    @property
    def judged_quality(self) -> QualityCounts:
        """The answers the quality breaker judges, by model and quality: every answer
        paid for under the run's request settings, earlier processes' included
        (`batchrun.output.breaker`)."""
        return self._runner.breaker.judged

    @property
    def in_flight(self) -> int:
        return self._runner.live.in_flight

    @property
    def started(self) -> float:
        return self._runner.live.started

    def elapsed(self) -> float:
        """Seconds the run has taken, earlier processes included."""
        return self._runner.elapsed()

    @property
    def stop_reason(self) -> str | None:
        return self._runner.stop_reason

    @property
    def warnings(self) -> tuple[str, ...]:
        """What the hooks warned of before anything was sent (`RunHooks.before_send`)."""
        return tuple(getattr(self._runner, "warnings", ()))

    @property
    def max_tokens(self) -> int | None:
        """max_tokens of the first request sent (0: none set), for quality messages."""
        return self._runner.max_tokens

    @property
    def rate_limited(self) -> int:
        """429s this process has seen."""
        return self._runner.accounts.rate_limited

    @property
    def concurrency_limit(self) -> int:
        return self._runner.accounts.concurrency_limit

    def pacing(self) -> dict[str, Any]:
        return self._runner.accounts.summary()

    @property
    def figures(self) -> Mapping[str, Any]:
        """What the hooks report (`RunHooks.figures`), e.g. ``cost_usd``."""
        return self._runner.hooks.figures(self)


class RunHooks:
    """Extension points; the default of each is to do nothing."""

    def before_send(self, state: RunState, scan: ScanResult) -> list[str] | None:
        """After the input was checked, before anything is sent: raise ConfigError
        for a mistake that would otherwise be found only after paying; return
        warnings for a likely one (`RunState.warnings`; the hooks' are concatenated)."""
        return None

    def on_start(self, state: RunState) -> None: ...

    async def admit(self, state: RunState, req: Request) -> None:
        """Before a request's first attempt; may wait, raise `batchrun.errors.StopRun`
        (the budget) to stop the run, or `batchrun.pacing.scheduler.Stopped`."""

    def readmit(self, state: RunState, req: Request) -> bool:
        """Before retrying an attempt that was probably paid for (a 200 that could not
        be read): whether it may be sent again, decided at once (a budget without room
        for another worst case says no, and the row fails with the answer it has)."""
        return True

    def after_request(
        self, state: RunState, req: Request, tokens: int, body: dict[str, Any] | None
    ) -> None:
        """A request is over (``body`` None: failed, or never sent after all). A failure
        whose attempts were paid for (`readmit`) is not told here: like an answer, it
        is settled when its line is written (`on_written`)."""

    def on_retry(self, state: RunState, exc: BaseException | None) -> None: ...

    def on_written(self, state: RunState, batch: list[Outcome]) -> str | None:
        """Lines were written and counted. Return a reason to stop the run, or None."""
        return None

    def on_stop(self, state: RunState, reason: str) -> None: ...

    def on_abort(self, state: RunState) -> None: ...

    def on_end(self, state: RunState, summary: dict[str, Any]) -> list[str] | None:
        """The run is over and summary.json written; ``summary`` may be completed in
        place (results.parquet, the evaluation). Return notes for the user."""
        return None

    def summary_extra(self, state: RunState) -> dict[str, Any]:
        """Keys for summary.json."""
        return {}

    def figures(self, state: RunState) -> dict[str, Any]:
        """Live figures other hooks may read through `RunState.figures`."""
        return {}


class CompositeHooks(RunHooks):
    """Several hooks in order (cost and budget, dataset output, progress)."""

    def __init__(self, *hooks: RunHooks) -> None:
        self.hooks = hooks

    def before_send(self, state: RunState, scan: ScanResult) -> list[str] | None:
        warnings: list[str] = []
        for h in self.hooks:
            warnings.extend(h.before_send(state, scan) or ())
        return warnings

    def on_start(self, state: RunState) -> None:
        for h in self.hooks:
            h.on_start(state)

    async def admit(self, state: RunState, req: Request) -> None:
        for h in self.hooks:
            await h.admit(state, req)

    def readmit(self, state: RunState, req: Request) -> bool:
        """Every hook must agree (the first that says no stops the asking)."""
        return all(h.readmit(state, req) for h in self.hooks)

    def after_request(
        self, state: RunState, req: Request, tokens: int, body: dict[str, Any] | None
    ) -> None:
        for h in self.hooks:
            h.after_request(state, req, tokens, body)

    def on_retry(self, state: RunState, exc: BaseException | None) -> None:
        for h in self.hooks:
            h.on_retry(state, exc)

    def on_written(self, state: RunState, batch: list[Outcome]) -> str | None:
        reason = None
        for h in self.hooks:
            reason = h.on_written(state, batch) or reason
        return reason

    def on_stop(self, state: RunState, reason: str) -> None:
        for h in self.hooks:
            h.on_stop(state, reason)

    def on_abort(self, state: RunState) -> None:
        for h in self.hooks:
            h.on_abort(state)

    def on_end(self, state: RunState, summary: dict[str, Any]) -> list[str] | None:
        notes: list[str] = []
        for h in self.hooks:
            notes.extend(h.on_end(state, summary) or ())
        return notes

    def summary_extra(self, state: RunState) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        for h in self.hooks:
            extra.update(h.summary_extra(state))
        return extra

    def figures(self, state: RunState) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for h in self.hooks:
            out.update(h.figures(state))
        return out


__all__ = ["CompositeHooks", "CountsView", "RunHooks", "RunState"]
