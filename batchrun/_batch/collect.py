"""Watching the open batches and taking in the ones that ended.

`Collector.poll` retrieves every submitted batch not known to be final (one line of
progress per change); `Collector.finish_final` takes in each batch that ended: refused
for a full queue (its rows wait, `batchrun._batch.submit.Submitter.refused`), or its
files taken in (`batchrun._batch.finish.Finisher`), after which its rows to retry are
pending and the quality breaker judges again. A batch that ended without naming a file
its counts promise is read again at each poll (`batchrun._batch.finish.LateFiles`)
before any of its rows is resubmitted.

    collector = Collector(clients=clients, shards=shards, books=books, ...)
    changed = await collector.poll()
    await collector.finish_final(stopping)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from batchrun._batch.bookkeeping import Bookkeeper
from batchrun._batch.finish import Finisher, LateFiles
from batchrun._batch.openshards import OpenShards
from batchrun._batch.pool import BatchClients
from batchrun._batch.protocol import BatchView, parse_batch, shard_tag
from batchrun._batch.steps import ShardRecord
from batchrun._batch.submit import Submitter
from batchrun.errors import BatchApiError

__all__ = ["Collector"]


@dataclass(eq=False, kw_only=True)
class Collector:
    """Polls a run's open batches and takes in the ended ones (see the module doc).

    ``trouble``: a call that failed after its retries; ``answered``: a round of calls
    got answers (the provider is up); ``judge``: the quality breaker, after a batch was
    taken in."""

    clients: BatchClients
    shards: OpenShards
    books: Bookkeeper
    finisher: Finisher
    submitter: Submitter
    trouble: Callable[[BatchApiError], None]
    answered: Callable[[], None]
    clock: Callable[[], float]
    judge: Callable[[], Awaitable[None]]
    late: LateFiles = field(default_factory=LateFiles)

    async def poll(self) -> bool:
        """Retrieve every submitted batch not known to be final; True if any changed."""
        views, late = self.shards.views, self.late
        changed = False
        failures = calls = 0
        for record in self.shards.open():
            before = views.get(record.shard)
            ended = before is not None and before.final and not late.waiting(record.shard)
            if record.batch_id is None or ended:
                continue
            calls += 1
            try:
                view = parse_batch(await self.clients.of(record).retrieve(record.batch_id))
            except BatchApiError as exc:
                if not exc.retryable:
                    raise
                failures += 1
                self.trouble(exc)
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
                self.books.say_progress(record, view)
        if calls and failures < calls:
            self.answered()
        if changed:
            self.books.write_state()
        return changed

    async def finish_final(self, stopping: anyio.Event) -> None:
        """Take in every batch seen ended (until a stop)."""
        for record in self.shards.open():
            view = self.shards.views.get(record.shard)
            if view is not None and view.final and not stopping.is_set():
                try:
                    await self._finish(record, view)
                except BatchApiError as exc:
                    if not exc.retryable:
                        raise
                    self.trouble(exc)
                    return

    async def _finish(self, record: ShardRecord, view: BatchView) -> None:
        """A batch that ended: refused for a full queue (its rows wait), or taken in,
        after which its rows to retry are pending."""
        if view.token_limited:
            self.submitter.refused(record, view.reasons())
            return
        late, now, shard = self.late, self.clock(), record.shard
        gave_up = late.waited(shard, now=now) if late.exhausted(shard, now=now) else None
        retry = await self.finisher.finish(record, view, gave_up_after=gave_up)
        if retry is None:
            if not late.waiting(shard):
                late.start(shard, now=now)
                self.books.say(
                    f"shard {shard_tag(shard)}: {view.status}, but its "
                    f"{' and '.join(view.files_missing)} file is not named yet; reading the "
                    "batch again before any row is resubmitted"
                )
            return
        late.forget(shard)
        self.submitter.batch_ended(retry=bool(retry))
        await self.judge()

    def awaiting_settlement(self) -> bool:
        """An open shard whose create may still show up, or a batch seen ended but
        not yet taken in: settling goes on (a few polls at most)."""
        for record in self.shards.ledger.open_shards():
            view = self.shards.views.get(record.shard)
            if record.phase == "creating" or (view is not None and view.final):
                return True
        return False
