"""Uploading a planned shard and creating its batch, each call journaled before and
after, and the creates whose answer was lost.

A shard's file is uploaded once (``upload`` / ``uploaded``), then its batch is created
(``create`` / ``created``, ``completion_window`` 24h, metadata naming run and shard).
A create whose answer was lost is never repeated blindly: the loss is journaled
(``create_lost``), and `Creator.settle_creating` looks for its batch by metadata
(`batchrun._batch.reconcile`) and adopts it, or creates again once a list made well
after the loss shows it cannot still appear. A create the provider refuses for its
full queue of enqueued tokens goes to ``refused``
(`batchrun._batch.submit.Submitter.refused`).

    creator = Creator(clients=clients, shards=shards, books=books, ...)
    await creator.submit(record)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from batchrun._batch.bookkeeping import Bookkeeper
from batchrun._batch.client import CreateUnknown
from batchrun._batch.openshards import OpenShards
from batchrun._batch.pool import BatchClients
from batchrun._batch.protocol import metadata_for, parse_batch, refused_for_token_limit, shard_tag
from batchrun._batch.reconcile import creating_decision, find_batches
from batchrun._batch.steps import ShardRecord
from batchrun._batch.workdir import remove_shard_files, shard_endpoint, shard_paths
from batchrun.errors import BatchApiError


@dataclass(eq=False, kw_only=True)
class Creator:
    """Uploads shards and creates their batches; settles creates left unanswered."""

    clients: BatchClients
    shards: OpenShards
    books: Bookkeeper
    trouble: Callable[[BatchApiError], None]
    wall_clock: Callable[[], float]
    create_grace: float
    refused: Callable[[ShardRecord, str], None]
    """A create refused for the provider's full queue (the shard's rows wait)."""

    async def submit(self, record: ShardRecord) -> None:
        client = self.clients.of(record)
        shards = self.shards
        run_dir = shards.run_dir
        tag = shard_tag(record.shard)
        if record.file_id is None:
            paths = shard_paths(run_dir, record.shard)
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
            made = await client.create(file_id, metadata, shard_endpoint(run_dir, record.shard))
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
        remove_shard_files(shard_paths(self.shards.run_dir, record.shard), keep_index=True)
        how = "found after a lost answer" if found else "submitted"
        self.books.say(f"shard {shard_tag(record.shard)}: {record.rows:,} rows {how} as {view.id}")
        self.books.write_state()

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
        found: dict[int, Any] = {}
        try:
            # each endpoint's list holds the batches created there (a pool's: by shard)
            by_endpoint: dict[str | None, dict[int, float]] = {}
            for shard, sent_at in creating.items():
                by_endpoint.setdefault(ledger.shards[shard].endpoint, {})[shard] = sent_at
            for endpoint, mine in by_endpoint.items():
                client = self.clients.named(endpoint)
                found.update(await find_batches(client, str(ledger.run_id), mine))
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
