"""Getting rows to the provider: plan shards, upload them, create their batches.

`Submitter.plan` puts the rows that are neither answered, failed for good, nor in an
open shard into shard files (`batchrun.batch.shards`, `batchrun.batch.workdir`),
except the copies of an identical request, which take its answer
(`batchrun.batch.followers`);
`submit_ready` uploads each and creates its batch (``completion_window`` 24h,
metadata naming run and shard), each call journaled before and after. While the run
is in the quality breaker's opening judgement (`batchrun.output.breaker`), a plan
holds each model's first `OPENING_ANSWERS` rows only, and none while those batches
run: the rest waits until their answers are judged. A create
whose answer was lost is never repeated blindly: the loss is journaled
(``create_lost``), and `settle_creating` looks for its batch by metadata
(`batchrun.batch.reconcile`) and adopts it, or creates again once a list made well
after the loss shows it cannot still appear. When the provider's queue of enqueued
tokens is full, a shard is refused (`refused`): its rows wait for a running batch to
end, or go again in smaller shards, down to one row; a row the queue refuses alone
while none of this run's batches is in it can never go through the Batch API and
fails for good (``token_limit_exceeded``, naming the limit), so the run ends.

    submitter = Submitter(cfg, client=client, shards=shards, ...)
    await submitter.plan()
    await submitter.submit_ready()
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import orjson

from batchrun.apis import CHAT, EMBEDDINGS, embedding_inputs
from batchrun.batch.bookkeeping import Bookkeeper
from batchrun.batch.client import BatchClient, CreateUnknown
from batchrun.batch.followers import Followers
from batchrun.batch.intake import Answers
from batchrun.batch.openshards import OpenShards
from batchrun.batch.outcomes import failure
from batchrun.batch.protocol import (
    metadata_for,
    parse_batch,
    queue_limit,
    refused_for_token_limit,
    shard_tag,
)
from batchrun.batch.reconcile import creating_decision, find_batches
from batchrun.batch.shards import RowTooLarge, ShardPlanner, never_fits_the_queue, shrink
from batchrun.batch.steps import ShardRecord
from batchrun.batch.workdir import (
    ShardWriter,
    first_body,
    line_for,
    read_index,
    remove_shard_files,
    shard_endpoint,
    shard_paths,
)
from batchrun.cost.budget import BatchBudget, cap_reached
from batchrun.errors import BatchApiError, InputError
from batchrun.ids import body_hash_int, id_hash
from batchrun.input.sources import Source
from batchrun.models import Outcome, Request
from batchrun.output.breaker import OPENING_ANSWERS
from batchrun.output.journal import answered
from batchrun.pacing.tokens import answer_ceiling, prompt_tokens
from batchrun.settings import Settings

TOO_BIG = "token_limit_exceeded"
"""The error code of a row the provider's queue of enqueued tokens can never hold."""
FOLLOWERS_WRITTEN_TOGETHER = 512
"""Follower lines found while planning that are written (and counted) together."""


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
    write_final: Callable[[list[Outcome]], None]
    """Writes, flushes and counts rows failed for good (`Finisher.write_final`)."""
    budget: BatchBudget | None = None
    followers: Followers | None = None
    """Identical requests: only the first is planned (None: every row is)."""
    deliver: Callable[[list[Outcome]], None] | None = None
    """Writes lines found while planning (followers of answered leaders), on the loop."""
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
    lone_refusals: Counter[str] = field(init=False, default_factory=Counter)
    """custom_id -> refusals of its row alone with none of this run's batches queued."""
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
            if rows == 1:  # for a refusal of the row alone (`refused`)
                body = first_body(self.run_dir, shard)
                if body is not None:
                    step["prompt_tokens"] = prompt_tokens(body)
            self.shards.write(step)
        if self.needs_plan:  # a leader left out for its group's answer, not found after all
            await self.plan()

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

        follow = self.followers
        ready: list[Outcome] = []
        if follow is not None:
            follow.start_pass()
        try:
            for index, req in enumerate(self.source.requests()):
                if self.stopping.is_set():
                    break
                leader = follow.leader_of(index, req) if follow is not None else None
                h = id_hash(req.custom_id)
                if h in self.shards.taken:
                    continue
                payload = orjson.dumps(req.body)
                b = body_hash_int(payload)
                if self.answers.settled(h, b, retry_failed=retry_failed):
                    if follow is not None:  # a leader may wait for this row's answer
                        ready.extend(follow.member_answered(index, req, f"{b:016x}"))
                    continue
                if follow is not None and self._follows(follow, index, leader, req, b, ready):
                    if len(ready) >= FOLLOWERS_WRITTEN_TOGETHER:
                        self._deliver(ready)
                        ready = []
                    continue
                model = str(req.body.get("model") or "")
                # one model and one endpoint a file: a chat shard is keyed by its model
                key = model if req.api == CHAT else f"{model}\n{req.api}"
                if opening is not None:
                    if per_model.get(model, 0) >= opening:
                        self.held_back = True  # after the opening batches are judged
                        continue
                    per_model[model] = per_model.get(model, 0) + 1
                if self.max_tokens is None:  # for the answer-quality messages, as online
                    ceiling = answer_ceiling(req.body)
                    self.max_tokens = ceiling[1] if ceiling is not None else 0
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
                line, hashed = line_for(req.custom_id, req.body, req.api)
                inputs = embedding_inputs(req.body) if req.api == EMBEDDINGS else 0
                try:
                    placed = planner.place(key, len(line), inputs)
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
            self._deliver(ready)
        except BaseException:
            for writer in writers.values():
                writer.discard()
            raise
        finally:
            if follow is not None:
                follow.end_pass()
                if follow.replan:
                    follow.replan = False
                    self.needs_plan = True
        return planned

    def _follows(
        self,
        follow: Followers,
        index: int,
        leader: int | None,
        req: Request,
        b: int,
        ready: list[Outcome],
    ) -> bool:
        """A pending row that is answered without being planned: a follower waits for
        its leader's answer or takes the one already in the run directory (into
        ``ready``); a leader whose group an earlier process answered through one of its
        followers takes that answer. False: plan it (paid, never lost)."""
        hashed = f"{b:016x}"
        if leader is None:
            member = follow.answered_member(index, lambda h: answered(self.answers.done, h, b))
            if member is None:
                return False
            follow.wait_for_member(member, req, hashed)
            return True
        leader_h = id_hash(follow.leader_id(leader))
        if not self.answers.settled(leader_h, b, retry_failed=self.cfg.retry_failed):
            follow.wait(leader, req, hashed)
            return True
        copy = follow.answer_now(leader, req, hashed)
        if copy is None:
            return False
        ready.append(copy)
        return True

    def _deliver(self, ready: list[Outcome]) -> None:
        """Write follower lines from the planning thread, on the event loop."""
        if ready and self.deliver is not None:
            anyio.from_thread.run_sync(self.deliver, list(ready))

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
            made = await client.create(
                file_id, metadata, shard_endpoint(self.run_dir, record.shard)
            )
        except CreateUnknown as exc:
            # the batch may exist, or appear later: it is looked for by its metadata, and
            # the wait before creating again counts from now, when the answer was lost
            shards.write({"step": "create_lost", "shard": record.shard, "at": self.wall_clock()})
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
        running batch to finish and go in a later shard; no attempt is counted. A
        row refused alone, with none of this run's batches in the queue, that can
        never fit (`batchrun.batch.shards.never_fits_the_queue`) fails for good."""
        running = [r for r in self.shards.running() if r.shard != record.shard]
        limit = queue_limit(reason)
        alone = record.rows == 1 and not running
        if alone:
            index = read_index(self.run_dir, record.shard)
            for custom_id in index:
                self.lone_refusals[custom_id] += 1
            refusals = max((self.lone_refusals[c] for c in index), default=0)
            if never_fits_the_queue(record.prompt_tokens, limit, refusals):
                self._fail_too_big(record, reason, limit, refusals)
                return
        at = self.wall_clock()
        self.shards.write(
            {"step": "done", "shard": record.shard, "status": "token_limit", "at": at}
        )
        self.shards.release(record.shard)
        remove_shard_files(shard_paths(self.run_dir, record.shard))
        if running:
            self.queue_full = True
        else:
            self.max_requests = shrink(self.max_requests)
        self.needs_plan = True
        wait = "running batches" if running else "a smaller shard"
        if alone:
            wait = "room in a queue held by batches outside this run"
        self.books.say(
            f"shard {shard_tag(record.shard)}: the provider's queue is full ({reason[:160]}); "
            f"its rows wait for {wait}"
        )

    def _fail_too_big(
        self, record: ShardRecord, reason: str, limit: int | None, refusals: int
    ) -> None:
        """A row larger than the provider's queue can hold: failed for good (written
        and flushed before the shard is journaled done, so a crash in between refuses
        it again and writes nothing twice). The shards shrank for it: the next ones
        are planned at full size again."""
        tag = shard_tag(record.shard)
        index = read_index(self.run_dir, record.shard)
        holds = f"{limit:,} enqueued tokens" if limit is not None else "its limit"
        size = f"; refused alone {refusals} times with no other batch of this run queued"
        if record.prompt_tokens is not None and limit is not None:
            size = f"; this request alone is about {record.prompt_tokens:,} prompt tokens"
        message = (
            f"larger than the provider's queue of enqueued tokens for {record.model or 'its model'}"
            f" holds ({holds}{size}): it cannot go through the Batch API; send it online "
            f"(without --batch-api) or shorten it. The provider said: {reason[:300]}"
        )
        at = self.wall_clock()
        finals = []
        for custom_id, entry in index.items():
            h, b = id_hash(custom_id), int(entry.body_hash, 16)
            if self.answers.settled(h, b, retry_failed=self.cfg.retry_failed):
                continue
            used = self.shards.ledger.attempts.get(custom_id, 0)
            finals.append(
                failure(
                    custom_id,
                    code=TOO_BIG,
                    message=message,
                    row=entry.row,
                    body_hash=entry.body_hash,
                    batch_id=record.batch_id,
                    attempts_before=used,
                    at=at,
                )
            )
        if finals:
            self.write_final(finals)
        self.shards.write(
            {"step": "done", "shard": record.shard, "status": "token_limit", "at": at}
        )
        self.shards.release(record.shard)
        remove_shard_files(shard_paths(self.run_dir, record.shard))
        self.max_requests = self.cfg.batch_max_requests
        self.needs_plan = True
        for outcome in finals:
            self.books.notes.append(
                f"row {outcome.row} ({outcome.custom_id}) failed for good ({TOO_BIG}): {message}"
            )
        self.books.say(f"shard {tag}: its one row is too large for the provider's queue; failed")

    async def settle_creating(self, *, drop: bool) -> None:
        """Shards whose create got no answer: adopt the batch found by metadata, or
        create again once a list begun `create_grace` after the answer was lost shows
        none (``drop``: cancelling, so abandon the shard instead; its rows stay
        pending). A create found unanswered by this process was sent by one that ended:
        its answer is lost as of now."""
        ledger = self.shards.ledger
        creating = {
            r.shard: r.create_started_at
            for r in ledger.open_shards()
            if r.phase == "creating" and r.create_started_at is not None
        }
        if not creating:
            return
        for shard in creating:
            if ledger.shards[shard].create_lost_at is None:
                at = self.wall_clock()
                self.shards.write({"step": "create_lost", "shard": shard, "at": at})
        listed_at = self.wall_clock()
        try:
            found = await find_batches(self.client, str(ledger.run_id), creating)
        except BatchApiError as exc:
            if not exc.retryable:
                raise
            self.trouble(exc)
            return
        for shard in creating:
            record = ledger.shards[shard]
            decision = creating_decision(
                found=shard in found,
                lost_at=record.create_lost_at,
                listed_at=listed_at,
                grace=self.create_grace,
            )
            if decision == "adopt":
                self._adopt(record, found[shard], found=True)
            elif decision == "create_again":
                self.shards.write({"step": "not_created", "shard": shard})
                if drop:
                    self.shards.abandon(record)


__all__ = ["Submitter"]
