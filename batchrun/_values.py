"""Plain values a run's settings are made of (quotas, a response format, an endpoint,
...), and how a setting is recorded as JSON: the bottom layer, importing nothing of
batchrun but `batchrun._endpoint`, `batchrun.errors` and `batchrun._redact`, so that the
settings declaration (`batchrun._settings`), its checks (`batchrun._checks`) and every
stage can use them without a circle. `batchrun._settings` re-exports them.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from batchrun._endpoint import SIM, credential_identity, endpoint_identity, sim_identity

CONFIDENCE_METHODS = ("logprobs", "agreement", "self")
CASCADE_WHEN = ("disagree",)
BODY_ALIASES = {"max_tokens": "max_completion_tokens", "max_completion_tokens": "max_tokens"}


def format_name(text: Any) -> str | None:
    """A title or job name as the API's format name (1-64 letters, digits, _ or -):
    other characters become ``_``; None when nothing is left.

    >>> format_name("Review sentiment (v2)"), format_name("  "), format_name(None)
    ('Review_sentiment_v2', None, None)
    """
    if not isinstance(text, str):
        return None
    cleaned = re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:64]
    return cleaned or None


@dataclass(frozen=True)
class Quota:
    """A rate limit for every model (``default``) and for some (``by_model``)."""

    default: float | None = None
    by_model: tuple[tuple[str, float], ...] = ()

    def for_model(self, model: str) -> float | None:
        for name, amount in self.by_model:
            if name == model:
                return amount
        return self.default

    def __bool__(self) -> bool:
        return self.default is not None or bool(self.by_model)

    def spelled(self) -> float | dict[str, float]:
        """As a job file writes it: ``500``, or ``{"*" = 500, "gpt-4.1" = 30}``."""
        if not self.by_model and self.default is not None:
            return self.default
        return {**({"*": self.default} if self.default is not None else {}), **dict(self.by_model)}


@dataclass(frozen=True)
class ResponseFormat:
    """The answer's format: free text, any JSON object, or JSON fitting a schema.

    Every spelling a user may give (a Pydantic class, a plain JSON Schema, OpenAI's
    envelope, ...) becomes one of these: `batchrun._response_formats`.
    """

    type: str
    name: str | None = "response"
    """The json_schema format's name; None until named: a plain schema without a title
    takes the job's name (`named`), else "response"."""
    schema: Mapping[str, Any] | None = None
    strict: bool = True
    description: str | None = None

    def body(self) -> dict[str, Any]:
        """The ``response_format`` body field in OpenAI's shape."""
        if self.type == "json_schema":
            inner: dict[str, Any] = {"name": self.name or "response"}
            if self.description is not None:
                inner["description"] = self.description
            inner["schema"] = dict(self.schema or {})
            inner["strict"] = self.strict
            return {"type": "json_schema", "json_schema": inner}
        return {"type": self.type}

    def named(self, job_name: str | None) -> ResponseFormat:
        """Named after the job when it has no name of its own (else unchanged).

        >>> ResponseFormat("json_schema", None, {}).named("my job").name
        'my_job'
        """
        if self.type != "json_schema" or self.name is not None:
            return self
        return replace(self, name=format_name(job_name) or "response")


@dataclass(frozen=True)
class Evaluation:
    """Score the answers against a reference column of the input."""

    reference_column: str
    compare: str = "exact"
    """"exact" (the whole content), "json_field" (one field of the JSON answer) or
    "number" (a numeric answer, the content or ``field``: mean absolute error, and
    correct within ``tolerance``)."""
    field: str | None = None
    normalize: bool = True
    tolerance: float = 0.0
    interval: bool = True
    """A seeded bootstrap interval for accuracy (and for differences between variants)."""


@dataclass(frozen=True)
class Confidence:
    """How sure each answer is, read from what the endpoint returns
    (`batchrun._confidence`): a ``confidence`` column in results.parquet.

    ``method``: "logprobs" (the request asks for ``logprobs`` and ``top_logprobs``;
    the confidence is the chosen label's probability, normalised over the labels the
    top alternatives show), "agreement" (``samples`` answers per request, ``n``; the
    share agreeing with the majority label, whose answer is the row's) or "self" (a
    number field of the answer, ``score_field``, the model's own estimate).

        >>> Confidence("logprobs", label_field="sentiment").top_logprobs
        5
    """

    method: str
    label_field: str | None = None
    """The answer's JSON field holding the label (None: the [eval] field, else the
    schema's one enum field, else the whole answer)."""
    labels: tuple[str, ...] = ()
    """The label values (empty: the label field's enum in the schema)."""
    top_logprobs: int = 5
    """Alternatives asked for per token ("logprobs"), to normalise over the labels."""
    samples: int = 5
    """Answers per request ("agreement")."""
    score_field: str | None = None
    """The answer's number field holding the model's own confidence ("self"; None: a
    number property named ``confidence``, else the schema's one number property)."""


