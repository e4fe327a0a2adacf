"""The Batch API lane: rows answered in shards, through a provider's batches.

One row's path, and the module that takes it each step:

1. `BatchLane.prepare` checks everything an online run checks
   (`batchrun._engine.prepare`): nothing is uploaded for a bad input. Identical
   requests are grouped as online (`batchrun._engine.reuse.Reuse`, the grouping only).
2. The step journal (`batchrun._batch.steps`) says where earlier processes left each
   shard (`batchrun._batch.openshards`); `_reconcile` settles it with the provider.
3. `Submitter.plan` puts the rows that are neither answered, failed for good, nor in
   an open shard into shard files, and `Submitter.submit_ready` uploads each and
   creates its batch, each call journaled before and after (`batchrun._batch.submit`).
   A row repeating an earlier row's request is not planned: it takes that row's
   answer once it is written (`batchrun._batch.followers`).
4. `Collector.poll` retrieves the open batches (`batchrun._batch.collect`), backing
   off from ``poll_interval`` to ten times it while nothing changes; a finished batch
   is taken in by `batchrun._batch.finish.Finisher` through the run's writer (lines
   are counted only once written; an id already answered for its body is never
   written again); retryable errors and rows in neither file are resubmitted up to
   ``max_attempts``.
5. With ``deadline``, once three quarters of it have passed, the open batches are
   cancelled (`batchrun._batch.cancel`), what they finished is kept, and the rows left
   go to an online engine on the same directory (`handing_over`).
6. The quality breaker judges the run's answers at start and after each batch taken
   in, with the online run's rule and state: when it trips, no shard is submitted any
   more, the open batches are cancelled (their rows are kept once they end), and the
   run ends ``bad_answers``, exit 1.

``settle_only``: an online run on a directory an earlier batch run left batches open
in first takes in the batches that have ended, drops the shards never created, and
hands the rows left to the online run; while any batch still runs at the provider it
refuses instead (its rows sent online would be paid twice). ``cancel_only``
(``batchrun cancel``) cancels the open batches and keeps what they finished.

Ctrl-C stops at once (every step is journaled, so stopping anywhere is safe): the
batches go on at the provider; rerunning the command resumes polling.

    lane = BatchLane(settings, api_key=key)
    result = await Engine(settings, lane, hooks=hooks).run()
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TextIO

import anyio
import httpx

from batchrun._batch.cancel import Cancelled, cancel_open
from batchrun._batch.intake import Answers
from batchrun._batch.parts import BatchParts, build_parts
from batchrun._batch.pool import batch_takers
from batchrun._batch.reconcile import CREATE_GRACE_S
from batchrun._batch.steps import Ledger
from batchrun._engine.prepare import prepare_run, record
from batchrun._engine.stops import StopReason
from batchrun._input.sources import Source
from batchrun._output.breaker import first_max_tokens, stop_note
from batchrun._output.quality import QualityAlert
from batchrun._output.summary import Counts
from batchrun._redact import register_secret
from batchrun._schemas import compile_schema
from batchrun._settings import Settings
from batchrun._values import DEFAULT_ENDPOINT
from batchrun.errors import RunDirError

if TYPE_CHECKING:
    from batchrun._engine.lifecycle import Engine

__all__ = ["BatchLane"]

BACKOFF = 1.5
MAX_INTERVAL_FACTOR = 10.0
FALLBACK_AT = 0.75
"""Share of the deadline after which the open batches are cancelled and the rows left
go online: the last quarter is kept for the cancellation and the online run."""


class BatchLane:
    """Answers rows through the Batch API (see the module docstring); everything it
    needs is injected."""

    pilot = False

    def __init__(
        self,
        cfg: Settings,
        *,
        api_key: str | None = None,
        api_keys: Mapping[str, str | None] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        source: Source | None = None,
        cancel_only: bool = False,
        settle_only: bool = False,
        stream: TextIO | None = None,
        create_grace: float = CREATE_GRACE_S,
    ) -> None:
        self.cfg = cfg
        self.api_key = api_key
        register_secret(api_key)
        self.api_keys = dict(api_keys) if api_keys is not None else {DEFAULT_ENDPOINT: api_key}
        """Each endpoint's key by name (a pool's: `batchrun._api.endpoint_keys`)."""
        for key in self.api_keys.values():
            register_secret(key)
        self.transport = transport
        self.source = source
        self.cancel_only = cancel_only
        self.settle_only = settle_only
        self.stream = stream if stream is not None else sys.stderr
        self.create_grace = create_grace
        self.handing_over = False
        self._run: Engine | None = None
        self._fallback = False
        self._refusal: str | None = None
        """Why a ``settle_only`` run may not hand over: batches still running."""
        self._bad_answers: QualityAlert | None = None
        """The quality breaker tripped: nothing more is submitted, open batches end."""
        self.cancelled = Cancelled()
        """What this process cancelled (`batchrun cancel` reports it)."""
        self._before = Counts()
        self._work_scope: anyio.CancelScope | None = None
        self.answers: Answers | None = None
        self.parts: BatchParts | None = None
        """The collaborators, made once the input is checked (`batchrun._batch.parts`)."""

    @property
    def run(self) -> Engine:
        assert self._run is not None
        return self._run

    @property
    def ledger(self) -> Ledger:
        return self._parts.shards.ledger

    @property
    def _parts(self) -> BatchParts:
        assert self.parts is not None
        return self.parts

    # -- before anything is uploaded ----------------------------------------------------
    async def prepare(self, run: Engine) -> None:
        self._run = run
        cfg, facts = self.cfg, run.facts
        reuse = None
        if not self.settle_only and cfg.dedupe and cfg.cache_policy != "off":
            from batchrun._engine.reuse import Reuse

            reuse = Reuse(replace(cfg, cache=None))  # the grouping only: no cache in batches
        prepared = await prepare_run(
            run, cfg, source=self.source, observe=reuse.observe if reuse is not None else None
        )
        if reuse is not None:
            reuse.after_scan()
        takers = batch_takers(cfg)
        if takers is not None and not (self.settle_only or self.cancel_only):
            # a model no batch endpoint serves: refused before anything is uploaded
            takers.refuse_unserved(prepared.scan.models)
        journal = prepared.journal
        answers = self.answers = Answers(
            max_attempts=cfg.max_attempts,
            validator=compile_schema(cfg.schema) if cfg.schema else None,
            facts=facts,
        )
        answers.done = dict(journal.done)
        answers.failed = dict(journal.failed)
        answers.failed_now = dict(prepared.held.failed_now)
        record(cfg, prepared)
        self.parts = build_parts(
            cfg,
            run,
            prepared,
            answers,
            dedupe=reuse.plan if reuse is not None else None,
            api_keys=self.api_keys,
            takers=takers,
            transport=self.transport,
            stream=self.stream,
            create_grace=self.create_grace,
            sleep=self.sleep,
            spent=self._spent,
            judge=self._judge,
        )
        self.parts.clients.refuse_unknown(self.ledger.open_shards())
        self._before = replace(prepared.counts)

    def _spent(self) -> float:
        """What the run has cost so far (the cost hook's figure), for the cap."""
        spent = self.run.state.figures.get("cost_usd")
        return float(spent) if isinstance(spent, int | float) else 0.0

    async def sleep(self, seconds: float) -> None:
        """The engine's sleep (injected, and replaceable by tests), cut short by a stop."""
        run = self.run
        if run.stopping.is_set() or seconds <= 0:
            return
        await run.sleep(seconds)

    # -- the loop ---------------------------------------------------------------------
    async def answer(self, run: Engine) -> None:
        self._parts.books.checkpoint("running")
        try:
            with anyio.CancelScope() as scope:
                self._work_scope = scope
                if run.stopping.is_set():
                    scope.cancel()
                await self._work(run)
        except RunDirError as exc:
            run.notes.append(str(exc))
            if run.facts.stop_reason is None:
                run.facts.stop_reason = StopReason.DISK_ERROR

    async def _work(self, run: Engine) -> None:
        parts = self._parts
        shards, submitter, collector = parts.shards, parts.submitter, parts.collector
        shards.clean_leftovers()
        shards.forget_views()
        await self._settle_creating()
        await collector.poll()
        if self.cancel_only:
            await self._cancel_open("batchrun cancel")
        if self.settle_only:
            shards.drop_uncreated()
        await self._judge()  # earlier processes' answers may trip it already
        cfg = self.cfg
        interval = cfg.poll_interval
        fallback_at = None
        if cfg.deadline is not None and not self.cancel_only:
            fallback_at = run.facts.started + cfg.deadline * FALLBACK_AT
        while not run.stopping.is_set():
            await collector.finish_final(run.stopping)
            if fallback_at is not None and not self._fallback and run.clock() >= fallback_at:
                await self._fall_back()
            if not (self._fallback or self.cancel_only or self.settle_only or self._bad_answers):
                if submitter.needs_plan:
                    await submitter.plan()
                await submitter.submit_ready()
            await self._settle_creating()
            if not self.ledger.open_shards():
                break
            if self.settle_only and not collector.awaiting_settlement():
                break  # what is left runs at the provider: nothing to wait for here
            wait = interval
            if fallback_at is not None and not self._fallback:
                wait = max(0.0, min(wait, fallback_at - run.clock()))
            await self.sleep(wait)
            if await collector.poll():
                interval = cfg.poll_interval
            else:
                interval = min(interval * BACKOFF, cfg.poll_interval * MAX_INTERVAL_FACTOR)
        await self._after_loop(run)

    async def _after_loop(self, run: Engine) -> None:
        finisher, submitter = self._parts.finisher, self._parts.submitter
        ended = not self.ledger.open_shards() and not run.stopping.is_set()
        if self._bad_answers is not None:
            if ended:
                await finisher.delete_orphans()
            run.stop(StopReason.BAD_ANSWERS)
            return
        if self.settle_only:
            self._settled(run)
        elif self._fallback and run.facts.counts.pending and run.then is not None:
            # the rows left go to the online engine: this part ends at its deadline
            self.handing_over = True
            run.facts.stop_reason = StopReason.DEADLINE
        elif submitter.over_budget is not None and run.facts.counts.pending:
            if ended:
                # nothing running can free room: the rows left wait for a higher cap
                run.facts.stop_reason = StopReason.BUDGET
                run.notes.append(submitter.over_budget)
        if ended:
            await finisher.delete_orphans()

    def _settled(self, run: Engine) -> None:
        """The end of ``settle_only``: hand over, or refuse while batches run."""
        if run.stopping.is_set():
            return
        from batchrun._output.ledger import open_batches_refusal

        self._refusal = open_batches_refusal(run.run_dir)
        if self._refusal is None and run.then is not None:
            self.handing_over = True

    async def _settle_creating(self) -> None:
        """Shards whose create got no answer (`Submitter.settle_creating`); once
        cancelling, one whose batch is known not to exist is dropped."""
        drop = (
            self._fallback or self.cancel_only or self.settle_only or self._bad_answers is not None
        )
        await self._parts.submitter.settle_creating(drop=drop)

    # -- the quality breaker ------------------------------------------------------------
    async def _judge(self) -> None:
        """Ask the quality breaker (the online run's rule, over the whole run's paid
        answers); when it trips, submit nothing more and cancel the open batches: the
        loop then waits for them to end, takes in the rows they finished, and stops."""
        run, parts = self.run, self._parts
        submitter, committer, books = parts.submitter, parts.committer, parts.books
        if self._bad_answers is not None or self.cancel_only or run.stopping.is_set():
            return

        def max_tokens() -> int | None:  # none planned yet: the input's first request
            if submitter.max_tokens is not None:
                return submitter.max_tokens
            return first_max_tokens(submitter.source.requests())

        alert = committer.judge(max_tokens)
        if alert is None:
            return
        self._bad_answers = alert
        run.notes.append(stop_note(alert))
        books.say(alert.message)
        if self.ledger.open_shards():
            books.say("cancelling the open batches; the rows they finished are kept once they end")
            await self._cancel_open("bad answers")

    # -- the deadline, cancelling ---------------------------------------------------------
    async def _fall_back(self) -> None:
        self._fallback = True
        pending = self.run.facts.counts.pending
        self._parts.books.say(
            f"deadline: {FALLBACK_AT:.0%} of {self.cfg.deadline:g} s passed with {pending:,} "
            "rows unfinished; cancelling the batches, the rows left go online"
        )
        await self._cancel_open("deadline")

    async def _cancel_open(self, why: str) -> None:
        parts = self._parts
        done = await cancel_open(parts.clients, parts.shards, why)
        self.cancelled.batches.extend(done.batches)
        self.cancelled.dropped_shards += done.dropped_shards
        self.cancelled.dropped_rows += done.dropped_rows
        parts.books.write_state()

    # -- stopping and the end ------------------------------------------------------------
    def stop(self) -> None:
        """Stop now: the batches go on at the provider; what was written stays."""
        if self._work_scope is not None:
            self._work_scope.cancel()

    def drain(self, run: Engine) -> None:
        """Nothing is in flight the way a request is: the batches go on at the provider."""

    def abandon(self) -> None:
        """Stopping was immediate already."""

    async def close_transport(self) -> None:
        if self.parts is not None:
            await self.parts.clients.aclose()

    def closing_notes(self) -> list[str]:
        books = self._parts.books
        books.write_state()
        before = len(books.notes)
        books.closing_notes(
            cancel_only=self.cancel_only,
            handover=self.handing_over,
            settled=self.settle_only,
            cancelled=self.cancelled,
            before=self._before,
        )
        # the bookkeeper adds to the run's own notes: hand back none twice
        added = books.notes[before:]
        del books.notes[before:]
        return added

    def summary(self, status: str) -> dict[str, Any]:
        return self._parts.committer.summary(status)

    def save(self, summary: dict[str, Any]) -> None:
        self._parts.committer.save(summary)

    def close(self) -> None:
        if self.parts is not None:
            self.parts.committer.close()
            self.parts.journal.close()

    def after_run(self) -> None:
        if self._refusal is not None:
            raise RunDirError(self._refusal)
