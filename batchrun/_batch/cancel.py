"""Cancelling a run's open batches: at the deadline's fallback, and for `batchrun cancel`.

A cancelled batch still ends on its own time (OpenAI: ``cancelling`` for up to ten
minutes) and keeps the rows it finished, so cancelling only asks: each open batch
gets one journaled ``cancel`` (never a second, even across processes), and the poll
sees it end and takes its rows in like any batch's. Shards not uploaded or created
yet are dropped (their rows stay pending; one whose create got no answer, once its
batch is known not to exist); a batch already known to be final is left alone.

    await cancel_open(clients, shards, "deadline")
"""

from __future__ import annotations

from dataclasses import dataclass, field

from batchrun._batch.openshards import OpenShards
from batchrun._batch.pool import BatchClients
from batchrun._batch.protocol import parse_batch
from batchrun.errors import BatchApiError


@dataclass
class Cancelled:
    """What `cancel_open` did: the batches it asked to cancel (or found cancelling
    already), and the shards it dropped before they were ever created."""

    batches: list[str] = field(default_factory=list)
    dropped_shards: int = 0
    dropped_rows: int = 0


async def cancel_open(clients: BatchClients, shards: OpenShards, why: str) -> Cancelled:
    """Cancel every open batch (rows they finished are kept when they end); shards
    never created are dropped (their rows stay pending)."""
    done = Cancelled()
    for record in shards.open():
        if record.phase in ("planned", "uploading", "uploaded"):
            shards.abandon(record)
            done.dropped_shards += 1
            done.dropped_rows += record.rows
        elif record.batch_id is not None:
            view = shards.views.get(record.shard)
            if view is not None and view.final:
                continue
            if record.cancel_requested:  # an earlier process asked: it ends on its own
                done.batches.append(record.batch_id)
                continue
            shards.write({"step": "cancel", "shard": record.shard, "why": why})
            try:
                made = await clients.of(record).cancel(record.batch_id)
            except BatchApiError as exc:
                if exc.status != 400:  # 400: already finished; the poll will see it
                    raise
                continue
            shards.views[record.shard] = parse_batch(made)
            done.batches.append(record.batch_id)
    return done


__all__ = ["Cancelled", "cancel_open"]