@dataclass(frozen=True)
class Cascade:
    """A model cascade (`batchrun._jobs.cascade`): every row goes to the first model; a
    row moves on to the next only when its answer's confidence is below that stage's
    ``escalate_below`` or the answer is unusable (failed, not valid against the schema,
    cut short, no confidence). The last model's answer stands whatever its confidence.

        >>> Cascade(("weak", "strong"), (0.8,)).threshold(0)
        0.8
    """

    models: tuple[str, ...]
    escalate_below: tuple[float, ...] = (0.8,)
    """One threshold for every stage but the last, or one per such stage."""
    escalate_when: str | None = None
    """"disagree": the first two models are two cheap variants that both answer every
    row; a row is decided by them only when both are sure enough and give the same
    label, else it moves on to the third (None: the threshold alone)."""
    confidence: str | None = None
    """The confidence method (None: the [confidence] setting's, else "logprobs")."""

    def threshold(self, stage: int) -> float:
        """``escalate_below`` of stage ``stage`` (0-based, not the last)."""
        below = self.escalate_below
        return below[0] if len(below) == 1 else below[stage]


@dataclass(frozen=True)
class Prices:
    """The user's own model prices: a price file, entries given inline (a job file's
    ``[prices.models."NAME"]`` tables, a dict in Python), or both, an inline entry
    winning over the file's. Entries are kept as given (USD per million tokens, the
    keys of a price file), so run.json records them and a report prices the same.

        >>> Prices(models={"m": {"input": 1.0, "output": 2.0}}).models["m"]["output"]
        2.0
    """

    file: str | None = None
    models: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


DEFAULT_ENDPOINT = "default"
"""The pool name of the ``[endpoint]`` table's own endpoint (`Settings.pool`)."""


