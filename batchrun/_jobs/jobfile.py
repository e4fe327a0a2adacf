"""Job files: everything one run needs, declared in a TOML file (usually in jobs/).

``batchrun run -j jobs/sentiment.toml`` runs what the file declares; any option given
on the command line wins over the file, and the file wins over batchrun's defaults
(CLI > job file > defaults, see `merge`: tables such as [request] and [eval] key by
key). The whole file is checked before anything is sent, and every problem is
reported at once with its key path::

    jobs/x.toml: limits.concurrency: must be a positive integer (got -4)
    jobs/x.toml: endpoint.base_url: must start with http:// or https:// (got 'api.openai.com/v1')
    jobs/x.toml: retry.max_attemps: unknown key (did you mean 'max_attempts'?)

A full job file (every section is optional; the input may be named on the command
line instead of in [input] path)::

    name = "sentiment"                      # optional; defaults to the file's stem
    description = "Label product reviews"   # optional, free text

    [input]
    path = "data/reviews.jsonl"   # .jsonl, .ndjson, .parquet, .csv, .tsv (+ .gz but Parquet)
    id_column = "id"              # becomes custom_id; without it: "row-<n>"
    column_types = { score = "float" }  # CSV/TSV: string (the default), int, float, bool, json

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

    [response_format]    # or type = "json_object"; or response_format = "schema.json"
    type = "json_schema"
    name = "sentiment"
    schema_file = "schemas/sentiment.json"   # or schema = { ... } inline
    strict = true
    # the table may also be a plain JSON Schema (type = "object", [response_format.properties]),
    # named after its title or the job, or OpenAI's envelope (json_schema = { ... })

    [limits]
    concurrency = 32
    rpm = 500            # per model; or { "gpt-4.1" = 30, "*" = 500 }
    tpm = 200000
    max_cost = 1.50      # USD
    context_window = { "my-model" = 32768 }  # tokens; default: genai-prices' table
    quality_breaker = 0.8  # stop when answers are unusable over this share (95% sure); 0: off

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
    file = "prices.toml"     # a price file (`batchrun prices --example`), and/or
    [prices.models."my-model"]   # prices inline, the same keys; they win over the file's
    input = 0.15             # USD per million prompt tokens
    output = 0.60

    [endpoints.azure-eu]     # a pool: any number of named endpoints (with or instead of
    base_url = "https://my-eu.openai.azure.com/openai"    # [endpoint]), each taking its
    api_key_env = "AZURE_EU_KEY"                          # keys and rpm, tpm, concurrency,
    models = { "gpt-4o-mini" = "mini-eu" }                # weight, models, prices, batch;
    rpm = 600                                             # base_url = "sim": sim_rpm,
                                                          # sim_tpm, sim_fault

Every path is relative to the job file, so a job runs the same from any directory.
Without [prompt] the job is a *plain request file*: each input line is a request body
or an OpenAI Batch API line (``{"custom_id", "method", "url", "body"}``), [request]
fields fill in what a body leaves out, and [response_format] / [eval] do not apply.

Keys are never read from a job file: a key named ``api_key`` (or ``token``, ...) or a
value that looks like one (``sk-...``) is refused, pointing at ``api_key_env``.

The sections and keys are those the settings declare (`batchrun._settings.Settings`:
each setting names its table and key), so a new setting is a new key here at once.

    job = load_job("jobs/sentiment.toml")
    settings = Settings(**merge(job.values, {"concurrency": 8}))
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchrun import _checks as checks
from batchrun._checks import Invalid, Where, secret_problems, show, suggest
from batchrun._settings import Partial, Settings, key_spelling
from batchrun._values import BODY_ALIASES, Endpoint
from batchrun.errors import ConfigError, JobFileError

TOP_LEVEL = ("name", "description")


@dataclass(frozen=True)
class Job:
    """A validated job file: the settings it gives (paths resolved against its folder)."""

    path: str
    name: str
    values: dict[str, Any] = field(default_factory=dict)
    """Setting name -> value, for the settings the file sets."""

    def settings(self, **overrides: Any) -> Settings:
        """The file's settings with ``overrides`` (already checked values) on top."""
        return Settings(**merge(self.values, overrides))


JOB_PROMPT = "default"
"""The variant name of a job file's one prompt when variants are given over it."""


