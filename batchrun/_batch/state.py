"""The last known state of each batch, kept in the run directory for `batchrun status`.

Batches run at the provider whether or not a batchrun process is watching (after a
Ctrl-C they go on). `batchrun status` must say where they stand without the key and
without a call, so the run writes what it last saw to ``batch/state.json``
(`batchrun._batch.bookkeeping`; atomically, at every poll that changed something),
and the reports read it back together with the step journal
(`batchrun._output.ledger.batch_status`): submitted, validating, in progress with
completed and failed counts, finalizing, done, and how long ago each was submitted.
`iter_open_batches` lists the open shards from the journal alone, and
`open_batches_refusal` is the rule that keeps their rows from being sent online too.

    >>> shard_entry(1, "planned", None, rows=10, created_at=None)["shard"]
    's000001'
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from batchrun._batch.protocol import BatchView
from batchrun._output.ledger import read_ledger, shard_tag, state_path, steps_path
from batchrun._output.summary import write_json_atomic


def shard_entry(
    shard: int, phase: str, view: BatchView | None, rows: int, created_at: float | None
) -> dict[str, Any]:
    """One shard as state.json keeps it."""
    entry: dict[str, Any] = {
        "shard": shard_tag(shard),
        "phase": phase,
        "rows": rows,
        "batch_id": None,
        "status": phase,
        "total": rows,
        "completed": 0,
        "failed": 0,
        "created_at": created_at,
    }
    if view is not None:
        entry.update(
            batch_id=view.id,
            status=view.status,
            total=view.total or rows,
            completed=view.completed,
            failed=view.failed,
        )
        if view.created_at is not None:
            entry["created_at"] = view.created_at
    return entry


def write_state(run_dir: str, *, run_id: str | None, updated_at: float, shards: list[Any]) -> None:
    write_json_atomic(
        state_path(run_dir),
        {"run_id": run_id, "updated_at": updated_at, "pid": os.getpid(), "shards": shards},
    )


def iter_open_batches(run_dir: str) -> Iterator[tuple[str, str | None]]:
    """(shard tag, batch id) of every shard a run directory still has open."""
    for record in read_ledger(steps_path(run_dir)).open_shards():
        yield shard_tag(record.shard), record.batch_id


__all__ = [
    "iter_open_batches",
    "shard_entry",
    "write_state",
]
