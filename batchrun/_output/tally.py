"""What a run has produced so far, counted the same way live and on resume.

Every figure in summary.json that comes from finished requests (usage per model,
retries, 429s, rows without usage, answer quality) is a sum over output lines.
`Tally.count` is the one place a finished request is counted: the writer calls it
for each line it has flushed, the journal calls it for each line it re-reads, so a
resumed summary equals a recount of the files.

    >>> t = Tally()
    >>> t.count(True, {"model": "m", "usage": {"prompt_tokens": 2}}, [429, 200]).category
    'ok'
    >>> (t.usage.total.prompt_tokens, t.retries, t.rate_limited)
    (2, 1, 1)

A written outcome and the same line read back (`batchrun._output.lines.decode`) are
the same `Outcome`, so `Tally.count_outcome` counts both.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from batchrun._apis import CHAT, RESPONSES
from batchrun._models import BilledUnread, Outcome
from batchrun._output.endpoints import EndpointTally, count_route
from batchrun._output.quality import OK, QualityCounts, Verdict
from batchrun._output.shapes import answer_kind, response_finish
from batchrun._output.usage import Usage, UsageTotals, model_of, usage_of


@dataclass(slots=True)
class UnreadBilled:
    """Attempts paid for whose answer could not be read, summed for one model: the
    cost side prices them at their worst case (`batchrun._cost.budget.unread_usage`)."""

    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    """The completion ceilings the bodies set (max tokens x n), summed over attempts."""
    open_attempts: int = 0
    """Attempts whose body set no max tokens (their ceiling is the context window)..."""
    open_prompt_tokens: int = 0
    """...and their prompt tokens (the window holds prompt and completion)."""

    def add(self, record: BilledUnread) -> None:
        """Add an outcome's `BilledUnread` (negative figures count as nothing)."""
        attempts = _count(record.attempts)
        prompt = attempts * _count(record.prompt_tokens)
        ceiling = _count(record.completion_ceiling)
        self.attempts += attempts
        self.prompt_tokens += prompt
        self.completion_tokens += attempts * ceiling
        if not ceiling:
            self.open_attempts += attempts
            self.open_prompt_tokens += prompt

    def add_totals(self, other: UnreadBilled) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: Any) -> UnreadBilled:
        data = data if isinstance(data, dict) else {}
        return cls(**{name: _count(data.get(name)) for name in cls.__slots__})


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass
class Tally:
    usage: UsageTotals = field(default_factory=UsageTotals)
    retries: int = 0
    rate_limited: int = 0
    error_codes: Counter[str] = field(default_factory=Counter)
    quality: QualityCounts = field(default_factory=QualityCounts)
    """Every answer by quality category and model (`batchrun._output.quality`)."""
    paid_quality: QualityCounts = field(default_factory=QualityCounts)
    """The same for the answers paid for (not reused from the cache or an identical
    request): what the quality breaker judges (`batchrun._output.breaker`)."""
    reused: Counter[str] = field(default_factory=Counter)
    """Answers not sent for: "cache" (the response cache), "run" (an identical request
    of this run was sent once)."""
    saved: UsageTotals = field(default_factory=UsageTotals)
    """The usage of the reused answers: tokens not paid for (never in ``usage``)."""
    batch_usage: UsageTotals = field(default_factory=UsageTotals)
    """The part of `usage` answered through the Batch API (priced at batch prices)."""
    by_mode: Counter[str] = field(default_factory=Counter)
    """Lines by the way their row went: ``online``, ``batch``, ``reused`` and their
    ``_failed`` twins (a line's ``batchrun.via``; none means online)."""
    skips_simulated: bool = False
    """The count leaves out the simulator's answers (a run on a real endpoint: see
    `batchrun._output.journal`), so a resume knows whether it may start from it."""
    asked: dict[str, str] = field(default_factory=dict)
    """Model an answer named -> the model its request asked for, when they differ (a
    fine-tune's or a deployment's name): what prices an answer whose model has none."""
    unread: dict[str, UnreadBilled] = field(default_factory=dict)
    """Answers paid for but unreadable (`UnreadBilled`), by the model asked for."""
    by_endpoint: dict[str, EndpointTally] = field(default_factory=dict)
    """In a pool: each endpoint's attempts, answers, failures, tokens and latency, by
    its name (`batchrun._output.endpoints`, from the lines' ``route``)."""

    def count(
        self,
        ok: bool,
        body: Any,
        statuses: list[int | None],
        requested_model: str | None = None,
        error_code: str | None = None,
        quality: str | None = None,
        via: str | None = None,
        reused: str | None = None,
        unread: BilledUnread | None = None,
    ) -> Verdict | None:
        """Count one finished request. ``statuses``: every attempt's HTTP status;
        ``requested_model``: the model asked for, when the answer names another (or
        none); ``quality``: the answer's category (None: ok); ``via``: "batch" for a
        row answered through the Batch API; ``reused``: how it was answered without
        being sent (None: it was sent); ``unread``: its attempts paid for but
        unreadable. Returns what was counted as the answer's verdict (None for a
        failure)."""
        if unread is not None and requested_model:
            self.unread.setdefault(requested_model, UnreadBilled()).add(unread)
        self.retries += max(0, len(statuses) - 1)
        self.rate_limited += sum(1 for s in statuses if s == 429)
        mode = "reused" if reused is not None else (via or "online")
        self.by_mode[mode if ok else f"{mode}_failed"] += 1
        if reused is not None:
            self.reused[reused] += 1
        if ok:
            model = model_of(body, requested_model)
            if requested_model and model != requested_model:
                self.asked.setdefault(model, requested_model)
            usage = usage_of(body)
            if reused is not None:
                self.saved.add(model, usage)
            else:
                self.usage.add(model, usage)
                if via == "batch":
                    self.batch_usage.add(model, usage)
            verdict = Verdict(quality or OK, first_finish_reason(body))
            self.quality.add(verdict, model)
            if reused is None:
                self.paid_quality.add(verdict, model)
            return verdict
        if error_code:
            self.error_codes[error_code] += 1
        return None

    def count_outcome(self, outcome: Outcome) -> Verdict | None:
        """Count one outcome: just written, or a line read back."""
        if outcome.route is not None:
            count_route(self.by_endpoint, outcome)
        return self.count(
            outcome.ok,
            outcome.body,
            [a.status for a in outcome.attempts],
            outcome.asked_model,
            None if outcome.ok else str((outcome.error or {}).get("code")),
            outcome.quality,
            via=outcome.via,
            reused=outcome.reused,
            unread=outcome.billed_unread,
        )

    def merge(self, other: Tally) -> Tally:
        """Add ``other`` (another directory's tally: a shard of a run on a cluster) to
        this one, every figure it keeps; returns self.

            >>> a, b = Tally(), Tally()
            >>> _ = b.count(True, {"model": "m", "usage": {"prompt_tokens": 2}}, [429, 200])
            >>> a.merge(b).merge(b).usage.total.prompt_tokens, a.retries
            (4, 2)
        """
        for mine, theirs in (
            (self.usage, other.usage),
            (self.saved, other.saved),
            (self.batch_usage, other.batch_usage),
        ):
            for model, usage in theirs.by_model.items():
                mine.add(model, usage)  # the total is the sum over models
            mine.missing += theirs.missing
        self.retries += other.retries
        self.rate_limited += other.rate_limited
        self.error_codes.update(other.error_codes)
        self.quality.merge(other.quality)
        self.paid_quality.merge(other.paid_quality)
        self.reused.update(other.reused)
        self.by_mode.update(other.by_mode)
        for answered, asked in other.asked.items():
            self.asked.setdefault(answered, asked)
        for model, unread in other.unread.items():
            self.unread.setdefault(model, UnreadBilled()).add_totals(unread)
        for name, counted in other.by_endpoint.items():
            self.by_endpoint.setdefault(name, EndpointTally()).merge(counted)
        return self

    def to_state(self) -> dict[str, Any]:
        return {
            "usage": self.usage.total.to_dict(),
            "by_model": self.usage.by_model_dict(),
            "missing_usage": self.usage.missing,
            "retries": self.retries,
            "rate_limited": self.rate_limited,
            "error_codes": dict(self.error_codes),
            "quality": self.quality.to_state(),
            "paid_quality": self.paid_quality.to_state(),
            "reused": dict(self.reused),
            "saved": {"usage": self.saved.total.to_dict(), "by_model": self.saved.by_model_dict()},
            "batch_by_model": self.batch_usage.by_model_dict(),
            "batch_missing_usage": self.batch_usage.missing,
            "by_mode": dict(self.by_mode),
            "skips_simulated": self.skips_simulated,
            "asked": dict(sorted(self.asked.items())),
            "unread": {m: u.to_dict() for m, u in sorted(self.unread.items())},
            **(
                {"by_endpoint": {n: e.to_state() for n, e in sorted(self.by_endpoint.items())}}
                if self.by_endpoint
                else {}
            ),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Tally:
        usage = UsageTotals(
            total=Usage.from_dict(state["usage"]),
            by_model={m: Usage.from_dict(u) for m, u in state["by_model"].items()},
            missing=int(state["missing_usage"]),
        )
        batch = state.get("batch_by_model") or {}
        batch_usage = UsageTotals(missing=int(state.get("batch_missing_usage") or 0))
        for model, counted in batch.items():
            batch_usage.add(model, Usage.from_dict(counted))
        return cls(
            usage=usage,
            batch_usage=batch_usage,
            by_mode=Counter({str(k): int(v) for k, v in (state.get("by_mode") or {}).items()}),
            retries=int(state["retries"]),
            rate_limited=int(state["rate_limited"]),
            error_codes=Counter({str(k): int(v) for k, v in state["error_codes"].items()}),
            quality=QualityCounts.from_state(state.get("quality") or {}),
            paid_quality=QualityCounts.from_state(state.get("paid_quality") or {}),
            reused=Counter({str(k): int(v) for k, v in (state.get("reused") or {}).items()}),
            saved=_saved(state.get("saved") or {}),
            skips_simulated=bool(state.get("skips_simulated", False)),
            asked={str(k): str(v) for k, v in (state.get("asked") or {}).items()},
            unread={
                str(m): UnreadBilled.from_dict(u) for m, u in (state.get("unread") or {}).items()
            },
            by_endpoint={
                str(n): EndpointTally.from_state(e)
                for n, e in (state.get("by_endpoint") or {}).items()
            },
        )


def _saved(state: dict[str, Any]) -> UsageTotals:
    return UsageTotals(
        total=Usage.from_dict(state.get("usage") or {}),
        by_model={m: Usage.from_dict(u) for m, u in (state.get("by_model") or {}).items()},
    )


def first_finish_reason(body: Any) -> str | None:
    """The first choice's finish_reason (what the quality counts tally per answer); a
    Responses answer's `batchrun._output.shapes.response_finish`, none for embeddings."""
    kind = answer_kind(body)
    if kind != CHAT:
        return response_finish(body) if kind == RESPONSES else None
    try:
        reason = body["choices"][0]["finish_reason"]
    except (KeyError, IndexError, TypeError):
        return None
    return reason if isinstance(reason, str) else None
