"""Answers a request already has: the response cache, and identical requests of one run.

Two ways not to pay twice, by one rule (`batchrun._cache.store.cacheable`: by default
only requests whose answer should not change, temperature 0 or a seed):

* **in-run dedupe**: the scan gives every request its key (`observe`), and
  `batchrun._cache.dedup` groups them: the first of a group (the *leader*) is sent,
  every later one (a *follower*) takes its answer. A follower whose leader is still
  on its way waits (parked here, never holding a worker or quota) and is written
  when the leader's line is; a follower whose leader was answered by an earlier
  process reads that line back; a follower whose leader this run does not send (a
  pilot that skipped it) is sent in its place, and when a later process wants the
  leader (the full run after the pilot), the leader and the rest of its group take
  that stand-in's answer (`Reuse.adopt`): a body is sent once across processes;
* **the response cache** (``--cache``): before a request is sent its key is looked
  up, a few hundred at a time; a hit is written as a result line marked
  ``"reused": "cache"``, costs nothing and uses no quota. After a usable answer (a 200
  judged ``ok``) is written, it is stored.

Reused lines carry ``"reused"`` (``"cache"`` or ``"run"``, and ``"same_as"``: the
leader's id) in their ``batchrun`` meta; their usage is counted as saved, never as
spent (`batchrun._output.tally.Tally`). They were not sent, so their ``latency_ms`` and
``wait_ms`` are null (a 0 would pull the run's latency percentiles down); their
``original_latency_ms`` is how long the request that first got the answer took on the
wire, when known (the cache keeps it with the body), which is what a comparison of
variants shows for a variant answered this way.

    reuse = Reuse(settings, api_key=key)
    source.scan(observe=reuse.observe); reuse.after_scan()
    for i, req in enumerate(requests):
        reuse.note(i, req)
        decision = reuse.consider(i, req)   # SEND, WAIT, or an Outcome to write
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import orjson

from batchrun._apis import APIS
from batchrun._cache.dedup import DedupPlan, RequestGroups
from batchrun._cache.scopes import PoolScopes
from batchrun._cache.store import Hit, ResponseCache, api_scope, cacheable, scoped_key
from batchrun._endpoint import credential_identity
from batchrun._ids import body_hash
from batchrun._models import Outcome, Request
from batchrun._output.usage import model_of
from batchrun._settings import Settings
from batchrun.errors import ConfigError

SEND = "send"
WAIT = "wait"
CACHE_FILE = "responses.sqlite"
LOOKUP_BATCH = 256
"""Requests looked up in the cache at once (one query each 256: ~7 us a key)."""

Decision = str | Outcome
Stored = tuple[bytes, bytes, float | None]
"""What the cache keeps of an answer: (key, body, milliseconds its request took)."""


def cache_path(location: str) -> str:
    """The cache file of ``--cache LOCATION``: a .sqlite file, or a directory's (made
    if needed; one that cannot be is a `ConfigError` naming it)."""
    is_file = location.endswith((".sqlite", ".sqlite3", ".db"))
    directory = os.path.dirname(os.path.abspath(location)) if is_file else location
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"{directory}: cannot create the response cache's directory ({exc.strerror or exc})"
        ) from exc
    return location if is_file else os.path.join(location, CACHE_FILE)


class Reuse:
    """The run's cache and dedupe state (one per runner)."""

    def __init__(
        self,
        settings: Settings,
        *,
        api_key: str | None = None,
        api_keys: Mapping[str, str | None] | None = None,
        read_line: Callable[[str], Outcome | None] | None = None,
        read_hashed: Callable[[int, str], Outcome | None] | None = None,
    ) -> None:
        policy = settings.cache_policy
        self.policy = policy
        self.endpoint = settings.endpoint
        """Which endpoint answers (its identity: the simulator's port is not in it)."""
        tenant = credential_identity(
            api_key, auth=settings.auth, auth_header=settings.auth_header, headers=settings.headers
        )
        self._scopes = {api: api_scope(self.endpoint, api, tenant) for api in APIS}
        """Where, which API and who (one-way hashed): one tenant's answers never serve
        another, an embeddings answer never a Responses request of the same body."""
        self.cache: ResponseCache | None = None
        if settings.cache and policy != "off":
            self.cache = ResponseCache(cache_path(settings.cache))
        self._pool = (
            PoolScopes(settings.pool(), api_keys or {})
            if settings.endpoints and self.cache is not None
            else None
        )
        """A pool's scopes (`batchrun._cache.scopes`): each answer is kept under the
        endpoint (and key) that gave it, and found under any endpoint serving its model."""
        self._groups: RequestGroups | None = (
            RequestGroups() if settings.dedupe and policy != "off" else None
        )
        self.plan: DedupPlan | None = None
        self._read_line = read_line
        """The final line of an id from an earlier process (`output.parquet.ResultIndex`)."""
        self._read_hashed = read_hashed
        """The same by the id's hash, for the body (its `batchrun._ids.body_hash`)."""
        self._answered_by: dict[int, tuple[int, int]] = {}
        """Leader index -> (id hash of a row of its group answered by an earlier
        process, how many of its followers were), for leaders not answered themselves."""
        self._leader_ids: dict[int, str] = {}
        """Leader index -> its custom_id (leaders with followers, seen so far)."""
        self._leader_wanted: dict[int, bool] = {}
        self._answers: dict[int, Outcome] = {}
        """Leader index -> its outcome in this process, until its followers have it."""
        self._parked: dict[int, list[Request]] = {}
        self._left: dict[int, int] = {}
        """Leader index -> followers not yet answered."""
        self._sent_leaders: dict[str, int] = {}
        """custom_id -> leader index of requests sent for a group (a leader, or a
        follower standing in for it)."""
        self._stand_in: set[int] = set()
        """Leaders this run does not send, for which one of their followers is sent."""
        self._keys: dict[str, bytes] = {}
        """custom_id -> cache key of requests sent (to store their answers)."""
        self._pooled: dict[str, Request] = {}
        """custom_id -> request sent in a pool (its key is known when an endpoint answers)."""
        self.hits = {"cache": 0, "run": 0}

    @property
    def active(self) -> bool:
        return self.cache is not None or self.plan is not None

    # -- the scan ------------------------------------------------------------------------
    def observe(self, req: Request, payload: bytes) -> None:
        """Every valid request of the scan, in input order."""
        groups = self._groups
        if groups is None:
            return
        if cacheable(req.body, self.policy, req.api):  # type: ignore[arg-type]
            groups.add(scoped_key(self._scopes[req.api], payload))
        else:
            groups.add_unique()

    def after_scan(self) -> None:
        if self._groups is not None:
            plan = self._groups.finish()
            self.plan = plan if plan.followers else None
            self._groups = None

    def adopt(self, answered_before: Callable[[int], int | None]) -> None:
        """After the run directory was read (a resume): find the groups an earlier
        process answered through a follower while their leader has no answer (a pilot
        sent a follower in the place of a leader it did not pick). Their leader, when
        wanted, takes that answer instead of being sent. ``answered_before(index)``: the
        id hash of the request's answered row, None when it has no answer."""
        plan = self.plan
        if plan is None:
            return
        found = self._answered_by
        # two dict lookups a follower answered before, and memory only for the groups
        # found (a cache of the leaders looked at would grow with every group resumed)
        for follower, leader in plan.pairs():
            h = answered_before(follower)
            if h is None or answered_before(leader) is not None:
                continue  # unanswered, or its leader's own line answers it (`_follow`)
            first, count = found.get(leader, (h, 0))
            found[leader] = (first, count + 1)

    # -- the sending pass ---------------------------------------------------------------
    def note(self, index: int, req: Request, *, wanted: bool) -> None:
        """Every request of the sending pass, in input order, before it is skipped or
        sent; ``wanted``: this process sends it (or has it answered)."""
        plan = self.plan
        if plan is None:
            return
        followers = plan.followers_of(index)
        if followers:
            self._leader_ids[index] = req.custom_id
            self._leader_wanted[index] = wanted
            # followers answered earlier are not asked again: the answer is let go
            # when the last one that is asked has it
            answered = self._answered_by.get(index)
            self._left[index] = len(followers) - (answered[1] if answered else 0)

    def consider(self, index: int, req: Request) -> Decision:
        """What to do with a request this process wants: SEND it, WAIT for its leader
        (it is written when the leader's line is), or write the Outcome given."""
        plan = self.plan
        if plan is not None:
            leader = plan.leader_of(index)
            if leader is not None:
                return self._follow(leader, index, req)
            if index in self._answered_by:
                answer = self._answered_earlier(index, req)
                if answer is not None:  # a row of its group was sent in its place
                    self.hits["run"] += 1
                    return reused(req, answer, "run", same_as=answer.custom_id)
            if index in self._left:
                self._sent_leaders[req.custom_id] = index
        return SEND

    def _answered_earlier(self, leader: int, req: Request) -> Outcome | None:
        """The answer an earlier process got for ``leader``'s group through one of its
        followers (``req``: a request of the group, for the body), kept for the rest."""
        answered = self._answered_by.pop(leader, None)
        if answered is None or self._read_hashed is None:
            return None
        answer = self._read_hashed(answered[0], body_hash(orjson.dumps(req.body)))
        if answer is None:
            return None
        if self._left.get(leader, 0) > 0:
            self._answers[leader] = answer
        return answer

    def _follow(self, leader: int, index: int, req: Request) -> Decision:
        answer = self._answers.get(leader)
        if answer is not None:
            return self._copy(leader, answer, req)
        if leader in self._stand_in or self._leader_wanted.get(leader):
            self._parked.setdefault(leader, []).append(req)  # its answer is on its way
            return WAIT
        leader_id = self._leader_ids.get(leader)
        if leader_id is not None and self._read_line is not None:
            answer = self._read_line(leader_id)
            if answer is not None:  # answered by an earlier process
                self._answers[leader] = answer
                return self._copy(leader, answer, req)
        if leader in self._answered_by:
            # neither sent nor answered, but another row of its group was (a pilot's)
            answer = self._answered_earlier(leader, req)
            if answer is not None:
                self._answers[leader] = answer
                return self._copy(leader, answer, req)
        # the leader is not sent by this run (a pilot left it out): send this one
        self._stand_in.add(leader)
        self._sent_leaders[req.custom_id] = leader
        self._left[leader] = self._left.get(leader, 1) - 1
        return SEND

    def _copy(self, leader: int, answer: Outcome, req: Request) -> Outcome:
        left = self._left.get(leader, 1) - 1
        if left <= 0:
            self._left.pop(leader, None)
            self._answers.pop(leader, None)
        else:
            self._left[leader] = left
        self.hits["run"] += 1
        return reused(req, answer, "run", same_as=answer.custom_id)

    def cached(self, requests: list[Request]) -> Iterator[tuple[Request, Outcome | None]]:
        """(request, its cached answer or None) for requests about to be sent, looked
        up at once; the misses' keys are kept to store their answers."""
        if self.cache is None:
            for req in requests:
                yield req, None
            return
        wanted: dict[str, list[tuple[str | None, bytes]]] = {}
        for req in requests:
            if cacheable(req.body, self.policy, req.api):  # type: ignore[arg-type]
                wanted[req.custom_id] = self._lookup_keys(req)
        found = (
            self.cache.get_many_timed(k for keys in wanted.values() for _, k in keys)
            if wanted
            else {}
        )
        for req in requests:
            keys = wanted.get(req.custom_id)
            if not keys:
                yield req, None
                continue
            hit = next(((name, found[k]) for name, k in keys if k in found), None)
            if hit is None:
                if self._pool is None:
                    self._keys[req.custom_id] = keys[0][1]
                else:
                    self._pooled[req.custom_id] = req
                yield req, None
                continue
            self.hits["cache"] += 1
            yield req, self._from_cache(req, hit[1], hit[0])

    def _lookup_keys(self, req: Request) -> list[tuple[str | None, bytes]]:
        """(endpoint name, key) under which an answer may serve ``req``: the run's one
        scope (name None), or in a pool each scope of an endpoint serving its model."""
        if self._pool is None:
            return [(None, scoped_key(self._scopes[req.api], orjson.dumps(req.body)))]
        model = req.body.get("model")
        if not isinstance(model, str):
            return []
        return list(self._pool.lookup_keys(model, req.api, req.body))

    def _from_cache(self, req: Request, hit: Hit, name: str | None) -> Outcome:
        """The line of a cache hit: reused, not sent; in a pool it names the endpoint
        whose answer it is (``route`` ``[name]`` with no attempt, and its identity)."""
        answer = Outcome.success(
            req,
            status=200,
            request_id=None,
            body=orjson.loads(hit.body),
            attempts=[],
            latency_s=None,
            wait_s=None,
            body_hash=body_hash(orjson.dumps(req.body)),
        )
        answer.reused = "cache"
        answer.original_latency_ms = hit.latency_ms
        asked = req.body.get("model")
        if isinstance(asked, str) and model_of(answer.body, None) != asked:
            answer.asked_model = asked
        if name is not None and self._pool is not None:
            answer.route = [name]
            answer.endpoint = self._pool.identity(name)
        return answer

    def _store_key(self, outcome: Outcome) -> bytes | None:
        """The key ``outcome``'s answer is kept under (None: not to be kept): in a pool,
        the scope of the endpoint that answered it."""
        key = self._keys.pop(outcome.custom_id, None)
        req = self._pooled.pop(outcome.custom_id, None)
        if req is None or self._pool is None or not outcome.route:
            return key
        return self._pool.store_key(outcome.route[-1], req.api, req.body)

    # -- answers ---------------------------------------------------------------------
    def written(self, batch: Iterable[Outcome]) -> tuple[list[Outcome], list[Stored]]:
        """After lines were written: (followers now answered, to write next; (key,
        body, milliseconds on the wire) to store in the cache)."""
        released: list[Outcome] = []
        store: list[Stored] = []
        for outcome in batch:
            key = self._store_key(outcome)
            if key is not None and outcome.answered_fresh and outcome.quality is None:
                store.append((key, orjson.dumps(outcome.body), original_latency_ms(outcome)))
            leader = self._sent_leaders.pop(outcome.custom_id, None)
            if leader is None:
                continue
            if self._left.get(leader, 0) > 0:
                self._answers[leader] = outcome
            for req in self._parked.pop(leader, ()):
                released.append(self._copy(leader, outcome, req))
        return released, store

    def abandoned(self, custom_id: str) -> None:
        """A request was not sent after all (the run stopped): nothing to store."""
        self._keys.pop(custom_id, None)
        self._pooled.pop(custom_id, None)

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cache_hits": self.hits["cache"], "deduped": self.hits["run"]}
        if self.plan is not None:
            out["duplicate_requests"] = self.plan.followers
        if self.cache is not None:
            out["cache"] = self.cache.path
        return out


