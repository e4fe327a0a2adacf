"""What the simulator saw, for tests and for the rehearsal report.

Counts every chat-completions request (admin paths excluded) by the status it was
answered with, the peak number in flight, and bounded lists of recent arrival
times (on the injected clock) and request bodies. The Files/Batches API has its own
counters: files uploaded, batches created (also per metadata key and value, so a
test can assert no shard was submitted twice), rows answered, content downloads per
file id, calls per operation and the API faults played.

    >>> stats = SimStats()
    >>> stats.batch_created({"shard": "3"})
    >>> stats.to_dict()["requests"], stats.to_dict()["batches_by_metadata"]
    (0, {'shard': {'3': 1}})
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any


@dataclass
class SimStats:
    record_arrivals: int = 10_000
    record_bodies: int = 100
    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    """Non-status faults played: truncate, reset, stream_error, garbage."""
    in_flight: int = 0
    max_in_flight: int = 0
    streams: int = 0
    arrivals: deque[float] = field(init=False)
    bodies: deque[Any] = field(init=False)
    files_uploaded: int = 0
    batches_created: int = 0
    batches_by_metadata: dict[str, Counter[str]] = field(default_factory=dict)
    """Metadata key -> value -> batches created with it."""
    rows_processed: int = 0
    """Batch rows answered (into the output or the error file)."""
    downloads: Counter[str] = field(default_factory=Counter)
    """File id -> times its content was downloaded."""
    api_calls: Counter[str] = field(default_factory=Counter)
    """Files/Batches API operation -> calls (faulted ones included)."""
    api_faults: Counter[str] = field(default_factory=Counter)
    """"operation:step" -> times that fault was played, e.g. ``"upload:503"``."""
    late_output_reads: int = 0
    """Retrieves that showed a finished batch without its output file id yet."""
    repeated_output_lines: int = 0
    """Output lines written twice (`BatchConfig.repeat_output_lines`)."""
    by_model: dict[str, ModelStats] = field(default_factory=dict)
    """Per model: arrival times and statuses (quotas are per model)."""

    def __post_init__(self) -> None:
        self.arrivals = deque(maxlen=self.record_arrivals)
        self.bodies = deque(maxlen=self.record_bodies)

    @property
    def rate_limited(self) -> int:
        """How many 429s were sent (injected or from the quota)."""
        return self.by_status[429]

    def arrived(self, at: float) -> None:
        self.requests += 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        self.arrivals.append(at)

    def finished(self, status: int | None) -> None:
        self.in_flight -= 1
        if status is not None:
            self.by_status[status] += 1

    def model_answered(self, model: str, arrived_at: float, status: int | None) -> None:
        stats = self.by_model.get(model)
        if stats is None:
            stats = self.by_model[model] = ModelStats(deque(maxlen=self.record_arrivals))
        stats.arrivals.append(arrived_at)
        if status is not None:
            stats.by_status[status] += 1

    def batch_created(self, metadata: dict[str, str] | None) -> None:
        self.batches_created += 1
        for key, value in (metadata or {}).items():
            self.batches_by_metadata.setdefault(key, Counter())[value] += 1

    def reset(self) -> None:
        """Start counting afresh; requests still in flight stay counted as such."""
        self.requests = 0
        self.max_in_flight = self.in_flight
        self.by_status.clear()
        self.faults.clear()
        self.streams = 0
        self.arrivals.clear()
        self.bodies.clear()
        self.files_uploaded = 0
        self.batches_created = 0
        self.batches_by_metadata.clear()
        self.rows_processed = 0
        self.downloads.clear()
        self.api_calls.clear()
        self.api_faults.clear()
        self.late_output_reads = 0
        self.repeated_output_lines = 0
        self.by_model.clear()

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_status": {str(status): count for status, count in sorted(self.by_status.items())},
            "rate_limited": self.rate_limited,
            "faults": dict(self.faults),
            "streams": self.streams,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "arrivals": list(self.arrivals),
            "bodies": list(self.bodies),
            "files_uploaded": self.files_uploaded,
            "batches_created": self.batches_created,
            "batches_by_metadata": {
                key: dict(values) for key, values in self.batches_by_metadata.items()
            },
            "rows_processed": self.rows_processed,
            "downloads": dict(self.downloads),
            "api_calls": dict(self.api_calls),
            "api_faults": dict(self.api_faults),
            "late_output_reads": self.late_output_reads,
            "repeated_output_lines": self.repeated_output_lines,
            "by_model": {
                model: {
                    "arrivals": list(m.arrivals),
                    "by_status": {str(k): v for k, v in sorted(m.by_status.items())},
                }
                for model, m in sorted(self.by_model.items())
            },
        }


@dataclass
class ModelStats:
    arrivals: deque[float]
    by_status: Counter[int] = field(default_factory=Counter)
