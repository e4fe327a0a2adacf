"""Job files: everything one run needs, declared in a TOML file (usually in jobs/).

``batchrun run -j jobs/sentiment.toml`` runs what the file declares; any option given
on the command line wins over the file, and the file wins over batchrun's defaults
(CLI > job file > defaults, see `merge_options`). The whole file is checked before
anything is sent, and every problem is reported at once with its key path::

    jobs/x.toml: limits.concurrency: must be a positive integer (got -4)
    jobs/x.toml: endpoint.base_url: must start with http:// or https:// (got 'api.openai.com/v1')
    jobs/x.toml: retry.max_attemps: unknown key (did you mean 'max_attempts'?)

A full job file (every section but [input] is optional)::

    name = "sentiment"                      # optional; defaults to the file's stem
    description = "Label product reviews"   # optional, free text

    [input]
    path = "data/reviews.jsonl"   # .jsonl, .jsonl.gz, .ndjson or .parquet
    id_column = "id"              # becomes custom_id; without it: "row-<n>"

    [endpoint]
    base_url = "https://api.openai.com/v1"  # or "sim" for the built-in simulator
    api_key_env = "OPENAI_API_KEY"          # the NAME of the variable, never the key
    api_key_file = "~/.config/openai.key"   # optional: read the key from this file instead
    auth = "bearer"                         # "bearer" | "raw" | "none"
    auth_header = "Authorization"
    headers = { "X-Title" = "batchrun" }    # extra, non-secret headers

    [request]            # body defaults; unknown fields pass through to the server
    model = "gpt-4o-mini"
    temperature = 0
    max_tokens = 60
    stream = false
    extra = { top_k = 5 }   # passed through as-is, bypassing the typo check

    [prompt]             # system/user, or messages = [{ role = "...", content = "..." }]
    system = "You label the sentiment of product reviews."
    user = "Product: {product}\\nReview: {text}"

    [response_format]    # or type = "json_object"
    type = "json_schema"
    name = "sentiment"
    schema_file = "schemas/sentiment.json"   # or schema = { ... } inline
    strict = true

    [limits]
    concurrency = 32
    rpm = 500            # per model; or { "gpt-4.1" = 30, "*" = 500 }
    tpm = 200000
    max_cost = 1.50      # USD
    quality_breaker = 0.8  # stop when this share of the first answers is unusable; 0: off

    [retry]
    max_attempts = 6
    timeout = 60         # seconds per response (between chunks when streaming)
    total_timeout = 600  # seconds per attempt, all included

    [output]
    dir = "../runs/sentiment"
    parquet = true

    [eval]
    reference_column = "label"
    compare = "json_field"   # "exact" (whole content) | "json_field"
    field = "sentiment"      # for json_field
    normalize = true

    [prices]
    file = "prices.toml"

Every path is relative to the job file, so a job runs the same from any directory.
Without [prompt] the job is a *plain request file*: each input line is a request body
or an OpenAI Batch API line (``{"custom_id", "method", "url", "body"}``), [request]
fields fill in what a body leaves out, and [response_format] / [eval] do not apply.

Keys are never read from a job file: a key named ``api_key`` (or ``token``, ...) or a
value that looks like one (``sk-...``) is refused, pointing at ``api_key_env``.

    job = load_job("jobs/sentiment.toml")
    cfg = RunConfig(**merge_options(job.to_run_options(), {"concurrency": 8}))
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchrun.errors import ConfigError
from batchrun.input.templates import PromptTemplate, openai_response_format, template_problems

INPUT_SUFFIXES = (".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".parquet", ".pq")

_TOP_LEVEL_KEYS = ("name", "description")
_SECTIONS: dict[str, tuple[str, ...]] = {
    "input": ("path", "id_column"),
    "endpoint": ("base_url", "api_key_env", "api_key_file", "auth", "auth_header", "headers"),
    "request": (),  # open: any body field passes through
    "prompt": ("system", "user", "messages"),
    "response_format": ("type", "name", "schema", "schema_file", "strict"),
    "limits": ("concurrency", "rpm", "tpm", "max_cost", "quality_breaker"),
    "retry": ("max_attempts", "timeout", "total_timeout"),
    "output": ("dir", "parquet"),
    "eval": ("reference_column", "compare", "field", "normalize"),
    "prices": ("file",),
}

# Chat-completions body fields we know; an unknown [request] key this close to one of
# them is almost surely a typo that would make every request fail with a 400.
_KNOWN_BODY_FIELDS = (
    "model",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "stop",
    "max_tokens",
    "max_completion_tokens",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
    "seed",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "reasoning_effort",
    "metadata",
    "store",
    "service_tier",
    "modalities",
    "prediction",
    "audio",
    "web_search_options",
    "verbosity",
    "extra",
)
_TYPO_CUTOFF = 0.85

_SECRET_KEY_NAMES = {
    "api_key", "apikey", "key", "secret", "token", "password", "access_token",
    "bearer", "openai_api_key", "auth_token", "secret_key",
}  # fmt: skip
_SECRET_HEADER_WORDS = ("authorization", "api-key", "apikey", "api_key", "token", "secret")
_KEY_LIKE = re.compile(
    r"(?<![A-Za-z0-9])(?:sk-|sk_|rk-|gsk_|xai-|AIza|hf_|pplx-|r8_)[A-Za-z0-9_\-]{16,}"
    r"|Bearer\s+[A-Za-z0-9_\-\.]{16,}"
)
_USE_ENV = "put the key in an environment variable and set endpoint.api_key_env to its name"
_AUTH_STYLES = ("bearer", "raw", "none")
_FORMAT_TYPES = ("json_schema", "json_object", "text")
_COMPARES = ("exact", "json_field")


@dataclass(frozen=True)
class Job:
    """A validated job file, paths resolved to absolute ones.

    ``None`` means "not set in the file": the CLI or batchrun's default decides.
    """

    path: str
    name: str
    input_path: str
    id_column: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    api_key_file: str | None = None
    auth: str | None = None
    auth_header: str | None = None
    headers: tuple[tuple[str, str], ...] | None = None
    model: str | None = None
    stream: bool | None = None
    request: dict[str, Any] = field(default_factory=dict)
    """Body defaults from [request], without model and stream (they are options)."""
    template: PromptTemplate | None = None
    response_format: dict[str, Any] | None = None
    """In OpenAI's body shape, ready to send."""
    schema: dict[str, Any] | None = None
    concurrency: int | None = None
    rpm: float | None = None
    tpm: float | None = None
    model_rpm: tuple[tuple[str, float], ...] | None = None
    model_tpm: tuple[tuple[str, float], ...] | None = None
    max_cost: float | None = None
    quality_breaker: float | None = None
    max_attempts: int | None = None
    timeout: float | None = None
    total_timeout: float | None = None
    out_dir: str | None = None
    write_parquet: bool | None = None
    eval: dict[str, Any] | None = None
    prices_path: str | None = None

    def job_dict(self) -> dict[str, Any]:
        """The dataset-job settings for `RunConfig.job`: plain JSON, part of the
        run's fingerprint, so a resume with another template or schema is refused::

            {"prompt": {"messages": [{"role", "content"}, ...]} | None,  # None: request file
             "request": {...},                # body defaults, without model and stream
             "response_format": {...} | None, # OpenAI body shape, sent as is
             "schema": {...} | None,          # the JSON schema, for the parsed columns
             "eval": {"reference_column", "compare", "field", "normalize"} | None}
        """
        return {
            "prompt": self.template.to_dict() if self.template else None,
            "request": dict(self.request),
            "response_format": self.response_format,
            "schema": self.schema,
            "eval": self.eval,
        }

    def to_run_options(self) -> dict[str, Any]:
        """`RunConfig` field values this file sets (unset ones are left out).

        ``api_key_file`` appears only when the file names one.
        """
        options: dict[str, Any] = {
            "input_path": self.input_path,
            "out_dir": self.out_dir,
            "base_url": self.base_url,
            "api_key_env": self.api_key_env,
            "auth": self.auth,
            "auth_header": self.auth_header,
            "headers": self.headers,
            "model": self.model,
            "stream": self.stream,
            "concurrency": self.concurrency,
            "rpm": self.rpm,
            "tpm": self.tpm,
            "model_rpm": self.model_rpm,
            "model_tpm": self.model_tpm,
            "max_cost": self.max_cost,
            "quality_breaker": self.quality_breaker,
            "max_attempts": self.max_attempts,
            "timeout": self.timeout,
            "total_timeout": self.total_timeout,
            "write_parquet": self.write_parquet,
            "prices_path": self.prices_path,
            "id_column": self.id_column,
            "api_key_file": self.api_key_file,
        }
        options = {k: v for k, v in options.items() if v is not None}
        options["job"] = self.job_dict()
        return options


