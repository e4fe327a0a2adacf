"""The frozen settings of one run, built by the CLI (or a test) and read everywhere.

Secrets are not stored here: only the *name* of the environment variable that
holds the API key. `RunConfig.fingerprint_options` lists the options that shape
requests; a resumed run must agree with them.

    >>> cfg = RunConfig(input_path="req.jsonl", out_dir="runs/a")
    >>> cfg.concurrency
    64
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class RunConfig:
    input_path: str
    out_dir: str
    base_url: str = DEFAULT_BASE_URL
    api_key_env: str = "OPENAI_API_KEY"
    api_key_file: str | None = None
    """A file holding the key (job files may name one); read at start, never copied."""
    model: str | None = None
    concurrency: int = 64
    max_attempts: int = 10
    timeout: float = 120.0
    """Seconds to wait for a response (for streams: between two chunks)."""
    total_timeout: float = 1800.0
    """Overall cap on one attempt, streams included."""
    rpm: float | None = None
    """Requests per minute for each model (quotas are per model, as OpenAI's are)."""
    tpm: float | None = None
    model_rpm: tuple[tuple[str, float], ...] = ()
    """Per-model overrides of ``rpm``: (model, requests per minute)."""
    model_tpm: tuple[tuple[str, float], ...] = ()
    stream: bool = False
    auth: str = "bearer"
    """'bearer' (Authorization: Bearer KEY), 'raw' (Authorization: KEY) or 'none'."""
    auth_header: str = "Authorization"
    headers: tuple[tuple[str, str], ...] = ()
    retry_failed: bool = False
    retry_bad_answers: bool = False
    """Send again the rows whose answer is unusable (truncated, refused, off-schema)."""
    quality_breaker: float = 0.8
    """Stop when this share of a model's first answers (20 or more) is unusable; 0: never."""
    force: bool = False
    drain_timeout: float = 30.0
    max_cost: float | None = None
    prices_path: str | None = None
    write_parquet: bool = True
    progress_interval: float = 10.0
    quiet: bool = False
    skip_invalid: bool = False
    max_response_bytes: int = 64 * 1024 * 1024
    summary_interval: float = 2.0
    id_column: str | None = None
    job: dict[str, Any] = field(default_factory=dict)
    """Dataset-job settings (template, response_format, eval) from a job file."""

    def fingerprint_options(self) -> dict[str, Any]:
        """Options that change what is sent; a resume with other values is refused.

        The evaluation is not one of them: scoring never needs a request sent again.
        """
        return {
            "model": self.model,
            "stream": self.stream,
            "job": {k: v for k, v in self.job.items() if k != "eval"},
            "id_column": self.id_column,
        }

    def limits_by_model(self) -> dict[str, tuple[float | None, float | None]]:
        """model -> (rpm, tpm) overrides (None: the default ``rpm``/``tpm``)."""
        out: dict[str, tuple[float | None, float | None]] = {}
        for model, rpm in self.model_rpm:
            out[model] = (rpm, out.get(model, (None, None))[1])
        for model, tpm in self.model_tpm:
            out[model] = (out.get(model, (None, None))[0], tpm)
        return out

    @classmethod
    def from_public_dict(cls, data: dict[str, Any]) -> RunConfig:
        """The settings a run recorded in run.json (`public_dict`), to look at the run
        again (`batchrun eval`); secret header values stay masked."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("headers", "model_rpm", "model_tpm"):
            values[key] = tuple(tuple(pair) for pair in values.get(key) or ())
        return cls(**values)

    def public_dict(self) -> dict[str, Any]:
        """Every option, for run.json. Holds no secret: keys live only in the env."""
        data = asdict(self)
        data["headers"] = [[name, _redact_header(name, value)] for name, value in self.headers]
        return data


_SECRET_HEADER_WORDS = ("auth", "key", "token", "secret", "cookie")


_KEY_LIKE = re.compile(
    r"(?<![A-Za-z0-9])(?:sk-|sk_|rk-|gsk_|xai-|AIza|hf_|pplx-|r8_)[A-Za-z0-9_\-]{16,}"
    r"|Bearer\s+\S{16,}"
)


def _redact_header(name: str, value: str) -> str:
    """By name (Authorization, X-Api-Key, ...) and by value (anything shaped like a key)."""
    lowered = name.lower()
    if any(word in lowered for word in _SECRET_HEADER_WORDS) or _KEY_LIKE.search(value):
        return "***"
    return value
