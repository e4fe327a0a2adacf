"""Run a batch: source -> scheduler -> client -> sink -> summary.

One row's path through the code, top to bottom of this module:

1. `Runner.run` checks the run directory (run.json), scans the input once (bad rows
   and duplicate ids are reported before anything is sent) and reads the journal
   (what earlier processes finished).
2. `_run_pool` starts ``concurrency`` workers (`_work`) that pull rows not yet done
   from one shared generator over the input.
3. `batchrun.engine.attempt.Sender` makes each request's attempts (the first
   directly, retries through tenacity): each waits for the scheduler (rate limits,
   cooldown, AIMD), sends through the client, and feeds the response headers back.
4. `_write` group-commits finished outcomes to results.jsonl / errors.jsonl and
   counts them only after the write returned.
5. `_checkpoint_loop` rewrites summary.json every few seconds; the last one is
   written on the way out, whatever the reason for stopping.

Stopping: SIGINT/SIGTERM (or the budget cap) stops new sends, lets in-flight
requests finish for up to ``drain_timeout`` seconds, writes everything, and
returns an exit code (130, 143, 3). A second SIGINT exits at once.

    >>> runner = Runner(Settings(input="req.jsonl", out_dir="runs/a"))  # doctest: +SKIP
    >>> result = anyio.run(runner.run)  # doctest: +SKIP
    >>> result.exit_code  # doctest: +SKIP
    0
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import httpx
import orjson

from batchrun.engine.attempt import BREAKER_MIN, Breaker, Live, Sender
from batchrun.engine.gcpause import fewer_collections, threshold_for
from batchrun.engine.hooks import RunHooks, RunState
from batchrun.engine.reuse import LOOKUP_BATCH, SEND, Reuse
from batchrun.engine.rundir import (
    RunDirLock,
    remove_stray_temp_files,
    removed_if_refused,
    taken,
)
from batchrun.engine.runinfo import not_judged_answers, resume_problems, write_run_info
from batchrun.engine.signals import run_watched
from batchrun.errors import ConfigError, RunDirError
from batchrun.ids import body_hash_int, id_hash
from batchrun.input.pilot import PilotPicker, Selection
from batchrun.input.sources import Interrupted, ScanObserver, ScanResult, Source
from batchrun.models import Outcome, Request
from batchrun.output.breaker import QualityBreaker, first_max_tokens, stop_note
from batchrun.output.journal import (
    RUN_INFO,
    SUMMARY,
    JournalState,
    answered,
    for_input,
    read_journal,
    simulated_note,
)
from batchrun.output.quality import compile_schema
from batchrun.output.sink import JsonlSink
from batchrun.output.summary import Counts, build_summary, write_json_atomic
from batchrun.output.tally import Tally
from batchrun.output.usage import model_of
from batchrun.pacing.lanes import Cursor, SharedRead
from batchrun.pacing.scheduler import Accounts, Lane, Scheduler
from batchrun.redact import register_secret, scrub_text
from batchrun.settings import Settings
from batchrun.transport.client import ChatClient

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BUDGET = 3
INTERRUPTED_NOTE = "interrupted while checking the input; nothing was sent"
EXIT_SOME_FAILED = 4
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
GROUP_COMMIT_LINES = 256
GROUP_COMMIT_TURNS = 4

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class RunResult:
    exit_code: int
    status: str
    summary: dict[str, Any]
    run_dir: str
    notes: list[str] = field(default_factory=list)


class Runner:
    """Everything a run needs, injected: transport, clock, sleep, API key, and the
    quota accounts (a shard of a cluster run paces by leases from a shared one)."""

    def __init__(
        self,
        cfg: Settings,
        *,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        source: Source | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = anyio.sleep,
        handle_signals: bool = False,
        hooks: RunHooks | None = None,
        wall_clock: Callable[[], float] = time.time,
        held_lock: RunDirLock | None = None,
        accounts: Accounts | None = None,
    ) -> None:
        if not cfg.out_dir:
            raise ConfigError("no run directory given (-o DIR)")
        self.cfg = cfg
        self.run_dir: str = cfg.out_dir
        self.wall_clock = wall_clock
        self.held_lock = held_lock
        """The run directory's lock, when the caller holds it already (never released here)."""
        """Unix time, for the finish time each line records (the run's time series)."""
        self.api_key = api_key
        register_secret(api_key)  # scrubbed from every byte written from now on
        self.transport = transport
        self.source = source
        self.clock = clock
        self.sleep = sleep
        self.handle_signals = handle_signals
        self.hooks = hooks or RunHooks()
        self.state = RunState(self)
        """What hooks see of this run (read-only)."""
        self.second_signal = "exit"
        """A second Ctrl-C: "exit" the process at once (the CLI), or "cancel" the drain
        and return (the library: a notebook kernel must not die)."""
        self.counts = Counts()
        self.tally = Tally()
        self.live = Live()
        self.stop_reason: str | None = None
        self.stop_note: str | None = None
        """Why the sender stopped the run (the budget, the breaker, the endpoint), in words."""
        self.notes: list[str] = []
        self.warnings: list[str] = []
        """What the hooks warned of before sending (the progress display says them)."""
        self.accounts = (
            accounts
            if accounts is not None
            else Accounts(
                concurrency=cfg.concurrency,
                rpm=cfg.rpm.default,
                tpm=cfg.tpm.default,
                by_model=cfg.limits_by_model(),
                clock=clock,
            )
        )
        """Each model's quotas, concurrency and 429s (`batchrun.pacing`); on a cluster,
        leases from the one account every worker shares (`batchrun.scale.lease`)."""
        self._scheduler: Scheduler | None = None
        self._split: SharedRead | None = None
        """The one pass over the input feeding each model's lane (several models)."""
        self._done: dict[int, int] = {}
        """id hash -> body hash of every answer in the run directory."""
        self._failed_before: dict[int, int] = {}
        self._failed_now: dict[int, str] = {}
        """Rows of this input that failed for good, with their error code."""
        self._elapsed_before = 0.0
        self._sink: JsonlSink | None = None
        self._source: Source | None = None
        self._drain_scope: anyio.CancelScope | None = None
        self._outer: anyio.abc.TaskGroup | None = None
        self._sender: Sender | None = None
        self._reuse: Reuse | None = None
        """The response cache and in-run dedupe (`batchrun.engine.reuse`), when on."""
        self._earlier: Any = None
        self._picker: PilotPicker | None = None
        self._selection: Selection | None = None
        """A pilot's rows (``limit`` / ``sample``); None: every row."""
        self._input_changed = False
        self._foreign = {"succeeded": 0, "failed": 0}
        self._changed = 0
        self._outbox: list[Outcome] = []
        self._finished = anyio.Event()
        self._workers_done = False
        self._stopping = anyio.Event()
        self._bad: set[int] = set()
        """Rows whose answer in the run directory is unusable (for --retry-bad-answers)."""
        schema = cfg.schema
        self._validator = compile_schema(schema) if schema else None
        self.breaker = QualityBreaker(cfg.quality_breaker)
        """The quality breaker's state: the answers it judges, the whole run's
        (`batchrun.output.breaker`); rebuilt from the run directory in `_adopt`."""

    # -- set-up ---------------------------------------------------------------------
    def _path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    def _check_run_info(self, fingerprint: str) -> None:
        """Refuse to resume a run started with another input or request options.

        With ``--force`` the run goes on; what was answered for other bodies stays
        in the files but counts for nothing, and those rows are sent again.
        """
        problems, self._input_changed, variants = resume_problems(
            self._path(RUN_INFO), self.cfg, fingerprint
        )
        if variants:
            self.notes.append(
                "variants changed since the last run ("
                + "; ".join(variants)
                + "): rows whose request changed are sent, the others keep their answers"
            )
        if problems and self.cfg.force:
            self.notes.append("--force: resuming although " + "; ".join(problems))
        elif problems:
            raise RunDirError(
                f"{self.run_dir} was started with other settings: "
                + "; ".join(problems)
                + ". Use another -o directory, or --force to resume anyway "
                "(rows whose request changed are sent again)."
            )

    def _write_run_info(self, scan: ScanResult) -> None:
        write_run_info(
            self._path(RUN_INFO),
            self.cfg,
            fingerprint=scan.fingerprint,
            rows=scan.total,
            outside_input=self._foreign,
            changed_rows=self._changed,
            not_judged=self.breaker.not_judged,
        )

    def _scan(self, source: Source) -> ScanResult:
        stop = self._stopping.is_set
        observe = self._scan_observer()
        if not self.cfg.skip_invalid:
            return source.scan(should_stop=stop, observe=observe)
        path = self._path("invalid.jsonl")
        try:
            with open(path, "wb") as invalid_sink:
                return source.scan(invalid_sink, should_stop=stop, observe=observe)
        except OSError as exc:  # input read errors arrive as InputError; this is the output
            raise RunDirError(f"{path}: cannot write ({exc.strerror or exc})") from exc

    def _scan_observer(self) -> ScanObserver | None:
        """What the scan tells the pilot's picker and the dedupe (None: nobody asks)."""
        cfg = self.cfg
        watchers: list[ScanObserver] = []
        if cfg.is_pilot:
            from batchrun.input.variants import plan_variants

            self._picker = PilotPicker(
                limit=cfg.limit,
                sample=None if cfg.limit is not None else cfg.sample,
                seed=cfg.seed,
                variants=[v.name for v in plan_variants(cfg)],
            )
            watchers.append(self._picker.observe)
        if (cfg.cache or cfg.dedupe) and cfg.cache_policy != "off":
            self._reuse = Reuse(
                cfg,
                api_key=self.api_key,
                read_line=self._earlier_line,
                read_hashed=self._earlier_line_hashed,
            )
            watchers.append(self._reuse.observe)
        if not watchers:
            return None
        if len(watchers) == 1:
            return watchers[0]

        def both(req: Request, payload: bytes) -> None:
            for watch in watchers:
                watch(req, payload)

        return both

    def _earlier_line(self, custom_id: str) -> Outcome | None:
        """The final line an earlier process wrote for ``custom_id`` (dedupe reads a
        leader's answer back for its followers). The index is built on first use."""
        if self._earlier is None:
            from batchrun.output.parquet import ResultIndex

            self._earlier = ResultIndex.build(self.run_dir, self.cfg.endpoint)
        return self._earlier.lookup(custom_id)

    def _earlier_line_hashed(self, h: int, body: str) -> Outcome | None:
        """`_earlier_line` by the id's hash, answering ``body`` (its body hash)."""
        if self._earlier is None:
            from batchrun.output.parquet import ResultIndex

            self._earlier = ResultIndex.build(self.run_dir, self.cfg.endpoint)
        return self._earlier.lookup_hash(h, body)

    def _build_source(self) -> Source:
        if self.source is not None:
            return self.source
        from batchrun.input.select import source_for

        return source_for(self.cfg)

    def _adopt(self, journal: JournalState, scan: ScanResult) -> None:
        """Count what the run directory already holds *for this input* (`for_input`),
        and the answers the quality breaker judges (every earlier process's)."""
        self.tally = journal.tally
        paid = journal.tally.paid_quality
        not_judged = not_judged_answers(self._path(RUN_INFO), self.cfg, scan.fingerprint, paid)
        self.breaker = QualityBreaker.resume(self.cfg.quality_breaker, paid, not_judged)
        self._done = journal.done
        self._failed_before = journal.failed
        self._bad = bad = journal.bad if self.cfg.retry_bad_answers else set()
        self._elapsed_before = journal.elapsed_s
        held = for_input(journal, scan.hashes, scan.bodies, bad=bad)
        self._failed_now = held.failed_now
        self._changed = held.changed
        # with --retry-bad-answers a bad answer is pending, and its line is no one's
        self._foreign = held.foreign
        if held.changed:
            self.notes.append(
                f"{held.changed:,} rows changed since they were answered; they are sent again"
            )
        if journal.simulated:
            self.notes.append(simulated_note(journal.simulated, self.cfg.endpoint))
        self.counts = Counts(
            total=scan.total,
            succeeded=held.succeeded,
            failed=len(held.failed_now),
            invalid=scan.invalid,
        )
        self.notes.extend(journal.repaired)

    def _is_done(self, req: Request) -> bool:
        """Skip rule of the sending pass: answered for this very body (or failed
        for good, unless --retry-failed)."""
        h = id_hash(req.custom_id)
        if h not in self._done and h not in self._failed_before:
            return False  # most rows of a resume's sending pass: no body hash needed
        return self._done_for(h, body_hash_int(orjson.dumps(req.body)))

    def _done_for(self, h: int, b: int) -> bool:
        """`_is_done` by the id's hash and the body's (`body_hash_int`)."""
        in_done = h in self._done and h not in self._bad
        in_failed = not self.cfg.retry_failed and h in self._failed_before
        return (in_done and answered(self._done, h, b)) or (
            in_failed and answered(self._failed_before, h, b)
        )

    async def _setup(self) -> tuple[Source, ScanResult]:
        """Everything before the first send; every step can be interrupted."""
        from batchrun.batch.state import open_batches_refusal

        # batches an earlier --batch-api process left open would answer (and bill)
        # these rows too; make_runner collects them first when it can
        refusal = open_batches_refusal(self.run_dir)
        if refusal is not None:
            raise RunDirError(refusal)
        removed = remove_stray_temp_files(self.run_dir)
        if removed:
            self.notes.append(f"removed {len(removed)} temporary files left by a killed run")
        source = self._build_source()
        fingerprint = await anyio.to_thread.run_sync(source.fingerprint)
        self._interrupted_during_setup()
        self._check_run_info(fingerprint)
        scan = await anyio.to_thread.run_sync(self._scan, source)
        self._interrupted_during_setup()
        if self._picker is not None:
            self._selection = self._picker.finish()
        if self._reuse is not None:
            await anyio.to_thread.run_sync(self._reuse.after_scan)
            if not self._reuse.active:
                self._reuse = None
        self.warnings = list(self.hooks.before_send(self.state, scan) or ())
        try:
            journal = await anyio.to_thread.run_sync(
                lambda: read_journal(self.run_dir, endpoint=self.cfg.endpoint)
            )
        except ValueError as exc:
            raise RunDirError(str(exc)) from exc
        except OSError as exc:  # e.g. results.jsonl is a directory
            raise RunDirError(
                f"{exc.filename or self.run_dir}: cannot read the run's output ({exc.strerror})"
            ) from exc
        self._interrupted_during_setup()
        self._adopt(journal, scan)
        if self._reuse is not None and (self._done or self._failed_before):
            hashes, bodies = scan.hashes, scan.bodies

            def answered_before(index: int) -> int | None:
                h = hashes[index]
                return h if self._done_for(h, bodies[index]) else None

            await anyio.to_thread.run_sync(self._reuse.adopt, answered_before)
        self._write_run_info(scan)
        return source, scan

    def _interrupted_during_setup(self) -> None:
        if self._stopping.is_set():
            raise Interrupted()

    # -- the run --------------------------------------------------------------------
    async def run(self) -> RunResult:
        """Lock the run directory, check everything, send, write; see the module doc."""

        async def body(outer: anyio.abc.TaskGroup) -> RunResult:
            self._outer = outer
            return await self._locked(self._run_locked)

        return await run_watched(body, self._on_signal if self.handle_signals else None)

    async def _locked(self, body: Callable[[bool], Awaitable[RunResult]]) -> RunResult:
        """``body(created)`` with the run directory made and locked for this process
        (or under the lock a caller already holds: a batch run handing over)."""
        if self.held_lock is not None:
            return await body(False)
        with taken(self.run_dir) as (_, created):
            return await body(created)

    async def _run_locked(self, created: bool) -> RunResult:
        try:
            with removed_if_refused(self.run_dir, created):
                source, scan = await self._setup()
        except Interrupted:
            self.notes.append(INTERRUPTED_NOTE)
            return RunResult(self._exit_code(), "interrupted", {}, self.run_dir, self.notes)
        self._source = source
        self.live.started = self.clock()
        self.hooks.on_start(self.state)

        client = ChatClient(
            base_url=self.cfg.base_url,
            api_key=self.api_key,
            auth=self.cfg.auth,
            auth_header=self.cfg.auth_header,
            extra_headers=self.cfg.headers,
            timeout=self.cfg.timeout,
            total_timeout=self.cfg.total_timeout,
            max_response_bytes=self.cfg.max_response_bytes,
            transport=self.transport,
            max_connections=self.cfg.concurrency,
            clock=self.clock,
        )
        self._sink = JsonlSink(self.run_dir, self.cfg.endpoint)
        try:
            # a checkpoint at once: a resume that had to parse every line pays it once,
            # and even a run killed in its first seconds leaves a summary
            self._try_checkpoint()
            # a run whose earlier answers already trip the breaker sends nothing more
            self._judge_answers()
            self._scheduler = Scheduler(
                self.accounts,
                self._lanes(source, scan.models),
                estimate=self._token_estimate,
                sleep=self.sleep,
            )
            if self._stopping.is_set():
                self._scheduler.stop()
            self._sender = Sender(
                client,
                self._scheduler,
                self.hooks,
                self.state,
                live=self.live,
                stopping=self._stopping,
                stop=self._stop_with,
                max_attempts=self.cfg.max_attempts,
                validator=self._validator,
                breaker=Breaker(max(BREAKER_MIN, self.cfg.concurrency)),
                clock=self.clock,
                wall_clock=self.wall_clock,
                sleep=self.sleep,
            )
            with fewer_collections(threshold_for(self.cfg.concurrency)):
                await self._run_pool(self._scheduler, self._sender)
        finally:
            try:
                await client.aclose()
            finally:
                status = self._final_status()
                self._closing_notes(source)
                try:
                    summary = self._checkpoint(status)
                except (OSError, RunDirError) as exc:
                    # e.g. the disk is full: every counted line is on disk, a rerun resumes
                    summary = self.summary(status)
                    self.notes.append(f"could not write summary.json: {exc}")
                    if self.stop_reason is None:
                        self.stop_reason = "disk_error"
                self._sink.close()
                if self._reuse is not None:
                    self._reuse.close()
                if self._earlier is not None:
                    self._earlier.close()
                self.notes.extend(self.hooks.on_end(self.state, summary) or ())
        return RunResult(self._exit_code(), status, summary, self.run_dir, self.notes)

    def _closing_notes(self, source: Source) -> None:
        if source.grew():
            self.notes.append(
                f"{self.cfg.input_path} grew while the run was going; rows added after "
                "it was checked were not sent (rerun with --force to send them)"
            )
        if self.counts.failed and self.stop_reason is None and not self.counts.pending:
            self.notes.append(
                f"{self.counts.failed:,} requests failed for good (see errors.jsonl); "
                "rerun with --retry-failed to try them again"
            )

    def _lanes(self, source: Source, models: set[str]) -> list[Lane]:
        """One lane per model when the input names several, all fed by one pass over
        the input (`batchrun.pacing.lanes.SharedRead`: a model waiting for its quota
        never holds up another, and the input is read once whatever the number of
        models), else one."""
        skipping = bool(self._done or self._failed_before)  # (an empty run skips nothing)
        pending = self._pending(source, skipping)
        if len(models) > 1:
            self._split = SharedRead(
                lambda skip, cursor: pending(skip=skip, cursor=cursor),
                lambda model, start: pending(model, start=start),
                sorted(models),
                self.accounts,
                clock=self.clock,
            )
            return list(self._split.lanes)
        only = next(iter(models)) if models else None
        if self._reuse is None and self._selection is None:
            is_done = self._is_done

            def plain() -> Iterator[Request]:  # the common case, kept lean
                for req in source.requests():
                    if not (skipping and is_done(req)):
                        yield req

            return [Lane(plain(), self.clock, model=only)]
        return [Lane(pending(), self.clock, model=only)]

    def _pending(self, source: Source, skipping: bool) -> Callable[..., Iterator[Request]]:
        """``pending(model=None, *, start=0, skip=None, cursor=None)``: the requests to
        send, in input order: not done before, in a pilot's selection, and with reuse
        (answers from the cache or from an identical request are written, not sent).
        ``model``: only its requests; ``start``: from that index on; ``skip(model)``:
        leave out a model's requests before deciding anything about them; ``cursor``:
        told each examined request's index (`batchrun.pacing.lanes`)."""
        is_done = self._is_done
        selection = self._selection
        reuse = self._reuse

        def pending(
            model: str | None = None,
            *,
            start: int = 0,
            skip: Callable[[str], bool] | None = None,
            cursor: Cursor | None = None,
        ) -> Iterator[Request]:
            waiting: list[Request] = []
            for index, req in enumerate(source.requests()):
                if index < start:
                    continue
                if model is not None or skip is not None:
                    name = req.body.get("model")
                    if model is not None and name != model:
                        continue
                    if skip is not None and skip(name):  # type: ignore[arg-type]
                        continue
                if cursor is not None:
                    cursor.index = index
                wanted = (selection is None or selection.wants(req)) and not (
                    skipping and is_done(req)
                )
                if reuse is None:
                    if wanted:
                        yield req
                    continue
                reuse.note(index, req, wanted=wanted)
                if not wanted:
                    continue
                decision = reuse.consider(index, req)
                if isinstance(decision, Outcome):
                    self._deliver([decision])
                elif decision == SEND:
                    waiting.append(req)
                    if len(waiting) >= LOOKUP_BATCH:
                        yield from self._send_or_reuse(reuse, waiting)
                        waiting = []
            yield from self._send_or_reuse(reuse, waiting) if reuse is not None else ()

        return pending

    def _send_or_reuse(self, reuse: Reuse, requests: list[Request]) -> Iterator[Request]:
        for req, answer in reuse.cached(requests):
            if answer is None:
                yield req
            else:
                self._deliver([answer])

    def _deliver(self, outcomes: list[Outcome]) -> None:
        """Answers found without sending: to the writer, like any outcome."""
        self._outbox.extend(outcomes)
        self._finished.set()

    async def _run_pool(self, scheduler: Scheduler, sender: Sender) -> None:
        async with anyio.create_task_group() as background:
            background.start_soon(self._checkpoint_loop)
            async with anyio.create_task_group() as writers:
                writers.start_soon(self._write)
                try:
                    with anyio.CancelScope() as drain_scope:
                        self._drain_scope = drain_scope
                        async with anyio.create_task_group() as workers:
                            for _ in range(self.cfg.concurrency):
                                workers.start_soon(self._work, sender, scheduler)
                finally:
                    self._workers_done = True
                    self._finished.set()
            background.cancel_scope.cancel()

    async def _work(self, sender: Sender, scheduler: Scheduler) -> None:
        # workers ask the scheduler, which pulls from the lanes' generators: next() is
        # synchronous, so on one event loop no two workers ever run it at once, and no
        # channel (with its per-item cost) is needed between reader and workers
        while (ticket := await scheduler.next()) is not None:
            outcome = await sender.process(ticket)
            if outcome is not None:
                self._outbox.append(outcome)
                self._finished.set()
            # a transport that never suspends (an in-memory mock, a local cache)
            # must not starve the writer, the summary and the signal handler
            await anyio.lowlevel.checkpoint()

    def stop(self, reason: str) -> None:
        """Stop sending: nothing waiting for its quota, a cooldown, a back-off or the
        budget is sent any more; requests on the wire may finish (drain)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        if not self._stopping.is_set():
            self._stopping.set()
            if self._scheduler is not None:
                self._scheduler.stop()
            self.hooks.on_stop(self.state, reason)

    # -- one request ----------------------------------------------------------------
    def _token_estimate(self, req: Request) -> int:
        from batchrun.pacing.tokens import completion_ceiling, prompt_tokens

        body, api = req.body, req.api
        return prompt_tokens(body, api=api) + completion_ceiling(body, default_max=256, api=api)

    def _stop_with(self, reason: str, note: str | None) -> None:
        """A stop asked for by the sender (the budget, the breaker), with its note."""
        if note and self.stop_reason is None:
            note = scrub_text(note)  # it goes into summary.json too
            self.notes.append(note)
            self.stop_note = note
        self.stop(reason)

    @property
    def max_tokens(self) -> int | None:
        """max_tokens of the first request sent (0: none set), for quality messages."""
        return self._sender.max_tokens if self._sender is not None else None

    def _message_max_tokens(self) -> int | None:
        """max_tokens for a quality message: the first request sent's, or the input's
        first request's when this process has sent nothing yet."""
        if self.max_tokens is not None or self._source is None:
            return self.max_tokens
        return first_max_tokens(self._source.requests())

    # -- output ---------------------------------------------------------------------
    async def _write(self) -> None:
        """Group commit: everything finished over a few event-loop turns goes in one
        write; nothing is counted before that write returned."""
        sink = self._sink
        assert sink is not None
        while True:
            await self._finished.wait()
            for _ in range(GROUP_COMMIT_TURNS):
                # let the event loop deliver the responses that are already in, so
                # one write (and one round of hooks) carries many lines
                if len(self._outbox) >= GROUP_COMMIT_LINES or self._workers_done:
                    break
                await anyio.lowlevel.checkpoint()
            self._finished = anyio.Event()
            batch, self._outbox = self._outbox, []
            if batch:
                try:
                    sink.write(batch)
                except RunDirError as exc:
                    self._stop_on_write_error(str(exc))
                    return
                for outcome in batch:
                    self._count(outcome)
                if self._reuse is not None:
                    await self._after_written(self._reuse, batch)
                reason = self.hooks.on_written(self.state, batch)
                if reason:
                    self.stop(reason)
                self._judge_answers()
            if self._workers_done and not self._outbox:
                return

    async def _after_written(self, reuse: Reuse, batch: list[Outcome]) -> None:
        """Followers of the leaders just written get their answer (written next), and
        usable answers go into the response cache (off the event loop)."""
        released, store = reuse.written(batch)
        if released:
            self._deliver(released)
        if store and reuse.cache is not None:
            try:
                await anyio.to_thread.run_sync(reuse.cache.put_many, store)
            except Exception as exc:  # the cache is a saving, never a reason to stop
                note = f"could not store answers in the response cache: {exc}"
                if note not in self.notes:
                    self.notes.append(note)

    def _stop_on_write_error(self, message: str) -> None:
        """A write failed: stop sending at once; answers in flight could not be kept."""
        if message not in self.notes:
            self.notes.append(message)
        self.stop("disk_error")
        if self._drain_scope is not None:
            self._drain_scope.cancel()

    def _judge_answers(self) -> None:
        """Quality breaker: a run whose answers are, with confidence, mostly unusable
        (all cut off by a tiny max_tokens, all off-schema) stops before paying for
        the rest. It judges the whole run's paid answers (`QualityBreaker`)."""
        if self.breaker.threshold <= 0 or self.stop_reason is not None:
            return
        alert = self.breaker.judge(self.tally.quality, max_tokens=self._message_max_tokens)
        if alert is not None:
            self.notes.append(stop_note(alert))
            self.stop("bad_answers")

    def _count(self, outcome: Outcome) -> None:
        verdict = self.tally.count_outcome(outcome)
        if verdict is not None and outcome.reused is None:
            self.breaker.add(verdict, model_of(outcome.body))
        code = None if outcome.ok else (outcome.error or {}).get("code")
        self.counts.record(id_hash(outcome.custom_id), outcome.ok, code, self._failed_now)

    # -- summary --------------------------------------------------------------------
    def elapsed(self) -> float:
        return self._elapsed_before + (self.clock() - self.live.started if self.live.started else 0)

    def summary(self, status: str) -> dict[str, Any]:
        sink = self._sink
        return build_summary(
            status=status,
            input_path=self.cfg.input_path,
            counts=self.counts,
            tally=self.tally,
            failed_codes=self._failed_now.values(),
            elapsed_s=self.elapsed(),
            results_bytes=sink.results_bytes if sink else 0,
            errors_bytes=sink.errors_bytes if sink else 0,
            pacing=self.accounts.summary(),
            extra={**self.hooks.summary_extra(self.state), **self._own_summary()},
            stop_reason=self.stop_reason,
        )

    def _own_summary(self) -> dict[str, Any]:
        """Why the run stopped, the pilot's selection and the in-run dedupe, for
        summary.json."""
        out: dict[str, Any] = {}
        if self.stop_note is not None:
            out["stop_note"] = self.stop_note
        if self._selection is not None and self._picker is not None:
            cfg = self.cfg
            out["pilot"] = {
                "limit": cfg.limit,
                "sample": cfg.sample if cfg.limit is None else None,
                "seed": cfg.seed if cfg.limit is None else None,
                "rows": self._selection.rows,
                "input_rows": self._picker.rows_seen,
            }
        if self._reuse is not None:
            out["dedupe"] = self._reuse.summary()
        return out

    def _checkpoint(self, status: str) -> dict[str, Any]:
        summary = self.summary(status)
        if self._sink is not None:
            self._sink.sync()
        write_json_atomic(self._path(SUMMARY), summary)
        return summary

    def _try_checkpoint(self) -> None:
        """A checkpoint during the run; a failed one stops sending (the disk is
        full, or the run directory is gone: every answer from now on would be lost)."""
        try:
            self._checkpoint("running")
        except (OSError, RunDirError) as exc:
            self.notes.append(f"could not write summary.json: {exc}")
            self.stop("disk_error")

    async def _checkpoint_loop(self) -> None:
        while True:
            await anyio.sleep(self.cfg.summary_interval)
            self._try_checkpoint()

    def _final_status(self) -> str:
        if self.stop_reason == "budget":
            return "budget_exceeded"
        if self.stop_reason in ("disk_error", "endpoint_down", "bad_answers"):
            return self.stop_reason
        if self.stop_reason is not None:
            return "interrupted"
        if self.counts.pending:
            # a pilot that did what it was asked: the rest is for the full run
            return "partial" if self._selection is not None else "incomplete"
        return "complete"

    def _exit_code(self) -> int:
        reason = self.stop_reason
        if reason == "SIGINT":
            return EXIT_SIGINT
        if reason == "SIGTERM":
            return EXIT_SIGTERM
        if reason == "budget":
            return EXIT_BUDGET
        pending = self.counts.pending and not (self._selection is not None and reason is None)
        if reason in ("disk_error", "endpoint_down", "bad_answers") or pending:
            return EXIT_ERROR
        return EXIT_SOME_FAILED if self.counts.failed else EXIT_OK

    # -- signals --------------------------------------------------------------------
    def _on_signal(self, signum: int) -> None:
        self.interrupt(2 if self._stopping.is_set() else 1, signum)

    def interrupt(self, times: int = 1, signum: int = signal.SIGINT) -> None:
        """A Ctrl-C (``times``: how many so far): the first stops sending and drains,
        a second SIGINT leaves now (`second_signal`). Call in the run's event loop."""
        if times > 1 and self._stopping.is_set():
            if signum != signal.SIGINT:
                return
            self.hooks.on_abort(self.state)
            if self.second_signal == "exit":
                os._exit(EXIT_SIGINT)  # every written line is complete
            if self._drain_scope is not None:
                self._drain_scope.cancel()
            return
        if self._stopping.is_set():
            return
        self.stop("SIGINT" if signum == signal.SIGINT else "SIGTERM")
        if self._outer is not None:
            self._outer.start_soon(self._drain_deadline)

    async def _drain_deadline(self) -> None:
        """In-flight requests get ``drain_timeout`` seconds, then are cancelled."""
        await anyio.sleep(self.cfg.drain_timeout)
        if self._drain_scope is not None:
            self._drain_scope.cancel()


__all__ = ["RunResult", "Runner"]
