"""The frozen settings of one simulator: latency, faults, quotas, auth.

Defaults describe a perfect, instant, unlimited server; every realism knob is off
until asked for. Mappings are frozen on construction so a config can be shared by
threads and compared in tests.

    >>> cfg = SimConfig(latency_ms=50, error_rates={429: 0.1}, rpm=600)
    >>> cfg.error_rates[429]
    0.1
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

ScriptStep = int | str
"""One scripted attempt: an HTTP status (200 = answer normally) or a fault name.

Fault names: ``"ok"``, ``"truncate"`` (torn body), ``"reset"`` (drop the connection
before answering), ``"stream_error"`` (an ``{"error": ...}`` object inside a 200),
``"garbage"`` (200 with a non-JSON body), ``"insufficient_quota"`` (OpenAI's final 429),
``"delay:MS"`` (answer normally after MS milliseconds).
"""

FAULT_NAMES = frozenset(
    {"ok", "truncate", "reset", "stream_error", "garbage", "insufficient_quota"}
)


def check_step(step: ScriptStep) -> ScriptStep:
    """Validate one scripted step; returns it unchanged."""
    if isinstance(step, bool):
        raise ValueError(f"bad scripted step {step!r}")
    if isinstance(step, int):
        if not 100 <= step <= 599:
            raise ValueError(f"bad scripted status {step!r}")
        return step
    if isinstance(step, str):
        if step in FAULT_NAMES:
            return step
        if step.startswith("delay:"):
            float(step.removeprefix("delay:"))
            return step
    raise ValueError(f"bad scripted step {step!r}; use a status or one of {sorted(FAULT_NAMES)}")


@dataclass(frozen=True)
class SimConfig:
    seed: int = 0
    """Seeds content, latency jitter and fault draws."""
    latency_ms: float = 0.0
    """Mean time before answering."""
    jitter_ms: float = 0.0
    """Spread around the mean: half-width (uniform) or standard deviation (lognormal)."""
    jitter: Literal["uniform", "lognormal"] = "uniform"
    error_rates: Mapping[int, float] = field(default_factory=dict)
    """Status -> probability of answering with it instead, e.g. ``{429: 0.1, 503: 0.05}``."""
    retry_after: float = 1.0
    """Seconds advertised by injected 429s (``Retry-After`` and ``retry-after-ms``)."""
    fail_first: Mapping[str, Sequence[ScriptStep]] = field(default_factory=dict)
    """Marker substring -> steps played on successive attempts of each matching body."""
    rpm: int | None = None
    tpm: int | None = None
    default_completion_tokens: int = 256
    """Completion tokens a quota reserves when the request sets no max tokens."""
    require_key: str | None = None
    """When set, requests must present this key (Bearer, raw Authorization or api-key)."""
    truncate_rate: float = 0.0
    """Probability a stream ends early, before any finish_reason and [DONE]."""
    truncate_abort: bool = False
    """Torn streams drop the TCP connection instead of ending the body cleanly."""
    stream_error_rate: float = 0.0
    """Probability a stream carries an ``{"error": ...}`` object inside the 200."""
    first_token_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    stream_pieces: int = 6
    """How many deltas the content (and reasoning, and arguments) is split into."""
    stream_comments: bool = False
    """Start streams with an SSE comment line, as some relays do."""
    reply_words: tuple[int, int] = (8, 40)
    """Length range of free-text replies, in words."""
    max_body_bytes: int = 64 * 1024 * 1024
    """Larger request bodies get a 413 envelope."""
    record_bodies: int = 100
    """Keep this many recent request bodies in the stats (0 = none)."""
    record_arrivals: int = 10_000
    """Keep this many recent arrival timestamps in the stats."""

    def __post_init__(self) -> None:
        rates = {int(status): float(p) for status, p in self.error_rates.items()}
        for status, p in rates.items():
            if not 400 <= status <= 599 or not 0.0 <= p <= 1.0:
                raise ValueError(f"bad error rate {status}={p}")
        if sum(rates.values()) > 1.0 + 1e-9:
            raise ValueError("error rates add up to more than 1")
        scripts = {
            str(marker): tuple(check_step(step) for step in steps)
            for marker, steps in self.fail_first.items()
        }
        for name in ("truncate_rate", "stream_error_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")
        if self.jitter not in ("uniform", "lognormal"):
            raise ValueError("jitter must be 'uniform' or 'lognormal'")
        low, high = self.reply_words
        if not 1 <= low <= high:
            raise ValueError("reply_words must be (low, high) with 1 <= low <= high")
        object.__setattr__(self, "error_rates", MappingProxyType(rates))
        object.__setattr__(self, "fail_first", MappingProxyType(scripts))
        object.__setattr__(self, "stream_pieces", max(1, int(self.stream_pieces)))

    def __repr__(self) -> str:
        # the key must never reach a log line
        shown = "***" if self.require_key else None
        return (
            f"SimConfig(seed={self.seed}, latency_ms={self.latency_ms}, "
            f"error_rates={dict(self.error_rates)}, rpm={self.rpm}, tpm={self.tpm}, "
            f"require_key={shown})"
        )
