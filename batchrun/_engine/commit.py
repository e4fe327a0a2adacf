"""Writing what a run finished, and counting it only once it is written.

Every lane hands its finished outcomes (answers and final failures, however they were
got: one HTTP call, a line of a provider's output file, a copy of an identical
request's answer) to one `Committer`. It appends them to results.jsonl / errors.jsonl
(`batchrun._output.sink.JsonlSink`: whole lines, scrubbed, flushed), and only once the
write has returned counts them (`batchrun._output.tally.Tally`, the row counts, the
quality breaker's paid answers) and tells the hooks, whose answer may stop the run.
It also builds summary.json from those counts and writes it atomically
(checkpoints while the run goes, and the last one at the end).

    committer = Committer(facts, hooks, state, run_dir=..., endpoint=...)
    reason = committer.write(outcomes)       # written, counted, hooks told
    committer.checkpoint("running")
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from batchrun._engine.hooks import RunHooks, RunState
from batchrun._engine.state import RunFacts
from batchrun._ids import id_hash
from batchrun._models import Outcome
from batchrun._output.journal import SUMMARY
from batchrun._output.quality import QualityAlert
from batchrun._output.sink import JsonlSink
from batchrun._output.summary import build_summary, write_json_atomic
from batchrun._output.usage import model_of
from batchrun.errors import RunDirError

__all__ = ["Committer"]


class Committer:
    """The run directory's writer and the run's counts (see the module docstring).

    ``failed_now``: id hash -> error code of the input's rows that failed for good (a
    failure retried into an answer leaves it). ``summary_extra`` gives the keys the
    lane adds to summary.json (a pilot's selection, the dedupe, the batches).
    """

    def __init__(
        self,
        facts: RunFacts,
        hooks: RunHooks,
        state: RunState,
        *,
        failed_now: dict[int, str],
        summary_extra: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        settings = facts.settings
        self.facts = facts
        self.hooks = hooks
        self.state = state
        self.run_dir = str(settings.out_dir)
        self.failed_now = failed_now
        self.summary_extra = summary_extra
        # a pool's lines each name the endpoint that answered (the outcome's)
        self.sink = JsonlSink(self.run_dir, None if settings.endpoints else settings.endpoint)

    # -- lines -----------------------------------------------------------------------
    def write(self, batch: list[Outcome]) -> str | None:
        """Write ``batch`` (flushed to the OS), count it, tell the hooks; returns the
        reason a hook gives to stop the run, or None. A failed write raises
        `RunDirError` and counts nothing."""
        self.sink.write(batch)
        for outcome in batch:
            self.count(outcome)
        return self.hooks.on_written(self.state, batch)

    def count(self, outcome: Outcome) -> None:
        """One written line: in the tally, the row counts and, when it was paid for in
        this run (not reused), the quality breaker's judged answers."""
        facts = self.facts
        verdict = facts.tally.count_outcome(outcome)
        if verdict is not None and outcome.reused is None:
            facts.breaker.add(verdict, model_of(outcome.body))
        code = None if outcome.ok else (outcome.error or {}).get("code")
        facts.counts.record(id_hash(outcome.custom_id), outcome.ok, code, self.failed_now)

    def judge(self, max_tokens: Callable[[], int | None]) -> QualityAlert | None:
        """The quality breaker's verdict on the run's paid answers so far (None: go on)."""
        facts = self.facts
        if facts.breaker.threshold <= 0 or facts.stop_reason is not None:
            return None
        return facts.breaker.judge(facts.tally.quality, max_tokens=max_tokens)

    # -- summary.json -----------------------------------------------------------------
    def summary(self, status: str) -> dict[str, Any]:
        facts, sink = self.facts, self.sink
        extra = {**self.hooks.summary_extra(self.state), **self.summary_extra()}
        if facts.stop_note is not None:
            extra["stop_note"] = facts.stop_note
        return build_summary(
            status=status,
            input_path=facts.settings.input_path,
            counts=facts.counts,
            tally=facts.tally,
            failed_codes=self.failed_now.values(),
            elapsed_s=facts.elapsed(),
            results_bytes=sink.results_bytes,
            errors_bytes=sink.errors_bytes,
            pacing=facts.pacing.summary() if facts.pacing is not None else {},
            extra=extra,
            stop_reason=facts.stop_reason,
        )

    def save(self, summary: dict[str, Any]) -> None:
        """summary.json, once every line its offsets name is on disk (fsync first)."""
        self.sink.sync()
        write_json_atomic(os.path.join(self.run_dir, SUMMARY), summary)

    def checkpoint(self, status: str) -> dict[str, Any]:
        summary = self.summary(status)
        self.save(summary)
        return summary

    def try_checkpoint(self) -> str | None:
        """A checkpoint while the run goes; the problem when it could not be written
        (the disk is full, the run directory is gone), which stops sending."""
        try:
            self.checkpoint("running")
        except (OSError, RunDirError) as exc:
            return f"could not write summary.json: {exc}"
        return None

    def close(self) -> None:
        self.sink.close()
