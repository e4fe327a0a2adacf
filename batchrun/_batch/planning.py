"""One planning pass: the pending rows of the input into shard files.

A row is planned when it is neither answered, failed for good, nor in an open shard
(`batchrun._batch.openshards.OpenShards.taken`). The copies of an identical request take
its answer instead (`batchrun._batch.followers`). Shards are cut by
`batchrun._batch.shards.ShardPlanner` (one model and endpoint a file, the provider's row
and byte limits; in a pool, one batch endpoint a file too, the row's by
`batchrun._batch.pool.endpoint_for`, its line naming the model as that endpoint does)
and written by `batchrun._batch.workdir.ShardWriter`; under a cost cap each row's
worst case must fit the room left, and the rows stay in input order (the first that
does not fit and every one after it wait). During the quality breaker's
opening judgement a pass takes each model's first ``opening`` rows only.

The pass runs in a worker thread (`batchrun._batch.submit.Submitter.plan`), which then
journals each shard planned; what it found out (``over_budget``, ``held_back``,
``max_tokens``, ``needs_plan``) it sets on the submitter as it goes (`PlanTarget`).

    planned = PlanPass(submitter, ...).run(room, spent, opening)   # in a thread
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import anyio
import anyio.from_thread
import orjson

from batchrun._apis import CHAT, EMBEDDINGS, embedding_inputs
from batchrun._batch.followers import Followers
from batchrun._batch.intake import Answers
from batchrun._batch.openshards import OpenShards
from batchrun._batch.pool import BatchTakers, endpoint_for
from batchrun._batch.shards import RowTooLarge, ShardPlanner
from batchrun._batch.workdir import ShardWriter, line_for
from batchrun._cost.budget import BatchBudget, cap_reached
from batchrun._ids import body_hash_int, id_hash
from batchrun._input.sources import Source
from batchrun._models import Outcome, Request
from batchrun._output.journal import answered
from batchrun._pacing.tokens import answer_ceiling
from batchrun._settings import Settings
from batchrun.errors import InputError

FOLLOWERS_WRITTEN_TOGETHER = 512
"""Follower lines found while planning that are written (and counted) together."""

Planned = tuple[int, str, int, int, "float | None", "str | None"]
"""(shard, model, rows, attempt, worst case in USD or None without a cap, the pool's
endpoint that takes it or None without a pool)."""


class PlanTarget(Protocol):
    """What a pass tells the submitter while it runs (`batchrun._batch.submit.Submitter`)."""

    over_budget: str | None
    held_back: bool
    max_tokens: int | None
    needs_plan: bool


@dataclass(eq=False, kw_only=True)
class PlanPass:
    """One pass over the input writing the shard files of the pending rows."""

    target: PlanTarget
    cfg: Settings
    source: Source
    shards: OpenShards
    answers: Answers
    stopping: anyio.Event
    max_requests: int
    budget: BatchBudget | None = None
    followers: Followers | None = None
    deliver: Callable[[list[Outcome]], None] | None = None
    takers: BatchTakers | None = None
    """A pool's batch endpoints (`batchrun._batch.pool.batch_takers`; None: the run's
    one endpoint)."""

    def run(self, room: float | None, spent: float, opening: int | None = None) -> list[Planned]:
        """Shard files for the pending rows (``opening``: at most that many per model,
        the breaker's opening judgement)."""
        run_dir = self.shards.run_dir
        target = self.target
        ledger = self.shards.ledger
        planner = ShardPlanner(self.max_requests, self.cfg.batch_max_bytes, ledger.next_shard)
        writers: dict[int, ShardWriter] = {}
        attempts_of: dict[int, int] = {}
        models: dict[int, str] = {}
        endpoints: dict[int, str | None] = {}
        worst_of: dict[int, float] = {}
        planned: list[Planned] = []
        attempts = ledger.attempts
        retry_failed = self.cfg.retry_failed
        budget = self.budget
        per_model: dict[str, int] = {}

        def close(shard: int) -> None:
            writer = writers.pop(shard)
            writer.finish()
            worst = worst_of[shard] if budget is not None else None
            planned.append(
                (shard, models[shard], writer.requests, attempts_of[shard], worst, endpoints[shard])
            )

        follow = self.followers
        ready: list[Outcome] = []
        if follow is not None:
            follow.start_pass()
        try:
            for index, req in enumerate(self.source.requests()):
                if self.stopping.is_set():
                    break
                leader = follow.leader_of(index, req) if follow is not None else None
                h = id_hash(req.custom_id)
                if h in self.shards.taken:
                    continue
                payload = orjson.dumps(req.body)
                b = body_hash_int(payload)
                if self.answers.settled(h, b, retry_failed=retry_failed):
                    if follow is not None:  # a leader may wait for this row's answer
                        ready.extend(follow.member_answered(index, req, f"{b:016x}"))
                    continue
                if follow is not None and self._follows(follow, index, leader, req, b, ready):
                    if len(ready) >= FOLLOWERS_WRITTEN_TOGETHER:
                        self._deliver(ready)
                        ready = []
                    continue
                model = str(req.body.get("model") or "")
                # one model and one endpoint a file: a chat shard is keyed by its model
                key = model if req.api == CHAT else f"{model}\n{req.api}"
                member = None
                if self.takers is not None:  # a pool: the row's batch endpoint
                    member = endpoint_for(req.custom_id, self.takers.of(model))
                    key = f"{member.name}\n{key}"
                if opening is not None:
                    if per_model.get(model, 0) >= opening:
                        target.held_back = True  # after the opening batches are judged
                        continue
                    per_model[model] = per_model.get(model, 0) + 1
                if target.max_tokens is None:  # for the answer-quality messages, as online
                    ceiling = answer_ceiling(req.body)
                    target.max_tokens = ceiling[1] if ceiling is not None else 0
                worst = 0.0
                if budget is not None and room is not None:
                    worst = budget.worst_case(req.body)
                    if worst > room:
                        # rows stay in input order: this one and the rest wait for room
                        target.over_budget = cap_reached(
                            spent, budget.cap, worst, how=" through the Batch API"
                        )
                        break
                    room -= worst
                remote = member.model_name(model) if member is not None else None
                line, hashed = line_for(req.custom_id, req.body, req.api, model=remote)
                inputs = embedding_inputs(req.body) if req.api == EMBEDDINGS else 0
                try:
                    placed = planner.place(key, len(line), inputs)
                except RowTooLarge as exc:
                    raise InputError(self.cfg.input_path, f"row {req.row}", str(exc)) from None
                if placed.closed is not None:
                    close(placed.closed.shard)
                writer = writers.get(placed.shard)
                if writer is None:
                    writer = writers[placed.shard] = ShardWriter(run_dir, placed.shard)
                    models[placed.shard] = model
                    endpoints[placed.shard] = member.name if member is not None else None
                    attempts_of[placed.shard] = 1
                writer.add(line, req.custom_id, req.row, hashed)
                worst_of[placed.shard] = worst_of.get(placed.shard, 0.0) + worst
                used = attempts.get(req.custom_id, 0)
                attempts_of[placed.shard] = max(attempts_of[placed.shard], used + 1)
                self.shards.taken[h] = placed.shard
            for shard in sorted(writers):
                close(shard)
            self._deliver(ready)
        except BaseException:
            for writer in writers.values():
                writer.discard()
            raise
        finally:
            if follow is not None:
                follow.end_pass()
                if follow.replan:
                    follow.replan = False
                    target.needs_plan = True
        return planned

    def _follows(
        self,
        follow: Followers,
        index: int,
        leader: int | None,
        req: Request,
        b: int,
        ready: list[Outcome],
    ) -> bool:
        """A pending row that is answered without being planned: a follower waits for
        its leader's answer or takes the one already in the run directory (into
        ``ready``); a leader whose group an earlier process answered through one of its
        followers takes that answer. False: plan it (paid, never lost)."""
        hashed = f"{b:016x}"
        if leader is None:
            member = follow.answered_member(index, lambda h: answered(self.answers.done, h, b))
            if member is None:
                return False
            follow.wait_for_member(member, req, hashed)
            return True
        leader_h = id_hash(follow.leader_id(leader))
        if not self.answers.settled(leader_h, b, retry_failed=self.cfg.retry_failed):
            follow.wait(leader, req, hashed)
            return True
        copy = follow.answer_now(leader, req, hashed)
        if copy is None:
            return False
        ready.append(copy)
        return True

    def _deliver(self, ready: list[Outcome]) -> None:
        """Write follower lines from the planning thread, on the event loop."""
        if ready and self.deliver is not None:
            anyio.from_thread.run_sync(self.deliver, list(ready))
