"""One run's life, the same for every way its rows get answered.

`Engine.run` takes the run directory (one writer: `batchrun._runfiles.taken`),
lets its *lane* check the input and adopt what the directory holds (a run refused
there leaves no directory it made), has the lane answer the rows until none is left
or something stops it, then ends: the status and exit code from the stop reason and
the counts (`batchrun._engine.stops`), the lane's closing notes, the hooks' ``on_end``
(their summary keys merged in), summary.json written once, the `RunResult`. Signals
(SIGINT, SIGTERM) are watched while it goes: the first stops sending (what is in
flight may finish), a second SIGINT leaves at once.

A lane is how a request gets answered:

* online (`batchrun._engine.online.OnlineLane`): one HTTP call each, paced per model;
* through a provider's Batch API (`batchrun._batch.lane.BatchLane`): shards of rows in
  batches, polled, their files taken in;
* on a Ray cluster (`batchrun._scale.lane.RayLane`): shards run by workers, each
  an online run of its own, added up.

A Batch API run that reaches its ``--deadline`` (or an online rerun that first takes
in what open batches finished) hands the rows left to an online engine under the same
lock (``then``): no other process can take the directory in between.

    engine = Engine(settings, lane, hooks=hooks)
    result = await engine.run()       # RunResult(exit_code, status, summary, ...)
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import anyio
import anyio.abc
import anyio.from_thread
import anyio.lowlevel

from batchrun._engine.hooks import Ending, RunHooks
from batchrun._engine.signals import run_watched
from batchrun._engine.state import RunFacts, RunState
from batchrun._engine.stops import (
    EXIT_SIGINT,
    INTERRUPTED_NOTE,
    RunResult,
    StopReason,
    exit_code,
    final_status,
)
from batchrun._redact import scrub_text
from batchrun._runfiles import RunDirLock, removed_if_refused, taken
from batchrun._settings import Settings
from batchrun._templating.rowwatch import Interrupted
from batchrun.errors import ConfigError, RunDirError

__all__ = ["Engine", "Lane"]

Sleep = Callable[[float], Awaitable[None]]


class Lane(Protocol):
    """How a run's rows get answered (see the module docstring). Every method is
    called by the `Engine`, in the order listed; ``run`` is that engine."""

    pilot: bool
    """Only part of the input is asked for: rows left make the run ``partial``."""
    cancel_only: bool
    """``batchrun cancel``: leaving rows pending is what was asked (exit 0)."""
    handing_over: bool
    """The rows left go to an online engine on the same directory (``Engine.then``)."""

    async def prepare(self, run: Engine) -> None:
        """Check the input and adopt what the run directory holds (nothing is sent);
        raise to refuse the run, `Interrupted` on a stop."""

    async def answer(self, run: Engine) -> None:
        """Answer rows until none is left or the run stops (`Engine.stopping`)."""

    def stop(self) -> None:
        """Stop sending at once (the engine has recorded why)."""

    def drain(self, run: Engine) -> None:
        """A first Ctrl-C: what is in flight may finish (within ``drain_timeout``)."""

    def abandon(self) -> None:
        """A second Ctrl-C in a library: cut the drain short, return at once."""

    async def close_transport(self) -> None:
        """Close the connections (shielded from cancellation)."""

    def closing_notes(self) -> list[str]:
        """What the user should know now the lane is done (rows left, batches on)."""

    def summary(self, status: str) -> dict[str, Any]:
        """summary.json as the lane's counts make it."""

    def save(self, summary: dict[str, Any]) -> None:
        """Write summary.json (every line it counts on disk first)."""

    def close(self) -> None:
        """Release files, caches and indexes."""

    def after_run(self) -> None:
        """The run is over and its lock still held: raise to refuse what comes next
        (an online resume while batches still run at the provider)."""


