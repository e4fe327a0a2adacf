"""What a batch run records of itself: summary.json, batch/state.json, progress, the end.

A batch run can stop anywhere (Ctrl-C, a kill, the provider down) while its batches
go on at the provider, so it keeps the run directory describing itself as it goes:
summary.json in the online run's shape (a checkpoint after each batch taken in, so
`batchrun status` and the report read a batch run like any other), batch/state.json
with the last state seen of each open batch (`batchrun.batch.state`), and one line
on stderr per change. At the end it names the run's status, its exit code (the
online runner's codes) and the notes that tell the user what is left to do.

    >>> final_status(None, handover=False, pending=0), exit_code("SIGINT", cancel_only=False,
    ...     pending=3, failed=0)
    ('complete', 130)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from batchrun.batch.followers import Followers
from batchrun.batch.intake import Answers
from batchrun.batch.openshards import OpenShards
from batchrun.batch.protocol import BatchView
from batchrun.batch.state import shard_entry, write_state
from batchrun.batch.steps import ShardRecord
from batchrun.engine.hooks import RunHooks, RunState
from batchrun.output.journal import SUMMARY
from batchrun.output.sink import JsonlSink
from batchrun.output.summary import build_summary, write_json_atomic
from batchrun.redact import scrub_text
from batchrun.report.text import shard_line
from batchrun.settings import Settings

EXIT_OK, EXIT_ERROR, EXIT_BUDGET, EXIT_SOME_FAILED = 0, 1, 3, 4
EXIT_SIGINT, EXIT_SIGTERM = 130, 143


def final_status(stop_reason: str | None, *, handover: bool, pending: int) -> str:
    """summary.json's status once the batch part of a run is over."""
    if stop_reason in ("disk_error", "endpoint_down", "bad_answers"):
        return stop_reason
    if stop_reason == "budget":
        return "budget_exceeded"
    if stop_reason is not None:
        return "interrupted"
    if handover:
        return "deadline"
    if pending:
        return "incomplete"
    return "complete"


def exit_code(stop_reason: str | None, *, cancel_only: bool, pending: int, failed: int) -> int:
    """The process's exit code, as an online run's (`batchrun cancel` succeeds with rows
    pending: leaving them pending is what it was asked to do)."""
    if stop_reason == "SIGINT":
        return EXIT_SIGINT
    if stop_reason == "SIGTERM":
        return EXIT_SIGTERM
    if stop_reason == "budget":
        return EXIT_BUDGET
    if stop_reason is not None:
        return EXIT_ERROR
    if cancel_only:
        return EXIT_OK
    if pending:
        return EXIT_ERROR
    return EXIT_SOME_FAILED if failed else EXIT_OK


@dataclass(eq=False, kw_only=True)
class Bookkeeper:
    """Writes what the run says of itself; everything it reads is given (the counts
    through ``answers``, the elapsed time and stop reason through ``state``)."""

    cfg: Settings
    hooks: RunHooks
    state: RunState
    answers: Answers
    shards: OpenShards
    sink: JsonlSink
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

    def summary(self, status: str) -> dict[str, Any]:
        sink = self.sink
        extra = self.hooks.summary_extra(self.state)
        extra["batch"] = {
            "run_id": self.shards.ledger.run_id,
            "open_shards": len(self.shards.open()),
            "rows_via_batch": self.answers.tally.by_mode.get("batch", 0),
            "provider_anomalies": {"repeated_lines": self.shards.ledger.repeated_lines},
        }
        if self.followers is not None and self.followers.plan is not None:
            extra["dedupe"] = self.followers.summary()
        return build_summary(
            status=status,
            input_path=self.cfg.input_path,
            counts=self.answers.counts,
            tally=self.answers.tally,
            failed_codes=self.answers.failed_now.values(),
            elapsed_s=self.state.elapsed(),
            results_bytes=sink.results_bytes,
            errors_bytes=sink.errors_bytes,
            pacing={},
            extra=extra,
            stop_reason=self.state.stop_reason,
        )

    def checkpoint(self, status: str) -> dict[str, Any]:
        """summary.json, after every line counted in it is on disk."""
        summary = self.summary(status)
        self.sink.sync()
        write_json_atomic(os.path.join(self.run_dir, SUMMARY), summary)
        return summary

    # -- the end -------------------------------------------------------------------------
    def closing_notes(self, *, cancel_only: bool, handover: bool, settled: bool = False) -> None:
        """What is left to do: batches still running, rows pending, the online part
        (``settled``: an online run collected what an earlier batch run left)."""
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
            self.notes.append(
                f"cancelled; rows the batches finished are kept, {counts.pending:,} rows "
                "are pending (rerun to send them)"
            )
        if handover:
            self.notes.append(
                f"deadline: {counts.pending:,} rows left for the online run "
                f"({tally.by_mode.get('batch', 0):,} answered through the Batch API)"
            )


__all__ = ["Bookkeeper", "exit_code", "final_status"]
