"""The collaborators of a Batch API run, made once its input is checked.

`build_parts` wires them: the step journal and what it says of the open shards
(`batchrun._batch.openshards`), the Files/Batches client of each endpoint
(`batchrun._batch.pool`), the run's writer
(`batchrun._engine.commit.Committer`, with the batch keys summary.json gets), the
bookkeeper (progress lines, batch/state.json), the finisher (a finished batch's files
in), the submitter (shards planned, uploaded, created) and the collector (polling).
What they ask of the lane comes as callables: its sleep (cut short by a stop), the
money spent so far (the cap) and the quality breaker (``judge``). `ApiHealth` decides
when a provider that keeps failing stops the run.

    parts = build_parts(cfg, run, prepared, answers, dedupe=plan, ...)
    await parts.collector.poll()
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import httpx

from batchrun._batch.bookkeeping import Bookkeeper
from batchrun._batch.collect import Collector
from batchrun._batch.finish import Finisher
from batchrun._batch.followers import Followers
from batchrun._batch.intake import Answers
from batchrun._batch.openshards import OpenShards
from batchrun._batch.pool import BatchClients, BatchTakers, batch_clients
from batchrun._batch.steps import StepJournal
from batchrun._batch.submit import Submitter
from batchrun._batch.workdir import steps_path
from batchrun._cost.budget import BatchBudget
from batchrun._engine.commit import Committer
from batchrun._engine.prepare import Prepared
from batchrun._engine.stops import StopReason
from batchrun._pacing.retry import endpoint_down_note
from batchrun._settings import Settings
from batchrun.errors import BatchApiError

if TYPE_CHECKING:
    from batchrun._engine.lifecycle import Engine

__all__ = ["ApiHealth", "BatchParts", "build_parts"]

API_FAILURES_TO_STOP = 5
"""Rounds in a row in which every call failed (after its own retries): the provider
is down; stop, the batches go on and a rerun resumes."""


@dataclass(eq=False)
class BatchParts:
    """What a Batch API run works with once its input is checked."""

    journal: StepJournal
    shards: OpenShards
    clients: BatchClients
    committer: Committer
    books: Bookkeeper
    finisher: Finisher
    submitter: Submitter
    collector: Collector


def build_parts(
    cfg: Settings,
    run: Engine,
    prepared: Prepared,
    answers: Answers,
    *,
    dedupe: Any,
    api_keys: Mapping[str, str | None],
    takers: BatchTakers | None,
    transport: httpx.AsyncBaseTransport | None,
    stream: TextIO,
    create_grace: float,
    sleep: Callable[[float], Awaitable[None]],
    spent: Callable[[], float],
    judge: Callable[[], Awaitable[None]],
) -> BatchParts:
    def trouble(exc: BatchApiError) -> None:
        health.failed(exc)

    journal = StepJournal(steps_path(run.run_dir))
    journal.open(wall_time=run.wall_clock())
    shards = OpenShards(journal, run.run_dir)
    clients = batch_clients(cfg, api_keys, transport=transport, sleep=sleep)
    followers = Followers(dedupe, run.run_dir, prepared.scan.hashes)
    committer = Committer(
        run.facts,
        run.hooks,
        run.state,
        failed_now=answers.failed_now,
        summary_extra=lambda: books.summary_extra(),
    )
    books = Bookkeeper(
        cfg=cfg,
        answers=answers,
        shards=shards,
        committer=committer,
        notes=run.notes,
        stream=stream,
        wall_clock=run.wall_clock,
        followers=followers,
    )
    finisher = Finisher(
        clients=clients,
        shards=shards,
        answers=answers,
        committer=committer,
        books=books,
        stop=run.stop,
        trouble=trouble,
        wall_clock=run.wall_clock,
        keep_remote_files=cfg.keep_remote_files,
        followers=followers,
    )
    submitter = Submitter(
        cfg=cfg,
        clients=clients,
        shards=shards,
        answers=answers,
        source=prepared.source,
        books=books,
        stopping=run.stopping,
        trouble=trouble,
        wall_clock=run.wall_clock,
        create_grace=create_grace,
        write_final=finisher.write_final,
        budget=BatchBudget.of(cfg, spent),
        followers=followers,
        deliver=finisher.write,
        models=len(prepared.scan.models),
        takers=takers,
    )
    health = ApiHealth(run, books, shards)
    collector = Collector(
        clients=clients,
        shards=shards,
        books=books,
        finisher=finisher,
        submitter=submitter,
        trouble=trouble,
        answered=health.answered,
        clock=run.clock,
        judge=judge,
    )
    return BatchParts(journal, shards, clients, committer, books, finisher, submitter, collector)


class ApiHealth:
    """Whether the provider's API is down: a call failed after its retries
    (`failed`), round after round with every call failing, or with no connection at all
    before it ever answered, stops the run (the batches go on at the provider, a rerun
    resumes); a round with an answer (`answered`) starts the count again."""

    def __init__(self, run: Engine, books: Bookkeeper, shards: OpenShards) -> None:
        self.run = run
        self.books = books
        self.shards = shards
        self.failures = 0

    def failed(self, exc: BatchApiError) -> None:
        run = self.run
        self.failures += 1
        self.books.say(f"Batch API trouble: {exc.message[:200]}")
        if exc.unreachable is not None:
            # no connection at all before it ever answered: waiting cannot help
            run.notes.append(
                endpoint_down_note(exc.unreachable)
                + "; batches already submitted go on at the provider"
            )
            run.stop(StopReason.ENDPOINT_DOWN)
        elif self.failures >= API_FAILURES_TO_STOP * max(1, len(self.shards.ledger.open_shards())):
            run.notes.append(
                f"stopping: the Batch API kept failing ({exc.message[:160]}); the batches "
                "go on at the provider, rerun to resume"
            )
            run.stop(StopReason.ENDPOINT_DOWN)

    def answered(self) -> None:
        self.failures = 0