def merge_options(job_options: Mapping[str, Any], cli_options: Mapping[str, Any]) -> dict[str, Any]:
    """CLI > job file > defaults. ``cli_options`` holds only values given explicitly
    on the command line (None means "not given"). Headers merge by name, CLI winning.

    >>> merge_options({"concurrency": 32, "rpm": 500}, {"concurrency": 8, "rpm": None})
    {'concurrency': 8, 'rpm': 500}
    """
    merged = dict(job_options)
    for key, value in cli_options.items():
        if value is None:
            continue
        if key == "headers" and merged.get("headers"):
            given = {name.lower() for name, _ in value}
            kept = tuple((n, v) for n, v in merged["headers"] if n.lower() not in given)
            merged["headers"] = kept + tuple(value)
        else:
            merged[key] = value
    return merged


class JobFileError(ConfigError):
    """A job file has problems; ``problems`` lists them, ``str()`` shows one a line."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__("\n".join(f"{path}: {p}" for p in problems))


def load_job(path: str | os.PathLike[str]) -> Job:
    """Read and validate a job file. Raises `JobFileError` (a ConfigError) listing
    every problem found, or ConfigError when the file is missing or not TOML."""
    shown = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{shown}: job file not found") from None
    except OSError as exc:
        raise ConfigError(f"{shown}: cannot read job file: {exc.strerror or exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{shown}: not valid TOML: {exc}") from exc
    return _Checker(shown, Path(path).resolve().parent, data).job()


class _Checker:
    """Walks the parsed TOML once, collecting problems as it builds the Job."""

    def __init__(self, shown: str, base: Path, data: dict[str, Any]) -> None:
        self.shown = shown
        self.base = base
        self.data = data
        self.problems: list[str] = []

    # -- helpers ---------------------------------------------------------------

    def problem(self, key: str, message: str) -> None:
        self.problems.append(f"{key}: {message}")

    def section(self, name: str) -> dict[str, Any]:
        value = self.data.get(name, {})
        if not isinstance(value, dict):
            self.problem(name, f"must be a table ([{name}]), not {_kind(value)}")
            return {}
        known = _SECTIONS[name]
        if known:
            for key in value:
                # a key named like a secret is reported once, by scan_secrets
                if key not in known and key.lower() not in _SECRET_KEY_NAMES:
                    self.problem(f"{name}.{key}", "unknown key" + _suggest(key, known))
        return value

    def string(
        self, sec: dict[str, Any], name: str, key: str, *, required: bool = False
    ) -> str | None:
        value = sec.get(key)
        if value is None:
            if required:
                self.problem(f"{name}.{key}", "required")
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(f"{name}.{key}", f"must be a non-empty string (got {_show(value)})")
            return None
        return value

    def boolean(self, sec: dict[str, Any], name: str, key: str) -> bool | None:
        value = sec.get(key)
        if value is None or isinstance(value, bool):
            return value
        self.problem(f"{name}.{key}", f"must be true or false (got {_show(value)})")
        return None

    def positive_int(self, sec: dict[str, Any], name: str, key: str) -> int | None:
        value = sec.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            self.problem(f"{name}.{key}", f"must be a positive integer (got {_show(value)})")
            return None
        return value

    def positive_number(self, sec: dict[str, Any], name: str, key: str) -> float | None:
        value = sec.get(key)
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value <= 0
        ):
            self.problem(f"{name}.{key}", f"must be a positive number (got {_show(value)})")
            return None
        return float(value)

    def quota(self, sec: dict[str, Any], key: str) -> dict[str, Any]:
        """``rpm = 500`` (each model) or ``rpm = { "gpt-4.1" = 30, "*" = 500 }``."""
        value = sec.get(key)
        if not isinstance(value, dict):
            return {key: self.positive_number(sec, "limits", key)}
        default = None
        by_model = []
        for model, number in value.items():
            where = f"limits.{key}.{_key(model)}"
            if isinstance(number, bool) or not isinstance(number, int | float) or number <= 0:
                self.problem(where, f"must be a positive number (got {_show(number)})")
            elif model == "*":
                default = float(number)
            else:
                by_model.append((str(model), float(number)))
        return {key: default, f"model_{key}": tuple(by_model) or None}

    def share(self, sec: dict[str, Any], name: str, key: str) -> float | None:
        value = sec.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            self.problem(f"{name}.{key}", f"must be a number from 0 to 1 (got {_show(value)})")
            return None
        return float(value)

    def file(
        self, sec: dict[str, Any], name: str, key: str, *, required: bool = False
    ) -> Path | None:
        text = self.string(sec, name, key, required=required)
        if text is None:
            return None
        resolved = (self.base / Path(text).expanduser()).resolve()
        if not resolved.is_file():
            where = "" if Path(text).is_absolute() else f" (relative to {self.base})"
            self.problem(f"{name}.{key}", f"file not found: {text}{where}")
            return None
        return resolved

    # -- the walk ----------------------------------------------------------------

    def job(self) -> Job:
        for key, value in self.data.items():
            if key in _SECTIONS:
                continue
            if key in _TOP_LEVEL_KEYS:
                if not isinstance(value, str):
                    self.problem(key, f"must be a string (got {_show(value)})")
                continue
            if key in _SECRET_KEY_NAMES:
                continue  # reported by the secret scan
            self.problem(key, "unknown section or key" + _placement_hint(key))
        self.scan_secrets(self.data, "")

        if "input" not in self.data:
            self.problem("input", 'required: a [input] section with path = "..."')
        input_path, id_column = self.input()
        endpoint = self.endpoint()
        model, stream, request = self.request()
        template = self.prompt()
        response_format, schema = self.response_format()
        limits = self.section("limits")
        retry = self.section("retry")
        output = self.section("output")
        numbers: dict[str, Any] = {
            "concurrency": self.positive_int(limits, "limits", "concurrency"),
            **self.quota(limits, "rpm"),
            **self.quota(limits, "tpm"),
            "max_cost": self.positive_number(limits, "limits", "max_cost"),
            "quality_breaker": self.share(limits, "limits", "quality_breaker"),
            "max_attempts": self.positive_int(retry, "retry", "max_attempts"),
            "timeout": self.positive_number(retry, "retry", "timeout"),
            "total_timeout": self.positive_number(retry, "retry", "total_timeout"),
        }
        out_dir = self.string(output, "output", "dir")
        write_parquet = self.boolean(output, "output", "parquet")
        evaluation = self.evaluation()
        prices_path = self.file(self.section("prices"), "prices", "file")

        if template is None and "prompt" not in self.data:
            if "response_format" in self.data:
                self.problem(
                    "response_format",
                    "needs a [prompt]: without one the input rows are "
                    "complete request bodies (set response_format in them)",
                )
            if "eval" in self.data:
                self.problem(
                    "eval", "needs a [prompt]: a plain request file has no reference column"
                )
        if (
            evaluation
            and evaluation["compare"] == "json_field"
            and evaluation["field"]
            and schema is not None
            and evaluation["field"] not in schema["properties"]
        ):
            props = [str(p) for p in schema["properties"]]
            self.problem(
                "eval.field",
                f"{evaluation['field']!r} is not a property of the response schema "
                f"(properties: {', '.join(props)})" + _suggest(evaluation["field"], props),
            )
        if (
            evaluation
            and evaluation["compare"] == "json_field"
            and response_format == {"type": "text"}
        ):
            self.problem(
                "eval.compare",
                "'json_field' needs JSON responses, but response_format.type is 'text'",
            )

        if self.problems:
            raise JobFileError(self.shown, self.problems)
        assert input_path is not None
        name = self.data.get("name") or Path(self.shown).stem
        return Job(
            path=str(self.base / Path(self.shown).name),
            name=name,
            input_path=str(input_path),
            id_column=id_column,
            model=model,
            stream=stream,
            request=request,
            template=template,
            response_format=response_format,
            schema=schema,
            out_dir=str((self.base / Path(out_dir).expanduser()).resolve()) if out_dir else None,
            write_parquet=write_parquet,
            eval=evaluation,
            prices_path=str(prices_path) if prices_path else None,
            **numbers,
            **endpoint,
        )

    def input(self) -> tuple[Path | None, str | None]:
        sec = self.section("input")
        path = self.file(sec, "input", "path", required="input" in self.data)
        if path is not None and not path.name.lower().endswith(INPUT_SUFFIXES):
            self.problem(
                "input.path",
                f"unsupported file type {path.name!r} (use one of {', '.join(INPUT_SUFFIXES)})",
            )
        return path, self.string(sec, "input", "id_column")

    def endpoint(self) -> dict[str, Any]:
        sec = self.section("endpoint")
        base_url = self.string(sec, "endpoint", "base_url")
        if base_url is not None and base_url != "sim":
            if not re.match(r"^https?://[^/\s]+", base_url):
                hint = ""
                if "://" not in base_url:
                    hint = f"; did you mean 'https://{base_url}'?"
                self.problem(
                    "endpoint.base_url",
                    f'must start with http:// or https:// (or be "sim"), got {base_url!r}{hint}',
                )
            base_url = base_url.rstrip("/")
        api_key_env = self.string(sec, "endpoint", "api_key_env")
        if api_key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", api_key_env):
            self.problem(
                "endpoint.api_key_env",
                "must be the NAME of an environment variable "
                f"(letters, digits, _), got {_show(api_key_env)}",
            )
        key_file = self.file(sec, "endpoint", "api_key_file")
        auth = self.string(sec, "endpoint", "auth")
        if auth is not None and auth not in _AUTH_STYLES:
            self.problem(
                "endpoint.auth",
                f"must be one of {', '.join(_AUTH_STYLES)} (got {auth!r})"
                + _suggest(auth, _AUTH_STYLES),
            )
        auth_header = self.string(sec, "endpoint", "auth_header")
        headers = sec.get("headers")
        header_pairs: tuple[tuple[str, str], ...] | None = None
        if headers is not None:
            if not isinstance(headers, dict):
                self.problem(
                    "endpoint.headers", f'must be a table of name = "value" (got {_show(headers)})'
                )
            else:
                pairs = []
                for hname, hvalue in headers.items():
                    key = f"endpoint.headers.{_key(hname)}"
                    if not isinstance(hvalue, str):
                        self.problem(key, f"must be a string (got {_show(hvalue)})")
                    elif _KEY_LIKE.search(hvalue) or hname.lower() in _SECRET_KEY_NAMES:
                        pass  # reported by scan_secrets
                    elif any(word in hname.lower() for word in _SECRET_HEADER_WORDS):
                        self.problem(
                            key,
                            "a secret header cannot be written in a job file; "
                            f"{_USE_ENV} (and endpoint.auth_header = {hname!r})",
                        )
                    else:
                        pairs.append((hname, hvalue))
                header_pairs = tuple(pairs)
        return {
            "base_url": base_url,
            "api_key_env": api_key_env,
            "api_key_file": str(key_file) if key_file else None,
            "auth": auth,
            "auth_header": auth_header,
            "headers": header_pairs,
        }

    def request(self) -> tuple[str | None, bool | None, dict[str, Any]]:
        sec = self.section("request")
        body: dict[str, Any] = {}
        for key, value in sec.items():
            where = f"request.{key}"
            if key == "messages":
                self.problem(where, "write messages in the [prompt] section")
            elif key == "response_format":
                self.problem(where, "use the [response_format] section")
            elif key in _SECRET_KEY_NAMES:
                continue  # reported by the secret scan
            elif key not in _KNOWN_BODY_FIELDS and (
                close := difflib.get_close_matches(key, _KNOWN_BODY_FIELDS, 1, _TYPO_CUTOFF)
            ):
                self.problem(
                    where,
                    f"unknown field (did you mean '{close[0]}'? a field the server "
                    "really takes can go in request.extra)",
                )
            elif key != "extra":
                problem = _body_field_problem(key, value)
                if problem:
                    self.problem(where, problem)
                else:
                    body[key] = value
        extra = sec.get("extra")
        if extra is not None:
            if isinstance(extra, dict):
                body.update(extra)
            else:
                self.problem("request.extra", f"must be a table (got {_show(extra)})")
        model = body.pop("model", None)
        stream = body.pop("stream", None)
        return model, stream, body

    def prompt(self) -> PromptTemplate | None:
        if "prompt" not in self.data:
            return None
        sec = self.section("prompt")
        if "messages" in sec:
            if "system" in sec or "user" in sec:
                self.problem("prompt", "give either messages or system/user, not both")
            messages = sec["messages"]
            if not isinstance(messages, list) or not messages:
                self.problem(
                    "prompt.messages", "must be a non-empty list of { role, content } tables"
                )
                return None
            ok = True
            for i, message in enumerate(messages):
                where = f"prompt.messages[{i}]"
                if not isinstance(message, dict):
                    self.problem(
                        where, f"must be a table {{ role, content }} (got {_show(message)})"
                    )
                    ok = False
                    continue
                for key in message:
                    if key not in ("role", "content"):
                        self.problem(
                            f"{where}.{key}", "unknown key" + _suggest(key, ("role", "content"))
                        )
                        ok = False
                role = self.string(message, where, "role", required=True)
                if role is not None and role not in ("system", "developer", "user", "assistant"):
                    self.problem(
                        f"{where}.role",
                        f"must be system, developer, user or assistant (got {role!r})",
                    )
                    ok = False
                ok = (
                    self.template_text(message, where, "content", required=True)
                    and ok
                    and bool(role)
                )
            return PromptTemplate(messages) if ok else None
        ok = self.template_text(sec, "prompt", "system", required=False)
        ok = self.template_text(sec, "prompt", "user", required=True) and ok
        return PromptTemplate.from_section(sec) if ok else None

    def template_text(self, sec: dict[str, Any], name: str, key: str, *, required: bool) -> bool:
        value = sec.get(key)
        if value is None:
            if required:
                self.problem(f"{name}.{key}", "required")
            return not required
        if not isinstance(value, str):
            self.problem(f"{name}.{key}", f"must be a string (got {_show(value)})")
            return False
        for problem in template_problems(value):
            self.problem(f"{name}.{key}", problem)
        return not template_problems(value)

    def response_format(self) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        if "response_format" not in self.data:
            return None, None
        sec = self.section("response_format")
        kind = self.string(sec, "response_format", "type", required=True)
        if kind is not None and kind not in _FORMAT_TYPES:
            self.problem(
                "response_format.type",
                f"must be one of {', '.join(_FORMAT_TYPES)} "
                f"(got {kind!r})" + _suggest(kind, _FORMAT_TYPES),
            )
            return None, None
        strict = self.boolean(sec, "response_format", "strict")
        name = self.string(sec, "response_format", "name")
        if kind != "json_schema":
            for key in ("schema", "schema_file", "name", "strict"):
                if key in sec:
                    self.problem(f"response_format.{key}", 'only applies to type = "json_schema"')
            return ({"type": kind} if kind else None), None
        schema = self.schema(sec)
        if schema is None:
            return None, None
        if name is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            self.problem(
                "response_format.name", f"must be 1-64 letters, digits, _ or - (got {name!r})"
            )
        rf = openai_response_format(
            "json_schema",
            name=name or "response",
            schema=schema,
            strict=True if strict is None else strict,
        )
        return rf, schema

    def schema(self, sec: dict[str, Any]) -> dict[str, Any] | None:
        inline, file_key = sec.get("schema"), sec.get("schema_file")
        if (inline is None) == (file_key is None):
            self.problem(
                "response_format",
                'json_schema needs exactly one of schema = { ... } or schema_file = "..."',
            )
            return None
        if inline is not None:
            where, schema = "response_format.schema", inline
        else:
            path = self.file(sec, "response_format", "schema_file")
            if path is None:
                return None
            where = "response_format.schema_file"
            try:
                schema = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
                self.problem(where, f"{path.name} is not valid JSON: {exc}")
                return None
        if not isinstance(schema, dict):
            self.problem(where, f"must be a JSON object schema (got {_kind(schema)})")
            return None
        if schema.get("type", "object") != "object" or not isinstance(
            schema.get("properties"), dict
        ):
            self.problem(where, 'the top level must be {"type": "object", "properties": {...}}')
            return None
        from batchrun.output.quality import schema_problem

        problem = schema_problem(schema)
        if problem is not None:
            self.problem(where, f"not a valid JSON Schema: {problem}")
            return None
        return schema

    def evaluation(self) -> dict[str, Any] | None:
        if "eval" not in self.data:
            return None
        sec = self.section("eval")
        reference = self.string(sec, "eval", "reference_column", required=True)
        compare = self.string(sec, "eval", "compare") or "exact"
        if compare not in _COMPARES:
            self.problem(
                "eval.compare",
                f"must be one of {', '.join(_COMPARES)} (got {compare!r})"
                + _suggest(compare, _COMPARES),
            )
        field_name = self.string(sec, "eval", "field", required=compare == "json_field")
        if field_name is not None and compare == "exact":
            self.problem("eval.field", 'only applies to compare = "json_field"')
        normalize = self.boolean(sec, "eval", "normalize")
        return {
            "reference_column": reference,
            "compare": compare,
            "field": field_name,
            "normalize": True if normalize is None else normalize,
        }

    def scan_secrets(self, value: Any, where: str) -> None:
        """Refuse anything that looks like a literal key, wherever it is."""
        if isinstance(value, dict):
            for key, item in value.items():
                path = f"{where}.{_key(key)}" if where else _key(key)
                in_schema = where.startswith("response_format.schema")
                if not in_schema and isinstance(key, str) and key.lower() in _SECRET_KEY_NAMES:
                    self.problem(path, f"API keys are never read from a job file; {_USE_ENV}")
                    continue
                self.scan_secrets(item, path)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.scan_secrets(item, f"{where}[{i}]")
        elif isinstance(value, str) and _KEY_LIKE.search(value):
            self.problem(where, f"looks like a literal API key; {_USE_ENV}")


def _body_field_problem(key: str, value: Any) -> str | None:
    """Type/range check for the body fields we know; others pass through untouched."""

    def number(lo: float, hi: float) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            return f"must be a number from {lo:g} to {hi:g} (got {_show(value)})"
        return None

    def positive_int() -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            return f"must be a positive integer (got {_show(value)})"
        return None

    if key == "model":
        return (
            None
            if isinstance(value, str) and value.strip()
            else (f"must be a non-empty string (got {_show(value)})")
        )
    if key == "temperature":
        return number(0, 2)
    if key == "top_p":
        return number(0, 1)
    if key in ("presence_penalty", "frequency_penalty"):
        return number(-2, 2)
    if key in ("max_tokens", "max_completion_tokens", "n"):
        return positive_int()
    if key == "seed" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"must be an integer (got {_show(value)})"
    if key in ("stream", "logprobs", "store", "parallel_tool_calls") and not isinstance(
        value, bool
    ):
        return f"must be true or false (got {_show(value)})"
    if key == "stop" and not (
        isinstance(value, str)
        or (isinstance(value, list) and all(isinstance(s, str) for s in value))
    ):
        return f"must be a string or a list of strings (got {_show(value)})"
    if key == "tools" and not (isinstance(value, list) and all(isinstance(t, dict) for t in value)):
        return f"must be a list of tool tables (got {_show(value)})"
    return None


def _placement_hint(key: str) -> str:
    """For a stray top-level key: the section it belongs in, or the closest name."""
    for section, keys in _SECTIONS.items():
        if key in keys:
            return f" (it belongs in [{section}])"
    if key in _KNOWN_BODY_FIELDS:
        return " (it belongs in [request])"
    return _suggest(key, (*_SECTIONS, *_TOP_LEVEL_KEYS))


def _suggest(word: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _kind(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )


def _show(value: Any) -> str:
    if isinstance(value, str) and _KEY_LIKE.search(value):
        return "a value that looks like an API key"  # never echo a secret back
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return _kind(value)
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _key(name: Any) -> str:
    text = str(name)
    return text if re.fullmatch(r"[A-Za-z0-9_-]+", text) else json.dumps(text)
