"""Identical requests in a batch run: one goes in a batch, the others take its answer.

The in-run dedupe of an online run (`batchrun._engine.reuse`, by the same rule: the
scan's `batchrun._cache.dedup.DedupPlan`, keyed as the response cache keys requests
and limited to what `batchrun._cache.store.cacheable` allows) holds in batch mode too.
The first row of a group of identical requests (its *leader*) is planned into a shard
as any row is; a later one (a *follower*) never is. Each planning pass
(`batchrun._batch.submit.Submitter.plan`) tells every pending follower here:

* its leader is answered or failed for good (by this process or an earlier one): the
  leader's line is read back from the run directory and the follower's written now;
* otherwise its leader is in an open shard or was just planned: the follower waits,
  and is written right after the leader's line is (`released`, called by
  `batchrun._batch.finish.Finisher.write`).

A pending leader one of whose followers an earlier process answered (an online pilot
that picked the copy, not the first: it was sent in the leader's place) is not planned
either: it waits for the pass to reach that follower, and takes its answer
(`member_answered`). Each distinct request is paid once across the processes.

A follower's line is the online one: the leader's answer, ``"reused": "run"`` and
``"same_as"`` the leader's id; its usage counts as saved, not spent. Nothing here is
journaled: a follower is pending until its line is written, so a process killed in
between leaves it pending and the next pass finds its leader answered. A waiting
follower costs its id, row and body hash (~200 bytes), never its body.

    followers = Followers(plan, run_dir, scan.hashes)
    followers.start_pass()
    leader = followers.leader_of(index, req)      # every row, in input order
    followers.wait(leader, req, hashed)           # or: followers.answer_now(...)
    copies = followers.released(written_lines)    # after the leaders' lines
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable

from batchrun._cache.dedup import DedupPlan
from batchrun._engine.reuse import reused
from batchrun._models import Outcome, Request
from batchrun._output.parquet import ResultIndex

REUSED_FROM_RUN = "run"


class Followers:
    """The followers of one batch run and the leaders they wait for."""

    def __init__(
        self, plan: DedupPlan | None, run_dir: str, id_hashes: array[int] | None = None
    ) -> None:
        self.plan = plan
        self.run_dir = run_dir
        self.id_hashes = id_hashes
        """The id hash of every row, by its index (the scan's), to find answered ones."""
        self.written = 0
        """Follower lines this process wrote (summary.json's ``dedupe.deduped``),
        counted by the writer (`batchrun._batch.finish.Finisher.write`)."""
        self._leader_ids: dict[int, str] = {}
        """Leader index -> its custom_id, for leaders with followers."""
        self._waiting: dict[str, list[tuple[str, int, str]]] = {}
        """Leader custom_id -> (custom_id, row, body hash) of its waiting followers."""
        self._earlier: ResultIndex | None = None
        self._read_back: dict[str, Outcome] = {}
        self._by_member: dict[int, list[tuple[str, int, str]]] = {}
        """Follower index -> the leader waiting for its earlier answer."""
        self.unreadable: set[int] = set()
        """Leaders whose answered follower's line was not found: planned after all."""
        self.replan = False
        """A leader was left out of this pass for a line not found: plan again."""

    @property
    def duplicates(self) -> int:
        """Rows of the input that are followers (not sent)."""
        return self.plan.followers if self.plan is not None else 0

    def start_pass(self) -> None:
        """A planning pass begins: every pending follower will be told again."""
        self._waiting.clear()
        self._by_member.clear()
        self._forget_earlier()

    def end_pass(self) -> None:
        self._forget_earlier()

    def leader_of(self, index: int, req: Request) -> int | None:
        """For every request of a pass, in input order (its index in the scan): the
        index of its leader when it is a follower, else None."""
        plan = self.plan
        if plan is None:
            return None
        if plan.followers_of(index):
            self._leader_ids[index] = req.custom_id
        return plan.leader_of(index)

    def leader_id(self, leader: int) -> str:
        return self._leader_ids[leader]

    def wait(self, leader: int, req: Request, hashed: str) -> None:
        """The leader's answer is on its way: write this follower when it comes."""
        entry = (req.custom_id, req.row, hashed)
        self._waiting.setdefault(self._leader_ids[leader], []).append(entry)

    def answer_now(self, leader: int, req: Request, hashed: str) -> Outcome | None:
        """The follower's line from its leader's, which is in the run directory (None:
        not found there; the follower is then planned as a row of its own)."""
        answer = self._line_of(self._leader_ids[leader], hashed)
        return None if answer is None else self._copy(answer, req.custom_id, req.row, hashed)

    def _line_of(self, custom_id: str, hashed: str) -> Outcome | None:
        """The answer in the run directory of ``custom_id`` for this body (None: none)."""
        answer = self._read_back.get(custom_id)
        if answer is None:
            if self._earlier is None:  # built once per pass: it sees every line written
                self._earlier = ResultIndex.build(self.run_dir)
            answer = self._earlier.lookup(custom_id, hashed)
            if answer is None:
                return None
            self._read_back[custom_id] = answer
        return answer

    def answered_member(self, leader: int, is_answered: Callable[[int], bool]) -> int | None:
        """For a pending leader: the index of one of its followers answered already
        (``is_answered(id hash)``), which then answers it (`wait_for_member`)."""
        plan, hashes = self.plan, self.id_hashes
        if plan is None or hashes is None or leader in self.unreadable:
            return None
        for follower in plan.followers_of(leader):
            if is_answered(hashes[follower]):
                return follower
        return None

    def wait_for_member(self, member: int, req: Request, hashed: str) -> None:
        """A leader takes the answer of its group's ``member`` (reached later in the
        pass: `member_answered`) instead of being planned."""
        self._by_member.setdefault(member, []).append((req.custom_id, req.row, hashed))

    def member_answered(self, index: int, req: Request, hashed: str) -> list[Outcome]:
        """An answered row of the pass: the lines of the leaders waiting for it."""
        waiting = self._by_member.pop(index, None)
        if not waiting:
            return []
        answer = self._line_of(req.custom_id, hashed)
        if answer is None:  # planned in the next pass, as rows of their own
            self.unreadable.update(self._leader_index(custom_id) for custom_id, _, _ in waiting)
            self.replan = True
            return []
        return [self._copy(answer, custom_id, row, h) for custom_id, row, h in waiting]

    def _leader_index(self, custom_id: str) -> int:
        return next(i for i, c in self._leader_ids.items() if c == custom_id)

    def released(self, lines: Iterable[Outcome]) -> list[Outcome]:
        """The followers answered by ``lines`` (just written): their lines, to write."""
        if not self._waiting:
            return []
        out: list[Outcome] = []
        for outcome in lines:
            for custom_id, row, hashed in self._waiting.pop(outcome.custom_id, ()):
                out.append(self._copy(outcome, custom_id, row, hashed))
        return out

    def _copy(self, answer: Outcome, custom_id: str, row: int, hashed: str) -> Outcome:
        # the follower's body is not kept while it waits, only its hash: the one it sets
        source = answer.same_as or answer.custom_id  # the row that was paid for
        copy = reused(Request(custom_id, {}, row=row), answer, REUSED_FROM_RUN, same_as=source)
        copy.body_hash = hashed
        return copy

    def _forget_earlier(self) -> None:
        self._read_back.clear()
        if self._earlier is not None:
            self._earlier.close()
            self._earlier = None

    def summary(self) -> dict[str, int]:
        """summary.json's ``dedupe``, as an online run writes it."""
        return {"cache_hits": 0, "deduped": self.written, "duplicate_requests": self.duplicates}


__all__ = ["Followers"]
