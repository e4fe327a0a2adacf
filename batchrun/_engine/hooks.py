"""Extension points of a run, each with its return contract.

A hook (the progress display, the cost and budget, results.parquet and the
evaluation, a user's own) is told what happens to a run and is given a `RunState`
(`batchrun._engine.state`): the run's figures, read-only, never the engine itself (as
tenacity hands each strategy one ``RetryCallState``). What a hook has to say back, it
returns; nothing is written onto the engine from outside. How several hooks combine
(`CompositeHooks`), per extension point:

* ``before_send`` -> warnings: concatenated (a ConfigError raised stops the run);
* ``admit``: each in turn (one may wait, or raise to stop);
* ``readmit`` -> bool: all must agree;
* ``on_written`` -> a reason to stop: the last non-None wins;
* ``on_end`` -> `Ending`: notes concatenated, summary keys merged in order (each
  hook sees the keys of the hooks before it); the engine writes summary.json once,
  after every hook's ``on_end``;
* ``summary_extra``, ``figures`` -> dicts: merged, a later key wins.

    class StopAfter(RunHooks):
        def on_written(self, state, batch):
            return "SIGINT" if state.counts.succeeded >= 10 else None
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from batchrun._engine.state import CountsView, RunState
from batchrun._output.summary import merge_summary

if TYPE_CHECKING:
    from batchrun._input.sources import ScanResult
    from batchrun._models import Outcome, Request


@dataclass
class Ending:
    """What a hook adds when a run ends (`RunHooks.on_end`)."""

    notes: list[str] = field(default_factory=list)
    """For the user (printed, and kept in the run's result)."""
    summary: dict[str, Any] = field(default_factory=dict)
    """Keys for summary.json (results.parquet's figures, the evaluation...)."""

    @classmethod
    def of(cls, returned: Ending | list[str] | None) -> Ending:
        """A hook's return value as an Ending (a list: notes only)."""
        if returned is None:
            return cls()
        if isinstance(returned, Ending):
            return returned
        return cls(notes=list(returned))


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
        (the budget) to stop the run, or `batchrun._pacing.scheduler.Stopped`."""

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

    def on_end(self, state: RunState, summary: dict[str, Any]) -> Ending | list[str] | None:
        """The run is over and every line is on disk; ``summary`` is what summary.json
        will say (read it, do not change it). Return what to add: notes for the user
        and keys for summary.json (`Ending`; a list is notes only). The engine writes
        summary.json once, after every hook's ``on_end``."""
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

    def on_end(self, state: RunState, summary: dict[str, Any]) -> Ending:
        """Each hook sees ``summary`` with the keys of the hooks before it merged in."""
        ending = Ending()
        for h in self.hooks:
            said = Ending.of(h.on_end(state, summary))
            ending.notes.extend(said.notes)
            if said.summary:
                merge_summary(summary, said.summary)
                merge_summary(ending.summary, said.summary)
        return ending

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


__all__ = ["CompositeHooks", "CountsView", "Ending", "RunHooks", "RunState"]
