"""One simulated batch: its request, where it is in its life, what it has answered,
the Batch object it shows, and when it next changes (pure functions of its times and
`batchrun.sim.config.BatchConfig`; `batchrun.sim.batches.BatchStore` plays the changes).

    >>> batch = Batch("batch_1", 1, "file-1", "/v1/chat/completions", "24h", None,
    ...               created_at=100.0, expires_at=86500.0, fate="ok", content=b"",
    ...               input_purpose="batch", output_expires_after=None)
    >>> event_time(batch, BatchConfig(validation_delay=2.0))
    102.0
    >>> Batch.restored(batch.to_dict(), 1).status
    'validating'
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from batchrun.sim.config import BatchConfig

LIVE = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
CANCELLABLE = frozenset({"validating", "in_progress"})
TIMESTAMPS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


@dataclass(slots=True)
class Batch:
    """One batch: its request, where it is in its life, and what it has answered."""

    id: str
    serial: int
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    created_at: float
    expires_at: float
    fate: str
    content: bytes | None
    """The input file as it was at creation (None: no such file)."""
    input_purpose: str | None
    output_expires_after: float | None
    status: str = "validating"
    times: dict[str, float] = field(default_factory=dict)
    model: str | None = None
    rows: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    total: int = 0
    stop_row: int = 0
    """Rows it will answer before it stops (fewer than `total` for an ``expire`` fate)."""
    next_row: int = 0
    completed: int = 0
    failed: int = 0
    out_lines: list[bytes] = field(default_factory=list)
    err_lines: list[bytes] = field(default_factory=list)
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    enqueued_tokens: int = 0
    usage: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    """input, cached input, output, reasoning tokens of the rows answered."""
    rng: random.Random | None = None
    """Draws this batch's row errors: its own, so how the work is sliced never matters."""
    reads_without_output: int = 0
    """Retrieves that showed it finished with ``output_file_id`` still null."""

    def to_dict(self) -> dict[str, Any]:
        """The Batch object, field for field as OpenAI returns it."""
        stamps = {name: _stamp(self.times.get(name)) for name in TIMESTAMPS}
        prompt, cached, output, reasoning = self.usage
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": int(self.created_at),
            "in_progress_at": stamps["in_progress_at"],
            "expires_at": int(self.expires_at),
            "finalizing_at": stamps["finalizing_at"],
            "completed_at": stamps["completed_at"],
            "failed_at": stamps["failed_at"],
            "expired_at": stamps["expired_at"],
            "cancelling_at": stamps["cancelling_at"],
            "cancelled_at": stamps["cancelled_at"],
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
            "usage": {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": cached},
                "output_tokens": output,
                "output_tokens_details": {"reasoning_tokens": reasoning},
                "total_tokens": prompt + output,
            },
        }

    @classmethod
    def restored(cls, shown: dict[str, Any], serial: int) -> Batch:
        """A batch that ended, as a simulator before this one last showed it
        (`to_dict`): for list and retrieve only, its files long deleted."""
        counts = shown.get("request_counts") or {}
        usage = shown.get("usage") or {}
        errors = shown.get("errors")
        return cls(
            id=str(shown["id"]),
            serial=serial,
            input_file_id=str(shown["input_file_id"]),
            endpoint=str(shown["endpoint"]),
            completion_window=str(shown["completion_window"]),
            metadata=shown.get("metadata"),
            created_at=float(shown["created_at"]),
            expires_at=float(shown["expires_at"]),
            fate="ok",
            content=None,
            input_purpose=None,
            output_expires_after=None,
            status=str(shown["status"]),
            times={n: float(shown[n]) for n in TIMESTAMPS if shown.get(n) is not None},
            model=shown.get("model"),
            total=int(counts.get("total") or 0),
            completed=int(counts.get("completed") or 0),
            failed=int(counts.get("failed") or 0),
            errors=errors.get("data") if isinstance(errors, dict) else None,
            output_file_id=shown.get("output_file_id"),
            error_file_id=shown.get("error_file_id"),
            usage=[
                int(usage.get("input_tokens") or 0),
                int((usage.get("input_tokens_details") or {}).get("cached_tokens") or 0),
                int(usage.get("output_tokens") or 0),
                int((usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0),
            ],
        )


def _stamp(value: float | None) -> int | None:
    return None if value is None else int(value)


def event_time(batch: Batch, settings: BatchConfig) -> float:
    """When ``batch`` next changes state (inf: it has ended)."""
    status = batch.status
    if status == "validating":
        return min(batch.created_at + settings.validation_delay, batch.expires_at)
    if status == "in_progress":
        return min(row_time(batch, settings.rows_per_second, batch.stop_row), batch.expires_at)
    if status == "finalizing":
        return batch.times["finalizing_at"] + settings.finalizing_delay
    if status == "cancelling":
        return batch.times["cancelling_at"] + settings.cancel_delay
    return math.inf


def row_time(batch: Batch, rate: float, rows: int) -> float:
    """When the first `rows` rows of an in-progress batch are answered (``rate``: rows
    a second)."""
    started = batch.times["in_progress_at"]
    return started if math.isinf(rate) else started + rows / rate


def rows_due(batch: Batch, at: float, rate: float) -> int:
    """How many rows are answered by `at`: the n with ``row_time(n) <= at``.

    Judged with `row_time` itself, the function that schedules the events: at
    Unix times a float holds ~2.4e-7 s, so dividing the elapsed time back into
    rows can come out one short at the very event that needs them all.
    """
    stop = batch.stop_row
    if math.isinf(rate):
        return stop
    guess = (at - batch.times["in_progress_at"]) * rate
    rows = max(0, min(stop, math.floor(guess)))
    while rows < stop and row_time(batch, rate, rows + 1) <= at:
        rows += 1
    while rows > 0 and row_time(batch, rate, rows) > at:
        rows -= 1
    return rows
