"""The frozen settings of one simulator: latency, faults, quotas, auth, Batch API.

Defaults describe a perfect, instant, unlimited server; every realism knob is off
until asked for. Mappings are frozen on construction so a config can be shared by
threads and compared in tests. The Files/Batches API settings live in a nested
`BatchConfig` (speed, limits, faults), so the chat-completions knobs stay readable.

    >>> cfg = SimConfig(latency_ms=50, error_rates={429: 0.1}, rpm=600)
    >>> cfg.error_rates[429]
    0.1
    >>> SimConfig(batch=BatchConfig(rows_per_second=100)).batch.window_seconds
    86400.0
"""

from __future__ import annotations

import math
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


API_OPERATIONS = frozenset(
    {"upload", "file", "content", "delete", "list_files", "create", "retrieve", "list", "cancel"}
)
"""Files/Batches API operations that take injected faults (see `BatchConfig.faults`)."""
API_STEP_NAMES = frozenset({"ok", "hang", "reset", "lost"})
SLOW_LOST = "slow_lost:"
BATCH_FATES = frozenset({"ok", "fail", "expire", "token_limit"})
SERVED_MODELS = (
    "gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano",
    "o3-mini", "o4-mini", "gpt-5", "gpt-5-mini", "gpt-5-nano",
)  # fmt: skip
"""What ``GET /v1/models`` lists by default (the simulator answers any model)."""

ApiStep = int | str
"""One scripted Files/Batches API call: a status (4xx/5xx), or ``"ok"``, ``"hang"``
(hold the request open, never answer), ``"reset"`` (drop the connection unanswered)
or ``"lost"`` (do the operation, then drop the connection: the client cannot know
it happened, e.g. a batch created whose id never reached the client), or
``"slow_lost:SECONDS"`` (do the operation SECONDS after the call arrived, whether or not
the client still waits, then drop the connection: a slow create that takes effect after
the client gave up on it).
"""


def check_api_step(step: ApiStep) -> ApiStep:
    """Validate one Files/Batches API fault step; returns it unchanged."""
    if isinstance(step, bool):
        raise ValueError(f"bad API fault step {step!r}")
    if isinstance(step, int):
        if step != 200 and not 400 <= step <= 599:
            raise ValueError(f"bad API fault status {step!r}")
        return step
    if step in API_STEP_NAMES:
        return step
    if isinstance(step, str) and step.startswith(SLOW_LOST):
        seconds = step.removeprefix(SLOW_LOST)
        try:
            if float(seconds) >= 0:
                return step
        except ValueError:
            pass
    raise ValueError(
        f"bad API fault step {step!r}; use a status, one of {sorted(API_STEP_NAMES)} "
        f"or {SLOW_LOST}SECONDS"
    )


def check_operation(operation: str) -> str:
    """Validate a Files/Batches API operation name; returns it unchanged."""
    if operation not in API_OPERATIONS:
        raise ValueError(
            f"unknown API operation {operation!r}; use one of {sorted(API_OPERATIONS)}"
        )
    return operation


def check_fate(fate: str) -> str:
    """Validate a forced batch outcome; returns it unchanged."""
    if fate not in BATCH_FATES:
        raise ValueError(f"unknown batch fate {fate!r}; use one of {sorted(BATCH_FATES)}")
    return fate


