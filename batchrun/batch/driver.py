"""Run a job through the provider's Batch API: plan, upload, create, poll, download.

One row's path, top to bottom of this module:

1. `BatchDriver.run` locks the run directory and checks everything an online run
   checks (`batchrun.batch.prepare`): nothing is uploaded for a bad input.
2. The step journal (`batchrun.batch.steps`) says where earlier processes left each
   shard; `_reconcile` settles it with the provider (`batchrun.batch.reconcile`).
3. `_plan` puts the rows that are neither answered, failed for good, nor in an open
   shard into shard files (`batchrun.batch.shards`, `batchrun.batch.workdir`).
4. `_submit` uploads each and creates its batch (``completion_window`` 24h, metadata
   naming run and shard), each call journaled before and after.
5. `_poll` retrieves the open batches, backing off from ``poll_interval`` to ten
   times it while nothing changes; `_finish` downloads a finished batch's output and
   error files into results.jsonl / errors.jsonl through the run's sink (lines are
   counted only once written; an id already answered for its body is never written
   again), resubmits retryable errors and rows in neither file up to
   ``max_attempts``, and deletes the remote files.
6. With ``deadline``, once three quarters of it have passed, `_fall_back` cancels the
   open batches, waits until they are cancelled, keeps what they finished, and the
   rows left go to an online run on the same directory (`BatchDriver.online`).

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
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TextIO, cast

import anyio
import anyio.abc
import anyio.from_thread
import anyio.to_thread
import httpx
import orjson

from batchrun.batch.client import BatchClient, CreateUnknown
from batchrun.batch.intake import Answers
from batchrun.batch.prepare import Prepared, prepare
from batchrun.batch.protocol import (
    BatchView,
    metadata_for,
    parse_batch,
    refused_for_token_limit,
    shard_tag,
)
from batchrun.batch.reconcile import CREATE_GRACE_S, creating_decision, find_batches
from batchrun.batch.shards import RowTooLarge, ShardPlanner, shrink
from batchrun.batch.state import shard_entry, write_state
from batchrun.batch.steps import Ledger, ShardRecord, StepJournal
from batchrun.batch.workdir import (
    ShardWriter,
    batch_dir,
    leftover_files,
    line_for,
    read_index,
    remove_shard_files,
    shard_paths,
    steps_path,
)
from batchrun.engine.hooks import RunHooks, RunState
from batchrun.engine.rundir import RunDirLock, create_run_dir, remove_unused_run_dir
from batchrun.errors import BatchApiError, BatchrunError, ConfigError, InputError, RunDirError
from batchrun.ids import body_hash_int, id_hash
from batchrun.input.sources import Interrupted, Source
from batchrun.models import Outcome
from batchrun.output.journal import SUMMARY
from batchrun.output.quality import QualityCounts, compile_schema
from batchrun.output.sink import JsonlSink
from batchrun.output.summary import Counts, build_summary, write_json_atomic
from batchrun.output.tally import Tally
from batchrun.redact import register_secret, scrub_text
from batchrun.settings import Settings

if TYPE_CHECKING:
    from batchrun.engine.runner import Runner, RunResult

Sleep = Callable[[float], Awaitable[None]]
EXIT_OK, EXIT_ERROR, EXIT_SOME_FAILED, EXIT_SIGINT, EXIT_SIGTERM = 0, 1, 4, 130, 143
WRITE_LINES = 512
"""Lines of a downloaded file written (and counted) together."""
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
    ) -> None:
        if not cfg.out_dir:
            raise ConfigError("no run directory given (-o DIR)")
        if cfg.stream:
            raise ConfigError("--stream cannot be used with --batch-api (batches do not stream)")
        if cfg.max_cost is not None:
            raise ConfigError(
                "--max-cost is not enforced through the Batch API yet; run without it "
                "(batchrun estimate shows the Batch API's price first)"
            )
        if cfg.is_pilot:
            raise ConfigError(
                "a pilot (--limit/--sample) runs online: run it without --batch-api, look, "
                "then run the rest with --batch-api into the same directory"
            )
        if cfg.cache:
            raise ConfigError(
                "--cache works with online runs only; run without --batch-api to answer "
                "from the cache (or without --cache)"
            )
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
        self.stream = stream if stream is not None else sys.stderr
        self.create_grace = create_grace
        self.second_signal = "exit"
        self.state = RunState(cast("Runner", self))
        self.answers = Answers(
            max_attempts=cfg.max_attempts,
            validator=compile_schema(cfg.schema) if cfg.schema else None,
        )
        self.accounts = _NoPacing()
        self.live = _Live()
        self.max_tokens: int | None = None
        self.stop_reason: str | None = None
        self.notes: list[str] = []
        self._stopping = anyio.Event()
        self._work_scope: anyio.CancelScope | None = None
        self._elapsed_before = 0.0
        self._taken: dict[int, int] = {}
        """id hash -> shard, for every row in an open shard."""
        self._views: dict[int, BatchView] = {}
        self._max_requests = cfg.batch_max_requests
        self._needs_plan = True
        self._queue_full = False
        self._api_failures = 0
        self._fallback = False
        self._handover = False
        self._started_wall = 0.0
        self._journal: StepJournal | None = None
        self._client: BatchClient | None = None
        self._sink: JsonlSink | None = None
        self._prepared: Prepared | None = None

    # -- what hooks read ----------------------------------------------------------------
    @property
    def counts(self) -> Counts:
        return self.answers.counts

    @property
    def tally(self) -> Tally:
        return self.answers.tally

    @property
    def session_quality(self) -> QualityCounts:
        return self.answers.session_quality

    def elapsed(self) -> float:
        started = self.live.started
        return self._elapsed_before + (self.clock() - started if started else 0.0)

    @property
    def ledger(self) -> Ledger:
        assert self._journal is not None
        return self._journal.ledger

    # -- the run ------------------------------------------------------------------------
    async def run(self) -> RunResult:
        """Lock, check, run the batches; with a deadline that hands over, the online
        run of the rows left follows on the same directory, under the same lock (no
        other process can take the directory in between)."""

        created = create_run_dir(self.run_dir)
        lock = RunDirLock(self.run_dir)
        try:
            lock.acquire()
        except RunDirError:
            if created:
                remove_unused_run_dir(self.run_dir)
            raise
        try:
            result: RunResult | None = None
            error: Exception | None = None
            async with anyio.create_task_group() as outer:
                if self.handle_signals:
                    await outer.start(self._watch_signals)
                try:
                    result = await self._locked(created)
                except Exception as exc:  # raised as itself, not in an ExceptionGroup
                    error = exc
                finally:
                    outer.cancel_scope.cancel()
            if error is not None:
                raise error
            assert result is not None
            if not self._handover:
                return result
            assert self.online is not None
            runner = self.online(lock)
            online = await runner.run()
            online.notes[:0] = result.notes
            return online
        finally:
            lock.release()

    async def _locked(self, created: bool) -> RunResult:
        from batchrun.engine.runner import RunResult

        try:
            prepared = await self._prepare()
        except Interrupted:
            if created:
                remove_unused_run_dir(self.run_dir)
            self.notes.append("interrupted while checking the input; nothing was sent")
            return RunResult(self._exit_code(), "interrupted", {}, self.run_dir, self.notes)
        except BatchrunError:
            if created and not _has_content(os.path.join(self.run_dir, "invalid.jsonl")):
                remove_unused_run_dir(self.run_dir)
            raise
        return await self._run_prepared(prepared)

    async def _prepare(self) -> Prepared:
        def work() -> Prepared:
            return prepare(
                self.cfg,
                self.hooks,
                self.state,
                should_stop=self._stopping.is_set,
                source=self.source,
            )

        prepared = await anyio.to_thread.run_sync(work)
        if self._stopping.is_set():
            raise Interrupted()
        self._prepared = prepared
        journal = prepared.journal
        answers = self.answers
        answers.tally = journal.tally
        answers.done = dict(journal.done)
        answers.failed = dict(journal.failed)
        answers.failed_now = dict(prepared.failed_now)
        answers.counts = prepared.counts
        self._elapsed_before = journal.elapsed_s
        self.notes.extend(prepared.notes)
        return prepared

    async def _run_prepared(self, prepared: Prepared) -> RunResult:
        from batchrun.engine.runner import RunResult

        self._started_wall = self.wall_clock()
        self._journal = StepJournal(steps_path(self.run_dir))
        self._journal.open(wall_time=self._started_wall)
        self._client = BatchClient(
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
        self._sink = JsonlSink(self.run_dir)
        self.live.started = self.clock()
        self.hooks.on_start(self.state)
        self._checkpoint("running")
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
                await self._client.aclose()
            self._write_state()
            status = self._final_status()
            self._closing_notes()
            try:
                summary = self._checkpoint(status)
            except (OSError, RunDirError) as exc:
                summary = self._summary(status)
                self.notes.append(f"could not write summary.json: {exc}")
            self._sink.close()
            self._journal.close()
            if self._handover:
                self.hooks.on_stop(self.state, "deadline")
            else:
                self.notes.extend(self.hooks.on_end(self.state, summary) or ())
        return RunResult(self._exit_code(), status, summary, self.run_dir, self.notes)

    async def _work(self) -> None:
        self._clean_leftovers()
        await self._reconcile()
        if self.cancel_only:
            await self._cancel_open("batchrun cancel")
        interval = self.cfg.poll_interval
        fallback_at = None
        if self.cfg.deadline is not None and not self.cancel_only:
            fallback_at = self.live.started + self.cfg.deadline * FALLBACK_AT
        while not self._stopping.is_set():
            await self._finish_final()
            if fallback_at is not None and not self._fallback and self.clock() >= fallback_at:
                await self._fall_back()
            if not (self._fallback or self.cancel_only):
                if self._needs_plan:
                    await self._plan()
                await self._submit_ready()
            await self._settle_creating()
            if not self.ledger.open_shards():
                break
            wait = interval
            if fallback_at is not None and not self._fallback:
                wait = max(0.0, min(wait, fallback_at - self.clock()))
            await self._interruptible_sleep(wait)
            changed = await self._poll()
            if changed:
                interval = self.cfg.poll_interval
            else:
                interval = min(interval * BACKOFF, self.cfg.poll_interval * MAX_INTERVAL_FACTOR)
        if self._fallback and self.counts.pending and self.online is not None:
            self._handover = True
        if not self.ledger.open_shards() and not self._stopping.is_set():
            await self._delete_orphans()

    # -- planning ---------------------------------------------------------------------
    def _taken_rows(self) -> None:
        """Every row of an open shard (from their indexes): never planned again."""
        self._taken = {}
        for record in self.ledger.open_shards():
            for custom_id in read_index(self.run_dir, record.shard):
                self._taken[id_hash(custom_id)] = record.shard

    async def _plan(self) -> None:
        self._needs_plan = False
        planned = await anyio.to_thread.run_sync(self._plan_blocking)
        for shard, model, rows, attempt in planned:
            self._journal_write(
                {
                    "step": "planned",
                    "shard": shard,
                    "model": model,
                    "rows": rows,
                    "attempt": attempt,
                }
            )

    def _plan_blocking(self) -> list[tuple[int, str, int, int]]:
        assert self._prepared is not None
        planner = ShardPlanner(self._max_requests, self.cfg.batch_max_bytes, self.ledger.next_shard)
        writers: dict[int, ShardWriter] = {}
        attempts_of: dict[int, int] = {}
        models: dict[int, str] = {}
        planned: list[tuple[int, str, int, int]] = []
        attempts = self.ledger.attempts
        retry_failed = self.cfg.retry_failed

        def close(shard: int) -> None:
            writer = writers.pop(shard)
            writer.finish()
            planned.append((shard, models[shard], writer.requests, attempts_of[shard]))

        try:
            for req in self._prepared.source.requests():
                if self._stopping.is_set():
                    break
                h = id_hash(req.custom_id)
                if h in self._taken:
                    continue
                payload = orjson.dumps(req.body)
                if self.answers.settled(h, body_hash_int(payload), retry_failed=retry_failed):
                    continue
                if self.max_tokens is None:  # for the answer-quality messages, as online
                    limit = req.body.get("max_tokens") or req.body.get("max_completion_tokens")
                    self.max_tokens = limit if isinstance(limit, int) else 0
                line, hashed = line_for(req.custom_id, req.body)
                model = str(req.body.get("model") or "")
                try:
                    placed = planner.place(model, len(line))
                except RowTooLarge as exc:
                    raise InputError(self.cfg.input_path, f"row {req.row}", str(exc)) from None
                if placed.closed is not None:
                    close(placed.closed.shard)
                writer = writers.get(placed.shard)
                if writer is None:
                    writer = writers[placed.shard] = ShardWriter(self.run_dir, placed.shard)
                    models[placed.shard] = model
                    attempts_of[placed.shard] = 1
                writer.add(line, req.custom_id, req.row, hashed)
                used = attempts.get(req.custom_id, 0)
                attempts_of[placed.shard] = max(attempts_of[placed.shard], used + 1)
                self._taken[h] = placed.shard
            for shard in sorted(writers):
                close(shard)
        except BaseException:
            for writer in writers.values():
                writer.discard()
            raise
        return planned

    # -- submitting -------------------------------------------------------------------
    def _running(self) -> list[ShardRecord]:
        """Open shards whose batch exists and is not known to have ended."""
        out = []
        for record in self.ledger.open_shards():
            view = self._views.get(record.shard)
            if record.batch_id is not None and (view is None or not view.final):
                out.append(record)
        return out

    async def _submit_ready(self) -> None:
        if self._queue_full and not self._running():
            # the batches it waited for were refused too: try again, in smaller shards
            self._queue_full = False
            self._max_requests = shrink(self._max_requests)
        for record in self.ledger.open_shards():
            if self._stopping.is_set() or self._queue_full:
                return
            if record.phase in ("planned", "uploading", "uploaded"):
                try:
                    await self._submit(record)
                except BatchApiError as exc:
                    if not exc.retryable:
                        raise
                    self._api_trouble(exc)
                    return

    async def _submit(self, record: ShardRecord) -> None:
        client = self._client
        assert client is not None
        tag = shard_tag(record.shard)
        if record.file_id is None:
            paths = shard_paths(self.run_dir, record.shard)
            self._journal_write({"step": "upload", "shard": record.shard})
            uploaded = await client.upload(
                paths.input, f"batchrun-{self.ledger.run_id}-{tag}.jsonl"
            )
            self._journal_write(
                {"step": "uploaded", "shard": record.shard, "file_id": str(uploaded["id"])}
            )
        file_id = record.file_id
        assert file_id is not None
        metadata = metadata_for(str(self.ledger.run_id), record.shard, record.attempt)
        self._journal_write(
            {"step": "create", "shard": record.shard, "file_id": file_id, "at": self.wall_clock()}
        )
        try:
            made = await client.create(file_id, metadata)
        except CreateUnknown as exc:
            # the batch may exist: it is looked for by its metadata, never created blindly
            self._say(f"shard {tag}: no answer to its create ({exc.message}); looking for it")
            return
        except BatchApiError as exc:
            self._journal_write({"step": "not_created", "shard": record.shard})
            if refused_for_token_limit(exc.status or 0, exc.body):
                self._refused(record, exc.message)
                return
            raise
        self._adopt_batch(record, made, found=False)

    def _adopt_batch(self, record: ShardRecord, obj: Any, *, found: bool) -> None:
        view = parse_batch(obj)
        self._journal_write(
            {
                "step": "created",
                "shard": record.shard,
                "batch_id": view.id,
                "at": view.created_at or self.wall_clock(),
                "found": found,
            }
        )
        self._views[record.shard] = view
        remove_shard_files(shard_paths(self.run_dir, record.shard), keep_index=True)
        how = "found after a lost answer" if found else "submitted"
        self._say(f"shard {shard_tag(record.shard)}: {record.rows:,} rows {how} as {view.id}")
        self._write_state()

    def _refused(self, record: ShardRecord, reason: str) -> None:
        """The provider's queue for the model is full: the shard's rows wait for a
        running batch to finish and go in a later shard; no attempt is counted."""
        self._journal_write({"step": "done", "shard": record.shard, "status": "token_limit"})
        self._release_rows(record.shard)
        remove_shard_files(shard_paths(self.run_dir, record.shard))
        running = self._running()
        if running:
            self._queue_full = True
        else:
            self._max_requests = shrink(self._max_requests)
        self._needs_plan = True
        self._say(
            f"shard {shard_tag(record.shard)}: the provider's queue is full ({reason[:160]}); "
            f"its rows wait for {'running batches' if running else 'a smaller shard'}"
        )

    async def _settle_creating(self) -> None:
        """Shards whose create got no answer: adopt the batch found by metadata, or
        create again once it cannot still appear."""
        creating = {
            r.shard: r.create_started_at
            for r in self.ledger.open_shards()
            if r.phase == "creating" and r.create_started_at is not None
        }
        if not creating:
            return
        assert self._client is not None
        try:
            found = await find_batches(self._client, str(self.ledger.run_id), creating)
        except BatchApiError as exc:
            if not exc.retryable:
                raise
            self._api_trouble(exc)
            return
        now = self.wall_clock()
        for shard, sent_at in creating.items():
            record = self.ledger.shards[shard]
            decision = creating_decision(
                found=shard in found, sent_at=sent_at, now=now, grace=self.create_grace
            )
            if decision == "adopt":
                self._adopt_batch(record, found[shard], found=True)
            elif decision == "create_again":
                self._journal_write({"step": "not_created", "shard": shard})
                if self._fallback or self.cancel_only:
                    self._abandon(record)

    # -- polling ----------------------------------------------------------------------
    async def _poll(self) -> bool:
        """Retrieve every submitted batch not known to be final; True if any changed."""
        client = self._client
        assert client is not None
        changed = False
        failures = calls = 0
        for record in self.ledger.open_shards():
            before = self._views.get(record.shard)
            if record.batch_id is None or (before is not None and before.final):
                continue
            calls += 1
            try:
                view = parse_batch(await client.retrieve(record.batch_id))
            except BatchApiError as exc:
                if not exc.retryable:
                    raise
                failures += 1
                self._api_trouble(exc)
                continue
            self._views[record.shard] = view
            if before is None or (view.status, view.completed, view.failed) != (
                before.status,
                before.completed,
                before.failed,
            ):
                changed = True
                self._say_progress(record, view)
        if calls and failures < calls:
            self._api_failures = 0
        if changed:
            self._write_state()
        return changed

    async def _finish_final(self) -> None:
        for record in self.ledger.open_shards():
            view = self._views.get(record.shard)
            if view is not None and view.final and not self._stopping.is_set():
                try:
                    await self._finish(record, view)
                except BatchApiError as exc:
                    if not exc.retryable:
                        raise
                    self._api_trouble(exc)
                    return

    async def _finish(self, record: ShardRecord, view: BatchView) -> None:
        """Take in a finished batch: its lines, then every row it left unanswered."""
        if view.token_limited:
            self._refused(record, view.reasons())
            return
        index = await anyio.to_thread.run_sync(read_index, self.run_dir, record.shard)
        at = view.ended_at or self.wall_clock()
        for file_id in (view.output_file_id, view.error_file_id):
            if file_id and file_id not in record.downloaded:
                await self._take_file(file_id, record, view, index, at)
        retry, finals = self.answers.unanswered(view, index, at, self.ledger.attempts)
        if finals:
            self._write(finals)
            assert self._sink is not None
            self._sink.sync()
        self._journal_write(
            {"step": "done", "shard": record.shard, "status": view.status, "retry": retry}
        )
        self._release_rows(record.shard)
        if retry:
            self._needs_plan = True
        self._queue_full = False
        if view.status == "failed":
            self.notes.append(
                f"batch {view.id} ({shard_tag(record.shard)}) failed: {view.reasons()}"
            )
        self._say(
            f"shard {shard_tag(record.shard)}: {view.status}; "
            f"{len(retry):,} rows to resubmit, {len(finals):,} failed for good"
        )
        await self._delete_remote(record, view)
        remove_shard_files(shard_paths(self.run_dir, record.shard))
        self._write_state()
        self._checkpoint("running")

    async def _take_file(
        self, file_id: str, record: ShardRecord, view: BatchView, index: Any, at: float
    ) -> None:
        """Download one output or error file and write its lines (`Answers.lines_of`:
        a row already answered for its body is skipped), then journal it."""
        assert self._client is not None and self._sink is not None
        path = os.path.join(batch_dir(self.run_dir), f".tmp-{file_id}")
        await self._client.download(file_id, path)

        def take() -> None:
            group: list[Outcome] = []
            for outcome in self.answers.lines_of(path, view, index, at, self.ledger.attempts):
                group.append(outcome)
                if len(group) >= WRITE_LINES:
                    # written and counted on the event loop, where the hooks live
                    anyio.from_thread.run_sync(self._write, group)
                    group = []
            if group:
                anyio.from_thread.run_sync(self._write, group)

        try:
            await anyio.to_thread.run_sync(take)
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._sink.sync()
        self._journal_write({"step": "downloaded", "shard": record.shard, "file_id": file_id})

    def _write(self, batch: list[Outcome]) -> None:
        """Write, then count (never before the write returned), then tell the hooks."""
        assert self._sink is not None
        self._sink.write(batch)
        for outcome in batch:
            self.answers.count(outcome)
        reason = self.hooks.on_written(self.state, batch)
        if reason:
            self.stop(reason)

    def _release_rows(self, shard: int) -> None:
        self._taken = {h: s for h, s in self._taken.items() if s != shard}

    # -- cancelling, the deadline -------------------------------------------------------
    async def _fall_back(self) -> None:
        self._fallback = True
        pending = self.counts.pending
        self._say(
            f"deadline: {FALLBACK_AT:.0%} of {self.cfg.deadline:g} s passed with {pending:,} "
            "rows unfinished; cancelling the batches, the rows left go online"
        )
        await self._cancel_open("deadline")

    async def _cancel_open(self, why: str) -> None:
        """Cancel every open batch (rows they finished are kept when they end); shards
        never created are dropped (their rows stay pending)."""
        client = self._client
        assert client is not None
        for record in self.ledger.open_shards():
            if record.phase in ("planned", "uploading", "uploaded"):
                self._abandon(record)
            elif record.batch_id is not None and not record.cancel_requested:
                view = self._views.get(record.shard)
                if view is not None and view.final:
                    continue
                self._journal_write({"step": "cancel", "shard": record.shard, "why": why})
                try:
                    made = await client.cancel(record.batch_id)
                except BatchApiError as exc:
                    if exc.status != 400:  # 400: already finished; the poll will see it
                        raise
                    continue
                self._views[record.shard] = parse_batch(made)
        self._write_state()

    def _abandon(self, record: ShardRecord) -> None:
        self._journal_write({"step": "abandoned", "shard": record.shard})
        self._release_rows(record.shard)
        remove_shard_files(shard_paths(self.run_dir, record.shard))

    # -- cleaning up ------------------------------------------------------------------
    async def _delete_remote(self, record: ShardRecord, view: BatchView) -> None:
        if self.cfg.keep_remote_files or self._client is None:
            return
        for file_id in (record.file_id, view.output_file_id, view.error_file_id):
            if file_id and file_id not in record.deleted:
                try:
                    await self._client.delete_file(file_id)
                except BatchApiError as exc:
                    if not exc.retryable:
                        raise
                    self._api_trouble(exc)
                    continue
                self._journal_write({"step": "deleted", "shard": record.shard, "file_id": file_id})

    async def _delete_orphans(self) -> None:
        """Uploads whose answer was lost (so their id never reached the journal)."""
        if self.cfg.keep_remote_files or self._client is None:
            return
        prefix = f"batchrun-{self.ledger.run_id}-"
        try:
            after = None
            for _ in range(100):
                page = await self._client.list_files(after=after)
                data = page.get("data") or []
                for f in data:
                    if str(f.get("filename", "")).startswith(prefix):
                        await self._client.delete_file(str(f["id"]))
                if not page.get("has_more") or not data:
                    break
                after = str(data[-1]["id"])
        except BatchApiError:
            pass  # best effort: an unused file is never billed

    def _clean_leftovers(self) -> None:
        """Shard files of shards that are done or were never recorded; shards planned
        but never uploaded are dropped (their rows are planned afresh)."""
        for record in self.ledger.open_shards():
            if record.phase in ("planned", "uploading"):
                self._abandon(record)
        keep = {r.shard for r in self.ledger.open_shards()}
        for path in leftover_files(self.run_dir, keep):
            try:
                os.unlink(path)
            except OSError:
                pass
        self._taken_rows()

    async def _reconcile(self) -> None:
        """Bring what the journal says up to date with the provider."""
        for record in self.ledger.open_shards():
            if record.batch_id is not None:
                self._views.pop(record.shard, None)
        await self._settle_creating()
        await self._poll()

    # -- bookkeeping --------------------------------------------------------------------
    def _journal_write(self, step: dict[str, Any]) -> None:
        assert self._journal is not None
        self._journal.write(step)

    def _api_trouble(self, exc: BatchApiError) -> None:
        self._api_failures += 1
        self._say(f"Batch API trouble: {exc.message[:200]}")
        if self._api_failures >= API_FAILURES_TO_STOP * max(1, len(self.ledger.open_shards())):
            self.notes.append(
                f"stopping: the Batch API kept failing ({exc.message[:160]}); the batches "
                "go on at the provider, rerun to resume"
            )
            self.stop("endpoint_down")

    def _write_state(self) -> None:
        if self._journal is None:
            return
        shards = []
        for record in self.ledger.open_shards():
            shards.append(
                shard_entry(
                    record.shard,
                    record.phase,
                    self._views.get(record.shard),
                    record.rows,
                    record.created_at,
                )
            )
        try:
            write_state(
                self.run_dir, run_id=self.ledger.run_id, updated_at=self.wall_clock(), shards=shards
            )
        except OSError as exc:
            self.notes.append(f"could not write batch/state.json: {exc}")

    def _summary(self, status: str) -> dict[str, Any]:
        sink = self._sink
        extra = self.hooks.summary_extra(self.state)
        extra["batch"] = {
            "run_id": self.ledger.run_id if self._journal else None,
            "open_shards": len(self.ledger.open_shards()) if self._journal else 0,
            "rows_via_batch": self.tally.by_mode.get("batch", 0),
        }
        return build_summary(
            status=status,
            input_path=self.cfg.input_path,
            counts=self.counts,
            tally=self.tally,
            failed_codes=self.answers.failed_now.values(),
            elapsed_s=self.elapsed(),
            results_bytes=sink.results_bytes if sink else 0,
            errors_bytes=sink.errors_bytes if sink else 0,
            pacing={},
            extra=extra,
            stop_reason=self.stop_reason,
        )

    def _checkpoint(self, status: str) -> dict[str, Any]:
        summary = self._summary(status)
        if self._sink is not None:
            self._sink.sync()
        write_json_atomic(os.path.join(self.run_dir, SUMMARY), summary)
        return summary

    def _final_status(self) -> str:
        if self.stop_reason in ("disk_error", "endpoint_down"):
            return self.stop_reason
        if self.stop_reason is not None:
            return "interrupted"
        if self._handover:
            return "deadline"
        if self.counts.pending:
            return "incomplete"
        return "complete"

    def _exit_code(self) -> int:
        if self.stop_reason == "SIGINT":
            return EXIT_SIGINT
        if self.stop_reason == "SIGTERM":
            return EXIT_SIGTERM
        if self.stop_reason is not None:
            return EXIT_ERROR
        if self.cancel_only:
            return EXIT_OK
        if self.counts.pending:
            return EXIT_ERROR
        return EXIT_SOME_FAILED if self.counts.failed else EXIT_OK

    def _closing_notes(self) -> None:
        if self._journal is None:
            return
        still = [r for r in self.ledger.open_shards() if r.batch_id is not None]
        if still and not self.cancel_only:
            self.notes.append(
                f"{len(still)} batches go on at the provider; rerun the same command to "
                f"resume polling, or `batchrun cancel {self.run_dir}` to cancel them"
            )
        if self.cancel_only:
            self.notes.append(
                f"cancelled; rows the batches finished are kept, {self.counts.pending:,} rows "
                "are pending (rerun to send them)"
            )
        if self._handover:
            self.notes.append(
                f"deadline: {self.counts.pending:,} rows left for the online run "
                f"({self.tally.by_mode.get('batch', 0):,} answered through the Batch API)"
            )

    # -- output to the user --------------------------------------------------------------
    def _say(self, text: str) -> None:
        if self.cfg.quiet:
            return
        self.stream.write(scrub_text(f"batchrun: {text}") + "\n")
        self.stream.flush()

    def _say_progress(self, record: ShardRecord, view: BatchView) -> None:
        if self.cfg.quiet:
            return
        from batchrun.batch.state import shard_line

        entry = shard_entry(record.shard, record.phase, view, record.rows, record.created_at)
        c = self.counts
        self._say(
            f"{shard_line(entry, self.wall_clock())}; rows done overall: "
            f"{c.succeeded + c.failed:,} of {c.total:,}"
        )

    # -- stopping ---------------------------------------------------------------------
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

    async def _watch_signals(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
                self.interrupt(2 if self._stopping.is_set() else 1, signum)

    async def _interruptible_sleep(self, seconds: float) -> None:
        if self._stopping.is_set() or seconds <= 0:
            return
        await self.sleep(seconds)


def _has_content(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def iter_open_batches(run_dir: str) -> Iterator[tuple[str, str | None]]:
    """(shard tag, batch id) of every shard a run directory still has open."""
    from batchrun.batch.steps import read_ledger

    for record in read_ledger(steps_path(run_dir)).open_shards():
        yield shard_tag(record.shard), record.batch_id


def settings_of(run_dir: str) -> Settings:
    """The settings a run directory recorded, pointed at that directory."""
    from batchrun.output.journal import RUN_INFO

    try:
        with open(os.path.join(run_dir, RUN_INFO), "rb") as f:
            info = orjson.loads(f.read())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise RunDirError(f"{run_dir}: no readable run.json (is it a batchrun run?)") from exc
    return replace(Settings.from_public_dict(info.get("options") or {}), out_dir=run_dir)


__all__ = ["BatchDriver", "iter_open_batches", "settings_of"]
