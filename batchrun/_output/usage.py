"""Token usage: read it from a response body, add it up per model.

Pure arithmetic. Missing detail fields count as 0; a body with no ``usage`` at all
is reported as *missing* (never invented).

    >>> totals = UsageTotals()
    >>> totals.add("gpt-4o", usage_of({"usage": {"prompt_tokens": 3, "completion_tokens": 2}}))
    >>> totals.total.prompt_tokens
    3
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FIELDS = ("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "reasoning_tokens")


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens
        self.cached_tokens += other.cached_tokens
        self.reasoning_tokens += other.reasoning_tokens

    def to_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in FIELDS}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        return cls(**{name: int(data.get(name) or 0) for name in FIELDS})


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def usage_of(body: Any) -> Usage | None:
    """Usage of one answer body, or None when the server sent none.

    Chat completions and embeddings name it ``prompt_tokens`` / ``completion_tokens``
    (an embeddings answer has no completion); the Responses API ``input_tokens`` /
    ``output_tokens`` with ``input_tokens_details.cached_tokens`` and
    ``output_tokens_details.reasoning_tokens``: the same counts, read into the same
    fields (output tokens include the reasoning tokens, as completion tokens do).

    >>> usage_of({"usage": {"input_tokens": 9, "output_tokens": 4,
    ...           "output_tokens_details": {"reasoning_tokens": 3}}}).reasoning_tokens
    3
    """
    if not isinstance(body, dict):
        return None
    raw = body.get("usage")
    if not isinstance(raw, dict):
        return None
    if "input_tokens" in raw or "output_tokens" in raw:  # the Responses API's names
        prompt = _int(raw.get("input_tokens"))
        completion = _int(raw.get("output_tokens"))
        pdetails = raw.get("input_tokens_details")
        cdetails = raw.get("output_tokens_details")
    else:
        prompt = _int(raw.get("prompt_tokens"))
        completion = _int(raw.get("completion_tokens"))
        pdetails = raw.get("prompt_tokens_details")
        cdetails = raw.get("completion_tokens_details")
    total = _int(raw.get("total_tokens")) or prompt + completion
    cached = _int(pdetails.get("cached_tokens")) if isinstance(pdetails, dict) else 0
    reasoning = _int(cdetails.get("reasoning_tokens")) if isinstance(cdetails, dict) else 0
    return Usage(prompt, completion, total, cached, reasoning)


def model_of(body: Any, default: str | None = None) -> str:
    """The model a response says it came from, else the requested one."""
    if isinstance(body, dict):
        model = body.get("model")
        if isinstance(model, str) and model:
            return model
    return default or "unknown"


@dataclass(slots=True)
class UsageTotals:
    """Usage summed over a run, overall and per model, plus rows with no usage."""

    total: Usage = field(default_factory=Usage)
    by_model: dict[str, Usage] = field(default_factory=dict)
    missing: int = 0

    def add(self, model: str, usage: Usage | None) -> None:
        if usage is None:
            self.missing += 1
            return
        self.total.add(usage)
        per_model = self.by_model.get(model)
        if per_model is None:
            per_model = self.by_model[model] = Usage()
        per_model.add(usage)

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.total.to_dict(),
            "missing": self.missing,
        }

    def by_model_dict(self) -> dict[str, dict[str, int]]:
        return {m: u.to_dict() for m, u in sorted(self.by_model.items())}
