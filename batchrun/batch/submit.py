"""Getting rows to the provider: plan shards, upload them, create their batches.

`Submitter.plan` puts the rows that are neither answered, failed for good, nor in an
open shard into shard files (`batchrun.batch.shards`, `batchrun.batch.workdir`);
`submit_ready` uploads each and creates its batch (``completion_window`` 24h,
metadata naming run and shard), each call journaled before and after. While the run
is in the quality breaker's opening judgement (`batchrun.output.breaker`), a plan
holds each model's first `OPENING_ANSWERS` rows only, and none while those batches
run: the rest waits until their answers are judged. A create
whose answer was lost is never repeated blindly: `settle_creating` looks for its
batch by metadata (`batchrun.batch.reconcile`) and adopts it, or creates again once
it cannot still appear. When the provider's queue of enqueued tokens is full, a
shard is refused (`refused`): its rows wait for a running batch to end, or go again
in smaller shards.

    submitter = Submitter(cfg, client=client, shards=shards, ...)
    await submitter.plan()
    await submitter.submit_ready()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import orjson

from batchrun.batch.bookkeeping import Bookkeeper
from batchrun.batch.client import BatchClient, CreateUnknown
from batchrun.batch.intake import Answers
from batchrun.batch.openshards import OpenShards
from batchrun.batch.protocol import metadata_for, parse_batch, refused_for_token_limit, shard_tag
from batchrun.batch.reconcile import creating_decision, find_batches
from batchrun.batch.shards import RowTooLarge, ShardPlanner, shrink
from batchrun.batch.steps import ShardRecord
from batchrun.batch.workdir import ShardWriter, line_for, remove_shard_files, shard_paths
from batchrun.cost.budget import BatchBudget, cap_reached
from batchrun.errors import BatchApiError, InputError
from batchrun.ids import body_hash_int, id_hash
from batchrun.input.sources import Source
from batchrun.output.breaker import OPENING_ANSWERS
from batchrun.settings import Settings


@dataclass(eq=False, kw_only=True)
class Submitter:
    """Plans and submits the shards of one run. Everything it needs is given; a call
    that failed after its retries goes to ``trouble`` (which may stop the run)."""

    cfg: Settings
    client: BatchClient
    shards: OpenShards
    answers: Answers
    source: Source
    books: Bookkeeper
    stopping: anyio.Event
    trouble: Callable[[BatchApiError], None]
    wall_clock: Callable[[], float]
    create_grace: float
    budget: BatchBudget | None = None
    models: int = 1
    """Models the input names (the breaker's opening judgement takes rows of each)."""
    over_budget: str | None = field(init=False, default=None)
    """Why the last plan left rows out: the cap has no room for the next one's worst
    case (they go once an open batch ends and frees its reservation, or never)."""
    max_requests: int = field(init=False)
    """Rows per shard at most; halved when a shard alone overflows the queue."""
    needs_plan: bool = field(init=False, default=True)
    """Rows may be pending outside every open shard (at start, after a retry)."""
    queue_full: bool = field(init=False, default=False)
    """A shard was refused while batches ran: wait for one to end."""
    max_tokens: int | None = field(init=False, default=None)
    """max_tokens of the first request planned (0: none set), for quality messages."""
    held_back: bool = field(init=False, default=False)
    """The last plan left rows out for the breaker's opening judgement: plan again
    once a batch ends."""

    def __post_init__(self) -> None:
        self.max_requests = self.cfg.batch_max_requests

    @property
    def run_dir(self) -> str:
        return self.shards.run_dir

    def batch_ended(self, *, retry: bool) -> None:
        """A batch was taken in: the queue has room, its rows to retry are pending, and
        under a cap its reservation is free for the rows that did not fit."""
        if retry or self.over_budget is not None or self.held_back:
            self.needs_plan = True
        self.queue_full = False

    # -- planning ---------------------------------------------------------------------
    async def plan(self) -> None:
        self.needs_plan = False
        self.over_budget = None
        self.held_back = False
        opening = None
        if self.answers.breaker.opening(self.models):
            if self.shards.ledger.open_shards():
                self.held_back = True  # the opening batches run: judge them first
                return
            opening = OPENING_ANSWERS
        spent = self.budget.spent() if self.budget is not None else 0.0
        room = self._budget_room(spent)
        planned = await anyio.to_thread.run_sync(self._plan_blocking, room, spent, opening)
        if self.over_budget is not None and self.shards.running():
            self.books.say(
                "--max-cost: no room for more rows until the open batches end (each "
                "holds the worst case of its rows until its real cost is known)"
            )
        for shard, model, rows, attempt, worst in planned:
            step: dict[str, Any] = {
                "step": "planned",
                "shard": shard,
                "model": model,
                "rows": rows,
                "attempt": attempt,
            }
            if worst is not None:
                step["worst_usd"] = worst
            self.shards.write(step)

    def _budget_room(self, spent: float) -> float | None:
        """What the cap leaves for new shards: minus what was ``spent`` and the worst
        case of every open shard (one planned without a cap, of unknown worst case,
        leaves nothing until it ends). None: no cap."""
        if self.budget is None:
            return None
        reserved = 0.0
        for record in self.shards.ledger.open_shards():
            if record.worst_usd is None:
                return 0.0
            reserved += record.worst_usd
        return self.budget.cap - spent - reserved

    def _plan_blocking(
        self, room: float | None, spent: float, opening: int | None = None
    ) -> list[tuple[int, str, int, int, float | None]]:
        """Shard files for the pending rows (``opening``: at most that many per model,
        the breaker's opening judgement)."""
        ledger = self.shards.ledger
        planner = ShardPlanner(self.max_requests, self.cfg.batch_max_bytes, ledger.next_shard)
        writers: dict[int, ShardWriter] = {}
        attempts_of: dict[int, int] = {}
        models: dict[int, str] = {}
        worst_of: dict[int, float] = {}
        planned: list[tuple[int, str, int, int, float | None]] = []
        attempts = ledger.attempts
        retry_failed = self.cfg.retry_failed
        budget = self.budget
        per_model: dict[str, int] = {}

        def close(shard: int) -> None:
            writer = writers.pop(shard)
            writer.finish()
            worst = worst_of[shard] if budget is not None else None
            planned.append((shard, models[shard], writer.requests, attempts_of[shard], worst))

        try:
            for req in self.source.requests():
                if self.stopping.is_set():
                    break
                h = id_hash(req.custom_id)
                if h in self.shards.taken:
                    continue
                payload = orjson.dumps(req.body)
                if self.answers.settled(h, body_hash_int(payload), retry_failed=retry_failed):
                    continue
                model = str(req.body.get("model") or "")
                if opening is not None:
                    if per_model.get(model, 0) >= opening:
                        self.held_back = True  # after the opening batches are judged
                        continue
                    per_model[model] = per_model.get(model, 0) + 1
                if self.max_tokens is None:  # for the answer-quality messages, as online
                    limit = req.body.get("max_tokens") or req.body.get("max_completion_tokens")
                    self.max_tokens = limit if isinstance(limit, int) else 0
                worst = 0.0
                if budget is not None and room is not None:
                    worst = budget.worst_case(req.body)
                    if worst > room:
                        # rows stay in input order: this one and the rest wait for room
                        self.over_budget = cap_reached(
                            spent, budget.cap, worst, how=" through the Batch API"
                        )
                        break
                    room -= worst
                line, hashed = line_for(req.custom_id, req.body)
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
                worst_of[placed.shard] = worst_of.get(placed.shard, 0.0) + worst
                used = attempts.get(req.custom_id, 0)
                attempts_of[placed.shard] = max(attempts_of[placed.shard], used + 1)
                self.shards.taken[h] = placed.shard
            for shard in sorted(writers):
                close(shard)
        except BaseException:
            for writer in writers.values():
                writer.discard()
            raise
        return planned

    # -- submitting -------------------------------------------------------------------
    async def submit_ready(self) -> None:
        if self.queue_full and not self.shards.running():
            # the batches it waited for were refused too: try again, in smaller shards
            self.queue_full = False
            self.max_requests = shrink(self.max_requests)
        for record in self.shards.open():
            if self.stopping.is_set() or self.queue_full:
                return
            if record.phase in ("planned", "uploading", "uploaded"):
                try:
                    await self._submit(record)
                except BatchApiError as exc:
                    if not exc.retryable:
                        raise
                    self.trouble(exc)
                    return

    async def _submit(self, record: ShardRecord) -> None:
        client = self.client
        shards = self.shards
        tag = shard_tag(record.shard)
        if record.file_id is None:
            paths = shard_paths(self.run_dir, record.shard)
            shards.write({"step": "upload", "shard": record.shard})
            uploaded = await client.upload(
                paths.input, f"batchrun-{shards.ledger.run_id}-{tag}.jsonl"
            )
            shards.write(
                {"step": "uploaded", "shard": record.shard, "file_id": str(uploaded["id"])}
            )
        file_id = record.file_id
        assert file_id is not None
        metadata = metadata_for(str(shards.ledger.run_id), record.shard, record.attempt)
        shards.write(
            {"step": "create", "shard": record.shard, "file_id": file_id, "at": self.wall_clock()}
        )
        try:
            made = await client.create(file_id, metadata)
        except CreateUnknown as exc:
            # the batch may exist: it is looked for by its metadata, never created blindly
            self.books.say(f"shard {tag}: no answer to its create ({exc.message}); looking for it")
            return
        except BatchApiError as exc:
            shards.write({"step": "not_created", "shard": record.shard})
            if refused_for_token_limit(exc.status or 0, exc.body):
                self.refused(record, exc.message)
                return
            raise
        self._adopt(record, made, found=False)

    def _adopt(self, record: ShardRecord, obj: Any, *, found: bool) -> None:
        view = parse_batch(obj)
        self.shards.write(
            {
                "step": "created",
                "shard": record.shard,
                "batch_id": view.id,
                "at": view.created_at or self.wall_clock(),
                "found": found,
            }
        )
        self.shards.views[record.shard] = view
        remove_shard_files(shard_paths(self.run_dir, record.shard), keep_index=True)
        how = "found after a lost answer" if found else "submitted"
        self.books.say(f"shard {shard_tag(record.shard)}: {record.rows:,} rows {how} as {view.id}")
        self.books.write_state()

    def refused(self, record: ShardRecord, reason: str) -> None:
        """The provider's queue for the model is full: the shard's rows wait for a
        running batch to finish and go in a later shard; no attempt is counted."""
        self.shards.write({"step": "done", "shard": record.shard, "status": "token_limit"})
        self.shards.release(record.shard)
        remove_shard_files(shard_paths(self.run_dir, record.shard))
        running = self.shards.running()
        if running:
            self.queue_full = True
        else:
            self.max_requests = shrink(self.max_requests)
        self.needs_plan = True
        self.books.say(
            f"shard {shard_tag(record.shard)}: the provider's queue is full ({reason[:160]}); "
            f"its rows wait for {'running batches' if running else 'a smaller shard'}"
        )

    async def settle_creating(self, *, drop: bool) -> None:
        """Shards whose create got no answer: adopt the batch found by metadata, or
        create again once it cannot still appear (``drop``: cancelling, so abandon the
        shard instead; its rows stay pending)."""
        ledger = self.shards.ledger
        creating = {
            r.shard: r.create_started_at
            for r in ledger.open_shards()
            if r.phase == "creating" and r.create_started_at is not None
        }
        if not creating:
            return
        try:
            found = await find_batches(self.client, str(ledger.run_id), creating)
        except BatchApiError as exc:
            if not exc.retryable:
                raise
            self.trouble(exc)
            return
        now = self.wall_clock()
        for shard, sent_at in creating.items():
            record = ledger.shards[shard]
            decision = creating_decision(
                found=shard in found, sent_at=sent_at, now=now, grace=self.create_grace
            )
            if decision == "adopt":
                self._adopt(record, found[shard], found=True)
            elif decision == "create_again":
                self.shards.write({"step": "not_created", "shard": shard})
                if drop:
                    self.shards.abandon(record)


__all__ = ["Submitter"]
