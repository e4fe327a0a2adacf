"""A Batch API run over a pool of endpoints (issue 26): which endpoint takes each row,
and the Files/Batches client of each.

A pool's endpoints that declare ``batch = true`` take its rows through their Batch
APIs; a model none of them serves is refused before anything is sent
(`batchrun._settings.Settings.problems`). Each row of a model goes to one of that
model's batch endpoints, chosen by weighted rendezvous hashing of its custom id
(`endpoint_for`): an endpoint takes a share of the rows in proportion to its
``weight``, the same row always goes to the same endpoint (a resubmission, a rerun, a
second process), and nothing but the id and the pool decides it. A shard holds rows of
one model for one endpoint (`batchrun._batch.planning`); the ``planned`` step names
the endpoint (`batchrun._output.ledger.ShardRecord.endpoint`), and every later call
for that shard (upload, create, the list that finds a lost create, retrieve, cancel,
download, delete) goes through that endpoint's client (`BatchClients.of`), with its
own URL, key, auth and headers; its input lines name the model as that endpoint does.
One step journal holds every endpoint's shards, so the exactly-once rules of the
batch lane (a row in an open shard is never planned again; a row answered for its
body never is) hold across the pool as they do for one endpoint.

A run with no pool has one client, named `batchrun._values.DEFAULT_ENDPOINT`, and
its lines and journal are as before.

    clients = batch_clients(cfg, {"a": key_a, "b": key_b}, transport=None, ...)
    clients.of(record).retrieve(record.batch_id)
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence

import httpx

from batchrun._batch.client import BatchClient
from batchrun._ids import body_hash_int
from batchrun._models import Outcome
from batchrun._output.ledger import ShardRecord
from batchrun._settings import Settings
from batchrun._values import DEFAULT_ENDPOINT, Endpoint
from batchrun.errors import ConfigError

_SPAN = float(1 << 64)


class BatchClients:
    """One `BatchClient` per endpoint of the run, by name (see the module docstring)."""

    __slots__ = ("_clients", "_identities")

    def __init__(
        self, clients: Mapping[str, BatchClient], identities: Mapping[str, str] | None = None
    ) -> None:
        self._clients = dict(clients)
        self._identities = dict(identities or {})
        """A pool's endpoint names -> identities (empty: no pool)."""

    def mark(self, record: ShardRecord, outcomes: Iterable[Outcome]) -> None:
        """Name on each line of a pool's shard the endpoint that took it (``route``:
        every attempt of the row went there, `endpoint_for` sends a row to one
        endpoint; ``endpoint``: its identity), as an online pool's lines do."""
        name = record.endpoint
        if name is None:
            return
        identity = self._identities.get(name, name)
        for outcome in outcomes:
            outcome.route = [name] * max(1, len(outcome.attempts))
            outcome.endpoint = identity

    def of(self, record: ShardRecord) -> BatchClient:
        """The client of the endpoint that took ``record``'s shard."""
        return self.named(record.endpoint)

    def named(self, name: str | None) -> BatchClient:
        if name is None and len(self._clients) == 1:
            return next(iter(self._clients.values()))
        client = self._clients.get(name or DEFAULT_ENDPOINT)
        if client is None:  # a journal naming an endpoint the pool no longer has
            raise ConfigError(
                f"the run directory has open batches at endpoint {name!r}, which the pool "
                f"no longer declares; declare it again (with batch = true) to take them in"
            )
        return client

    def refuse_unknown(self, records: Iterable[ShardRecord]) -> None:
        """A ConfigError, before anything is sent, when an open shard of the run
        directory is at an endpoint the pool no longer has (its batches would be
        neither polled nor cancelled)."""
        for record in records:
            self.of(record)

    def __iter__(self) -> Iterator[BatchClient]:
        return iter(self._clients.values())

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()


def batch_clients(
    cfg: Settings,
    keys: Mapping[str, str | None],
    *,
    transport: httpx.AsyncBaseTransport | None,
    sleep: Callable[[float], Awaitable[None]],
) -> BatchClients:
    """A client for each endpoint that takes batches (a run without a pool: its one
    endpoint), each with its URL, key (``keys`` by name), auth and headers."""
    members = [e for e in cfg.pool() if e.batch] if cfg.endpoints else cfg.pool()
    identities = {e.name: e.identity for e in members} if cfg.endpoints else {}
    return BatchClients(
        {
            e.name: BatchClient(
                **e.connection(keys),
                transport=transport,
                timeout=cfg.timeout,
                retry_base=min(2.0, cfg.poll_interval),
                sleep=sleep,
            )
            for e in members
        },
        identities,
    )


class BatchTakers:
    """A pool's endpoints that take batches (``batch = true``), by the models they serve."""

    __slots__ = ("members", "_by_model")

    def __init__(self, members: Sequence[Endpoint]) -> None:
        self.members = [e for e in members if e.batch]
        self._by_model: dict[str, list[Endpoint]] = {}

    def of(self, model: str) -> list[Endpoint]:
        """The batch endpoints serving ``model``, in declaration order."""
        found = self._by_model.get(model)
        if found is None:
            found = self._by_model[model] = [e for e in self.members if e.serves(model)]
        return found

    def refuse_unserved(self, models: Iterable[str]) -> None:
        """A ConfigError naming the first of ``models`` (the input's) that no batch
        endpoint serves: refused before anything is uploaded, never sent elsewhere."""
        for model in sorted(models):
            if not self.of(model):
                takers = ", ".join(e.name for e in self.members) or "none"
                raise ConfigError(
                    f"--batch-api with endpoints: no endpoint that takes batches (batch = "
                    f"true: {takers}) serves the model {model!r} the input asks for; add it "
                    "to one's models, or run it online"
                )


def batch_takers(cfg: Settings) -> BatchTakers | None:
    """The pool's batch endpoints (None: no pool, the run's one endpoint takes all)."""
    return BatchTakers(cfg.pool()) if cfg.endpoints else None


def endpoint_for(custom_id: str, candidates: Sequence[Endpoint]) -> Endpoint:
    """The endpoint that takes the row ``custom_id``: weighted rendezvous hashing
    (each candidate scores ``-weight / ln(u)``, ``u`` a hash of the row and the
    endpoint in (0, 1); the highest wins), so each endpoint takes its weight's share
    and a row always lands on the same one.

        >>> a, b = Endpoint("a", "https://a/v1"), Endpoint("b", "https://b/v1", weight=3.0)
        >>> picked = [endpoint_for(f"id-{i}", [a, b]).name for i in range(4000)]
        >>> abs(picked.count("b") / 4000 - 0.75) < 0.02, endpoint_for("id-7", [b, a]).name
        (True, 'b')
    """
    if len(candidates) == 1:
        return candidates[0]
    best, score = candidates[0], -math.inf
    for member in candidates:
        # a hash stable across processes (not `id_hash`, which is keyed per process)
        key = f"{member.name}\x00{custom_id}".encode("utf-8", "surrogatepass")
        u = (body_hash_int(key) + 0.5) / _SPAN
        here = -(member.weight or 1.0) / math.log(u)
        if here > score:
            best, score = member, here
    return best


__all__ = ["BatchClients", "BatchTakers", "batch_clients", "batch_takers", "endpoint_for"]