def merge(job_values: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """Given values (options, keywords) > job file > defaults. None means "not given".

    A given value replaces the file's, except: headers merge by name, and the tables
    declared ``merge="keys"`` ([request] body fields, [prompts] variants) key by key,
    the given keys winning; a `batchrun._settings.Partial` (the command line's
    ``--eval-field``, ``--temperature``) is laid over the file's table and the table
    checked again. A given prompt (``prompt``/``messages``) replaces the file's
    prompt or variants; given variants over a file's one prompt compare with it (it
    becomes the variant named `JOB_PROMPT`).

    >>> merge({"concurrency": 32, "model": "a"}, {"concurrency": 8, "model": None})
    {'concurrency': 8, 'model': 'a'}
    >>> merge({"request": {"temperature": 0, "max_tokens": 80}}, {"request": {"temperature": 1}})
    {'request': {'temperature': 1, 'max_tokens': 80}}
    """
    merged = dict(job_values)
    for key, value in given.items():
        if value is None:
            continue
        spec = Settings.spec(key)
        if spec.merge == "tables":
            merged[key] = _tables_over(merged.get(key) or {}, value)
        elif isinstance(value, Partial) and spec.merge == "keys":
            # each part was checked; the file's keys were, as the file wrote them
            merged[key] = _keys_over(key, merged.get(key) or {}, value)
        elif isinstance(value, Partial):
            merged[key] = _laid_over(key, spec, merged.get(key), value)
        elif key == "headers" and merged.get("headers"):
            names = {name.lower() for name, _ in value}
            kept = tuple((n, v) for n, v in merged["headers"] if n.lower() not in names)
            merged["headers"] = kept + tuple(value)
        elif spec.merge == "keys" and isinstance(merged.get(key), Mapping):
            merged[key] = _keys_over(key, merged[key], value)
        else:
            merged[key] = value
    _prompt_over_job(job_values, given, merged)
    return merged


def _keys_over(name: str, base: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """``given``'s keys over ``base``'s; a body field given drops the file's field that
    says the same (``max_tokens`` / ``max_completion_tokens``: OpenAI refuses both)."""
    out = dict(base)
    if name == "request":
        for key in given:
            out.pop(BODY_ALIASES.get(key, ""), None)
    out.update(given)
    return out


def _tables_over(base: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    """Named tables (the pool's ``[endpoints.NAME]``) given over the file's: a table of
    a new name joins them, one of a name the file has lays its keys over that table's
    (``--endpoint a=URL`` moves the file's endpoint ``a``, its other keys kept). The
    result is checked again as a whole when the settings are built.

    >>> _tables_over({"a": {"base_url": "sim", "weight": 2}}, {"a": {"base_url": "http://h"}})
    {'a': {'base_url': 'http://h', 'weight': 2}}
    """
    out = {name: _table(value) for name, value in base.items()}
    for name, value in given.items():
        out[name] = {**out.get(name, {}), **_table(value)}
    return out


def _table(value: Any) -> dict[str, Any]:
    """A named table's keys: as given, or those an `Endpoint` was declared with."""
    return value.declared() if isinstance(value, Endpoint) else dict(value)


def _laid_over(name: str, spec: Any, base: Any, partial: Mapping[str, Any]) -> Any:
    """A table setting from the file's value (or none) with the given parts over it,
    checked as a whole; a problem names the option of the key it concerns."""
    import dataclasses

    if dataclasses.is_dataclass(base) and not isinstance(base, type):
        table = dataclasses.asdict(base)
    else:
        table = dict(base or {})
    table = _keys_over(name, table, partial)
    if spec.check is None:
        return table
    try:
        return spec.check(table, Where(spec.section or name))
    except Invalid as exc:
        flags = {f"{spec.section}.{p.key}": spec.part_flags(p)[0] for p in spec.parts}
        problems = [
            f"{w} ({flags[w].split('/')[0]}): {m}" if w in flags else (f"{w}: {m}" if w else m)
            for w, m in exc.problems
        ]
        raise ConfigError("; ".join(problems)) from None


def _prompt_over_job(
    job: Mapping[str, Any], given: Mapping[str, Any], merged: dict[str, Any]
) -> None:
    """The rules between a file's prompt and a given one (see `merge`)."""
    if given.get("prompt") is not None or given.get("messages") is not None:
        for name in ("prompt", "messages", "prompts"):
            if given.get(name) is None:
                merged.pop(name, None)
        if given.get("messages") is not None and given.get("system") is None:
            merged.pop("system", None)  # messages hold the whole conversation
        return
    one_prompt = job.get("prompt") is not None or job.get("messages") is not None
    if given.get("prompts") and one_prompt and not job.get("prompts"):
        if job.get("messages") is not None:
            entry: dict[str, Any] = {"messages": job["messages"]}
        else:
            entry = {"user": job["prompt"]}
        merged["prompts"] = {JOB_PROMPT: entry, **given["prompts"]}
        merged.pop("prompt", None)
        merged.pop("messages", None)


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
    base = Path(path).resolve().parent
    values, problems = read_settings(data, base)
    if problems:
        raise JobFileError(shown, problems)
    name = values.pop("name", None) or Path(shown).stem
    if values.get("response_format") is not None:  # a schema without a title: the job's name
        values["response_format"] = values["response_format"].named(name)
    return Job(path=str(base / Path(shown).name), name=name, values=values)


def _layout() -> dict[str, dict[str, str]]:
    """Job-file section -> key -> setting, from the settings' declarations."""
    layout: dict[str, dict[str, str]] = {}
    for name, spec in Settings.specs():
        if spec.section is not None:
            layout.setdefault(spec.section, {})[spec.key or name] = name
    return layout


def read_settings(data: Mapping[str, Any], base: Path) -> tuple[dict[str, Any], list[str]]:
    """(setting values, problems) from a parsed job file."""
    layout = _layout()
    sections = [s for s in layout if s]
    top = layout.get("", {})
    problems: list[str] = []
    values: dict[str, Any] = {}

    def check(name: str, value: Any, label: str) -> None:
        spec = Settings.spec(name)
        try:
            values[name] = spec.check(value, Where(label, base, True)) if spec.check else value
        except Invalid as exc:
            problems.extend(f"{w}: {m}" if w else m for w, m in exc.problems)

    for key, value in data.items():
        if key in sections:
            continue
        if key in top:
            check(top[key], value, key)
        elif key in TOP_LEVEL:
            if not isinstance(value, str):
                problems.append(f"{key}: must be a string (got {show(value)})")
        elif key.lower() not in checks.SECRET_KEY_NAMES:  # those: the secret scan
            hint = _placement_hint(key, layout, table=isinstance(value, dict))
            problems.append(f"{key}: unknown section or key" + hint)
    problems.extend(secret_problems(data, ""))
    for section in sections:
        if section not in data:
            continue
        table = data[section]
        keys = layout[section]
        if not isinstance(table, dict) and list(keys) == ["*"]:
            # a section that is one setting may be its value too:
            # prices = "prices.toml", response_format = "json_object"
            check(keys["*"], table, section)
            continue
        if not isinstance(table, dict):
            kind = checks.kind_of(table)
            problems.append(f"{section}: must be a table ([{section}]), not {kind}")
            continue
        whole = keys.get("*")
        rest: dict[str, Any] = {}
        for key, value in table.items():
            if key in keys and key != "*":
                check(keys[key], value, f"{section}.{key}")
            elif whole is not None:
                rest[key] = value
            elif key.lower() not in checks.SECRET_KEY_NAMES:
                problems.append(f"{section}.{key}: unknown key" + suggest(key, list(keys)))
        if whole is not None and (rest or len(keys) == 1):
            check(whole, rest, section)
    prompt = data.get("prompt")
    if (
        isinstance(prompt, dict)
        and not {"user", "messages", "input"} & set(prompt)
        and "prompts" not in data
    ):
        # the file's shape, not a rule between settings: a [prompt] table without a prompt
        problems.append("prompt.user: required (or named variants in [prompts.NAME])")
    if not problems:
        problems.extend(_rules(values))
    return values, problems


def _rules(values: Mapping[str, Any]) -> list[str]:
    """The rules between the file's settings (`batchrun._settings.Settings.problems`),
    naming its keys: judged on the file alone, so a file is known good before any
    command line meets it, and only once every key is readable (a rule over a key that
    failed its own check would only repeat that problem). The command line's settings
    over the file's are judged again, merged (`batchrun._api.settings_for`)."""
    try:
        return Settings(**values).problems(key_spelling)
    except ConfigError as exc:  # a value its check took that the settings do not
        return [str(exc)]


def _placement_hint(
    key: str, layout: Mapping[str, Mapping[str, str]], *, table: bool = False
) -> str:
    """For a stray top-level key: the section it belongs in, or the closest name (a
    stray table, ``[limit]``, is a misspelt section first)."""
    sections = [*(s for s in layout if s), *TOP_LEVEL]
    if table and suggest(key, sections):
        return suggest(key, sections)
    for section, keys in layout.items():
        if section and key in keys:
            return f" (it belongs in [{section}])"
    if key in checks.KNOWN_BODY_FIELDS:
        return " (it belongs in [request])"
    return suggest(key, sections)


__all__ = ["Job", "load_job", "merge"]