@dataclass(frozen=True)
class Endpoint:
    """One endpoint of a run's pool: where requests may go, with whose key, how fast,
    for which models and at what price.

    A job file's ``[endpoints.NAME]`` table, ``endpoints={"NAME": {...}}`` in Python,
    ``--endpoint NAME=URL`` (`batchrun._checks.endpoints` reads every spelling). As
    declared, a field left out is None: `Settings.pool` fills it from the
    ``[endpoint]`` and ``[limits]`` tables (the same key variable, auth and headers;
    the same rpm, tpm and concurrency), so a pool of three keys on one provider is
    three ``base_url``/``api_key_env`` pairs. A single ``[endpoint]`` is the pool of
    one endpoint named `DEFAULT_ENDPOINT`.

        >>> e = Endpoint("az", "https://x.azure.com/openai", models=(("gpt-4o", "gpt4o-eu"),))
        >>> e.serves("gpt-4o"), e.serves("gpt-4.1"), e.model_name("gpt-4o")
        (True, False, 'gpt4o-eu')
    """

    name: str
    base_url: str
    """Its API base URL, or "sim": a simulator of its own, started for the run."""
    api_key_env: str | None = None
    api_key_file: str | None = None
    auth: str | None = None
    auth_header: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    """Its own headers, laid over the ``[endpoint]`` table's by name."""
    rpm: Quota | None = None
    tpm: Quota | None = None
    concurrency: int | None = None
    """Its own cap on requests in flight."""
    weight: float | None = None
    """Between endpoints that can take a request equally soon, the heavier takes more
    (`batchrun._pacing.routing`); 1 when not given."""
    models: tuple[tuple[str, str], ...] | None = None
    """The job's models it serves, each with its name there (an Azure deployment, a
    relay's alias); None: every model, by the job's names."""
    prices: str | Prices | None = None
    """Its own prices (a relay's, a negotiated rate); None: the run's."""
    batch: bool | None = None
    """It may take Batch API shards (declared endpoints: only when true)."""
    sim_rpm: int | None = None
    sim_tpm: int | None = None
    sim_fault: tuple[tuple[int, float], ...] = ()
    """The simulator's injected statuses, ``STATUS = probability`` (``batchrun sim
    --error-rate``); the ``sim_*`` keys apply to ``base_url = "sim"`` only."""
    simulated: bool = field(default=False, repr=False)
    """Not declared: `batchrun._api.endpoint` started its simulator (``base_url`` is
    then its loopback address)."""

    @property
    def is_sim(self) -> bool:
        return self.simulated or self.base_url == SIM

    @property
    def identity(self) -> str:
        """Where its answers come from (`batchrun._endpoint.endpoint_identity`): a
        simulator is ``"sim"`` (the ``[endpoint]`` table's) or ``"sim:NAME"``, two
        simulated endpoints being two endpoints, both simulated."""
        if self.is_sim:
            return SIM if self.name == DEFAULT_ENDPOINT else sim_identity(self.name)
        return endpoint_identity(self.base_url)

    def connection(self, keys: Mapping[str, str | None]) -> dict[str, Any]:
        """How a client reaches it: its URL, its key (``keys``, by endpoint name), the
        auth scheme and header (bearer on ``Authorization`` unless it says otherwise)
        and its headers: the chat and the Batch API clients take the same."""
        return {
            "base_url": self.base_url,
            "api_key": keys.get(self.name),
            "auth": self.auth or "bearer",
            "auth_header": self.auth_header or "Authorization",
            "extra_headers": self.headers,
        }

    def serves(self, model: str) -> bool:
        return self.models is None or any(m == model for m, _ in self.models)

    def model_name(self, model: str) -> str:
        """The job's ``model`` as this endpoint names it."""
        for job_model, remote in self.models or ():
            if job_model == model:
                return remote
        return model

    def tenant(self, api_key: str | None) -> bytes:
        """Who asks, at this endpoint (`batchrun._endpoint.credential_identity`)."""
        return credential_identity(
            api_key,
            auth=self.auth or "bearer",
            auth_header=self.auth_header or "Authorization",
            headers=self.headers,
        )

    def shape(self) -> dict[str, Any]:
        """What the resume fingerprint records of it: who answers, under which model
        names (its quotas, weight and prices change no answer)."""
        models = None if self.models is None else dict(self.models)
        return {"endpoint": self.identity, "models": models}

    def declared(self) -> dict[str, Any]:
        """The keys it was declared with, as typed values (a key left out is not
        there): what a table given over it replaces (`batchrun._jobs.jobfile.merge`)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name not in ("name", "simulated") and value is not None and value != ():
                out[f.name] = value
        return out

    def public(self) -> dict[str, Any]:
        """As run.json records it, in a job file's spelling (read back by
        `batchrun._checks.endpoints`): no key (only the names of where keys are),
        header values that look like keys masked, a simulator as "sim"."""
        data: dict[str, Any] = {"base_url": SIM if self.is_sim else self.base_url}
        for name in ("api_key_env", "api_key_file", "auth", "auth_header", "concurrency"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        if self.headers:
            data["headers"] = [[n, mask_header(n, v)] for n, v in self.headers]
        for name in ("rpm", "tpm"):
            quota = getattr(self, name)
            if quota is not None:
                data[name] = quota.spelled()
        for name in ("weight", "batch", "sim_rpm", "sim_tpm"):
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        if self.models is not None:
            data["models"] = dict(self.models)
        if self.prices is not None:
            data["prices"] = jsonable(self.prices)
        if self.sim_fault:
            data["sim_fault"] = {str(status): p for status, p in self.sim_fault}
        return data


_SECRET_HEADER_WORDS = ("auth", "key", "token", "secret", "cookie")


def mask_header(name: str, value: str) -> str:
    """By name (Authorization, X-Api-Key, ...) and by value (anything shaped like a key)."""
    from batchrun._redact import looks_like_key

    lowered = name.lower()
    if any(word in lowered for word in _SECRET_HEADER_WORDS) or looks_like_key(value):
        return "***"
    return value


def jsonable(value: Any) -> Any:
    """A setting's value as plain JSON; a function is recorded by its source's hash (a
    changed function is a changed prompt)."""
    if callable(value) and not isinstance(value, type):
        return f"<function {getattr(value, '__qualname__', '?')} {source_hash(value)}>"
    if isinstance(value, type):  # a Pydantic model given as response_format
        return value.__name__
    if isinstance(value, Endpoint):
        return value.public()
    if isinstance(value, Quota | ResponseFormat | Evaluation | Confidence | Prices | Cascade):
        return jsonable(asdict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return repr(value)


def source_hash(fn: Callable[..., Any]) -> str:
    """A function's identity across processes: its source (or bytecode) hashed."""
    try:
        data = inspect.getsource(fn).encode()
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        data = (
            code.co_code + repr(code.co_consts).encode() if code is not None else repr(fn).encode()
        )
    return hashlib.blake2b(data, digest_size=8).hexdigest()