class Engine:
    """A run: its settings, hooks, lane and figures (see the module docstring).

    ``second_signal``: what a second Ctrl-C does, ``"exit"`` the process at once (the
    command line) or ``"cancel"`` the drain and return (a library: a notebook kernel
    must not die). ``held_lock``: the caller holds the directory already (a Batch API
    run handing over). ``then``: the online engine a handing-over lane's rows go to.
    """

    def __init__(
        self,
        settings: Settings,
        lane: Lane,
        *,
        hooks: RunHooks | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = anyio.sleep,
        wall_clock: Callable[[], float] = time.time,
        handle_signals: bool = False,
        held_lock: RunDirLock | None = None,
        then: Callable[[RunDirLock], Engine] | None = None,
    ) -> None:
        if not settings.out_dir:
            raise ConfigError("no run directory given (-o DIR)")
        self.cfg = settings
        self.run_dir: str = settings.out_dir
        self.lane = lane
        self.hooks = hooks or RunHooks()
        self.clock = clock
        self.sleep = sleep
        self.wall_clock = wall_clock
        """Unix time, for the finish time each line records (the run's time series)."""
        self.handle_signals = handle_signals
        self.held_lock = held_lock
        self.then = then
        self.second_signal = "exit"
        self.facts = RunFacts(settings, clock=clock)
        self.state = RunState(self.facts, self.hooks)
        """What hooks see of this run (read-only)."""
        self.notes: list[str] = []
        self.stopping = anyio.Event()
        self.outer: anyio.abc.TaskGroup | None = None
        """The task group the run goes in (a lane starts its drain deadline there)."""

    # -- what tests and the library read ---------------------------------------------
    @property
    def counts(self) -> Any:
        return self.facts.counts

    @property
    def tally(self) -> Any:
        return self.facts.tally

    @property
    def stop_reason(self) -> str | None:
        return self.facts.stop_reason

    @property
    def warnings(self) -> list[str]:
        return self.facts.warnings

    def elapsed(self) -> float:
        return self.facts.elapsed()

    # -- the run ---------------------------------------------------------------------
    async def run(self) -> RunResult:
        """Lock, check, answer, end (see the module docstring)."""
        if self.held_lock is not None:
            return await self._watched(created=False)
        with taken(self.run_dir) as (lock, created):
            result = await self._watched(created=created)
            self.lane.after_run()
            if not self.lane.handing_over or self.then is None:
                return result
            online = await self.then(lock).run()
            online.notes[:0] = result.notes
            return online

    def _watch_mirror(self) -> None:
        """A run directory on object storage (`batchrun._output.mirror`): when its lease
        is lost or another writer commits its segment, the run stops sending at once
        (the mirror raises the cause when it closes: exit 1, naming the other writer)."""
        from batchrun._output.mirror import mirror_of

        mirror = mirror_of(self.run_dir)
        if mirror is None:
            return
        token = anyio.lowlevel.current_token()

        def failed(exc: BaseException) -> None:
            def stop() -> None:
                self.stop(StopReason.DISK_ERROR, f"{exc}")

            try:
                anyio.from_thread.run_sync(stop, token=token)
            except RuntimeError:
                pass  # the run has ended: the mirror's close says why

        mirror.on_failure = failed

    async def _watched(self, *, created: bool) -> RunResult:
        self._watch_mirror()

        async def body(outer: anyio.abc.TaskGroup) -> RunResult:
            self.outer = outer
            try:
                with removed_if_refused(self.run_dir, created):
                    await self.lane.prepare(self)
            except Interrupted:
                self.lane.close()
                self.notes.append(INTERRUPTED_NOTE)
                return RunResult(self.exit_code(), "interrupted", {}, self.run_dir, self.notes)
            except BaseException:
                self.lane.close()  # what the preparation opened (a cache, a cluster)
                raise
            self.facts.started = self.clock()
            self.hooks.on_start(self.state)
            try:
                await self.lane.answer(self)
            finally:
                result = await self._end()
            return result

        return await run_watched(body, self._on_signal if self.handle_signals else None)

    async def _end(self) -> RunResult:
        """Status, notes, the hooks' last word, summary.json (once), the result."""
        lane, facts = self.lane, self.facts
        with anyio.CancelScope(shield=True):
            await lane.close_transport()
        status = self.status()
        self.notes.extend(lane.closing_notes())
        summary = lane.summary(status)
        try:
            if lane.handing_over:
                if facts.stop_reason == StopReason.DEADLINE:
                    self.hooks.on_stop(self.state, StopReason.DEADLINE)
            else:
                self.notes.extend(Ending.of(self.hooks.on_end(self.state, summary)).notes)
        finally:
            try:
                lane.save(summary)
            except (OSError, RunDirError) as exc:
                # e.g. the disk is full: every counted line is on disk, a rerun resumes
                self.notes.append(f"could not write summary.json: {exc}")
                if facts.stop_reason is None:
                    facts.stop_reason = StopReason.DISK_ERROR
            lane.close()
        return RunResult(self.exit_code(), status, summary, self.run_dir, self.notes)

    def status(self) -> str:
        return final_status(
            self.facts.stop_reason, pending=self.facts.counts.pending, pilot=self.lane.pilot
        )

    def exit_code(self) -> int:
        counts = self.facts.counts
        return exit_code(
            self.facts.stop_reason,
            pending=counts.pending,
            failed=counts.failed,
            pilot=self.lane.pilot,
            cancel_only=self.lane.cancel_only,
        )

    # -- stopping --------------------------------------------------------------------
    def stop(self, reason: str, note: str | None = None) -> None:
        """Stop sending: nothing waiting for its quota, a cooldown, a back-off, the
        budget or a poll is sent any more; what is on the wire may finish (drain).
        ``note``: why, in words (kept for the user and in summary.json)."""
        facts = self.facts
        if note and facts.stop_reason is None:
            note = scrub_text(note)
            self.notes.append(note)
            facts.stop_note = note
        if facts.stop_reason is None:
            facts.stop_reason = reason
        if not self.stopping.is_set():
            self.stopping.set()
            self.lane.stop()
            self.hooks.on_stop(self.state, reason)

    def interrupt(self, times: int = 1, signum: int = signal.SIGINT) -> None:
        """A Ctrl-C (``times``: how many so far): the first stops sending and drains,
        a second SIGINT leaves now (`second_signal`). Call in the run's event loop."""
        if times > 1 and self.stopping.is_set():
            if signum != signal.SIGINT:
                return
            self.hooks.on_abort(self.state)
            if self.second_signal == "exit":
                os._exit(EXIT_SIGINT)  # every written line is complete
            self.lane.abandon()
            return
        if self.stopping.is_set():
            return
        self.stop(StopReason.SIGINT if signum == signal.SIGINT else StopReason.SIGTERM)
        self.lane.drain(self)

    def _on_signal(self, signum: int) -> None:
        self.interrupt(2 if self.stopping.is_set() else 1, signum)