class EarlierLines:
    """The run directory's result lines by id, read back for dedupe (a follower whose
    leader an earlier process answered takes that line); the index is built on first
    use (`batchrun._output.parquet.ResultIndex`)."""

    def __init__(self, run_dir: str, endpoint: str) -> None:
        self.run_dir = run_dir
        self.endpoint = endpoint
        self._index: Any = None

    def _built(self) -> Any:
        if self._index is None:
            from batchrun._output.parquet import ResultIndex

            self._index = ResultIndex.build(self.run_dir, self.endpoint)
        return self._index

    def line(self, custom_id: str) -> Outcome | None:
        """The final line an earlier process wrote for ``custom_id``."""
        found: Outcome | None = self._built().lookup(custom_id)
        return found

    def hashed(self, h: int, body: str) -> Outcome | None:
        """`line` by the id's hash, answering ``body`` (its body hash)."""
        found: Outcome | None = self._built().lookup_hash(h, body)
        return found

    def close(self) -> None:
        if self._index is not None:
            self._index.close()


def reused(req: Request, answer: Outcome, how: str, *, same_as: str | None = None) -> Outcome:
    """``answer`` as the answer to ``req`` (its id, row and body hash), marked reused."""
    if answer.ok:
        copy = Outcome.success(
            req,
            status=answer.status_code or 200,
            request_id=answer.request_id,
            body=answer.body,
            attempts=[],
            latency_s=None,
            wait_s=None,
            body_hash=body_hash(orjson.dumps(req.body)),
        )
    else:
        error = answer.error or {}
        copy = Outcome.failure(
            req,
            code=str(error.get("code", "unknown")),
            message=str(error.get("message", "")),
            attempts=[],  # its leader's attempts are counted once, on its own line
            status=answer.status_code,
            body=answer.body,
            latency_s=None,
            wait_s=None,
            body_hash=body_hash(orjson.dumps(req.body)),
        )
    copy.quality = answer.quality
    copy.quality_detail = answer.quality_detail
    copy.asked_model = answer.asked_model
    copy.reused = how
    copy.original_latency_ms = original_latency_ms(answer) if answer.ok else None
    copy.same_as = same_as
    if answer.route:  # a pool's: the endpoint whose answer it is (nothing was sent)
        copy.route = answer.route[-1:]
        copy.endpoint = answer.endpoint
    return copy


def original_latency_ms(answer: Outcome) -> float | None:
    """How long the request that got ``answer`` took on the wire, in milliseconds:
    its own time, or for an answer itself reused the original request's; None when
    unknown (a row answered through the Batch API records none)."""
    if answer.reused is not None:
        return answer.original_latency_ms
    latency = answer.latency_s
    return None if latency is None else round(latency * 1000, 1)


__all__ = ["SEND", "WAIT", "EarlierLines", "Reuse", "cache_path", "original_latency_ms", "reused"]
