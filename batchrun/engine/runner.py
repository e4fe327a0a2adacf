"""Run a batch: source -> pacer -> client -> sink -> summary.

One row's path through the code, top to bottom of this module:

1. `Runner.run` checks the run directory (run.json), scans the input once (bad rows
   and duplicate ids are reported before anything is sent) and reads the journal
   (what earlier processes finished).
2. `_run_pool` starts ``concurrency`` workers (`_work`) that pull rows not yet done
   from one shared generator over the input.
3. `_process` makes the attempts (the first directly, retries through tenacity):
   each attempt waits for the pacer (rate limits, cooldown, AIMD), sends through
   the client, and feeds the response headers back to the pacer.
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

from batchrun import __version__
from batchrun.engine.hooks import RunHooks, RunState
from batchrun.engine.rundir import (
    RunDirLock,
    create_run_dir,
    remove_stray_temp_files,
    remove_unused_run_dir,
)
from batchrun.errors import (
    BatchrunError,
    ConfigError,
    RateLimited,
    RequestError,
    RunDirError,
    StopRun,
    UnusableAnswer,
)
from batchrun.ids import body_hash, body_hash_int, id_hash
from batchrun.input.sources import Interrupted, ScanResult, Source
from batchrun.models import Attempt, Outcome, Request
from batchrun.output.journal import RUN_INFO, SUMMARY, JournalState, answered, read_journal
from batchrun.output.quality import OK, QualityCounts, classify, compile_schema, quality_stop
from batchrun.output.sink import JsonlSink
from batchrun.output.summary import Counts, build_summary, write_json_atomic
from batchrun.output.tally import Tally
from batchrun.output.usage import model_of
from batchrun.pacing.headers import get_header, parse_ratelimit_headers
from batchrun.pacing.retry import (
    describe_attempt,
    is_retryable,
    make_retrying,
    retry_after_seconds,
    wait_seconds,
)
from batchrun.pacing.scheduler import Accounts, Lane, Scheduler, Stopped, Ticket, last_send
from batchrun.redact import register_secret
from batchrun.settings import Settings
from batchrun.transport.client import ChatClient, Reply
from batchrun.transport.responses import error_envelope

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_BUDGET = 3
EXIT_SOME_FAILED = 4
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
GROUP_COMMIT_LINES = 256
BREAKER_MIN = 16
"""Requests in a row that must exhaust their attempts before the run stops."""
GROUP_COMMIT_TURNS = 4

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class RunResult:
    exit_code: int
    status: str
    summary: dict[str, Any]
    run_dir: str
    notes: list[str] = field(default_factory=list)


@dataclass
class _Live:
    """Figures that change while the run goes (read by progress displays)."""

    in_flight: int = 0
    started: float = 0.0


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
        accounts: Accounts | None = None,
    ) -> None:
        if not cfg.out_dir:
            raise ConfigError("no run directory given (-o DIR)")
        self.cfg = cfg
        self.run_dir: str = cfg.out_dir
        self.wall_clock = wall_clock
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
        self.live = _Live()
        self.stop_reason: str | None = None
        self.notes: list[str] = []
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
        self._exhausted_in_a_row = 0
        self._breaker_after = max(BREAKER_MIN, cfg.concurrency)
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
        self.session_quality = QualityCounts()
        """This process's answers by quality (what the quality breaker judges)."""
        self.max_tokens: int | None = None
        """max_tokens of the first request sent (0: none set), for quality messages."""

    # -- set-up ---------------------------------------------------------------------
    def _path(self, name: str) -> str:
        return os.path.join(self.run_dir, name)

    def _check_run_info(self, fingerprint: str) -> None:
        """Refuse to resume a run started with another input or request options.

        With ``--force`` the run goes on; what was answered for other bodies stays
        in the files but counts for nothing, and those rows are sent again.
        """
        path = self._path(RUN_INFO)
        if not os.path.exists(path):
            return
        try:
            with open(path, "rb") as f:
                before = orjson.loads(f.read())
        except (OSError, orjson.JSONDecodeError) as exc:
            if self.cfg.force:
                return
            raise RunDirError(f"{path}: unreadable ({exc}); use --force to start over it") from exc
        problems = []
        if before.get("input_fingerprint") != fingerprint:
            self._input_changed = True
            problems.append(
                "the input file differs from the one this run started with "
                f"({before.get('input_path')})"
            )
        old_opts = _current_shape(before.get("request_options", {}))
        for key, value in self.cfg.fingerprint().items():
            problems.extend(changes(f"option {key}", old_opts.get(key), value))
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
        info = {
            "batchrun_version": __version__,
            "input_path": os.path.abspath(self.cfg.input_path),
            "input_fingerprint": scan.fingerprint,
            "input_rows": scan.total,
            "request_options": _jsonable(self.cfg.fingerprint()),
            # lines that count for nothing now: ids the input no longer has, and
            # answers to bodies that have changed since (after --force)
            "outside_input": self._foreign,
            "changed_rows": self._changed,
            "options": _jsonable(self.cfg.public_dict()),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        try:
            write_json_atomic(self._path(RUN_INFO), info)
        except OSError as exc:
            path = self._path(RUN_INFO)
            raise RunDirError(f"{path}: cannot write ({exc.strerror or exc})") from exc

    def _scan(self, source: Source) -> ScanResult:
        stop = self._stopping.is_set
        if not self.cfg.skip_invalid:
            return source.scan(should_stop=stop)
        path = self._path("invalid.jsonl")
        try:
            with open(path, "wb") as invalid_sink:
                return source.scan(invalid_sink, should_stop=stop)
        except OSError as exc:  # input read errors arrive as InputError; this is the output
            raise RunDirError(f"{path}: cannot write ({exc.strerror or exc})") from exc

    def _build_source(self) -> Source:
        if self.source is not None:
            return self.source
        from batchrun.input.select import source_for

        return source_for(self.cfg)

    def _adopt(self, journal: JournalState, scan: ScanResult) -> None:
        """Count what the run directory already holds *for this input*: a row is
        done when its id was answered for the body it has now."""
        self.tally = journal.tally
        self._done = done = journal.done
        self._failed_before = failed = journal.failed
        self._bad = bad = journal.bad if self.cfg.retry_bad_answers else set()
        self._elapsed_before = journal.elapsed_s
        succeeded = changed = 0
        failed_now: dict[int, str] = {}
        if done or failed:
            codes = journal.failed_codes
            for h, b in zip(scan.hashes, scan.bodies, strict=True):
                if answered(done, h, b):
                    if h not in bad:  # with --retry-bad-answers a bad answer is pending
                        succeeded += 1
                elif answered(failed, h, b):
                    failed_now[h] = codes.get(h, "unknown")
                elif h in done or h in failed:
                    changed += 1
        self._failed_now = failed_now
        self._changed = changed
        self._foreign = {
            "succeeded": len(done) - succeeded,
            "failed": len(failed) - len(failed_now),
        }
        if changed:
            self.notes.append(
                f"{changed:,} rows changed since they were answered; they are sent again"
            )
        self.counts = Counts(
            total=scan.total,
            succeeded=succeeded,
            failed=len(failed_now),
            invalid=scan.invalid,
        )
        self.notes.extend(journal.repaired)

    def _is_done(self, req: Request) -> bool:
        """Skip rule of the sending pass: answered for this very body (or failed
        for good, unless --retry-failed)."""
        h = id_hash(req.custom_id)
        in_done = h in self._done and h not in self._bad
        in_failed = not self.cfg.retry_failed and h in self._failed_before
        if not (in_done or in_failed):
            return False
        b = body_hash_int(orjson.dumps(req.body))
        return (in_done and answered(self._done, h, b)) or (
            in_failed and answered(self._failed_before, h, b)
        )

    async def _setup(self) -> tuple[Source, ScanResult]:
        """Everything before the first send; every step can be interrupted."""
        removed = remove_stray_temp_files(self.run_dir)
        if removed:
            self.notes.append(f"removed {len(removed)} temporary files left by a killed run")
        source = self._build_source()
        fingerprint = await anyio.to_thread.run_sync(source.fingerprint)
        self._interrupted_during_setup()
        self._check_run_info(fingerprint)
        scan = await anyio.to_thread.run_sync(self._scan, source)
        self._interrupted_during_setup()
        self.hooks.before_send(self.state, scan)
        try:
            journal = await anyio.to_thread.run_sync(read_journal, self.run_dir)
        except ValueError as exc:
            raise RunDirError(str(exc)) from exc
        except OSError as exc:  # e.g. results.jsonl is a directory
            raise RunDirError(
                f"{exc.filename or self.run_dir}: cannot read the run's output ({exc.strerror})"
            ) from exc
        self._interrupted_during_setup()
        self._adopt(journal, scan)
        self._write_run_info(scan)
        return source, scan

    def _interrupted_during_setup(self) -> None:
        if self._stopping.is_set():
            raise Interrupted()

    # -- the run --------------------------------------------------------------------
    async def run(self) -> RunResult:
        """Lock the run directory, check everything, send, write; see the module doc."""
        result: RunResult | None = None
        error: Exception | None = None
        async with anyio.create_task_group() as outer:
            self._outer = outer
            if self.handle_signals:
                # before anything else: a Ctrl-C from the first instant is a clean stop
                await outer.start(self._watch_signals)
            try:
                result = await self._locked(self._run_locked)
            except Exception as exc:  # raised as itself, not in an ExceptionGroup
                error = exc
            finally:
                outer.cancel_scope.cancel()
        if error is not None:
            raise error
        assert result is not None
        return result

    async def _locked(self, body: Callable[[bool], Awaitable[RunResult]]) -> RunResult:
        """``body(created)`` with the run directory made and locked for this process."""
        created = create_run_dir(self.run_dir)
        lock = RunDirLock(self.run_dir)
        try:
            lock.acquire()
        except RunDirError:
            if created:
                remove_unused_run_dir(self.run_dir)
            raise
        try:
            return await body(created)
        finally:
            lock.release()

    async def _run_locked(self, created: bool) -> RunResult:
        try:
            source, scan = await self._setup()
        except Interrupted:
            if created:
                remove_unused_run_dir(self.run_dir)
            self.notes.append("interrupted while checking the input; nothing was sent")
            return RunResult(self._exit_code(), "interrupted", {}, self.run_dir, self.notes)
        except BatchrunError:
            if created and not _has_content(self._path("invalid.jsonl")):
                remove_unused_run_dir(self.run_dir)
            raise
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
        self._sink = JsonlSink(self.run_dir)
        try:
            # a checkpoint at once: a resume that had to parse every line pays it once,
            # and even a run killed in its first seconds leaves a summary
            self._try_checkpoint()
            self._scheduler = Scheduler(
                self.accounts,
                self._lanes(source, scan.models),
                estimate=self._token_estimate,
                sleep=self.sleep,
            )
            if self._stopping.is_set():
                self._scheduler.stop()
            await self._run_pool(self._scheduler, client)
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
        """One lane per model when the input names several (each its own pass over
        the input: a model waiting for its quota never holds up another), else one."""
        skipping = bool(self._done or self._failed_before)  # (an empty run skips nothing)
        is_done = self._is_done

        def pending(model: str | None) -> Iterator[Request]:
            for req in source.requests():
                if model is not None and req.body.get("model") != model:
                    continue
                if not (skipping and is_done(req)):
                    yield req

        if len(models) > 1:
            return [Lane(pending(m), self.clock, model=m) for m in sorted(models)]
        only = next(iter(models)) if models else None
        return [Lane(pending(None), self.clock, model=only)]

    async def _run_pool(self, scheduler: Scheduler, client: ChatClient) -> None:
        async with anyio.create_task_group() as background:
            background.start_soon(self._checkpoint_loop)
            async with anyio.create_task_group() as writers:
                writers.start_soon(self._write)
                try:
                    with anyio.CancelScope() as drain_scope:
                        self._drain_scope = drain_scope
                        async with anyio.create_task_group() as workers:
                            for _ in range(self.cfg.concurrency):
                                workers.start_soon(self._work, client, scheduler)
                finally:
                    self._workers_done = True
                    self._finished.set()
            background.cancel_scope.cancel()

    async def _work(self, client: ChatClient, scheduler: Scheduler) -> None:
        # workers ask the scheduler, which pulls from the lanes' generators: next() is
        # synchronous, so on one event loop no two workers ever run it at once, and no
        # channel (with its per-item cost) is needed between reader and workers
        while (ticket := await scheduler.next()) is not None:
            outcome = await self._process(client, ticket)
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

        body = req.body
        return prompt_tokens(body) + completion_ceiling(body, default_max=256)

    async def _process(self, client: ChatClient, ticket: Ticket) -> Outcome | None:
        req, account, tokens = ticket.request, ticket.account, ticket.tokens
        scheduler = self._scheduler
        assert scheduler is not None
        try:
            await self.hooks.admit(self.state, req)
        except (Stopped, StopRun) as exc:
            scheduler.release(account, ok=False)  # charged, never sent
            if isinstance(exc, StopRun):
                if self.stop_reason is None:
                    self.notes.append(str(exc))
                self.stop(exc.reason)
            else:
                self.hooks.after_request(self.state, req, tokens, None)
            return None
        if self._stopping.is_set():
            scheduler.release(account, ok=False)
            self.hooks.after_request(self.state, req, tokens, None)
            return None
        body = req.body
        payload = orjson.dumps(body)
        sent_hash = body_hash(payload)
        attempts: list[Attempt] = []
        wire = [0.0]  # seconds on the wire, all attempts
        paced = [True]  # the first attempt was paced by the scheduler

        def record_failure(exc: BaseException | None) -> None:
            if exc is not None:
                attempts.append(describe_attempt(exc))
            self.hooks.on_retry(self.state, exc)

        async def attempt_once() -> Reply:
            if paced[0]:
                paced[0] = False
            else:
                if self._stopping.is_set():
                    raise _Abandon()
                try:
                    await scheduler.wait_for(account, tokens)
                except Stopped:
                    raise _Abandon() from None
                if self._stopping.is_set():
                    scheduler.release(account, ok=False)
                    raise _Abandon()
            ok = False
            self.live.in_flight += 1
            sent_at = self.clock()
            try:
                reply = await client.send(body, payload)
                ok = True
            except RequestError as exc:
                if exc.billed and any(a.billed for a in attempts):
                    # an unreadable answer was paid for once already: do not pay again
                    final = UnusableAnswer(
                        f"{exc.message} (twice; not retried again, the raw answer is kept)",
                        code="unreadable_answer",
                        status=exc.status,
                        headers=exc.headers,
                        body=exc.body,
                        request_id=exc.request_id,
                    )
                    final.billed = True
                    raise final from exc
                now = self.clock()
                snapshot = parse_ratelimit_headers(exc.headers)
                account.observe(snapshot, last_send.get(), now)
                if isinstance(exc, RateLimited):
                    headers = exc.headers
                    account.rate_limited(
                        retry_after_seconds(headers, rate_limited=True),
                        explicit=get_header(headers, "retry-after-ms") is not None
                        or get_header(headers, "retry-after") is not None,
                        tokens=tokens,
                        snapshot=snapshot,
                        now=now,
                    )
                raise
            finally:
                wire[0] += self.clock() - sent_at
                self.live.in_flight -= 1
                scheduler.release(account, ok=ok)
            now = self.clock()
            snapshot = parse_ratelimit_headers(reply.headers)
            account.observe(snapshot, last_send.get(), now)
            account.answered(had_headers=snapshot is not None, now=now)
            return reply

        try:
            reply = await self._attempts(attempt_once, record_failure)
        except _Abandon:
            self.hooks.after_request(self.state, req, tokens, None)  # gives back its reservation
            return None
        except RequestError as exc:
            attempts.append(describe_attempt(exc))
            self.hooks.after_request(self.state, req, tokens, None)
            self._note_exhausted(exc)
            total = self.clock() - ticket.since
            outcome = Outcome.failure(
                req,
                code=exc.code,
                message=exc.message,
                attempts=attempts,
                status=exc.status,
                request_id=exc.request_id,
                body=exc.body if exc.status is not None else None,
                latency_s=wire[0],
                wait_s=max(0.0, total - wire[0]),
                body_hash=sent_hash,
            )
            outcome.finished_at = self.wall_clock()
            envelope = error_envelope(exc.body)
            if envelope is not None and outcome.error is not None:
                # the envelope's type and param say what to fix; keep them next to code
                outcome.error["type"] = envelope["type"]
                outcome.error["param"] = envelope["param"]
            return outcome
        self._exhausted_in_a_row = 0
        attempts.append(Attempt(reply.status, "ok"))
        if tokens:
            from batchrun.output.usage import usage_of

            usage = usage_of(reply.body)
            account.settle_tokens(
                tokens, None if usage is None else usage.total_tokens, self.clock()
            )
        self.hooks.after_request(self.state, req, tokens, reply.body)
        total = self.clock() - ticket.since
        verdict = classify(reply.body, self._validator)
        outcome = Outcome.success(
            req,
            status=reply.status,
            request_id=reply.request_id,
            body=reply.body,
            attempts=attempts,
            latency_s=wire[0],
            ttft_s=reply.ttft_s,
            wait_s=max(0.0, total - wire[0]),
            body_hash=sent_hash,
        )
        outcome.finished_at = self.wall_clock()
        if len(attempts) > 1:
            outcome.extra["statuses"] = [a.status for a in attempts]
        if verdict.category != OK:
            outcome.extra["quality"] = verdict.category
            if verdict.detail:
                outcome.extra["quality_detail"] = verdict.detail
        if self.max_tokens is None:
            limit = body.get("max_tokens") or body.get("max_completion_tokens")
            self.max_tokens = limit if isinstance(limit, int) else 0
        return outcome

    def _note_exhausted(self, exc: RequestError) -> None:
        """Circuit breaker: when request after request runs out of attempts on
        retryable errors (connection refused, timeouts, 5xx), the endpoint is down;
        when they fail on the key, the account or the model (401, 402, 403, 404,
        insufficient_quota), every other row would too. Going on would mark the rest
        of the input failed; stop instead: the rows written as failed come back
        with --retry-failed."""
        if not (is_retryable(exc) or _about_the_endpoint(exc)):
            self._exhausted_in_a_row = 0
            return
        self._exhausted_in_a_row += 1
        if self._exhausted_in_a_row == self._breaker_after and self.stop_reason is None:
            self.notes.append(
                f"stopping: the last {self._breaker_after} requests all failed "
                f"({exc.code}: {exc.message[:120]}); is the endpoint down, or the key, "
                "model or quota wrong? Rerun with --retry-failed once it is fixed"
            )
            self.stop("endpoint_down")

    async def _attempts(
        self,
        attempt_once: Callable[[], Awaitable[Reply]],
        record_failure: Callable[[BaseException | None], None],
    ) -> Reply:
        """The first attempt bare, tenacity (batchrun.pacing.retry's policy) after a failure.

        Most requests succeed at once; building a tenacity controller for each would
        cost ~25 us of CPU a request on the hot path for nothing.
        """
        try:
            return await attempt_once()
        except RequestError as exc:
            if self.cfg.max_attempts <= 1 or not is_retryable(exc):
                raise
            first = exc
        record_failure(first)
        # reset headers are the pacer's business (it knows what the next request
        # needs); the retry itself waits only for Retry-After or the backoff
        await self._retry_sleep(wait_seconds(first, 1, use_reset=False))

        def on_retry(state: Any) -> None:
            record_failure(state.outcome.exception() if state.outcome else None)

        retrying = make_retrying(
            self.cfg.max_attempts, self._retry_sleep, on_retry, attempts_made=1, use_reset=False
        )
        reply: Reply = await retrying(attempt_once)
        return reply

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
                reason = self.hooks.on_written(self.state, batch)
                if reason:
                    self.stop(reason)
                self._judge_answers()
            if self._workers_done and not self._outbox:
                return

    def _stop_on_write_error(self, message: str) -> None:
        """A write failed: stop sending at once; answers in flight could not be kept."""
        if message not in self.notes:
            self.notes.append(message)
        self.stop("disk_error")
        if self._drain_scope is not None:
            self._drain_scope.cancel()

    def _judge_answers(self) -> None:
        """Quality breaker: a run whose first answers are mostly unusable (all cut
        off by a tiny max_tokens, all off-schema) stops before paying for the rest."""
        threshold = self.cfg.quality_breaker
        if threshold <= 0 or self.stop_reason is not None:
            return
        alert = quality_stop(
            self.session_quality, max_tokens=self.max_tokens or None, threshold=threshold
        )
        if alert is not None:
            self.notes.append(
                f"{alert.message}; then rerun with --retry-bad-answers "
                f"(--quality-breaker 0 turns this check off)"
            )
            self.stop("bad_answers")

    def _count(self, outcome: Outcome) -> None:
        statuses = [a.status for a in outcome.attempts]
        error_code = None if outcome.ok else (outcome.error or {}).get("code")
        verdict = self.tally.count(
            outcome.ok, outcome.body, statuses, None, error_code, outcome.extra.get("quality")
        )
        if verdict is not None:
            self.session_quality.add(verdict, model_of(outcome.body))
        h = id_hash(outcome.custom_id)
        if outcome.ok:
            self.counts.succeeded += 1
            # with --retry-failed, a success takes the id out of the failures
            if self._failed_now.pop(h, None) is not None:
                self.counts.failed -= 1
        else:
            if h not in self._failed_now:
                self.counts.failed += 1
            self._failed_now[h] = str(error_code)

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
            extra=self.hooks.summary_extra(self.state),
            stop_reason=self.stop_reason,
        )

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
            return "incomplete"
        return "complete"

    def _exit_code(self) -> int:
        reason = self.stop_reason
        if reason == "SIGINT":
            return EXIT_SIGINT
        if reason == "SIGTERM":
            return EXIT_SIGTERM
        if reason == "budget":
            return EXIT_BUDGET
        if reason in ("disk_error", "endpoint_down", "bad_answers") or self.counts.pending:
            return EXIT_ERROR
        return EXIT_SOME_FAILED if self.counts.failed else EXIT_OK

    # -- signals --------------------------------------------------------------------
    async def _watch_signals(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            task_status.started()
            async for signum in signals:
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

    async def _retry_sleep(self, seconds: float) -> None:
        """Back off, but wake at once when the run is stopping (the retry is left)."""
        if self._stopping.is_set():
            return
        async with anyio.create_task_group() as tg:

            async def wake() -> None:
                await self._stopping.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(wake)
            await self.sleep(seconds)
            tg.cancel_scope.cancel()


def _has_content(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


def _about_the_endpoint(exc: RequestError) -> bool:
    """A failure no other row can escape: the key, the permissions, the account's
    credit or quota, a model the endpoint does not serve."""
    return exc.status in (401, 402, 403, 404) or exc.code == "insufficient_quota"


def changes(where: str, old: Any, new: Any) -> list[str]:
    """What differs between two JSON values, one ``where: old -> new`` per change.

    >>> changes("job", {"a": 1, "b": [1, 2]}, {"a": 1, "b": [1, 3]})
    ['job.b[1]: 2 -> 3']
    """
    new = _jsonable(new)
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in {**old, **new}:
            out.extend(changes(f"{where}.{key}", old.get(key), new.get(key)))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            out.extend(changes(f"{where}[{i}]", a, b))
        return out
    if old == new:
        return []
    return [f"{where}: {_short(old)} -> {_short(new)}"]


def _short(value: Any) -> str:
    text = orjson.dumps(value).decode() if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _current_shape(options: Any) -> dict[str, Any]:
    """A fingerprint recorded by an older batchrun (a ``job`` dict holding the prompt,
    the body defaults and the response format) in today's shape, so a resume compares
    like with like. Scoring ([eval]) never shaped a request and is dropped."""
    if not isinstance(options, dict):
        return {}
    if "job" not in options:
        return options
    job = options.get("job") or {}
    prompt = job.get("prompt")
    return {
        "id_column": options.get("id_column"),
        "model": options.get("model"),
        "stream": options.get("stream"),
        "request": job.get("request") or {},
        "prompt": prompt.get("messages") if isinstance(prompt, dict) else prompt,
        "response_format": job.get("response_format"),
    }


class _Abandon(Exception):
    """A retry that would start after a stop was requested: leave it for the resume."""


def _jsonable(value: Any) -> Any:
    return orjson.loads(orjson.dumps(value, default=str))


__all__ = ["RunResult", "Runner"]
