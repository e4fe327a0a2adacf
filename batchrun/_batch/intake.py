"""What a finished batch gives the run directory: each row's line, once, and the rest.

`Answers` knows, per row id, the body hash each answer and each final failure was
written for (the run directory's journal, then every line this process writes), so it
decides alone which lines of a downloaded output or error file to write: a row
already answered for its body never is again (a file fetched again after a crash
writes nothing twice), a row's second line in one file is a provider's anomaly and
never is either (the first line is the row's answer), a retryable error with attempts
left is not written (the row goes into a later batch), anything else is.
`unanswered` then sorts the rows of a shard that have no line: resubmitted, or failed
for good after ``max_attempts``. It also counts what was written, the one way
(`batchrun._output.tally.Tally.count`) the online runner and a resume count it, and
feeds the quality breaker its answers (`batchrun._output.breaker.QualityBreaker`, as the
online runner does).

    answers = Answers(max_attempts=10)
    for outcome in answers.lines_of(path, view, index, at, attempts): ...
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from batchrun._batch.outcomes import failure, missing_reason, row_failure, success
from batchrun._batch.protocol import BatchView, parse_result_line
from batchrun._batch.workdir import IndexEntry
from batchrun._ids import id_hash
from batchrun._models import Outcome
from batchrun._output.breaker import QualityBreaker
from batchrun._output.journal import answered
from batchrun._output.quality import OK, classify
from batchrun._output.summary import Counts
from batchrun._output.tally import Tally
from batchrun._output.usage import model_of

if TYPE_CHECKING:
    from batchrun._engine.state import RunFacts


class Figures(Protocol):
    """Where `Answers` reads the run's counts (`batchrun._engine.state.RunFacts`)."""

    counts: Counts
    tally: Tally
    breaker: QualityBreaker


class _Figures:
    """The counts of an `Answers` made without a run (tests, tools)."""

    def __init__(self) -> None:
        self.counts = Counts()
        self.tally = Tally()
        self.breaker = QualityBreaker(0.0)


class Answers:
    """The rows answered or failed for good so far. Their counts, tally and quality
    breaker are the run's own (``facts``: `batchrun._engine.state.RunFacts`), filled in
    by the run's writer (`batchrun._engine.commit.Committer`) as every mode's are."""

    def __init__(
        self, *, max_attempts: int, validator: Any = None, facts: RunFacts | None = None
    ) -> None:
        self.facts: Figures = facts if facts is not None else _Figures()
        self.max_attempts = max_attempts
        self.validator = validator
        self.done: dict[int, int] = {}
        """id hash -> body hash of every answer in the run directory."""
        self.failed: dict[int, int] = {}
        self.failed_now: dict[int, str] = {}
        """Rows of this input failed for good, with their error code."""
        self.failed_here: set[int] = set()
        """Rows that failed for good in this process (``--retry-failed`` retries the
        rows that failed before it, once: not these, again and again)."""

    @property
    def counts(self) -> Counts:
        return self.facts.counts

    @property
    def tally(self) -> Tally:
        return self.facts.tally

    @property
    def breaker(self) -> QualityBreaker:
        return self.facts.breaker

    def settled(self, h: int, b: int, *, retry_failed: bool = False) -> bool:
        """Answered for this body, or failed for good (unless retried on purpose)."""
        if answered(self.done, h, b):
            return True
        retried = retry_failed and h not in self.failed_here
        return not retried and self.failed_for_good(h, b)

    def failed_for_good(self, h: int, b: int) -> bool:
        return h in self.failed_now and answered(self.failed, h, b)

    def lines_of(
        self,
        path: str,
        view: BatchView,
        index: Mapping[str, IndexEntry],
        at: float,
        attempts: Mapping[str, int],
        repeated: list[str] | None = None,
        model: str | None = None,
    ) -> Iterator[Outcome]:
        """The outcomes to write for a downloaded output or error file. A line of a
        row that had one earlier in the file is skipped, its id added to ``repeated``;
        ``model`` is the one the shard's rows ask for, noted on answers that name
        another, which are priced as it."""
        seen: set[str] = set()
        with open(path, "rb") as f:
            for line in f:
                result = parse_result_line(line)
                entry = None if result is None else index.get(result.custom_id)
                if result is None or entry is None:
                    continue  # not a line, or not a row of this shard
                if result.custom_id in seen:
                    if repeated is not None:
                        repeated.append(result.custom_id)
                    continue
                seen.add(result.custom_id)
                h = id_hash(result.custom_id)
                b = int(entry.body_hash, 16)
                if answered(self.done, h, b):
                    continue
                used = attempts.get(result.custom_id, 0)
                common: dict[str, Any] = {
                    "row": entry.row,
                    "body_hash": entry.body_hash,
                    "batch_id": view.id,
                    "attempts_before": used,
                    "at": at,
                }
                if result.ok:
                    outcome = success(result, **common)
                    if model and model_of(result.body, None) != model:
                        outcome.asked_model = model
                    verdict = classify(result.body, self.validator)
                    if verdict.category != OK:
                        outcome.quality = verdict.category
                        if verdict.detail:
                            outcome.quality_detail = verdict.detail
                    yield outcome
                elif self.failed_for_good(h, b):
                    continue
                elif result.retryable and used + 1 < self.max_attempts:
                    continue  # resubmitted when the shard is done
                else:
                    yield row_failure(result, **common)

    def unanswered(
        self,
        view: BatchView,
        index: Mapping[str, IndexEntry],
        at: float,
        attempts: Mapping[str, int],
    ) -> tuple[list[str], list[Outcome]]:
        """The shard's rows without a line: (ids to resubmit, final failures)."""
        retry: list[str] = []
        finals: list[Outcome] = []
        code, message = missing_reason(view)
        for custom_id, entry in index.items():
            h = id_hash(custom_id)
            b = int(entry.body_hash, 16)
            if answered(self.done, h, b) or self.failed_for_good(h, b):
                continue
            used = attempts.get(custom_id, 0)
            if used + 1 < self.max_attempts:
                retry.append(custom_id)
                continue
            finals.append(
                failure(
                    custom_id,
                    code=code,
                    message=message,
                    row=entry.row,
                    body_hash=entry.body_hash,
                    batch_id=view.id,
                    attempts_before=used,
                    at=at,
                )
            )
        return retry, finals

    def written(self, batch: list[Outcome]) -> None:
        """Lines just written (and counted by the run's writer): answered, or failed
        for good, for their bodies."""
        for outcome in batch:
            h = id_hash(outcome.custom_id)
            b = int(outcome.body_hash or "0", 16)
            (self.done if outcome.ok else self.failed)[h] = b
            if not outcome.ok:
                self.failed_here.add(h)


__all__ = ["Answers"]
