"""Many rows to embed in one request, and each row's answer out of it.

An embeddings dataset job has one text per row, and an embeddings request takes up to
2,048 of them: sending a request per row would pay a round trip and a request of the
rate limit per text. Yet the row stays the unit of everything else: its own body (the
resume fingerprint, the cache and the in-run dedupe key), its own line in
results.jsonl, its own place in results.parquet. So packing happens only on the wire:

1. `pack_requests` groups consecutive pending rows that differ only by their text (same
   model, dimensions, user) into one request whose ``input`` is their texts in order,
   up to ``max_inputs`` texts and ``max_tokens`` tokens; the packed `Request` carries
   its rows as ``members`` (its custom_id is its first row's: what a budget's
   reservation is held under). The pack asks for what its rows' bodies ask for: a
   dataset job's ask for base64 float32 unless told otherwise
   (`batchrun._templating.text.body_builder`), the exact same values in a quarter of
   the bytes (a pack of 2,048 vectors of 1,536 floats is 16 MB of base64, 60 MB of
   JSON numbers), so each row's answer is what its own body would have got.
2. Its answer (the client has checked that it holds one vector per input, by index)
   is split back by `unpack` into one outcome per row: the row's vector as a one-entry
   embeddings list, the usage shared out by each text's tokens (the shares sum to what
   the server reported, so the cost is the same), the row's own body hash. A failure
   is every row's failure; a pack refused as a bad request (`SPLIT_STATUSES`: 400, 413,
   422) is split in halves and each half sent again, down to the row that is bad
   (`halves`).

`PackingLane` applies (1) to a scheduler lane: a pack is paced as one request (one of
the rate limit's requests, its texts' tokens).

    >>> a = Request("a", {"model": "m", "input": "hi"}, 1, api="embeddings")
    >>> b = Request("b", {"model": "m", "input": "yo"}, 2, api="embeddings")
    >>> [p.body["input"] for p in pack_requests(iter([a, b]), max_inputs=8)]
    [['hi', 'yo']]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import orjson

from batchrun._apis import EMBEDDING_REQUEST_INPUTS, EMBEDDINGS
from batchrun._ids import body_hash
from batchrun._models import Outcome, Request
from batchrun._output.usage import usage_of
from batchrun._output.vectors import answer_vectors
from batchrun._pacing.scheduler import Lane, Scheduler, Stopped, Ticket
from batchrun._pacing.tokens import embedding_input_tokens

if TYPE_CHECKING:
    from batchrun._engine.attempt import Sender

REQUEST_TOKENS = 300_000
"""Most tokens one embeddings request may hold over all its inputs (OpenAI's limit)."""

FLOAT_PACK_INPUTS = 512
"""Default rows a pack when the job asks for vectors as JSON floats: ~20 bytes a value,
so 512 vectors of 3,072 values are ~31 MB, within the default --max-response-bytes
(64 MiB), where 2,048 would not be (an answer too large is paid for and unreadable)."""

SPLIT_STATUSES = frozenset({400, 413, 422})
"""A pack refused with one of these is split in halves (`halves`): a bad request (one
bad text), a body too large for a proxy or a server's own limits, an input it cannot
process. Any other failure (retried as the pack first) is every row's."""

Tokens = Callable[[Request], int]


def row_tokens(req: Request) -> int:
    """The tokens of one row's text (the model's tokenizer)."""
    return sum(embedding_input_tokens(req.body))


def _packable(req: Request) -> bool:
    """One text (or one list of token ids) of an embeddings request, not a pack."""
    value = req.body.get("input")
    return (
        req.api == EMBEDDINGS
        and req.members is None
        and (
            isinstance(value, str)
            or (isinstance(value, list) and bool(value) and type(value[0]) is int)
        )
    )


def _key(body: dict[str, Any]) -> bytes:
    """What rows of one pack share: every field but the text."""
    return orjson.dumps(
        {k: v for k, v in body.items() if k != "input"}, option=orjson.OPT_SORT_KEYS
    )


def packed(members: list[Request], tokens: list[int] | None = None) -> Request:
    """One request of ``members``' texts, in order (one member: the member itself)."""
    if len(members) == 1:
        return members[0]
    first = members[0]
    body = {k: v for k, v in first.body.items() if k != "input"}
    body["input"] = [m.body["input"] for m in members]
    return dataclasses.replace(
        first, body=body, members=tuple(members), member_tokens=tuple(tokens or ())
    )


def pack_requests(
    requests: Iterator[Request],
    *,
    max_inputs: int = EMBEDDING_REQUEST_INPUTS,
    max_tokens: int = REQUEST_TOKENS,
    tokens: Tokens = row_tokens,
) -> Iterator[Request]:
    """Consecutive packable rows of the same fields but their text, as packs of at most
    ``max_inputs`` texts and ``max_tokens`` tokens; any other request goes on alone, in
    its place."""
    group: list[Request] = []
    counts: list[int] = []
    key = b""
    total = 0
    for req in requests:
        if not _packable(req):
            if group:
                yield packed(group, counts)
                group, counts, total = [], [], 0
            yield req
            continue
        n = tokens(req)
        k = _key(req.body)
        if group and (k != key or len(group) >= max_inputs or total + n > max_tokens):
            yield packed(group, counts)
            group, counts, total = [], [], 0
        if not group:
            key = k
        group.append(req)
        counts.append(n)
        total += n
    if group:
        yield packed(group, counts)


def halves(pack: Request) -> tuple[Request, Request]:
    """A pack's rows in two packs (a pack the server refused: which row is bad?)."""
    members = pack.members
    assert members is not None and len(members) > 1
    counts = list(pack.member_tokens) or None
    middle = len(members) // 2
    return (
        packed(list(members[:middle]), counts[:middle] if counts else None),
        packed(list(members[middle:]), counts[middle:] if counts else None),
    )


def _shares(total: int | None, weights: list[int]) -> list[int | None]:
    """``total`` shared out by ``weights`` (largest remainders: the shares sum to it)."""
    if total is None:
        return [None] * len(weights)
    weight = sum(weights)
    if weight <= 0:
        weights, weight = [1] * len(weights), len(weights)
    exact = [total * w / weight for w in weights]
    out = [int(x) for x in exact]
    left = total - sum(out)
    for index in sorted(range(len(exact)), key=lambda i: out[i] - exact[i])[:left]:
        out[index] += 1
    return list(out)


def unpack(outcome: Outcome, pack: Request) -> list[Outcome]:
    """The outcome of each row of ``pack`` from the pack's outcome (see the module
    docstring). An answer that does not hold one vector per row fails every row."""
    members = pack.members
    assert members is not None
    out: list[Outcome] = []
    vectors: list[Any] | None = None
    if outcome.ok:
        try:
            vectors = answer_vectors(outcome.body)
        except ValueError as exc:
            problem = str(exc)
        else:
            problem = f"{len(vectors)} vectors for {len(members)} inputs"
        if vectors is None or len(vectors) != len(members):
            outcome = dataclasses.replace(
                outcome,
                ok=False,
                error={"code": "invalid_embeddings", "message": problem, "attempts": []},
            )
            vectors = None
    weights = list(pack.member_tokens) or [row_tokens(m) for m in members]
    body = outcome.body if type(outcome.body) is dict else {}
    usage = usage_of(body) if vectors is not None else None
    prompt = _shares(usage.prompt_tokens if usage is not None else None, weights)
    # (built field by field: dataclasses.replace costs ~45 us a row, this ~5 us)
    shared = {f: getattr(outcome, f) for f in _SHARED}
    for index, member in enumerate(members):
        row = Outcome(
            member.custom_id,
            outcome.ok,
            outcome.status_code,
            outcome.request_id,
            _row_answer(body, vectors[index], prompt[index]) if vectors is not None else body,
            dict(outcome.error) if outcome.error is not None else None,
            list(outcome.attempts),
            row=member.row,
            columns=member.columns,
            body_hash=body_hash(orjson.dumps(member.body)),
            # an unreadable answer paid for is counted once, on the first row
            billed_unread=outcome.billed_unread if index == 0 else None,
            **shared,
        )
        out.append(row)
    return out


_SHARED = tuple(
    f.name
    for f in dataclasses.fields(Outcome)
    if f.name
    not in (
        "custom_id", "ok", "status_code", "request_id", "body", "error", "attempts", "row",
        "columns", "body_hash", "billed_unread",
    )
)  # fmt: skip
"""The fields every row of a pack has as the pack's outcome has them (times, quality,
how it was sent...)."""


def _row_answer(body: dict[str, Any], vector: Any, tokens: int | None) -> dict[str, Any]:
    """One row's answer: an embeddings list of its one vector, with its share of usage."""
    answer: dict[str, Any] = {
        "object": "list",
        "data": [{"object": "embedding", "index": 0, "embedding": vector}],
        "model": body.get("model"),
    }
    if tokens is not None:
        answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return answer


class PackingLane(Lane):
    """A scheduler lane whose requests are another lane's, packed (`pack_requests`).
    The other lane must end only when it is exhausted (a plain `Lane`): a lane fed by
    a shared read that has nothing *yet* would end the packs early."""

    def __init__(self, inner: Lane, **packing: Any) -> None:
        super().__init__(pack_requests(_drained(inner), **packing), inner._clock, inner.model)


def _drained(lane: Lane) -> Iterator[Request]:
    """A lane's requests, taken one by one as the scheduler would."""
    while (req := lane.peek()) is not None:
        lane.head = None
        yield req


async def send_pack(
    sender: Sender,
    scheduler: Scheduler,
    ticket: Ticket,
    *,
    counts: dict[str, int] | None,
    deliver: Callable[[list[Outcome]], None],
    estimate: Callable[[Request], int],
) -> None:
    """Send a pack of rows to embed and ``deliver`` each row's outcome out of the
    pack's. A pack refused as a bad request (`SPLIT_STATUSES`: 400, 413, 422) is sent
    again in halves, each paced as a request of its own, until the bad row is alone:
    the others get their vectors. Halves not sent (a stop) leave their rows pending.
    ``counts``: summary.json's ``packing`` (requests, rows, split), updated."""
    pack = ticket.request
    outcome = await sender.process(ticket)
    if outcome is None:
        return
    members = pack.members
    if counts is not None:
        counts["requests"] += 1
        counts["rows"] += len(members) if members is not None else 1
    if members is None:
        deliver([outcome])
        return
    if not outcome.ok and outcome.status_code in SPLIT_STATUSES and len(members) > 1:
        if counts is not None:
            counts["split"] += 1
            counts["rows"] -= len(members)  # its rows are counted in its halves
        for half in halves(pack):
            tokens = estimate(half) if ticket.tokens else 0
            try:
                await scheduler.wait_for(ticket.account, tokens)
            except Stopped:
                return
            await send_pack(
                sender,
                scheduler,
                Ticket(half, ticket.account, tokens, ticket.since),
                counts=counts,
                deliver=deliver,
                estimate=estimate,
            )
        return
    deliver(unpack(outcome, pack))


__all__ = [
    "send_pack",
    "FLOAT_PACK_INPUTS",
    "REQUEST_TOKENS",
    "SPLIT_STATUSES",
    "PackingLane",
    "halves",
    "pack_requests",
    "packed",
    "row_tokens",
    "unpack",
]
