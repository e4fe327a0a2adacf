"""The Batch API's wire format, read and written (pure: no I/O).

OpenAI's Batch API (and the providers that copy it) takes a JSONL file of
``{custom_id, method, url, body}`` lines uploaded with ``purpose=batch``, runs it as
a batch object whose ``status`` moves through ``validating``, ``in_progress``,
``finalizing`` to one final status (``completed``, ``failed``, ``expired``,
``cancelled``; ``cancelling`` on the way to the last), and leaves two files: the
output file (one line per answered request, the same shape as our results.jsonl)
and the error file (requests answered with an error status, and with some
providers rows an expired batch never ran, code ``batch_expired``). Everything
here turns those bytes into plain values and back, so the driver's decisions can be
tested as functions.

    >>> view = parse_batch({"id": "batch_1", "status": "in_progress",
    ...                     "request_counts": {"total": 4, "completed": 1, "failed": 0}})
    >>> view.live, view.completed
    (True, 1)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchrun._output.ledger import shard_tag

_LIMIT = re.compile(r"Limit: ([\d,]+) enqueued tokens", re.IGNORECASE)

CHAT_ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
LIVE = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
FINAL = frozenset({"completed", "failed", "expired", "cancelled"})
WITH_FILES = frozenset({"completed", "expired", "cancelled"})
"""Final statuses that leave output and error files for the rows the batch ran."""
RUN_KEY = "batchrun_run"
SHARD_KEY = "batchrun_shard"
ATTEMPT_KEY = "batchrun_attempt"
TOKEN_LIMIT_CODES = frozenset({"token_limit_exceeded", "enqueued_token_limit_exceeded"})
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
RETRYABLE_CODES = frozenset({"batch_expired", "batch_cancelled", "server_error", "timeout"})
FINAL_CODES = frozenset({"insufficient_quota", "invalid_api_key", "model_not_found"})


def input_line(custom_id: str, body: Mapping[str, Any], url: str = CHAT_ENDPOINT) -> bytes:
    """One line of a batch input file (with its newline); ``url``: the endpoint of
    its batch (`batchrun._apis.batch_url`).

    >>> input_line("r1", {"model": "m"})
    b'{"custom_id":"r1","method":"POST","url":"/v1/chat/completions","body":{"model":"m"}}\\n'
    """
    line = {"custom_id": custom_id, "method": "POST", "url": url, "body": body}
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def metadata_for(run_id: str, shard: int, attempt: int) -> dict[str, str]:
    """The metadata a batch is created with: which run and shard it is, so a restart
    can find a batch whose id never reached the run directory. Never holds a secret."""
    return {RUN_KEY: run_id, SHARD_KEY: shard_tag(shard), ATTEMPT_KEY: str(attempt)}


def is_shard_of(metadata: Any, run_id: str, shard: int) -> bool:
    """True when a listed batch's metadata names this run and shard."""
    return (
        isinstance(metadata, Mapping)
        and metadata.get(RUN_KEY) == run_id
        and metadata.get(SHARD_KEY) == shard_tag(shard)
    )


@dataclass(frozen=True)
class BatchView:
    """What batchrun reads of one batch object."""

    id: str
    status: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: tuple[tuple[str, str], ...] = ()
    """(code, message) of each entry of ``errors.data`` (a failed validation)."""
    metadata: Mapping[str, str] = field(default_factory=dict)
    created_at: float | None = None
    ended_at: float | None = None
    """When it reached its final status (Unix time), if it has."""

    @property
    def live(self) -> bool:
        return self.status in LIVE

    @property
    def final(self) -> bool:
        return self.status in FINAL

    @property
    def token_limited(self) -> bool:
        """Failed because the provider's queue for the model is full: not the rows'
        fault, so they wait and are submitted again, without counting an attempt."""
        return self.status == "failed" and any(code in TOKEN_LIMIT_CODES for code, _ in self.errors)

    @property
    def files_missing(self) -> tuple[str, ...]:
        """The files this ended batch's counts promise but it does not name yet:
        ``output`` when rows completed, ``error`` when rows of a completed batch failed
        (an expired or cancelled one counts the rows it never ran in different ways).
        A provider can report ``completed`` a moment before it sets ``output_file_id``
        (LiteLLM #37713); a completed batch with rows, no counts and no file promises
        its output.

        >>> BatchView("b", "completed", total=2, completed=2).files_missing
        ('output',)
        >>> BatchView("b", "completed", total=2, failed=2, error_file_id="f").files_missing
        ()
        """
        if self.status not in WITH_FILES:
            return ()
        missing = []
        if self.output_file_id is None and self.completed > 0:
            missing.append("output")
        if self.error_file_id is None and self.failed > 0 and self.status == "completed":
            missing.append("error")
        nothing_named = self.output_file_id is None and self.error_file_id is None
        uncounted = not (self.completed or self.failed)
        if self.status == "completed" and self.total > 0 and uncounted and nothing_named:
            missing.append("output")
        return tuple(missing)

    def reasons(self) -> str:
        """The provider's reasons for a failed batch, on one line."""
        return "; ".join(f"{code}: {message}" for code, message in self.errors) or self.status


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def parse_batch(obj: Mapping[str, Any]) -> BatchView:
    """A batch object (from create, retrieve or list) as a `BatchView`."""
    counts = obj.get("request_counts") or {}
    errors: list[tuple[str, str]] = []
    block = obj.get("errors")
    data = block.get("data") if isinstance(block, Mapping) else None
    for entry in data or ():
        if isinstance(entry, Mapping):
            line = entry.get("line")
            message = str(entry.get("message") or "")
            if line is not None:
                message += f" (line {line})"
            errors.append((str(entry.get("code") or "unknown"), message))
    status = str(obj.get("status") or "unknown")
    ended = obj.get(f"{status}_at") if status in FINAL else None
    created = obj.get("created_at")
    metadata = obj.get("metadata")
    return BatchView(
        id=str(obj.get("id") or ""),
        status=status,
        total=_int(counts.get("total")),
        completed=_int(counts.get("completed")),
        failed=_int(counts.get("failed")),
        output_file_id=obj.get("output_file_id") or None,
        error_file_id=obj.get("error_file_id") or None,
        errors=tuple(errors),
        metadata=dict(metadata) if isinstance(metadata, Mapping) else {},
        created_at=float(created) if isinstance(created, int | float) else None,
        ended_at=float(ended) if isinstance(ended, int | float) else None,
    )


