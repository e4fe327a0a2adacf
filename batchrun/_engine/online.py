"""The online lane: each row answered by its own HTTP call, paced per model.

One row's path through the lane, top to bottom of this module:

1. `OnlineLane.prepare` checks the input and adopts the run directory
   (`batchrun._engine.prepare`), with the pilot's picker and the in-run dedupe watching
   the scan (`batchrun._engine.scanwatch`).
2. `answer` starts ``concurrency`` workers that ask the scheduler
   (`batchrun._pacing.scheduler`) for the next request of the lanes
   (`batchrun._engine.pending`: rows not answered yet, in input order).
3. `batchrun._engine.attempt.Sender` makes each request's attempts: each waits for its
   model's quota, goes out through `batchrun._transport.client.ChatClient`, and its
   response headers feed the pacing back.
4. `batchrun._engine.writer.GroupCommit` group-commits finished outcomes through the
   run's `Committer` (written, then counted, then the hooks are told); then
   identical requests' followers get their leader's answer, usable answers go into
   the response cache, and the quality breaker judges (`_written`).
5. `_checkpoint_loop` rewrites summary.json every few seconds.

A stop (a signal, the budget, the breaker, a failed write) stops the scheduler: nothing
waiting is sent; what is on the wire may finish for ``drain_timeout`` seconds.

    lane = OnlineLane(settings, api_key=key, transport=transport)
    result = await Engine(settings, lane, hooks=hooks).run()
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.lowlevel
import anyio.to_thread
import httpx

from batchrun._apis import EMBEDDING_REQUEST_INPUTS, EMBEDDINGS
from batchrun._engine.attempt import BREAKER_MIN, Breaker, Sender
from batchrun._engine.commit import Committer
from batchrun._engine.gcpause import fewer_collections, threshold_for
from batchrun._engine.packing import (
    FLOAT_PACK_INPUTS,
    PackingLane,
    send_pack,
)
from batchrun._engine.pending import PendingRows
from batchrun._engine.pool import build_pool, pool_clients, warn_once
from batchrun._engine.prepare import Prepared, prepare_run, record
from batchrun._engine.scanwatch import ScanWatch
from batchrun._engine.writer import GroupCommit
from batchrun._input.sources import Source
from batchrun._models import Outcome, Request
from batchrun._output.breaker import first_max_tokens, stop_note
from batchrun._pacing.pool import Pool
from batchrun._pacing.scheduler import Accounts, Lane, Scheduler
from batchrun._redact import register_secret
from batchrun._settings import Settings
from batchrun._transport.client import ChatClient
from batchrun.errors import RunDirError

if TYPE_CHECKING:
    from batchrun._engine.lifecycle import Engine

__all__ = ["OnlineLane"]


def _lane_accounts(
    cfg: Settings, accounts: Accounts | Pool | None, clock: Any
) -> tuple[Pool | None, Accounts | Pool]:
    """(the pool, the accounts) of an online lane: those handed in, else the job's
    pool of endpoints (`build_pool`), else one endpoint's accounts from the settings."""
    if isinstance(accounts, Pool):
        return accounts, accounts
    if accounts is not None:
        return None, accounts
    if cfg.endpoints:
        pool = build_pool(cfg, clock)
        return pool, pool
    limits = Accounts(
        concurrency=cfg.concurrency,
        rpm=cfg.rpm.default,
        tpm=cfg.tpm.default,
        by_model=cfg.limits_by_model(),
        clock=clock,
    )
    return None, limits


