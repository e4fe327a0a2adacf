"""The values that flow through a run: a request in, an outcome out.

Pure data, no I/O. One row of input becomes one `Request`; the client turns it into
one `Outcome` after one or more `Attempt`s; the sink writes the outcome as one line.

    >>> req = Request("row-1", {"model": "m", "messages": []}, row=1)
    >>> Outcome.success(req, status=200, request_id=None, body={}, attempts=[]).ok
    True

What an outcome says beyond the answer (how it was answered: reused, through the Batch
API, judged unusable, paid for but unreadable...) is typed fields, written to and read
from the line's ``batchrun`` object by one encoder/decoder pair
(`batchrun._output.lines`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Request:
    """One request, its body passed through unchanged.

    ``row`` is the 1-based line number (JSONL) or row number (Parquet) it came from.
    ``columns`` holds the dataset columns carried to the output (dataset jobs only).
    ``api`` is the API it targets (`batchrun._apis`: "chat", "embeddings", "responses").
    """

    custom_id: str
    body: dict[str, Any]
    row: int
    columns: dict[str, Any] | None = None
    api: str = "chat"
    members: tuple[Request, ...] | None = None
    """A pack of embeddings rows sent as one request (`batchrun._engine.packing`): the
    rows, in the order of the body's ``input`` texts. None: one row's request."""
    member_tokens: tuple[int, ...] = ()
    """A pack's texts' tokens, in order (what its usage is shared out by)."""


@dataclass(frozen=True, slots=True)
class Attempt:
    """What happened on one try: HTTP status (None if no response) and a short code."""

    status: int | None
    code: str
    message: str = ""
    billed: bool = False
    """A 200 whose answer could not be read: probably paid for."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "code": self.code, "message": self.message}
        if self.billed:
            out["billed"] = True
        return out


@dataclass(frozen=True, slots=True)
class BilledUnread:
    """Attempts answered with a 200 that could not be read (not JSON, over
    --max-response-bytes): probably paid for, so the cost counts them at their worst
    case. ``prompt_tokens`` and ``completion_ceiling`` are one attempt's (the ceiling
    is 0 when the body sets no max tokens: the model's context window is the limit)."""

    attempts: int
    prompt_tokens: int
    completion_ceiling: int


def error_object(code: str, message: str, attempts: list[Attempt]) -> dict[str, Any]:
    """A failed row's ``error``, as errors.jsonl holds it: its code and message, and
    every attempt."""
    return {"code": code, "message": message, "attempts": [a.to_dict() for a in attempts]}


@dataclass(slots=True)
class Outcome:
    """The final word on one request: succeeded (goes to results) or failed for good."""

    custom_id: str
    ok: bool
    status_code: int | None
    request_id: str | None
    body: Any
    error: dict[str, Any] | None
    attempts: list[Attempt]
    latency_s: float | None = 0.0
    """Seconds on the wire: from each attempt's send to its answer, summed. None: not
    timed (a reused answer or a Batch API row spent no time on this run's wire)."""
    ttft_s: float | None = None
    row: int = 0
    columns: dict[str, Any] | None = None
    wait_s: float | None = 0.0
    """Seconds spent waiting to send: admission, pacing, cooldowns, retry back-off
    (None: not timed, as `latency_s`)."""
    body_hash: str | None = None
    """`batchrun._ids.body_hash` of the body sent: ties the answer to its request."""
    finished_at: float | None = None
    """Wall-clock time (Unix seconds) it was finished: the run's time series."""
    # -- how it was answered (the line's meta: batchrun._output.lines) ------------------
    asked_model: str | None = None
    """The model its request asked for, when the answer names another or none (a
    fine-tune's, a deployment's name: what prices the answer), and on every line with
    `billed_unread` (what prices those attempts)."""
    billed_unread: BilledUnread | None = None
    """Its attempts answered with a 200 that could not be read, probably paid for."""
    quality: str | None = None
    """The answer's category when it is not usable (`batchrun._output.quality`:
    truncated, refused, not valid against the schema...); None: ok, or a failure."""
    quality_detail: str | None = None
    """What `quality` found, in a few words (when there is more to say)."""
    reused: str | None = None
    """Answered without being sent: "cache" (the response cache) or "run" (an
    identical request of the run was sent once: `batchrun._engine.reuse`)."""
    same_as: str | None = None
    """For an answer reused within the run: the id of the row that was sent for it."""
    original_latency_ms: float | None = None
    """For a reused answer: how long the request that first got it took on the wire,
    when known."""
    via: str | None = None
    """How it was sent: "batch" through the Batch API (`batch_id` says which batch);
    None: online, or not sent (reused)."""
    batch_id: str | None = None
    """The Batch API batch that answered (None for a row no batch took)."""
    endpoint: str | None = None
    """Identity of the endpoint that answered (`batchrun._endpoint.endpoint_identity`),
    as a line read back records it; the sink names its own when it writes."""
    route: list[str] | None = None
    """In a pool of endpoints: the name of the endpoint each attempt went to, in
    order (the last answered); None: a run with one endpoint."""
    other: dict[str, Any] | None = None
    """Meta keys this version does not know (written by a newer batchrun), kept so a
    line read back says all it said."""

    @property
    def answered_fresh(self) -> bool:
        """A success this run's endpoint answered: not reused (from the response cache
        or an identical row), so what it cost and what a cache keeps are its own."""
        return self.ok and self.reused is None

    @classmethod
    def success(
        cls,
        req: Request,
        *,
        status: int,
        request_id: str | None,
        body: Any,
        attempts: list[Attempt],
        latency_s: float | None = 0.0,
        ttft_s: float | None = None,
        wait_s: float | None = 0.0,
        body_hash: str | None = None,
    ) -> Outcome:
        return cls(
            req.custom_id,
            True,
            status,
            request_id,
            body,
            None,
            attempts,
            latency_s,
            ttft_s,
            req.row,
            req.columns,
            wait_s=wait_s,
            body_hash=body_hash,
        )

    @classmethod
    def failure(
        cls,
        req: Request,
        *,
        code: str,
        message: str,
        attempts: list[Attempt],
        status: int | None = None,
        request_id: str | None = None,
        body: Any = None,
        latency_s: float | None = 0.0,
        wait_s: float | None = 0.0,
        body_hash: str | None = None,
    ) -> Outcome:
        return cls(
            req.custom_id,
            False,
            status,
            request_id,
            body,
            error_object(code, message, attempts),
            attempts,
            latency_s,
            None,
            req.row,
            req.columns,
            wait_s=wait_s,
            body_hash=body_hash,
        )
