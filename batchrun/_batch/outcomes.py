"""A batch's answers as the run's own outcomes (pure: no I/O).

A line of a batch's output or error file becomes the `batchrun._models.Outcome` an
online send of the same row would have produced, so results.jsonl and errors.jsonl
keep one format: the body is the provider's, unmodified, and the ``batchrun`` meta
says ``"via": "batch"`` and which batch (``batch_id``). Times on the wire mean
nothing for a batch row: ``latency_ms`` and ``wait_ms`` are null (the report leaves
them out of its percentiles). Earlier batch attempts of a row count as attempts.

    >>> out = success(RowResult("r1", True, 200, "req_1", {"choices": []}),
    ...     row=3, body_hash="00000000000000ff", batch_id="batch_1", attempts_before=1, at=5.0)
    >>> out.ok, out.via, len(out.attempts)
    (True, 'batch', 2)
"""

from __future__ import annotations

from typing import Any

from batchrun._batch.protocol import BatchView, RowResult
from batchrun._models import Attempt, Outcome, error_object

MISSING_CODES = {
    "expired": "batch_expired",
    "cancelled": "batch_cancelled",
    "failed": "batch_failed",
}


VIA = "batch"
"""`batchrun._models.Outcome.via` of a row the Batch API answered."""


def _earlier(attempts_before: int) -> list[Attempt]:
    return [Attempt(None, "batch_retry", "resubmitted in a later batch")] * attempts_before


def success(
    result: RowResult, *, row: int, body_hash: str, batch_id: str, attempts_before: int, at: float
) -> Outcome:
    attempts = [*_earlier(attempts_before), Attempt(200, "ok")]
    outcome = Outcome(result.custom_id, True, 200, result.request_id, result.body, None, attempts)
    return _answered_in_batch(outcome, row=row, body_hash=body_hash, batch_id=batch_id, at=at)


def failure(
    custom_id: str,
    *,
    code: str,
    message: str,
    row: int,
    body_hash: str,
    batch_id: str | None,
    attempts_before: int,
    at: float,
    status: int | None = None,
    request_id: str | None = None,
    body: Any = None,
) -> Outcome:
    attempts = [*_earlier(attempts_before), Attempt(status, code, message[:300])]
    error = {**error_object(code, message, attempts), "batch_id": batch_id}
    outcome = Outcome(custom_id, False, status, request_id, body, error, attempts)
    return _answered_in_batch(outcome, row=row, body_hash=body_hash, batch_id=batch_id, at=at)


def _answered_in_batch(
    outcome: Outcome, *, row: int, body_hash: str, batch_id: str | None, at: float
) -> Outcome:
    """``outcome`` as a batch answered it: its row, body and batch, and no time on the
    wire (a batch row's latency and wait mean nothing: null)."""
    outcome.latency_s = outcome.wait_s = None
    outcome.row, outcome.body_hash, outcome.finished_at = row, body_hash, at
    outcome.via, outcome.batch_id = VIA, batch_id
    return outcome


def row_failure(
    result: RowResult, *, row: int, body_hash: str, batch_id: str, attempts_before: int, at: float
) -> Outcome:
    """A row of the error file that failed for good."""
    return failure(
        result.custom_id,
        code=result.code or "unknown",
        message=result.message,
        row=row,
        body_hash=body_hash,
        batch_id=batch_id,
        attempts_before=attempts_before,
        at=at,
        status=result.status,
        request_id=result.request_id,
        body=result.body,
    )


def missing_reason(view: BatchView) -> tuple[str, str]:
    """(code, message) for a row a batch ended without answering in either file."""
    code = MISSING_CODES.get(view.status, "batch_missing")
    if view.status == "failed":
        return code, f"the batch failed: {view.reasons()}"
    if code == "batch_missing":
        return code, f"the batch ended {view.status} without a line for this row"
    return code, f"the batch was {view.status} before it ran this row"


__all__ = ["failure", "missing_reason", "row_failure", "success"]
