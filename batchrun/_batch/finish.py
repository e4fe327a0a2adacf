"""Taking a finished batch in: its files into the run's output, its rows accounted for.

`Finisher.finish` downloads a finished batch's output and error files and writes
their lines into results.jsonl / errors.jsonl through the run's writer (which lines,
`batchrun._batch.intake.Answers` decides: an id already answered for its body is never
written again, so a file fetched twice after a crash writes nothing twice). Lines
are counted only once written. The rows in neither file are resubmitted or, after
``max_attempts``, failed for good; then the shard is journaled ``done`` and its
remote files are deleted (unless ``--keep-remote-files``). `delete_orphans` deletes
the uploads whose answer was lost, so their ids never reached the journal.

A batch can end before the files its counts promise are named (a provider sets
``output_file_id`` a moment after ``completed``: LiteLLM #37713). Its rows were
answered and billed; resubmitting them would pay twice. So while a promised file is
missing and rows have no line yet, `finish` takes what is there and leaves the shard
open, and the driver reads the batch again (`LateFiles`: at each poll, with the
poll's back-off) until the file appears; only after `FILES_WAIT_READS` reads and
`FILES_WAIT_S` seconds are the rows without a line taken as lost, with a note.

    finisher = Finisher(clients=clients, shards=shards, answers=answers, committer=committer, ...)
    retry = await finisher.finish(record, view)   # the custom ids to resubmit
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread

from batchrun._batch.bookkeeping import Bookkeeper
from batchrun._batch.followers import Followers
from batchrun._batch.intake import Answers
from batchrun._batch.openshards import OpenShards
from batchrun._batch.pool import BatchClients
from batchrun._batch.protocol import BatchView, shard_tag
from batchrun._batch.steps import ShardRecord
from batchrun._batch.workdir import batch_dir, read_index, remove_shard_files, shard_paths
from batchrun._engine.commit import Committer
from batchrun._models import Outcome
from batchrun.errors import BatchApiError

WRITE_LINES = 512
"""Lines of a downloaded file written (and counted) together."""
FILES_WAIT_READS = 8
FILES_WAIT_S = 600.0
"""How long an ended batch's missing output or error file is waited for: at least
this many reads and this many seconds (a provider's window is seconds; resubmitting
answered rows pays for them twice)."""


class LateFiles:
    """The shards whose batch ended without naming a file its counts promise, and how
    long each has been waited for (reads, seconds on the driver's clock).

    >>> late = LateFiles(reads=2, seconds=10.0)
    >>> late.start(3, now=100.0); late.read(3); late.read(3)
    >>> late.waiting(3), late.exhausted(3, now=105.0), late.exhausted(3, now=110.0)
    (True, False, True)
    """

    __slots__ = ("reads", "seconds", "_since")

    def __init__(self, *, reads: int = FILES_WAIT_READS, seconds: float = FILES_WAIT_S) -> None:
        self.reads = reads
        self.seconds = seconds
        self._since: dict[int, tuple[float, int]] = {}
        """shard -> (when its batch was first seen without the file, reads since)."""

    def waiting(self, shard: int) -> bool:
        return shard in self._since

    def start(self, shard: int, *, now: float) -> None:
        self._since.setdefault(shard, (now, 0))

    def read(self, shard: int) -> None:
        """The batch was retrieved again."""
        since, reads = self._since[shard]
        self._since[shard] = (since, reads + 1)

    def exhausted(self, shard: int, *, now: float) -> bool:
        """Waited long enough: take the batch as it is."""
        if shard not in self._since:
            return False
        since, reads = self._since[shard]
        return reads >= self.reads and now - since >= self.seconds

    def waited(self, shard: int, *, now: float) -> str:
        since, reads = self._since.get(shard, (now, 0))
        return f"{reads} reads over {now - since:,.0f} s"

    def forget(self, shard: int) -> None:
        self._since.pop(shard, None)


@dataclass(eq=False, kw_only=True)
class Finisher:
    """Takes in the finished batches of one run. Everything it needs is given; a hook
    that asks for a stop goes to ``stop``, a failed delete to ``trouble``."""

    clients: BatchClients
    shards: OpenShards
    answers: Answers
    committer: Committer
    books: Bookkeeper
    stop: Callable[[str], None]
    trouble: Callable[[BatchApiError], None]
    wall_clock: Callable[[], float]
    keep_remote_files: bool
    followers: Followers | None = None
    """Rows waiting for the answer of an identical request (written right after it)."""

    @property
    def run_dir(self) -> str:
        return self.shards.run_dir

    async def finish(
        self, record: ShardRecord, view: BatchView, *, gave_up_after: str | None = None
    ) -> list[str] | None:
        """Take in a finished batch: its lines, then every row it left unanswered.
        Returns the ids of the rows to resubmit, or None when rows have no line while
        a file the batch promises is not named yet: read the batch again later (once
        that wait is over, ``gave_up_after`` says how long it was, for the note)."""
        index = await anyio.to_thread.run_sync(read_index, self.run_dir, record.shard)
        at = view.ended_at or self.wall_clock()
        ledger = self.shards.ledger
        for file_id in (view.output_file_id, view.error_file_id):
            if file_id and file_id not in record.downloaded:
                await self._take_file(file_id, record, view, index, at)
        retry, finals = self.answers.unanswered(view, index, at, ledger.attempts)
        missing = view.files_missing
        if missing and (retry or finals):
            if gave_up_after is None:
                return None
            self.books.notes.append(
                f"batch {view.id} ({shard_tag(record.shard)}) ended {view.status} with "
                f"{view.completed:,} rows answered, but its {' and '.join(missing)} file never "
                f"appeared ({gave_up_after}): its rows without a line were taken as lost, "
                f"{len(retry):,} resubmitted and {len(finals):,} failed for good (the provider "
                "may bill the resubmitted ones twice)"
            )
        if finals:
            self.clients.mark(record, finals)
            self.write_final(finals)
        self.shards.write(
            {
                "step": "done",
                "shard": record.shard,
                "status": view.status,
                "retry": retry,
                "at": at,
                "completed": view.completed,
                "failed": view.failed,
            }
        )
        self.shards.release(record.shard)
        if view.status == "failed":
            self.books.notes.append(
                f"batch {view.id} ({shard_tag(record.shard)}) failed: {view.reasons()}"
            )
        self.books.say(
            f"shard {shard_tag(record.shard)}: {view.status}; "
            f"{len(retry):,} rows to resubmit, {len(finals):,} failed for good"
        )
        await self._delete_remote(record, view)
        remove_shard_files(shard_paths(self.run_dir, record.shard))
        self.books.write_state()
        self.books.checkpoint("running")
        return retry

    async def _take_file(
        self, file_id: str, record: ShardRecord, view: BatchView, index: Any, at: float
    ) -> None:
        """Download one output or error file and write its lines (`Answers.lines_of`:
        a row already answered for its body is skipped), then journal it."""
        path = os.path.join(batch_dir(self.run_dir), f".tmp-{file_id}")
        await self.clients.of(record).download(file_id, path)
        attempts = self.shards.ledger.attempts
        repeated: list[str] = []

        def take() -> None:
            group: list[Outcome] = []
            lines = self.answers.lines_of(path, view, index, at, attempts, repeated, record.model)
            for outcome in lines:
                group.append(outcome)
                if len(group) >= WRITE_LINES:
                    # written and counted on the event loop, where the hooks live
                    self.clients.mark(record, group)
                    anyio.from_thread.run_sync(self.write, group)
                    group = []
            if group:
                self.clients.mark(record, group)
                anyio.from_thread.run_sync(self.write, group)

        try:
            await anyio.to_thread.run_sync(take)
        finally:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.committer.sink.sync()
        step: dict[str, Any] = {"step": "downloaded", "shard": record.shard, "file_id": file_id}
        if repeated:
            # counted with the step, so a file fetched again after a crash counts them once
            step["repeated"] = len(repeated)
            tag = shard_tag(record.shard)
            kind = "output" if file_id == view.output_file_id else "error"
            self.books.notes.append(
                f"batch {view.id} ({tag}): its {kind} file repeats {len(repeated):,} lines "
                f"(a second line for a row, e.g. {repeated[0]}), a provider anomaly: the first "
                "line of each row was kept, the repeats were neither written nor counted"
            )
            self.books.say(f"shard {tag}: {len(repeated):,} repeated lines skipped")
        self.shards.write(step)

    def write_final(self, batch: list[Outcome]) -> None:
        """Write rows failed for good outside a batch's files, flushed to disk."""
        self.write(batch)
        self.committer.sink.sync()

    def write(self, batch: list[Outcome]) -> None:
        """Write, then count (never before the write returned), then tell the hooks
        (`batchrun._engine.commit.Committer`); the rows waiting for these answers
        (`Followers`) are written right after."""
        reason = self.committer.write(batch)
        self.answers.written(batch)
        follow = self.followers
        if follow is not None:
            copies = follow.released(batch)
            if copies:
                reason = self.committer.write(copies) or reason
                self.answers.written(copies)
                batch = [*batch, *copies]
            follow.written += sum(1 for outcome in batch if outcome.reused is not None)
        if reason:
            self.stop(reason)

    # -- the remote files -----------------------------------------------------------------
    async def _delete_remote(self, record: ShardRecord, view: BatchView) -> None:
        if self.keep_remote_files:
            return
        for file_id in (record.file_id, view.output_file_id, view.error_file_id):
            if file_id and file_id not in record.deleted:
                try:
                    await self.clients.of(record).delete_file(file_id)
                except BatchApiError as exc:
                    if not exc.retryable:
                        raise
                    self.trouble(exc)
                    continue
                self.shards.write({"step": "deleted", "shard": record.shard, "file_id": file_id})

    async def delete_orphans(self) -> None:
        """Uploads whose answer was lost (so their id never reached the journal)."""
        if self.keep_remote_files:
            return
        prefix = f"batchrun-{self.shards.ledger.run_id}-"
        for client in self.clients:  # a pool's: each endpoint's files
            try:
                after = None
                for _ in range(100):
                    page = await client.list_files(after=after)
                    data = page.get("data") or []
                    for f in data:
                        if str(f.get("filename", "")).startswith(prefix):
                            await client.delete_file(str(f["id"]))
                    if not page.get("has_more") or not data:
                        break
                    after = str(data[-1]["id"])
            except BatchApiError:
                pass  # best effort: an unused file is never billed


__all__ = ["Finisher", "WRITE_LINES"]
