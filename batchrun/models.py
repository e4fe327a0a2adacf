"""The values that flow through a run: a request in, an outcome out.

Pure data, no I/O. One row of input becomes one `Request`; the client turns it into
one `Outcome` after one or more `Attempt`s; the sink writes the outcome as one line.

    >>> req = Request("row-1", {"model": "m", "messages": []}, row=1)
    >>> Outcome.success(req, status=200, request_id=None, body={}, attempts=[]).ok
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Request:
    """One request, its body passed through unchanged.

    ``row`` is the 1-based line number (JSONL) or row number (Parquet) it came from.
    ``columns`` holds the dataset columns carried to the output (dataset jobs only).
    ``api`` is the API it targets (`batchrun.apis`: "chat", "embeddings", "responses").
    """

    custom_id: str
    body: dict[str, Any]
    row: int
    columns: dict[str, Any] | None = None
    api: str = "chat"


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
    latency_s: float = 0.0
    """Seconds on the wire: from each attempt's send to its answer, summed."""
    ttft_s: float | None = None
    row: int = 0
    columns: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    wait_s: float = 0.0
    """Seconds spent waiting to send: admission, pacing, cooldowns, retry back-off."""
    body_hash: str | None = None
    """`batchrun.ids.body_hash` of the body sent: ties the answer to its request."""
    finished_at: float | None = None
    """Wall-clock time (Unix seconds) it was finished: the run's time series."""

    @classmethod
    def success(
        cls,
        req: Request,
        *,
        status: int,
        request_id: str | None,
        body: Any,
        attempts: list[Attempt],
        latency_s: float = 0.0,
        ttft_s: float | None = None,
        wait_s: float = 0.0,
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
        latency_s: float = 0.0,
        wait_s: float = 0.0,
        body_hash: str | None = None,
    ) -> Outcome:
        error = {
            "code": code,
            "message": message,
            "attempts": [a.to_dict() for a in attempts],
        }
        return cls(
            req.custom_id,
            False,
            status,
            request_id,
            body,
            error,
            attempts,
            latency_s,
            None,
            req.row,
            req.columns,
            wait_s=wait_s,
            body_hash=body_hash,
        )
