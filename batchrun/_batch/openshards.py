"""What a batch run knows of its open shards: the journal's record, the last view, the rows.

Every part of a batch run (submitting, polling, taking a batch in, cancelling) works
on the same three things, so they live together: the step journal and its ledger
(`batchrun._batch.steps`: where each shard stands, written before it is relied on),
the last state retrieved of each batch (`BatchView`, not journaled: a restart
retrieves it again), and which rows the open shards hold, so a row is never planned
into a second live batch. Letting go of a shard (done, refused, abandoned) releases
its rows.

    shards = OpenShards(journal, run_dir)
    shards.clean_leftovers()       # on start: drop what was never uploaded
    shards.write({"step": "upload", "shard": 3})
"""

from __future__ import annotations

import os
from typing import Any

from batchrun._batch.protocol import BatchView
from batchrun._batch.state import shard_entry
from batchrun._batch.steps import Ledger, ShardRecord, StepJournal
from batchrun._batch.workdir import leftover_files, read_index, remove_shard_files, shard_paths
from batchrun._ids import id_hash


class OpenShards:
    """The open shards of one run directory, as this process knows them."""

    def __init__(self, journal: StepJournal, run_dir: str) -> None:
        self.journal = journal
        self.run_dir = run_dir
        self.views: dict[int, BatchView] = {}
        """shard -> the batch as last retrieved (or as its create or cancel answered)."""
        self.taken: dict[int, int] = {}
        """id hash -> shard, for every row in an open shard."""

    @property
    def ledger(self) -> Ledger:
        return self.journal.ledger

    def open(self) -> list[ShardRecord]:
        return self.journal.ledger.open_shards()

    def write(self, step: dict[str, Any]) -> None:
        """Journal one step (fsynced, then played onto the ledger)."""
        self.journal.write(step)

    def running(self) -> list[ShardRecord]:
        """Open shards whose batch exists and is not known to have ended."""
        out = []
        for record in self.open():
            view = self.views.get(record.shard)
            if record.batch_id is not None and (view is None or not view.final):
                out.append(record)
        return out

    def release(self, shard: int) -> None:
        """The shard's rows may be planned again."""
        self.taken = {h: s for h, s in self.taken.items() if s != shard}

    def abandon(self, record: ShardRecord) -> None:
        """Drop a shard never created (its rows stay pending)."""
        self.write({"step": "abandoned", "shard": record.shard})
        self.release(record.shard)
        remove_shard_files(shard_paths(self.run_dir, record.shard))

    def clean_leftovers(self) -> None:
        """Shard files of shards that are done or were never recorded; shards planned
        but never uploaded are dropped (their rows are planned afresh)."""
        for record in self.open():
            if record.phase in ("planned", "uploading"):
                self.abandon(record)
        keep = {r.shard for r in self.open()}
        for path in leftover_files(self.run_dir, keep):
            try:
                os.unlink(path)
            except OSError:
                pass
        self._take_rows()

    def drop_uncreated(self) -> None:
        """Drop the shards whose batch was never asked for (uploaded at most): no
        provider runs their rows, which stay pending (an online run takes them)."""
        for record in self.open():
            if record.phase in ("planned", "uploading", "uploaded"):
                self.abandon(record)

    def _take_rows(self) -> None:
        """Every row of an open shard (from their indexes): never planned again."""
        self.taken = {}
        for record in self.open():
            for custom_id in read_index(self.run_dir, record.shard):
                self.taken[id_hash(custom_id)] = record.shard

    def forget_views(self) -> None:
        """Forget what was seen of every submitted batch: the next poll retrieves each."""
        for record in self.open():
            if record.batch_id is not None:
                self.views.pop(record.shard, None)

    def entries(self) -> list[dict[str, Any]]:
        """Each open shard as batch/state.json keeps it."""
        out = []
        for record in self.open():
            entry = shard_entry(
                record.shard,
                record.phase,
                self.views.get(record.shard),
                record.rows,
                record.created_at,
            )
            if record.endpoint is not None:  # a pool's shard: whose Batch API has it
                entry["endpoint"] = record.endpoint
            out.append(entry)
        return out


__all__ = ["OpenShards"]
