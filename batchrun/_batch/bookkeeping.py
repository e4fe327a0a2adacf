"""What a batch run records of itself: summary.json, batch/state.json, progress, the end.

A batch run can stop anywhere (Ctrl-C, a kill, the provider down) while its batches
go on at the provider, so it keeps the run directory describing itself as it goes:
summary.json in the online run's shape (a checkpoint after each batch taken in, so
`batchrun status` and the report read a batch run like any other), batch/state.json
with the last state seen of each open batch (`batchrun._batch.state`), and one line
on stderr per change. summary.json itself is the run's `batchrun._engine.commit.Committer`'s
(the keys of a batch run added); the status and exit code are the engine's, the
same for every mode (`batchrun._engine.stops`). At the end it writes the notes that
tell the user what is left to do.

    books = Bookkeeper(cfg=cfg, answers=answers, shards=shards, committer=committer, ...)
    books.say_progress(record, view)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from batchrun._batch.cancel import Cancelled
from batchrun._batch.followers import Followers
from batchrun._batch.intake import Answers
from batchrun._batch.openshards import OpenShards
from batchrun._batch.protocol import BatchView
from batchrun._batch.state import shard_entry, write_state
from batchrun._batch.steps import ShardRecord
from batchrun._engine.commit import Committer
from batchrun._output.summary import Counts
from batchrun._redact import scrub_text
from batchrun._report.text import shard_line
from batchrun._settings import Settings


@dataclass(eq=False, kw_only=True)
class Bookkeeper:
    """Writes what the run says of itself; everything it reads is given (the counts
    through ``answers``, summary.json through ``committer``)."""

    cfg: Settings
    answers: Answers
    shards: OpenShards
    committer: Committer
    notes: list[str]
    """The run's notes (the driver's own list): a failed state.json write adds one."""
    stream: TextIO
    wall_clock: Callable[[], float]
    followers: Followers | None = None

    @property
    def run_dir(self) -> str:
        return self.shards.run_dir

    # -- output to the user --------------------------------------------------------------
    def say(self, text: str) -> None:
        if self.cfg.quiet:
            return
        self.stream.write(scrub_text(f"batchrun: {text}") + "\n")
        self.stream.flush()

    def say_progress(self, record: ShardRecord, view: BatchView) -> None:
        if self.cfg.quiet:
            return
        entry = shard_entry(record.shard, record.phase, view, record.rows, record.created_at)
        if record.endpoint is not None:
            entry["endpoint"] = record.endpoint
        c = self.answers.counts
        inside = sum(
            self.shards.views[r.shard].completed
            for r in self.shards.running()
            if r.shard in self.shards.views and not r.downloaded
        )
        line = (
            f"{shard_line(entry, self.wall_clock())}; rows done overall: "
            f"{c.succeeded + c.failed:,} of {c.total:,}"
        )
        if inside:
            line += f" (+{inside:,} answered inside running batches, not collected yet)"
        self.say(line)

    # -- the run directory -------------------------------------------------------------
    def write_state(self) -> None:
        """batch/state.json; a failure is a note, never a stop (it is only for status)."""
        try:
            write_state(
                self.run_dir,
                run_id=self.shards.ledger.run_id,
                updated_at=self.wall_clock(),
                shards=self.shards.entries(),
            )
        except OSError as exc:
            self.notes.append(f"could not write batch/state.json: {exc}")

    def summary_extra(self) -> dict[str, Any]:
        """What a batch run adds to summary.json: its batches, and its dedupe."""
        extra: dict[str, Any] = {
            "batch": {
                "run_id": self.shards.ledger.run_id,
                "open_shards": len(self.shards.open()),
                "rows_via_batch": self.answers.tally.by_mode.get("batch", 0),
                "provider_anomalies": {"repeated_lines": self.shards.ledger.repeated_lines},
            }
        }
        if self.followers is not None and self.followers.plan is not None:
            extra["dedupe"] = self.followers.summary()
        return extra

    def checkpoint(self, status: str) -> dict[str, Any]:
        """summary.json, after every line counted in it is on disk."""
        return self.committer.checkpoint(status)

    # -- the end -------------------------------------------------------------------------
    def closing_notes(
        self,
        *,
        cancel_only: bool,
        handover: bool,
        settled: bool = False,
        cancelled: Cancelled | None = None,
        before: Counts | None = None,
    ) -> None:
        """What is left to do: batches still running, rows pending, the online part
        (``settled``: an online run collected what an earlier batch run left). For
        `batchrun cancel` (``cancel_only``), what it cancelled (``cancelled``) and kept:
        the rows finished since this process started (``before``: the counts then)."""
        counts, tally = self.answers.counts, self.answers.tally
        still = [r for r in self.shards.open() if r.batch_id is not None]
        if settled:
            if handover and self.shards.ledger.shards:
                self.notes.append(
                    "took in the batches an earlier --batch-api run left "
                    f"({tally.by_mode.get('batch', 0):,} rows answered through the Batch "
                    f"API); {counts.pending:,} rows left for the online run"
                )
            return
        if still and not cancel_only:
            self.notes.append(
                f"{len(still)} batches go on at the provider; rerun the same command to "
                f"resume polling, or `batchrun cancel {self.run_dir}` to cancel them"
            )
        if cancel_only:
            self.notes.extend(
                cancel_notes(cancelled or Cancelled(), counts, before or Counts(counts.total))
            )
        if handover:
            self.notes.append(
                f"deadline: {counts.pending:,} rows left for the online run "
                f"({tally.by_mode.get('batch', 0):,} answered through the Batch API)"
            )


def cancel_notes(cancelled: Cancelled, counts: Counts, before: Counts) -> list[str]:
    """What `batchrun cancel` did, in a few lines: the batches, the rows they had
    finished (kept: ``counts`` less ``before``, what was done when it started), the
    rows left pending.

    >>> for line in cancel_notes(Cancelled(["batch_1", "batch_2"]),
    ...                          Counts(120, 40, 2), Counts(120, 20, 0)):
    ...     print(line)
    cancelled 2 batches at the provider: batch_1, batch_2
    kept the 22 rows they had finished (20 answered, 2 failed); 42 of 120 rows are done
    78 rows pending: rerun the run to send them
    """
    lines = []
    if cancelled.batches:
        shown = ", ".join(cancelled.batches[:5])
        if len(cancelled.batches) > 5:
            shown += f" and {len(cancelled.batches) - 5:,} more"
        noun = "batch" if len(cancelled.batches) == 1 else "batches"
        lines.append(f"cancelled {len(cancelled.batches):,} {noun} at the provider: {shown}")
    else:
        lines.append("no batch was running at the provider: nothing to cancel")
    if cancelled.dropped_shards:
        lines.append(
            f"dropped {cancelled.dropped_shards:,} shards never submitted "
            f"({cancelled.dropped_rows:,} rows)"
        )
    done = counts.succeeded + counts.failed
    if cancelled.batches:
        answered = max(0, counts.succeeded - before.succeeded)
        failed = max(0, counts.failed - before.failed)
        lines.append(
            f"kept the {answered + failed:,} rows they had finished ({answered:,} answered"
            + (f", {failed:,} failed" if failed else "")
            + f"); {done:,} of {counts.total:,} rows are done"
        )
    if counts.pending:
        lines.append(f"{counts.pending:,} rows pending: rerun the run to send them")
    else:
        lines.append(f"no row pending: all {counts.total:,} are done")
    return lines


__all__ = ["Bookkeeper", "cancel_notes"]
