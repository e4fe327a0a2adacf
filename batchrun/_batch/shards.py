"""Split the pending rows into Batch API input files within the provider's limits (pure).

A batch input file holds requests for one model and one endpoint (OpenAI refuses a
file that mixes them) and at most ``max_requests`` lines and ``max_bytes`` bytes
(OpenAI: 50,000 and 200 MB); an embeddings file at most ``max_inputs`` inputs over
all its requests (OpenAI: 50,000). Rows arrive one at a time, in input order, with
their shard key (the model, and the API when it is not chat) and the size of their
input line; the planner keeps one open shard per key and closes it when the next
row would not fit. Shard numbers come from a counter that never goes back, so a
number names one submission for the whole life of a run directory.

    >>> planner = ShardPlanner(max_requests=2, max_bytes=1000, first=7)
    >>> [planner.place("m", 100).shard for _ in range(3)], planner.place("n", 10).shard
    ([7, 7, 8], 9)
    >>> [s.shard for s in planner.close_all()]
    [8, 9]
"""

from __future__ import annotations

from dataclasses import dataclass, field

from batchrun._apis import EMBEDDING_BATCH_INPUTS


class RowTooLarge(ValueError):
    """One request is bigger than a whole batch input file may be."""


@dataclass
class OpenShard:
    """A shard being filled: its number, model, and what it holds so far."""

    shard: int
    model: str
    requests: int = 0
    bytes: int = 0
    inputs: int = 0
    """Embedding inputs (one request may ask for many vectors)."""


@dataclass
class Placement:
    """Where a row went, and the shard its arrival closed (full), if any."""

    shard: int
    closed: OpenShard | None = None


@dataclass
class ShardPlanner:
    """One open shard per model; a shard closes when the next row would overflow it."""

    max_requests: int
    max_bytes: int
    first: int = 1
    max_inputs: int = EMBEDDING_BATCH_INPUTS
    _open: dict[str, OpenShard] = field(default_factory=dict)
    _next: int = 0

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_bytes < 1:
            raise ValueError("shard limits must be positive")
        self._next = self.first

    @property
    def next_shard(self) -> int:
        """The number the next shard will get."""
        return self._next

    def place(self, model: str, size: int, inputs: int = 0) -> Placement:
        """Put one row of ``size`` bytes (its input line; ``inputs``: the embedding
        inputs it asks for) in the open shard of its key (``model``)."""
        if size > self.max_bytes:
            raise RowTooLarge(
                f"a request of {size:,} bytes is larger than a batch file may be "
                f"({self.max_bytes:,} bytes, --batch-max-bytes)"
            )
        current = self._open.get(model)
        closed = None
        if current is not None and (
            current.requests + 1 > self.max_requests
            or current.bytes + size > self.max_bytes
            or current.inputs + inputs > self.max_inputs
        ):
            closed = current
            current = None
        if current is None:
            current = self._open[model] = OpenShard(self._next, model)
            self._next += 1
        current.requests += 1
        current.bytes += size
        current.inputs += inputs
        return Placement(current.shard, closed)

    def close_all(self) -> list[OpenShard]:
        """The shards still open (the last of each model), in the order they opened."""
        shards = sorted(self._open.values(), key=lambda s: s.shard)
        self._open.clear()
        return shards


def shrink(max_requests: int) -> int:
    """The request limit after a shard alone was too big for the provider's queue of
    enqueued tokens: half, at least one.

    >>> shrink(50_000), shrink(1)
    (25000, 1)
    """
    return max(1, max_requests // 2)


LONE_REFUSALS = 2
"""Refusals of a row alone, with none of this run's batches queued, after which it is
taken as too large when its size or the limit is unknown (the first may have met a
batch of this run that ended in the same poll)."""


def never_fits_the_queue(prompt_tokens: int | None, limit: int | None, refusals: int) -> bool:
    """Whether a row the provider's queue of enqueued tokens refused alone can never
    go through it. With its size and the limit the provider names, the numbers decide
    (a row under the limit waits: the queue is held by batches outside this run);
    without them, `LONE_REFUSALS` refusals alone do (waiting would loop forever).

    >>> never_fits_the_queue(1_200, 400, 1), never_fits_the_queue(120, 400, 9)
    (True, False)
    >>> never_fits_the_queue(None, 400, 1), never_fits_the_queue(1_200, None, 2)
    (False, True)
    """
    if prompt_tokens is not None and limit is not None:
        return prompt_tokens > limit
    return refusals >= LONE_REFUSALS


__all__ = [
    "LONE_REFUSALS",
    "OpenShard",
    "Placement",
    "RowTooLarge",
    "ShardPlanner",
    "never_fits_the_queue",
    "shrink",
]