def queue_limit(reason: str) -> int | None:
    """The enqueued-token limit a ``token_limit_exceeded`` message names, if it does.

    >>> queue_limit("Enqueued token limit reached for gpt-4o in organization org-x. "
    ...             "Limit: 90,000 enqueued tokens. Please try again later.")
    90000
    >>> queue_limit("token_limit_exceeded") is None
    True
    """
    found = _LIMIT.search(reason)
    return int(found.group(1).replace(",", "")) if found else None


def refused_for_token_limit(status: int, body: Any) -> bool:
    """A create refused at once because the enqueued-token queue is full (some
    providers answer the create itself with it rather than failing the batch)."""
    if status not in (400, 429):
        return False
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        return False
    code = str(error.get("code") or "")
    message = str(error.get("message") or "").lower()
    return code in TOKEN_LIMIT_CODES or "enqueued token limit" in message


@dataclass(frozen=True)
class RowResult:
    """One line of a batch's output or error file."""

    custom_id: str
    ok: bool
    status: int | None
    request_id: str | None
    body: Any
    code: str | None = None
    message: str = ""

    @property
    def retryable(self) -> bool:
        """Worth another batch: a server-side failure, a row the batch never ran."""
        return row_retryable(self.status, self.code)


def parse_result_line(line: bytes) -> RowResult | None:
    """A line of an output or error file; None for a line that is not one (blank,
    not JSON, no custom_id): such a line names no row, so no row can be lost by it."""
    try:
        record = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(record, dict) or not isinstance(record.get("custom_id"), str):
        return None
    response = record.get("response")
    response = response if isinstance(response, Mapping) else {}
    status = response.get("status_code")
    status = status if isinstance(status, int) else None
    body = response.get("body")
    error = record.get("error")
    # a Responses object always has an "error" key: null unless the response failed
    if error is None and status == 200 and isinstance(body, Mapping) and not body.get("error"):
        return RowResult(record["custom_id"], True, 200, response.get("request_id"), body)
    code, message = _error_of(error, body, status)
    return RowResult(
        record["custom_id"], False, status, response.get("request_id"), body, code, message
    )


def _error_of(error: Any, body: Any, status: int | None) -> tuple[str, str]:
    for source in (error, body.get("error") if isinstance(body, Mapping) else None):
        if isinstance(source, Mapping) and (source.get("code") or source.get("message")):
            code = source.get("code") or source.get("type") or f"http_{status}"
            return str(code), str(source.get("message") or "")
    return (f"http_{status}" if status is not None else "unknown"), ""


def row_retryable(status: int | None, code: str | None) -> bool:
    """The online retry rule, for a row of a batch: 408, 409, 429 and 5xx are worth
    another try, other 4xx are not; an exhausted quota never is.

    >>> row_retryable(503, None), row_retryable(400, "invalid_value")
    (True, False)
    >>> row_retryable(None, "batch_expired")
    True
    """
    if code in FINAL_CODES:
        return False
    if code in RETRYABLE_CODES:
        return True
    return status is not None and status in RETRYABLE_STATUSES


__all__ = [
    "CHAT_ENDPOINT",
    "COMPLETION_WINDOW",
    "BatchView",
    "RowResult",
    "input_line",
    "is_shard_of",
    "metadata_for",
    "parse_batch",
    "parse_result_line",
    "queue_limit",
    "refused_for_token_limit",
    "row_retryable",
    "shard_tag",
]
