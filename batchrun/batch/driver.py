"""Run a job through the provider's Batch API: the loop over its shards.

One row's path, and the module that takes it each step:

1. `BatchDriver.run` locks the run directory and checks everything an online run
   checks (`batchrun.batch.prepare`): nothing is uploaded for a bad input.
2. The step journal (`batchrun.batch.steps`) says where earlier processes left each
   shard (`batchrun.batch.openshards`); `_reconcile` settles it with the provider.
3. `Submitter.plan` puts the rows that are neither answered, failed for good, nor in
   an open shard into shard files, and `Submitter.submit_ready` uploads each and
   creates its batch, each call journaled before and after (`batchrun.batch.submit`).
   A row repeating an earlier row's request is not planned: it takes that row's
   answer once it is written (`batchrun.batch.followers`).
4. `_poll` retrieves the open batches, backing off from ``poll_interval`` to ten
   times it while nothing changes; `Finisher.finish` (`batchrun.batch.finish`)
   downloads a finished batch's output and error files into results.jsonl /
   errors.jsonl through the run's sink (lines are counted only once written; an id
   already answered for its body is never written again), resubmits retryable errors
   and rows in neither file up to ``max_attempts``, and deletes the remote files. A
   batch that ended without naming a file its counts promise is read again at each
   poll (`LateFiles`) before any of its rows is resubmitted.
5. With ``deadline``, once three quarters of it have passed, `_fall_back` cancels the
   open batches (`batchrun.batch.cancel`), waits until they are cancelled, keeps what
   they finished, and the rows left go to an online run on the same directory
   (`BatchDriver.online`).
6. The quality breaker (`batchrun.output.breaker`) judges the run's answers at start
   and after each batch taken in, with the online run's rule and state: when it trips,
   no shard is submitted any more, the open batches are cancelled (the rows they
   finished are kept once they end), and the run ends ``bad_answers``, exit 1.

An online run on a directory an earlier batch run left batches open in is made by
`batchrun._api.make_runner` as a driver with ``settle_only``: it takes in the batches
that have ended, drops the shards never created, and hands the rows left to the
online run; while any batch still runs at the provider it refuses instead (its rows
sent online would be paid twice), naming the batches and what to do.

All along, `batchrun.batch.bookkeeping` keeps summary.json and batch/state.json up to
date and prints a line per change; at the end it names the status, exit code and notes.

Ctrl-C stops at once (every step is journaled, so stopping anywhere is safe): the
batches go on at the provider, summary.json is written, exit 130; rerunning the
command resumes polling. `batchrun cancel DIR` (`cancel_run`) cancels them.

    driver = BatchDriver(settings, api_key=key, hooks=hooks)
    result = anyio.run(driver.run)
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, TextIO, cast

import anyio
import anyio.abc
import anyio.to_thread
import httpx

from batchrun.batch.bookkeeping import EXIT_SIGINT, Bookkeeper, exit_code, final_status
from batchrun.batch.cancel import Cancelled, cancel_open
from batchrun.batch.client import BatchClient
from batchrun.batch.finish import Finisher, LateFiles
from batchrun.batch.followers import Followers
from batchrun.batch.intake import Answers
from batchrun.batch.openshards import OpenShards
from batchrun.batch.prepare import Prepared, check_settings, prepare
from batchrun.batch.protocol import BatchView, parse_batch, shard_tag
from batchrun.batch.reconcile import CREATE_GRACE_S
from batchrun.batch.state import iter_open_batches
from batchrun.batch.steps import Ledger, ShardRecord, StepJournal
from batchrun.batch.submit import Submitter
from batchrun.batch.workdir import steps_path
from batchrun.cost.budget import BatchBudget
from batchrun.engine.hooks import RunHooks, RunState
from batchrun.engine.rundir import RunDirLock, removed_if_refused, taken
from batchrun.engine.runinfo import settings_of
from batchrun.engine.signals import run_watched
from batchrun.errors import BatchApiError, RunDirError
from batchrun.input.sources import Interrupted, Source
from batchrun.output.breaker import QualityBreaker, first_max_tokens, stop_note
from batchrun.output.quality import QualityAlert, compile_schema
from batchrun.output.sink import JsonlSink
from batchrun.output.summary import Counts
from batchrun.output.tally import Tally
from batchrun.pacing.retry import endpoint_down_note
from batchrun.redact import register_secret
from batchrun.settings import Settings

if TYPE_CHECKING:
    from batchrun.engine.runner import Runner, RunResult

Sleep = Callable[[float], Awaitable[None]]
BACKOFF = 1.5
MAX_INTERVAL_FACTOR = 10.0
FALLBACK_AT = 0.75
"""Share of the deadline after which the open batches are cancelled and the rows left
go online: the last quarter is kept for the cancellation and the online run."""
API_FAILURES_TO_STOP = 5
"""Rounds in a row in which every call failed (after its own retries): the provider
is down; stop, the batches go on and a rerun resumes."""


class _NoPacing:
    """A batch run has no client-side pacing; hooks reading it see zeros."""

    rate_limited = 0
    concurrency_limit = 0

    def summary(self) -> dict[str, Any]:
        return {}


class _Live:
    in_flight = 0
    started = 0.0


@dataclass
class _Parts:
    """What a run has once its input is checked: the open shards (the journal), the
    client, the sink, and the collaborators working on them."""

    shards: OpenShards
    client: BatchClient
    sink: JsonlSink
    books: Bookkeeper
    submitter: Submitter
    finisher: Finisher


class BatchDriver:
    """A run through the Batch API; everything it needs is injected (see the module doc).

    It offers hooks the attributes an online `Runner` does (`RunState` reads them):
    settings, counts, tally, elapsed time, stop reason.
    """

    def __init__(
        self,
        cfg: Settings,
        *,
        api_key: str | None = None,
        hooks: RunHooks | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        source: Source | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = anyio.sleep,
        wall_clock: Callable[[], float] = time.time,
        handle_signals: bool = False,
        online: Callable[[RunDirLock], Runner] | None = None,
        cancel_only: bool = False,
        stream: TextIO | None = None,
        create_grace: float = CREATE_GRACE_S,
        settle_only: bool = False,
    ) -> None:
        if not settle_only:  # settling hands over to an online run, which checks its own
            check_settings(cfg)
        self.cfg = cfg
        self.run_dir = str(cfg.out_dir)
        self.api_key = api_key
        register_secret(api_key)
        self.hooks = hooks or RunHooks()
        self.transport = transport
        self.source = source
        self.clock = clock
        self.sleep = sleep
        self.wall_clock = wall_clock
        self.handle_signals = handle_signals
        self.online = online
        self.cancel_only = cancel_only
        self.settle_only = settle_only
        """Only take in what the open batches finished, then hand over to ``online``
        (refused while a batch still runs); nothing new is submitted."""
        self.stream = stream if stream is not None else sys.stderr
        self.create_grace = create_grace
        self.second_signal = "exit"
        self.state = RunState(cast("Runner", self))
        self.answers = Answers(
            max_attempts=cfg.max_attempts,
            validator=compile_schema(cfg.schema) if cfg.schema else None,
            quality_breaker=cfg.quality_breaker,
        )
        self.accounts = _NoPacing()
        self.live = _Live()
        self.stop_reason: str | None = None
        self.notes: list[str] = []
        self.warnings: list[str] = []
        self._stopping = anyio.Event()
        self._work_scope: anyio.CancelScope | None = None
        self._elapsed_before = 0.0
        self._api_failures = 0
        self._late = LateFiles()
        self._fallback = False
        self._handover = False
        self._refusal: str | None = None
        """Why a ``settle_only`` run may not hand over: batches still running."""
        self.cancelled = Cancelled()
        """What this process cancelled (`batchrun cancel` reports it)."""
        self._before = Counts()
        """The rows' counts when this process started (what `batchrun cancel` kept is
        what was finished since)."""
        self._bad_answers: QualityAlert | None = None
        """The quality breaker tripped: nothing more is submitted, open batches end."""
        self._built: _Parts | None = None
        """Made once the input is checked (`_run_prepared`)."""

    # -- what hooks read ----------------------------------------------------------------
    @property
    def counts(self) -> Counts:
        return self.answers.counts

    @property
    def tally(self) -> Tally:
        return self.answers.tally

    @property
    def breaker(self) -> QualityBreaker:
        return self.answers.breaker

    @property
    def max_tokens(self) -> int | None:
        """max_tokens of the first request planned (0: none set), for quality messages."""
        return self._built.submitter.max_tokens if self._built is not None else None

    def elapsed(self) -> float:
        started = self.live.started
        return self._elapsed_before + (self.clock() - started if started else 0.0)

    @property
    def ledger(self) -> Ledger:
        return self._parts.shards.ledger

    @property
    def _parts(self) -> _Parts:
        assert self._built is not None
        return self._built

    # -- the run ------------------------------------------------------------------------
    async def run(self) -> RunResult:
        """Lock, check, run the batches; with a deadline that hands over, the online
        run of the rows left follows on the same directory, under the same lock (no
        other process can take the directory in between)."""

        with taken(self.run_dir) as (lock, created):
            result = await run_watched(
                lambda _: self._locked(created),
                self._on_signal if self.handle_signals else None,
            )
            if self._refusal is not None:
                raise RunDirError(self._refusal)
            if not self._handover:
                return result
            assert self.online is not None
            runner = self.online(lock)
            online = await runner.run()
            online.notes[:0] = result.notes
            return online

    async def _locked(self, created: bool) -> RunResult:
        from batchrun.engine.runner import INTERRUPTED_NOTE, RunResult

        try:
            with removed_if_refused(self.run_dir, created):
                prepared = await self._prepare()
        except Interrupted:
            self.notes.append(INTERRUPTED_NOTE)
            return RunResult(self._exit_code(), "interrupted", {}, self.run_dir, self.notes)
        return await self._run_prepared(prepared)

    async def _prepare(self) -> Prepared:
        def work() -> Prepared:
            return prepare(
                self.cfg,
                self.hooks,
                self.state,
                should_stop=self._stopping.is_set,
                source=self.source,
                dedupe=not self.settle_only,  # the online run after it groups its own
            )

        prepared = await anyio.to_thread.run_sync(work)
        if self._stopping.is_set():
            raise Interrupted()
        journal = prepared.journal
        answers = self.answers
        answers.tally = journal.tally
        answers.done = dict(journal.done)
        answers.failed = dict(journal.failed)
        answers.failed_now = dict(prepared.failed_now)
        answers.counts = prepared.counts
        self._before = replace(prepared.counts)
        answers.breaker = QualityBreaker.resume(
            self.cfg.quality_breaker, journal.tally.paid_quality, prepared.not_judged
        )
        self._elapsed_before = journal.elapsed_s
        self.notes.extend(prepared.notes)
        self.warnings = prepared.warnings
        return prepared

    async def _run_prepared(self, prepared: Prepared) -> RunResult:
        from batchrun.engine.runner import RunResult

        journal = StepJournal(steps_path(self.run_dir))
        journal.open(wall_time=self.wall_clock())
        shards = OpenShards(journal, self.run_dir)
        client = BatchClient(
            base_url=self.cfg.base_url,
            api_key=self.api_key,
            auth=self.cfg.auth,
            auth_header=self.cfg.auth_header,
            extra_headers=self.cfg.headers,
            transport=self.transport,
            timeout=self.cfg.timeout,
            retry_base=min(2.0, self.cfg.poll_interval),
            sleep=self._interruptible_sleep,
        )
        sink = JsonlSink(self.run_dir, self.cfg.endpoint)
        followers = Followers(prepared.dedupe, self.run_dir, prepared.scan.hashes)
        books = Bookkeeper(
            cfg=self.cfg,
            hooks=self.hooks,
            state=self.state,
            answers=self.answers,
            shards=shards,
            sink=sink,
            notes=self.notes,
            stream=self.stream,
            wall_clock=self.wall_clock,
            followers=followers,
        )
        finisher = Finisher(
            client=client,
            shards=shards,
            answers=self.answers,
            sink=sink,
            hooks=self.hooks,
            state=self.state,
            books=books,
            stop=self.stop,
            trouble=self._api_trouble,
            wall_clock=self.wall_clock,
            keep_remote_files=self.cfg.keep_remote_files,
            followers=followers,
        )
        submitter = Submitter(
            cfg=self.cfg,
            client=client,
            shards=shards,
            answers=self.answers,
            source=prepared.source,
            books=books,
            stopping=self._stopping,
            trouble=self._api_trouble,
            wall_clock=self.wall_clock,
            create_grace=self.create_grace,
            write_final=finisher.write_final,
            budget=BatchBudget.of(self.cfg, self._spent),
            followers=followers,
            deliver=finisher.write,
            models=len(prepared.scan.models),
        )
        self._built = _Parts(shards, client, sink, books, submitter, finisher)
        self.live.started = self.clock()
        self.hooks.on_start(self.state)
        books.checkpoint("running")
        try:
            with anyio.CancelScope() as scope:
                self._work_scope = scope
                if self._stopping.is_set():
                    scope.cancel()
                await self._work()
        except RunDirError as exc:
            self.notes.append(str(exc))
            self.stop_reason = self.stop_reason or "disk_error"
        finally:
            with anyio.CancelScope(shield=True):
                await client.aclose()
            books.write_state()
            status = final_status(
                self.stop_reason,
                handover=self._handover and not self.settle_only,
                pending=self.counts.pending,
            )
            books.closing_notes(
                cancel_only=self.cancel_only,
                handover=self._handover,
                settled=self.settle_only,
                cancelled=self.cancelled,
                before=self._before,
            )
            try:
                summary = books.checkpoint(status)
            except (OSError, RunDirError) as exc:
                summary = books.summary(status)
                self.notes.append(f"could not write summary.json: {exc}")
            sink.close()
            journal.close()
            if self._handover and self.settle_only:
                pass  # the same run goes on online: its hooks see one run
            elif self._handover:
                self.hooks.on_stop(self.state, "deadline")
            else:
                self.notes.extend(self.hooks.on_end(self.state, summary) or ())
        return RunResult(self._exit_code(), status, summary, self.run_dir, self.notes)

    def _spent(self) -> float:
        """What the run has cost so far (the cost hook's figure), for the cap."""
        spent = self.state.figures.get("cost_usd")
        return float(spent) if isinstance(spent, int | float) else 0.0

    def _exit_code(self) -> int:
        counts = self.counts
        return exit_code(
            self.stop_reason,
            cancel_only=self.cancel_only,
            pending=counts.pending,
            failed=counts.failed,
        )

    async def _work(self) -> None:
        parts = self._parts
        submitter = parts.submitter
        parts.shards.clean_leftovers()
        await self._reconcile()
        if self.cancel_only:
            await self._cancel_open("batchrun cancel")
        if self.settle_only:
            parts.shards.drop_uncreated()
        await self._judge()  # earlier processes' answers may trip it already
        interval = self.cfg.poll_interval
        fallback_at = None
        if self.cfg.deadline is not None and not self.cancel_only:
            fallback_at = self.live.started + self.cfg.deadline * FALLBACK_AT
        while not self._stopping.is_set():
            await self._finish_final()
            if fallback_at is not None and not self._fallback and self.clock() >= fallback_at:
                await self._fall_back()
            if not (self._fallback or self.cancel_only or self.settle_only or self._bad_answers):
                if submitter.needs_plan:
                    await submitter.plan()
                await submitter.submit_ready()
            await self._settle_creating()
            if not self.ledger.open_shards():
                break
            if self.settle_only and not self._awaiting_settlement():
                break  # what is left runs at the provider: nothing to wait for here
            wait = interval
            if fallback_at is not None and not self._fallback:
                wait = max(0.0, min(wait, fallback_at - self.clock()))
            await self._interruptible_sleep(wait)
            changed = await self._poll()
            if changed:
                interval = self.cfg.poll_interval
            else:
                interval = min(interval * BACKOFF, self.cfg.poll_interval * MAX_INTERVAL_FACTOR)
        if self._bad_answers is not None:
            if not self.ledger.open_shards() and not self._stopping.is_set():
                await parts.finisher.delete_orphans()
            self.stop("bad_answers")
            return
        if self.settle_only:
            self._settled()
        elif self._fallback and self.counts.pending and self.online is not None:
            self._handover = True
        elif submitter.over_budget is not None and self.counts.pending:
            if not self._stopping.is_set() and not self.ledger.open_shards():
                # nothing running can free room: the rows left wait for a higher cap
                self.stop_reason = "budget"
                self.notes.append(submitter.over_budget)
        if not self.ledger.open_shards() and not self._stopping.is_set():
            await parts.finisher.delete_orphans()

    def _awaiting_settlement(self) -> bool:
        """An open shard whose create may still show up, or a batch seen ended but
        not yet taken in: settling goes on (a few polls at most)."""
        for record in self.ledger.open_shards():
            view = self._parts.shards.views.get(record.shard)
            if record.phase == "creating" or (view is not None and view.final):
                return True
        return False

    def _settled(self) -> None:
        """The end of ``settle_only``: hand over, or refuse while batches run."""
        if self._stopping.is_set():
            return
        from batchrun.batch.state import open_batches_refusal

        self._refusal = open_batches_refusal(self.run_dir)
        if self._refusal is None and self.online is not None:
            self._handover = True

    async def _reconcile(self) -> None:
        """Bring what the journal says up to date with the provider."""
        self._parts.shards.forget_views()
        await self._settle_creating()
        await self._poll()

    async def _settle_creating(self) -> None:
        """Shards whose create got no answer (`Submitter.settle_creating`); once
        cancelling, one whose batch is known not to exist is dropped."""
        drop = (
            self._fallback or self.cancel_only or self.settle_only or self._bad_answers is not None
        )
        await self._parts.submitter.settle_creating(drop=drop)

    # -- polling and finishing ------------------------------------------------------------
    async def _poll(self) -> bool:
        """Retrieve every submitted batch not known to be final; True if any changed."""
        parts = self._parts
        views = parts.shards.views
        changed = False
        failures = calls = 0
        late = self._late
        for record in parts.shards.open():
            before = views.get(record.shard)
            ended = before is not None and before.final and not late.waiting(record.shard)
            if record.batch_id is None or ended:
                continue
            calls += 1
            try:
                view = parse_batch(await parts.client.retrieve(record.batch_id))
            except BatchApiError as exc:
                if not exc.retryable:
                    raise
                failures += 1
                self._api_trouble(exc)
                continue
            views[record.shard] = view
            if late.waiting(record.shard):
                late.read(record.shard)
            if before is None or (view.status, view.completed, view.failed) != (
                before.status,
                before.completed,
                before.failed,
            ):
                changed = True
                parts.books.say_progress(record, view)
        if calls and failures < calls:
            self._api_failures = 0
        if changed:
            parts.books.write_state()
        return changed

    async def _finish_final(self) -> None:
        parts = self._parts
        for record in parts.shards.open():
            view = parts.shards.views.get(record.shard)
            if view is not None and view.final and not self._stopping.is_set():
                try:
                    await self._finish(record, view)
                except BatchApiError as exc:
                    if not exc.retryable:
                        raise
                    self._api_trouble(exc)
                    return

    async def _finish(self, record: ShardRecord, view: BatchView) -> None:
        """A batch that ended: refused for a full queue (its rows wait, `Submitter`),
        or taken in (`Finisher`), after which its rows to retry are pending."""
        submitter = self._parts.submitter
        if view.token_limited:
            submitter.refused(record, view.reasons())
            return
        late, now, shard = self._late, self.clock(), record.shard
        gave_up = late.waited(shard, now=now) if late.exhausted(shard, now=now) else None
        retry = await self._parts.finisher.finish(record, view, gave_up_after=gave_up)
        if retry is None:
            if not late.waiting(shard):
                late.start(shard, now=now)
                self._parts.books.say(
                    f"shard {shard_tag(shard)}: {view.status}, but its "
                    f"{' and '.join(view.files_missing)} file is not named yet; reading the "
                    "batch again before any row is resubmitted"
                )
            return
        late.forget(shard)
        submitter.batch_ended(retry=bool(retry))
        await self._judge()

    # -- the quality breaker --------------------------------------------------------------
    async def _judge(self) -> None:
        """Ask the quality breaker (the online run's rule, over the whole run's paid
        answers); when it trips, submit nothing more and cancel the open batches: the
        loop then waits for them to end, takes in the rows they finished, and stops."""
        if self._bad_answers is not None or self.cancel_only or self._stopping.is_set():
            return
        submitter = self._parts.submitter

        def max_tokens() -> int | None:  # none planned yet: the input's first request
            if submitter.max_tokens is not None:
                return submitter.max_tokens
            return first_max_tokens(submitter.source.requests())

        alert = self.answers.breaker.judge(self.tally.quality, max_tokens=max_tokens)
        if alert is None:
            return
        self._bad_answers = alert
        self.notes.append(stop_note(alert))
        self._parts.books.say(alert.message)
        if self.ledger.open_shards():
            self._parts.books.say(
                "cancelling the open batches; the rows they finished are kept once they end"
            )
            await self._cancel_open("bad answers")

    # -- the deadline, cancelling ---------------------------------------------------------
    async def _fall_back(self) -> None:
        self._fallback = True
        pending = self.counts.pending
        self._parts.books.say(
            f"deadline: {FALLBACK_AT:.0%} of {self.cfg.deadline:g} s passed with {pending:,} "
            "rows unfinished; cancelling the batches, the rows left go online"
        )
        await self._cancel_open("deadline")

    async def _cancel_open(self, why: str) -> None:
        parts = self._parts
        done = await cancel_open(parts.client, parts.shards, why)
        self.cancelled.batches.extend(done.batches)
        self.cancelled.dropped_shards += done.dropped_shards
        self.cancelled.dropped_rows += done.dropped_rows
        parts.books.write_state()

    # -- stopping ---------------------------------------------------------------------
    def _api_trouble(self, exc: BatchApiError) -> None:
        """A call failed after its retries; when every call fails round after round,
        the provider is down: stop (the batches go on, a rerun resumes)."""
        self._api_failures += 1
        self._parts.books.say(f"Batch API trouble: {exc.message[:200]}")
        if exc.unreachable is not None:
            # no connection at all before it ever answered: waiting cannot help
            self.notes.append(
                endpoint_down_note(exc.unreachable)
                + "; batches already submitted go on at the provider"
            )
            self.stop("endpoint_down")
            return
        if self._api_failures >= API_FAILURES_TO_STOP * max(1, len(self.ledger.open_shards())):
            self.notes.append(
                f"stopping: the Batch API kept failing ({exc.message[:160]}); the batches "
                "go on at the provider, rerun to resume"
            )
            self.stop("endpoint_down")

    def stop(self, reason: str) -> None:
        """Stop now: the batches go on at the provider; what was written stays."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if not self._stopping.is_set():
            self._stopping.set()
            self.hooks.on_stop(self.state, reason)
            if self._work_scope is not None:
                self._work_scope.cancel()

    def interrupt(self, times: int = 1, signum: int = signal.SIGINT) -> None:
        """A Ctrl-C: stop polling (the batches go on); a second one leaves at once."""
        if times > 1 and self._stopping.is_set() and signum == signal.SIGINT:
            self.hooks.on_abort(self.state)
            if self.second_signal == "exit":
                os._exit(EXIT_SIGINT)
            return
        self.stop("SIGINT" if signum == signal.SIGINT else "SIGTERM")

    def _on_signal(self, signum: int) -> None:
        self.interrupt(2 if self._stopping.is_set() else 1, signum)

    async def _interruptible_sleep(self, seconds: float) -> None:
        if self._stopping.is_set() or seconds <= 0:
            return
        await self.sleep(seconds)


__all__ = ["BatchDriver", "iter_open_batches", "settings_of"]
