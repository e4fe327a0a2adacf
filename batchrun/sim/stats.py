"""What the simulator saw, for tests and for the rehearsal report.

Counts every chat-completions request (admin paths excluded) by the status it was
answered with, the peak number in flight, and bounded lists of recent arrival
times (on the injected clock) and request bodies.

    >>> stats = SimStats()
    >>> stats.to_dict()["requests"]
    0
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

    def reset(self) -> None:
        """Start counting afresh; requests still in flight stay counted as such."""
        self.requests = 0
        self.max_in_flight = self.in_flight
        self.by_status.clear()
        self.faults.clear()
        self.streams = 0
        self.arrivals.clear()
        self.bodies.clear()

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
        }