class OnlineLane:
    """Answers rows request by request (see the module docstring). Everything it
    needs is injected: the key, the transport, the source, and the quota accounts (a
    shard of a cluster run paces by leases from one shared account)."""

    pilot = False
    cancel_only = False
    handing_over = False

    def __init__(
        self,
        cfg: Settings,
        *,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        source: Source | None = None,
        accounts: Accounts | Pool | None = None,
        clock: Any = time.monotonic,
        api_keys: Mapping[str, str | None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.api_key = api_key
        register_secret(api_key)  # scrubbed from every byte written from now on
        self.api_keys = dict(api_keys or {})
        """Each endpoint's key, by its name in the pool (`batchrun._api.endpoint_keys`)."""
        for key in self.api_keys.values():
            register_secret(key)
        self.pool, self.accounts = _lane_accounts(cfg, accounts, clock)
        """The run's pool of endpoints (`batchrun._engine.pool`; None: one endpoint) and
        each model's quotas, concurrency and 429s (`batchrun._pacing`). A shard of a
        cluster run hands in its leases from the one account every worker shares
        (`batchrun._scale.lease`; a pool's: each endpoint's)."""
        self.transport = transport
        self.source = source
        self.prepared: Prepared | None = None
        self.pending: PendingRows | None = None
        self.committer: Committer | None = None
        self.watch = ScanWatch(cfg, api_key=api_key, api_keys=self.api_keys)
        """The pilot's picker and the response cache / dedupe (`ScanWatch`)."""
        self._client: ChatClient | None = None
        self._clients: dict[str, ChatClient] = {}
        self._scheduler: Scheduler | None = None
        self._sender: Sender | None = None
        self._run: Engine | None = None
        self._commit: GroupCommit | None = None
        self._drain_scope: anyio.CancelScope | None = None
        self.packing: dict[str, int] | None = None
        """An embeddings job's packs this process sent (summary.json's ``packing``):
        requests, the rows they carried, packs split to find a refused row."""

    # -- before sending ---------------------------------------------------------------
    async def prepare(self, run: Engine) -> None:
        from batchrun._output.ledger import open_batches_refusal

        self._run = run
        # batches an earlier --batch-api process left open would answer (and bill)
        # these rows too; make_runner collects them first when it can
        refusal = open_batches_refusal(run.run_dir)
        if refusal is not None:
            raise RunDirError(refusal)
        cfg, facts = self.cfg, run.facts
        facts.pacing = self.accounts
        prepared = self.prepared = await prepare_run(
            run,
            cfg,
            source=self.source,
            observe=self.watch.observer(),
            retry_bad=cfg.retry_bad_answers,
        )
        journal = prepared.journal
        watch = self.watch
        await watch.after_scan()
        self.pending = pending = PendingRows(
            journal.done,
            journal.failed,
            bad=prepared.bad,
            retry_failed=cfg.retry_failed,
            selection=watch.selection,
            reuse=watch.reuse,
            deliver=self._deliver,
        )
        self.pilot = watch.selection is not None
        answered = bool(journal.done or journal.failed)
        await watch.adopt(prepared.scan, answered, pending.done_for)
        record(cfg, prepared)
        self.committer = Committer(
            facts,
            run.hooks,
            run.state,
            failed_now=prepared.held.failed_now,
            summary_extra=self._summary_extra,
        )
        self._commit = GroupCommit(self.committer, written=self._written, failed=self.abandon)

    # -- sending ----------------------------------------------------------------------
    async def answer(self, run: Engine) -> None:
        cfg, prepared, pending = self.cfg, self.prepared, self.pending
        assert prepared is not None and pending is not None
        self._client = client = ChatClient(
            base_url=cfg.base_url,
            api_key=self.api_key,
            auth=cfg.auth,
            auth_header=cfg.auth_header,
            extra_headers=cfg.headers,
            timeout=cfg.timeout,
            total_timeout=cfg.total_timeout,
            max_response_bytes=cfg.max_response_bytes,
            transport=self.transport,
            max_connections=cfg.concurrency,
            clock=run.clock,
        )
        if self.pool is not None:
            self._clients = pool_clients(
                cfg, self.api_keys, transport=self.transport, clock=run.clock
            )
        # a checkpoint at once: a resume that had to parse every line pays it once,
        # and even a run killed in its first seconds leaves a summary
        self._try_checkpoint(run)
        # a run whose earlier answers already trip the breaker sends nothing more
        self._judge(run)
        lanes = pending.lanes(prepared.source, prepared.scan.models, self.accounts, run.clock)
        if cfg.api == EMBEDDINGS and cfg.is_dataset:
            # rows to embed go many to a request; a lane of a shared read (several
            # models) may have nothing *yet*, which would end its packs: left unpacked
            floats = cfg.request.get("encoding_format", "base64") != "base64"
            default = FLOAT_PACK_INPUTS if floats else EMBEDDING_REQUEST_INPUTS
            packing = {"max_inputs": cfg.embed_batch or default}
            lanes = [PackingLane(lane, **packing) if type(lane) is Lane else lane for lane in lanes]
            self.packing = {"requests": 0, "rows": 0, "split": 0}
        self._scheduler = Scheduler(
            self.accounts,
            lanes,
            estimate=_token_estimate,
            sleep=run.sleep,
            pool=self.pool,
        )
        if run.stopping.is_set():
            self._scheduler.stop()
        self._sender = Sender(
            client,
            self._scheduler,
            run.hooks,
            run.state,
            live=run.facts,
            stopping=run.stopping,
            stop=run.stop,
            max_attempts=cfg.max_attempts,
            validator=_validator(cfg),
            breaker=Breaker(max(BREAKER_MIN, cfg.concurrency)),
            clock=run.clock,
            wall_clock=run.wall_clock,
            sleep=run.sleep,
        )
        if self.pool is not None:
            self._sender.pooled(
                self.pool, self._clients, warn=partial(warn_once, run.notes, quiet=cfg.quiet)
            )
        with fewer_collections(threshold_for(cfg.concurrency)):
            await self._pool(run, self._scheduler, self._sender)

    async def _pool(self, run: Engine, scheduler: Scheduler, sender: Sender) -> None:
        commit = self._commit
        assert commit is not None
        async with anyio.create_task_group() as background:
            background.start_soon(self._checkpoint_loop, run)
            async with anyio.create_task_group() as writers:
                writers.start_soon(commit.run, run)
                try:
                    with anyio.CancelScope() as drain_scope:
                        self._drain_scope = drain_scope
                        async with anyio.create_task_group() as workers:
                            for _ in range(self._workers()):
                                workers.start_soon(self._work, sender, scheduler)
                finally:
                    commit.close()
            background.cancel_scope.cancel()

    def _workers(self) -> int:
        """Requests that may be in flight at once: ``concurrency``; in a pool, more
        when the endpoints declare their own caps (``[endpoints.NAME] concurrency``)
        and these add up to more. Not every endpoint's default cap summed: each
        waiting worker wakes at every change, so four endpoints' 64 each cost 2.5x
        the CPU a request of one endpoint with the same quota (BENCHMARKS.md)."""
        if self.pool is None:
            return self.cfg.concurrency
        declared = sum(e.concurrency or 0 for e in self.cfg.endpoints.values())
        return max(self.cfg.concurrency, declared)

    async def _work(self, sender: Sender, scheduler: Scheduler) -> None:
        # workers ask the scheduler, which pulls from the lanes' generators: next() is
        # synchronous, so on one event loop no two workers ever run it at once, and no
        # channel (with its per-item cost) is needed between reader and workers
        assert self._commit is not None
        deliver = self._commit.deliver  # (straight to the writer: once per request)
        while (ticket := await scheduler.next()) is not None:
            if self.packing is not None:
                await send_pack(
                    sender,
                    scheduler,
                    ticket,
                    counts=self.packing,
                    deliver=self._deliver,
                    estimate=_token_estimate,
                )
            else:
                outcome = await sender.process(ticket)
                if outcome is not None:
                    deliver([outcome])
            # a transport that never suspends (an in-memory mock, a local cache)
            # must not starve the writer, the summary and the signal handler
            await anyio.lowlevel.checkpoint()

    def _deliver(self, outcomes: list[Outcome]) -> None:
        """Finished outcomes, and answers found without sending: to the writer."""
        assert self._commit is not None
        self._commit.deliver(outcomes)

    # -- writing ----------------------------------------------------------------------
    async def _written(self, batch: list[Outcome]) -> None:
        """After a write: followers of the leaders just written get their answer
        (written next), usable answers go into the response cache (off the event loop),
        and the quality breaker judges."""
        run, reuse = self._run, self.watch.reuse
        assert run is not None
        if reuse is not None:
            released, store = reuse.written(batch)
            if released:
                self._deliver(released)
            if store and reuse.cache is not None:
                try:
                    await anyio.to_thread.run_sync(reuse.cache.put_many, store)
                except Exception as exc:  # the cache is a saving, never a reason to stop
                    note = f"could not store answers in the response cache: {exc}"
                    if note not in run.notes:
                        run.notes.append(note)
        self._judge(run)

    def _judge(self, run: Engine) -> None:
        """Quality breaker: a run whose answers are, with confidence, mostly unusable
        (all cut off by a tiny max_tokens, all off-schema) stops before paying for
        the rest. It judges the whole run's paid answers."""
        assert self.committer is not None
        alert = self.committer.judge(self._message_max_tokens)
        if alert is not None:
            run.notes.append(stop_note(alert))
            run.stop("bad_answers")

    def _message_max_tokens(self) -> int | None:
        """max_tokens for a quality message: the first request sent's, or the input's
        first request's when this process has sent nothing yet."""
        sent = self._sender.max_tokens if self._sender is not None else None
        if sent is not None or self.prepared is None:
            return sent
        return first_max_tokens(self.prepared.source.requests())

    def _try_checkpoint(self, run: Engine) -> None:
        """A checkpoint during the run; a failed one stops sending (the disk is
        full, or the run directory is gone: every answer from now on would be lost)."""
        assert self.committer is not None
        problem = self.committer.try_checkpoint()
        if problem is not None:
            run.notes.append(problem)
            run.stop("disk_error")

    async def _checkpoint_loop(self, run: Engine) -> None:
        while True:
            await anyio.sleep(self.cfg.summary_interval)
            self._try_checkpoint(run)

    # -- stopping and the end ------------------------------------------------------------
    def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.stop()

    def drain(self, run: Engine) -> None:
        if run.outer is not None:
            run.outer.start_soon(self._drain_deadline)

    async def _drain_deadline(self) -> None:
        """In-flight requests get ``drain_timeout`` seconds, then are cancelled."""
        await anyio.sleep(self.cfg.drain_timeout)
        self.abandon()

    def abandon(self) -> None:
        if self._drain_scope is not None:
            self._drain_scope.cancel()

    async def close_transport(self) -> None:
        if self._client is not None:
            await self._client.aclose()
        for client in self._clients.values():
            await client.aclose()

    def closing_notes(self) -> list[str]:
        notes = []
        run, prepared = self._run, self.prepared
        assert run is not None and prepared is not None
        if prepared.source.grew():
            notes.append(
                f"{self.cfg.input_path} grew while the run was going; rows added after "
                "it was checked were not sent (rerun with --force to send them)"
            )
        counts = run.facts.counts
        if counts.failed and run.facts.stop_reason is None and not counts.pending:
            notes.append(
                f"{counts.failed:,} requests failed for good (see errors.jsonl); "
                "rerun with --retry-failed to try them again"
            )
        return notes

    def _summary_extra(self) -> dict[str, Any]:
        """The pilot's selection and the in-run dedupe (`ScanWatch`), and an embeddings
        job's packs, for summary.json."""
        out = self.watch.summary_extra()
        if self.packing is not None:
            out["packing"] = dict(self.packing)
        return out

    def summary(self, status: str) -> dict[str, Any]:
        assert self.committer is not None
        return self.committer.summary(status)

    def save(self, summary: dict[str, Any]) -> None:
        assert self.committer is not None
        self.committer.save(summary)

    def close(self) -> None:
        if self.committer is not None:
            self.committer.close()
        self.watch.close()

    def after_run(self) -> None:
        """Nothing follows an online run."""


def _token_estimate(req: Request) -> int:
    from batchrun._pacing.tokens import completion_ceiling, prompt_tokens

    body, api = req.body, req.api
    return prompt_tokens(body, api=api) + completion_ceiling(body, default_max=256, api=api)


def _validator(cfg: Settings) -> Any:
    from batchrun._schemas import compile_schema

    schema = cfg.schema
    return compile_schema(schema) if schema else None