@dataclass(frozen=True)
class BatchConfig:
    """How the simulated Batch API behaves: speed, OpenAI's limits, and its faults.

    Time is the simulator's injected clock: a batch validates `validation_delay`
    seconds after creation, then answers `rows_per_second` rows, finalizes for
    `finalizing_delay` seconds and completes. A batch still short of rows
    `window_seconds` after creation expires (the API keeps saying "24h").
    """

    rows_per_second: float = math.inf
    """Rows answered per second per batch once in progress (inf: all at once)."""
    validation_delay: float = 0.0
    finalizing_delay: float = 0.0
    cancel_delay: float = 0.0
    """Seconds a cancelled batch stays ``cancelling`` before it is ``cancelled``."""
    window_seconds: float = 86_400.0
    """Real length of the completion window, so expiry can be tested quickly."""
    max_requests: int = 50_000
    """Requests per input file; more fails validation with ``too_many_tasks``."""
    max_file_bytes: int = 200 * 1024 * 1024
    """Input file size a batch accepts; larger fails validation."""
    max_upload_bytes: int = 512 * 1024 * 1024
    """Largest upload accepted at all (413 beyond it)."""
    enqueued_token_limit: int | None = None
    """Prompt tokens per model that in-progress batches may hold; a batch that would
    go over fails with ``token_limit_exceeded`` (None: unlimited)."""
    row_error_rate: float = 0.0
    """Probability a row is answered with `row_error_status` (lands in the error file)."""
    row_error_status: int = 500
    fates: Sequence[str] = ()
    """Outcomes forced on successive batches: ``"ok"``, ``"fail"`` (validation
    fails), ``"expire"`` (stops after `expire_fraction` of its rows and expires),
    ``"token_limit"`` (fails with token_limit_exceeded). Later batches are "ok"."""
    expire_fraction: float = 0.5
    expired_rows_to_error_file: bool = False
    """Write rows an expired batch never ran to its error file as ``batch_expired``
    (OpenAI's guide describes this); by default they are in neither file."""
    late_output_reads: int = 0
    """Retrieves of a finished batch that show ``output_file_id`` null before it appears
    (a provider's timing window: LiteLLM #37713), counted per batch."""
    repeat_output_lines: int = 0
    """Lines of each output file written again at its end, with another answer (a
    provider anomaly: one row, two lines)."""
    faults: Mapping[str, Mapping[ApiStep, float]] = field(default_factory=dict)
    """Operation -> step -> probability, e.g. ``{"upload": {503: 0.1, "hang": 0.05}}``."""
    scripts: Mapping[str, Sequence[ApiStep]] = field(default_factory=dict)
    """Operation -> steps played on its successive calls, e.g. ``{"retrieve": [503, "hang"]}``."""
    hang_seconds: float = 3600.0
    """How long a hung request is held before the connection is dropped."""

    def __post_init__(self) -> None:
        if not self.rows_per_second > 0:
            raise ValueError("rows_per_second must be positive")
        for name in ("validation_delay", "finalizing_delay", "cancel_delay", "hang_seconds"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be zero or more")
        if not self.window_seconds > 0:
            raise ValueError("window_seconds must be positive")
        for name in ("max_requests", "max_file_bytes", "max_upload_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("late_output_reads", "repeat_output_lines"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be zero or more")
        if self.enqueued_token_limit is not None and self.enqueued_token_limit <= 0:
            raise ValueError("enqueued_token_limit must be positive")
        if not 0.0 <= self.row_error_rate <= 1.0:
            raise ValueError("row_error_rate must be between 0 and 1")
        if not 400 <= self.row_error_status <= 599:
            raise ValueError("row_error_status must be a 4xx or 5xx status")
        if not 0.0 <= self.expire_fraction <= 1.0:
            raise ValueError("expire_fraction must be between 0 and 1")
        fates = tuple(check_fate(str(fate)) for fate in self.fates)
        faults: dict[str, Mapping[ApiStep, float]] = {}
        for operation, rates in self.faults.items():
            checked = {check_api_step(step): float(p) for step, p in rates.items()}
            if any(not 0.0 <= p <= 1.0 for p in checked.values()):
                raise ValueError(f"fault rates for {operation!r} must be between 0 and 1")
            if sum(checked.values()) > 1.0 + 1e-9:
                raise ValueError(f"fault rates for {operation!r} add up to more than 1")
            faults[check_operation(operation)] = MappingProxyType(checked)
        scripts = {
            check_operation(operation): tuple(check_api_step(step) for step in steps)
            for operation, steps in self.scripts.items()
        }
        object.__setattr__(self, "rows_per_second", float(self.rows_per_second))
        object.__setattr__(self, "window_seconds", float(self.window_seconds))
        object.__setattr__(self, "fates", fates)
        object.__setattr__(self, "faults", MappingProxyType(faults))
        object.__setattr__(self, "scripts", MappingProxyType(scripts))


@dataclass(frozen=True)
class Skill:
    """How well a simulated model labels (`batchrun.sim.skill`): on a share of texts
    it is sure, and right `right_when_sure` of the time there; on the rest it is
    unsure, right `right_when_unsure` of the time (None: a guess, one in the number
    of labels). The probability it gives its label is calibrated: an answer given
    with probability p is right with probability p, so logprob confidences, agreement
    between samples and the self-reported ``confidence`` field all mean what they say.

        >>> Skill(sure_share=0.7, right_when_sure=0.97).accuracy(3)
        0.779
    """

    sure_share: float = 1.0
    right_when_sure: float = 0.9
    right_when_unsure: float | None = None
    labels: tuple[str, ...] = ("positive", "negative", "neutral")
    """Labels of plain-text and json_object answers (a schema's enum wins)."""
    spread: float = 0.02
    """Half-width of the spread of the probabilities around `right_when_sure`."""
    unsure_spread: float = 0.1
    """Half-width around `right_when_unsure` (kept at or above a guess)."""

    def __post_init__(self) -> None:
        for name in ("sure_share", "right_when_sure"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        unsure = self.right_when_unsure
        if unsure is not None and not 0.0 <= unsure <= 1.0:
            raise ValueError("right_when_unsure must be between 0 and 1")
        for name in ("spread", "unsure_spread"):
            if not 0.0 <= getattr(self, name) <= 0.5:
                raise ValueError(f"{name} must be between 0 and 0.5")
        labels = tuple(str(label) for label in self.labels)
        if not labels or len(set(labels)) != len(labels):
            raise ValueError("labels must be distinct and at least one")
        object.__setattr__(self, "labels", labels)

    def unsure_accuracy(self, choices: int) -> float:
        """How often an unsure answer is right among ``choices`` labels."""
        if self.right_when_unsure is not None:
            return self.right_when_unsure
        return 1.0 / max(1, choices)

    def accuracy(self, choices: int) -> float:
        """The share of answers right overall, among ``choices`` labels (about: the
        probabilities are spread and kept at or above a guess)."""
        sure = self.sure_share * self.right_when_sure
        return round(sure + (1 - self.sure_share) * self.unsure_accuracy(choices), 12)


LABELLING_MODELS: Mapping[str, Skill] = MappingProxyType(
    {
        # a cheap model: sure on 70% of texts and right 97% there, guessing elsewhere
        "weak": Skill(sure_share=0.7, right_when_sure=0.97),
        # a strong one: right about 95% of the time (sure on 90%, right 98% there)
        "strong": Skill(sure_share=0.9, right_when_sure=0.98, right_when_unsure=0.68),
    }
)
"""Skills the simulator knows by model name unless told otherwise (`SimConfig.skills`)."""


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
    """Requests per minute per API key and model (OpenAI's quotas are per model)."""
    tpm: int | None = None
    model_rpm: Mapping[str, int] = field(default_factory=dict)
    """Per-model request quotas, overriding ``rpm`` for the models named."""
    model_tpm: Mapping[str, int] = field(default_factory=dict)
    start_drained: bool = False
    """Quotas start empty, as if another client had just used them up."""
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
    models: tuple[str, ...] = SERVED_MODELS
    """The models ``GET /v1/models`` lists, in OpenAI's shape."""
    record_bodies: int = 100
    """Keep this many recent request bodies in the stats (0 = none)."""
    record_arrivals: int = 10_000
    """Keep this many recent arrival timestamps in the stats."""
    batch: BatchConfig = field(default_factory=BatchConfig)
    """The Files and Batches API: speed, limits, faults."""
    skills: Mapping[str, Skill] = field(default_factory=lambda: dict(LABELLING_MODELS))
    """Model name -> how it labels (`Skill`); other models answer as usual."""

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
        for name in ("model_rpm", "model_tpm"):
            limits = {str(m): int(n) for m, n in getattr(self, name).items()}
            if any(n <= 0 for n in limits.values()):
                raise ValueError(f"{name} values must be positive")
            object.__setattr__(self, name, MappingProxyType(limits))
        skills = {str(model): skill for model, skill in self.skills.items()}
        if any(not isinstance(skill, Skill) for skill in skills.values()):
            raise ValueError("skills must map model names to Skill")
        object.__setattr__(self, "skills", MappingProxyType(skills))
        object.__setattr__(self, "error_rates", MappingProxyType(rates))
        object.__setattr__(self, "fail_first", MappingProxyType(scripts))
        object.__setattr__(self, "stream_pieces", max(1, int(self.stream_pieces)))

    def model_limits(self) -> dict[str, tuple[int | None, int | None]]:
        """model -> (rpm, tpm) for the models given their own quotas."""
        return {
            m: (self.model_rpm.get(m), self.model_tpm.get(m))
            for m in {*self.model_rpm, *self.model_tpm}
        }

    def __repr__(self) -> str:
        # the key must never reach a log line
        shown = "***" if self.require_key else None
        return (
            f"SimConfig(seed={self.seed}, latency_ms={self.latency_ms}, "
            f"error_rates={dict(self.error_rates)}, rpm={self.rpm}, tpm={self.tpm}, "
            f"require_key={shown})"
        )
