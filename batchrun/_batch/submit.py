"""Getting rows to the provider: plan shards, upload them, create their batches.

`Submitter.plan` puts the rows that are neither answered, failed for good, nor in an
open shard into shard files (`batchrun._batch.shards`, `batchrun._batch.workdir`),
except the copies of an identical request, which take its answer
(`batchrun._batch.followers`);
`submit_ready` uploads each and creates its batch (``completion_window`` 24h,
metadata naming run and shard), each call journaled before and after. While the run
is in the quality breaker's opening judgement (`batchrun._output.breaker`), a plan
holds each model's first `OPENING_ANSWERS` rows only, and none while those batches
run: the rest waits until their answers are judged. A create
whose answer was lost is never repeated blindly: the loss is journaled
(``create_lost``), and `settle_creating` looks for its batch by metadata
(`batchrun._batch.reconcile`) and adopts it, or creates again once a list made well
after the loss shows it cannot still appear. When the provider's queue of enqueued
tokens is full, a shard is refused (`refused`): its rows wait for a running batch to
end, or go again in smaller shards, down to one row; a row the queue refuses alone
while none of this run's batches is in it can never go through the Batch API and
fails for good (``token_limit_exceeded``, naming the limit), so the run ends.

The work is shared out: `batchrun._batch.planning` makes the shard files of one pass,
`batchrun._batch.creating` uploads them and creates (and finds) their batches; the
Submitter holds what the passes leave behind (the shard size, whether to plan again,
a full queue, the cap) and decides what a refusal means.

    submitter = Submitter(cfg, clients=clients, shards=shards, ...)
    await submitter.plan()
    await submitter.submit_ready()
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread

from batchrun._batch.bookkeeping import Bookkeeper
from batchrun._batch.creating import Creator
from batchrun._batch.followers import Followers
from batchrun._batch.intake import Answers
from batchrun._batch.openshards import OpenShards
from batchrun._batch.planning import PlanPass
from batchrun._batch.pool import BatchClients, BatchTakers
from batchrun._batch.protocol import queue_limit, shard_tag
from batchrun._batch.shards import never_fits_the_queue, shrink
from batchrun._batch.steps import ShardRecord
from batchrun._batch.workdir import first_body, read_index, remove_shard_files, shard_paths
from batchrun._cost.budget import BatchBudget
from batchrun._input.sources import Source
from batchrun._models import Outcome
from batchrun._output.breaker import OPENING_ANSWERS
from batchrun._pacing.tokens import prompt_tokens
from batchrun._settings import Settings
from batchrun.errors import BatchApiError

TOO_BIG = "token_limit_exceeded"
"""The error code of a row the provider's queue of enqueued tokens can never hold."""


@dataclass(eq=False, kw_only=True)
class Submitter:
    """Plans and submits the shards of one run. Everything it needs is given; a call
    that failed after its retries goes to ``trouble`` (which may stop the run)."""

    cfg: Settings
    clients: BatchClients
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
    takers: BatchTakers | None = None
    """A pool's batch endpoints: each row goes to one of its model's (None: no pool)."""
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

    _creator: Creator = field(init=False)

    def __post_init__(self) -> None:
        self.max_requests = self.cfg.batch_max_requests
        self._creator = Creator(
            clients=self.clients,
            shards=self.shards,
            books=self.books,
            trouble=self.trouble,
            wall_clock=self.wall_clock,
            create_grace=self.create_grace,
            refused=self.refused,
        )

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
        planning = PlanPass(
            target=self,
            cfg=self.cfg,
            source=self.source,
            shards=self.shards,
            answers=self.answers,
            stopping=self.stopping,
            max_requests=self.max_requests,
            budget=self.budget,
            followers=self.followers,
            deliver=self.deliver,
            takers=self.takers,
        )
        planned = await anyio.to_thread.run_sync(planning.run, room, spent, opening)
        if self.over_budget is not None and self.shards.running():
            self.books.say(
                "--max-cost: no room for more rows until the open batches end (each "
                "holds the worst case of its rows until its real cost is known)"
            )
        for shard, model, rows, attempt, worst, endpoint in planned:
            step: dict[str, Any] = {
                "step": "planned",
                "shard": shard,
                "model": model,
                "rows": rows,
                "attempt": attempt,
            }
            if endpoint is not None:  # a pool's: every call for the shard goes there
                step["endpoint"] = endpoint
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
                    await self._creator.submit(record)
                except BatchApiError as exc:
                    if not exc.retryable:
                        raise
                    self.trouble(exc)
                    return

    def refused(self, record: ShardRecord, reason: str) -> None:
        """The provider's queue for the model is full: the shard's rows wait for a
        running batch to finish and go in a later shard; no attempt is counted. A
        row refused alone, with none of this run's batches in the queue, that can
        never fit (`batchrun._batch.shards.never_fits_the_queue`) fails for good."""
        # the queue is the provider's: in a pool, only that endpoint's batches hold it
        running = [
            r
            for r in self.shards.running()
            if r.shard != record.shard and r.endpoint == record.endpoint
        ]
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
        self._drop_refused(record, self.wall_clock())
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
        _, finals = self.answers.unsettled(
            index,
            self.shards.ledger.attempts,
            code=TOO_BIG,
            message=message,
            batch_id=record.batch_id,
            at=at,
            resubmit=False,
            retry_failed=self.cfg.retry_failed,
        )
        if finals:
            self.clients.mark(record, finals)
            self.write_final(finals)
        self._drop_refused(record, at)
        self.max_requests = self.cfg.batch_max_requests
        self.needs_plan = True
        for outcome in finals:
            self.books.notes.append(
                f"row {outcome.row} ({outcome.custom_id}) failed for good ({TOO_BIG}): {message}"
            )
        self.books.say(f"shard {tag}: its one row is too large for the provider's queue; failed")

    def _drop_refused(self, record: ShardRecord, at: float) -> None:
        """A refused shard is done (``token_limit``) and its files go: its rows that
        are not settled are planned again into a later shard."""
        self.shards.write(
            {"step": "done", "shard": record.shard, "status": "token_limit", "at": at}
        )
        self.shards.release(record.shard)
        remove_shard_files(shard_paths(self.run_dir, record.shard))

    async def settle_creating(self, *, drop: bool) -> None:
        """Shards whose create got no answer (`Creator.settle_creating`)."""
        await self._creator.settle_creating(drop=drop)


__all__ = ["Submitter"]
