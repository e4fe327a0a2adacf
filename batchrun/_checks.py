"""What a setting's value must be: small pure functions, one per kind of value.

A value reaches batchrun three ways: a job file, a command-line option, a Python
keyword. Each `batchrun._settings.Settings` field names one of these checks, so a rule
("a positive integer", "a base URL", "a JSON schema that is valid") is written once
and every way in gets it, with messages naming the value the way the user wrote it
(``limits.concurrency``, ``--concurrency``, ``concurrency=``). A check returns the
clean value or raises `Invalid` with one problem or several (a job file reports them
all at once).

    >>> positive_int("8", Where("--concurrency"))
    8
    >>> positive_int(0, Where("limits.concurrency"))
    Traceback (most recent call last):
    ...
    batchrun._checks.Invalid: limits.concurrency: must be a positive integer (got 0)
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from batchrun._endpoint import SIM
from batchrun._redact import looks_like_key
from batchrun._values import CASCADE_WHEN, CONFIDENCE_METHODS

Check = Callable[[Any, "Where"], Any]
_C = TypeVar("_C", bound=Check)

INPUT_SUFFIXES = (
    ".jsonl", ".jsonl.gz", ".ndjson", ".ndjson.gz", ".parquet", ".pq",
    ".csv", ".csv.gz", ".tsv", ".tsv.gz",
)  # fmt: skip
DELIMITED_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz")
"""The inputs read as CSV/TSV, whose columns may be typed (``column_types``)."""
COLUMN_TYPES = ("string", "int", "float", "bool", "json")
"""CSV/TSV column types (`batchrun._input.delimited`)."""
_PYTHON_COLUMN_TYPES = {
    str: "string", int: "int", float: "float", bool: "bool", dict: "json", list: "json",
}  # fmt: skip
AUTH_STYLES = ("bearer", "raw", "none")
FORMAT_TYPES = ("json_schema", "json_object", "text")
COMPARES = ("exact", "json_field", "number")
MAX_TOP_LOGPROBS = 20
SECRET_KEY_NAMES = frozenset(
    {
        "api_key", "apikey", "key", "secret", "token", "password", "access_token",
        "bearer", "openai_api_key", "auth_token", "secret_key",
    }
)  # fmt: skip
SECRET_HEADER_WORDS = ("authorization", "api-key", "apikey", "api_key", "token", "secret")
USE_ENV = "put the key in an environment variable and set endpoint.api_key_env to its name"

# Chat-completions body fields we know; an unknown [request] key this close to one of
# them is almost surely a typo that would make every request fail with a 400.
KNOWN_BODY_FIELDS = (
    "model", "temperature", "top_p", "n", "stream", "stream_options", "stop", "max_tokens",
    "max_completion_tokens", "presence_penalty", "frequency_penalty", "logit_bias",
    "logprobs", "top_logprobs", "user", "seed", "tools", "tool_choice",
    "parallel_tool_calls", "reasoning_effort", "metadata", "store", "service_tier",
    "modalities", "prediction", "audio", "web_search_options", "verbosity", "extra",
)  # fmt: skip
_TYPO_CUTOFF = 0.85
"""Body fields that say the same thing: a body setting one must not get the other as
well (OpenAI rejects max_tokens next to max_completion_tokens)."""

METAVARS: dict[Check, str] = {}
"""How the help names the value a check takes (``N``, ``FLOAT``, ``FILE``): an option
without a metavar of its own shows its check's, never click's ``TEXT`` for a number."""


def shown_as(metavar: str) -> Callable[[_C], _C]:
    """Register the metavar of a check (`METAVARS`)."""

    def register(check: _C) -> _C:
        METAVARS[check] = metavar
        return check

    return register


class Invalid(ValueError):
    """One or more problems with a value: ``(where, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{w}: {m}" if w else m for w, m in problems))


class Refused(Invalid):
    """A value refused for what it holds (a credential), not for how it is written:
    the command line reports it as a plain error (exit 1), not a usage error."""


@dataclass(frozen=True)
class Where:
    """How to name a value in messages, and where relative paths start."""

    label: str
    base: Path | None = None
    from_file: bool = False
    """The value comes from a job file (where secrets are refused)."""
    entry: bool = True
    """The value comes in here (a job file, an option, a keyword): besides what it is,
    check what it names outside the process (that a file exists), what it may say by
    mistake (a body field one letter off a known one) and a credential it must not
    carry into the run's files (a key in the base URL). False when
    `batchrun._settings.Settings` is built: what a value is gets checked every time, the
    rest only where the value came in, never again on each ``dataclasses.replace`` (a
    file is not looked for again; a body field that came as ``[request] extra`` stays)."""

    def fail(self, message: str) -> Invalid:
        return Invalid([(self.label, message)])

    def refuse(self, message: str) -> Refused:
        return Refused([(self.label, message)])

    def at(self, key: str) -> Where:
        return Where(f"{self.label}.{key}", self.base, self.from_file, self.entry)


# -- plain values -------------------------------------------------------------------------
def show(value: Any) -> str:
    """A value in a message: short, and never a key."""
    if isinstance(value, str) and looks_like_key(value):
        return "a value that looks like an API key"  # never echo a secret back
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list | tuple):
        return kind_of(value)
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def kind_of(value: Any) -> str:
    return {
        dict: "a table",
        list: "a list",
        tuple: "a list",
        str: "a string",
        bool: "a boolean",
    }.get(type(value), type(value).__name__)


def suggest(word: str, choices: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _number(value: Any, where: Where) -> float | None:
    """A number from a native value or an option's text (None: not a number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and not where.from_file:
        try:
            return float(value)
        except ValueError:
            return None
    return float(value) if isinstance(value, int | float) else None


@shown_as("N")
def positive_int(value: Any, where: Where) -> int:
    number = _number(value, where)
    if number is None or not number.is_integer() or number <= 0 or isinstance(value, float):
        raise where.fail(f"must be a positive integer (got {show(value)})")
    return int(number)


def at_least(minimum: int) -> Check:
    """A whole number of at least ``minimum``."""

    def check(value: Any, where: Where) -> int:
        number = _number(value, where)
        if number is None or not number.is_integer() or number < minimum:
            raise where.fail(f"must be a whole number of at least {minimum} (got {show(value)})")
        return int(number)

    return shown_as("N")(check)


@shown_as("FLOAT")
def positive_number(value: Any, where: Where) -> float:
    number = _number(value, where)
    if number is None or not math.isfinite(number) or number <= 0:
        raise where.fail(f"must be a positive number (got {show(value)})")
    return number


@shown_as("FLOAT")
def non_negative_number(value: Any, where: Where) -> float:
    number = _number(value, where)
    if number is None or not math.isfinite(number) or number < 0:
        raise where.fail(f"must be a number of 0 or more (got {show(value)})")
    return number


def port(value: Any, where: Where) -> int | None:
    """A TCP port; 0 or ``true`` take a free one, ``false`` none."""
    if value is True:
        return 0
    if value is False:
        return None
    number = _number(value, where)
    if number is None or not number.is_integer() or not 0 <= number <= 65535:
        raise where.fail(f"must be a port from 0 to 65535, 0 for a free one (got {show(value)})")
    return int(number)


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(h|m|s)", re.IGNORECASE)
_SECONDS_PER = {"h": 3600.0, "m": 60.0, "s": 1.0}


def duration(value: Any, where: Where) -> float:
    """A length of time in seconds: a number, or text like ``6h``, ``90m``, ``3600s``,
    ``1h30m``.

    >>> duration("1h30m", Where("--deadline")), duration(45, Where("deadline"))
    (5400.0, 45.0)
    """
    number = _number(value, where) if not isinstance(value, str) else None
    if number is None and isinstance(value, str):
        spelled = value.strip().replace(" ", "")
        try:
            number = float(spelled)
        except ValueError:
            parts = _DURATION.findall(spelled)
            if parts and "".join(n + u for n, u in parts).lower() == spelled.lower():
                number = sum(float(n) * _SECONDS_PER[u.lower()] for n, u in parts)
    if number is None or not math.isfinite(number) or number <= 0:
        raise where.fail(f"must be a duration like 6h, 90m or 3600s (got {show(value)})")
    return float(number)


RUN_MODES = ("online", "batch")


def run_mode(value: Any, where: Where) -> str:
    """ "online" or "batch"; a flag's true (``--batch-api``) means "batch"."""
    if value is True:
        return "batch"
    if value is False:
        return "online"
    return choice(*RUN_MODES)(value, where)


LOCAL_RAY = "local"


def ray_address(value: Any, where: Where) -> str | None:
    """Where a run's shards go: ``"local"`` (a Ray cluster on this machine, started for
    the run; ``true`` or a bare ``--ray``), or an existing cluster's address:
    ``auto``, ``ray://HOST:PORT`` (Ray Client) or ``HOST:PORT`` (from a cluster node).
    ``false``: not on Ray.

    >>> ray_address(True, Where("ray=")), ray_address("ray://head:10001", Where("ray="))
    ('local', 'ray://head:10001')
    """
    if value is True:
        return LOCAL_RAY
    if value is False:
        return None
    if not isinstance(value, str):
        raise where.fail(
            f"must be an address (ray://HOST:PORT, HOST:PORT, auto) or true (got {show(value)})"
        )
    address = value.strip()
    if address in ("", LOCAL_RAY):  # "local": a bare --ray
        return LOCAL_RAY
    if address == "auto":
        return address
    host_port = address.removeprefix("ray://")
    host, _, port_text = host_port.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536 or "/" in host:
        raise where.fail(
            f"must be ray://HOST:PORT, HOST:PORT, auto, or nothing for a local cluster "
            f"(got {show(value)})"
        )
    return address


@shown_as("FLOAT")
def share(value: Any, where: Where) -> float:
    number = _number(value, where)
    if number is None or not 0 <= number <= 1:
        raise where.fail(f"must be a number from 0 to 1 (got {show(value)})")
    return number


def boolean(value: Any, where: Where) -> bool:
    if isinstance(value, bool):
        return value
    raise where.fail(f"must be true or false (got {show(value)})")


def text(value: Any, where: Where) -> str:
    if not isinstance(value, str) or not value.strip():
        raise where.fail(f"must be a non-empty string (got {show(value)})")
    return value


def choice(*choices: str) -> Check:
    def check(value: Any, where: Where) -> str:
        if value not in choices:
            hint = suggest(value, choices) if isinstance(value, str) else ""
            raise where.fail(f"must be one of {', '.join(choices)} (got {value!r}){hint}")
        return str(value)

    return check


@shown_as("PATH")
def path_value(value: Any, where: Where) -> str:
    """A path, relative to the job file when it comes from one (not checked to exist)."""
    text(value, where)
    path = Path(value).expanduser()
    if where.base is not None and not path.is_absolute():
        path = (where.base / path).resolve()
    return str(path)


RUN_DIR_SCHEMES = ("s3", "gs", "gcs", "abfs", "abfss")
"""Object stores a run directory may be on (`batchrun._output.store.open_store`)."""


@shown_as("DIR")
def run_dir_path(value: Any, where: Where) -> str:
    """The run directory: a local (or shared) path, or a prefix on object storage
    (``s3://bucket/prefix``, ``gs://bucket/prefix``,
    ``abfs://container@account.dfs.core.windows.net/prefix``; written as segments and a
    lease: `batchrun._output.mirror`).
    Another scheme is refused rather than made a local directory named ``ftp:``, and a
    URI carrying a credential is refused without echoing it."""
    text(value, where)
    if "://" in str(value):
        from batchrun._input.locations import location_credentials

        scheme = str(value).partition("://")[0].lower()
        if scheme == "file":
            return path_value(str(value)[len("file://") :], where)
        secret = location_credentials(str(value))
        if secret is not None:
            raise where.fail(
                f"{scheme}://...: the run directory carries a credential ({secret}); "
                "keys come from the environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, "
                "AZURE_STORAGE_*), never from a location"
            )
        if scheme not in RUN_DIR_SCHEMES or not urlsplit(str(value)).netloc:
            raise where.fail(
                f"{value!r}: a run directory is a local path, s3://bucket/prefix, "
                "gs://bucket/prefix or abfs://container@account.dfs.core.windows.net/prefix"
            )
        return str(value).rstrip("/")
    return path_value(value, where)


@shown_as("FILE")
def existing_file(value: Any, where: Where) -> str:
    """A file that exists (looked for only where the value comes in: `Where.entry`)."""
    resolved = Path(path_value(value, where))
    if where.entry and not resolved.is_file():
        relative = where.base is not None and not Path(value).expanduser().is_absolute()
        suffix = f" (relative to {where.base})" if relative else ""
        raise where.fail(f"file not found: {value}{suffix}")
    return str(resolved)


def input_file(value: Any, where: Where) -> Any:
    """The input: a file of rows (JSONL, gzip, Parquet, CSV, TSV), a directory or glob of
    them, or the same on object storage (s3://, gs://, abfs://, hf://:
    `batchrun._input.locations`); objects pass (the Python API).

    A URI that carries a credential is refused where it comes in: the input is
    recorded in run.json as given.
    """
    if not isinstance(value, str | Path):
        return value
    text = str(value)
    if "://" in text:
        from batchrun._input.locations import location_credentials, scheme_of
        from batchrun.errors import InputError

        found = location_credentials(text) if where.entry else None
        if found is not None:  # named, never echoed: the value is a secret
            raise where.refuse(
                f"the input URI holds {found}, and a credential in it would be saved and "
                "shown; give the store's credentials in the environment (AWS_ACCESS_KEY_ID "
                "and AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS, an instance role)"
            )
        try:
            if scheme_of(text) is not None:
                return text  # looked for when it is read
        except InputError as exc:
            raise where.fail(exc.reason) from None
    if not where.from_file:
        return text  # a path given directly is checked when it is read
    from batchrun._input.locations import is_glob

    path = path_value(text, where)
    if is_glob(text) or (where.entry and Path(path).is_dir()):
        return path  # a glob or a directory: its files are listed when it is read
    path = existing_file(text, where)
    if not path.lower().endswith(INPUT_SUFFIXES):
        raise where.fail(
            f"unsupported file type {Path(path).name!r} (use one of {', '.join(INPUT_SUFFIXES)})"
        )
    return path


def may_hold_delimited(location: str) -> bool:
    """False when ``location`` names one file that is not CSV or TSV (a directory or
    glob is looked into when it is read).

    >>> may_hold_delimited("a.jsonl"), may_hold_delimited("a.csv"), may_hold_delimited("s3://b/p/")
    (False, True, True)
    """
    lowered = location.lower()
    return lowered.endswith(DELIMITED_SUFFIXES) or not lowered.endswith(INPUT_SUFFIXES)


def column_types(value: Any, where: Where) -> dict[str, str] | None:
    """CSV/TSV column types: ``--column-type score=float`` (repeatable), ``column_types =
    { score = "float" }`` or ``column_types={"score": float}`` (Python types name theirs).

    >>> column_types(("id=string", "score=FLOAT"), Where("--column-type"))
    {'id': 'string', 'score': 'float'}
    """
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, list | tuple):
        items = []
        for entry in value:
            name, sep, kind = str(entry).rpartition("=")
            if not sep or not name:
                types = ", ".join(COLUMN_TYPES)
                raise where.fail(f"{show(entry)}: give COLUMN=TYPE (types: {types})")
            items.append((name, kind))
    else:
        raise where.fail(f"must be a table of column = type (got {show(value)})")
    out: dict[str, str] = {}
    problems: list[tuple[str, str]] = []
    for name, kind in items:
        label = where.at(_key(name)).label if isinstance(value, Mapping) else where.label
        named = _PYTHON_COLUMN_TYPES.get(kind) if isinstance(kind, type) else None
        if named is None and isinstance(kind, str) and kind.strip().lower() in COLUMN_TYPES:
            named = kind.strip().lower()
        if named is None:
            shown = kind.__name__ if isinstance(kind, type) else show(kind)
            hint = suggest(kind, COLUMN_TYPES) if isinstance(kind, str) else ""
            problems.append(
                (label, f"{name}: unknown type {shown}{hint} (types: {', '.join(COLUMN_TYPES)})")
            )
            continue
        out[name] = named
    if problems:
        raise Invalid(problems)
    return out or None


def base_url(value: Any, where: Where) -> str:
    text(value, where)
    if value == "sim":
        return value
    from urllib.parse import urlsplit

    from batchrun._endpoint import url_credentials

    # refused where the URL comes in; a run.json an older batchrun wrote may hold one
    found = url_credentials(value) if "://" in value and where.entry else None
    if found is not None:
        # named, never echoed: the value is a secret
        raise where.refuse(
            f"the URL holds {found}, and a credential in the URL would be saved and "
            "shown; put the key in an environment variable (--api-key-env NAME, "
            "endpoint.api_key_env) or send it as a header (-H 'Name: value')"
        )
    if not re.match(r"^https?://[^/\s]+", value):
        private = "@" in value  # user:password@host without a scheme: never echoed
        shown = "the URL" if private else repr(value)
        hint = f"; did you mean 'https://{value}'?" if "://" not in value and not private else ""
        raise where.fail(f'{shown} must start with http:// or https:// (or be "sim"){hint}')
    if not urlsplit(value).hostname or any(c.isspace() for c in value):
        raise where.fail(f"{value!r} has no valid host name")
    return value.rstrip("/")


@shown_as("NAME")
def env_name(value: Any, where: Where) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise where.fail(
            f"must be the NAME of an environment variable (letters, digits, _), got {show(value)}"
        )
    return value


# -- structured values --------------------------------------------------------------------
def headers(value: Any, where: Where) -> tuple[tuple[str, str], ...]:
    """Extra headers: a table (job file, Python) or "Name: value" texts (options)."""
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, list | tuple):
        items = []
        for entry in value:
            if isinstance(entry, str):
                name, sep, rest = entry.partition(":")
                if not sep or not name.strip():
                    raise Invalid([("", f"header {entry!r} must look like 'Name: value'")])
                items.append((name.strip(), rest.strip()))
            elif isinstance(entry, list | tuple) and len(entry) == 2:
                items.append((str(entry[0]), entry[1]))
            else:
                raise where.fail(f"must be 'Name: value' texts (got {show(entry)})")
    else:
        raise where.fail(f'must be a table of name = "value" (got {show(value)})')
    problems, pairs = [], []
    for name, item in items:
        key = f"{where.label}.{_key(name)}"
        if not isinstance(item, str):
            problems.append((key, f"must be a string (got {show(item)})"))
        elif where.from_file and (looks_like_key(item) or name.lower() in SECRET_KEY_NAMES):
            pass  # reported by the job file's secret scan
        elif where.from_file and any(word in name.lower() for word in SECRET_HEADER_WORDS):
            problems.append(
                (
                    key,
                    "a secret header cannot be written in a job file; "
                    f"{USE_ENV} (and endpoint.auth_header = {name!r})",
                )
            )
        else:
            pairs.append((str(name), item))
    if problems:
        raise Invalid(problems)
    return tuple(pairs)


def body_defaults(value: Any, where: Where) -> dict[str, Any]:
    """[request] fields other than model and stream: body defaults, typo-checked."""
    if not isinstance(value, Mapping):
        raise where.fail(f"must be a table (got {show(value)})")
    problems: list[tuple[str, str]] = []
    body: dict[str, Any] = {}
    for key, item in value.items():
        at = f"{where.label}.{key}"
        if key == "messages":
            problems.append((at, "write messages in the [prompt] section"))
        elif key == "response_format":
            problems.append((at, "use the [response_format] section"))
        elif key in SECRET_KEY_NAMES and where.from_file:
            continue  # reported by the secret scan
        elif key == "extra":
            if isinstance(item, Mapping):
                body.update(item)
            else:
                problems.append((at, f"must be a table (got {show(item)})"))
        elif (
            where.entry
            and key not in KNOWN_BODY_FIELDS
            and (close := difflib.get_close_matches(key, KNOWN_BODY_FIELDS, 1, _TYPO_CUTOFF))
        ):
            problems.append(
                (
                    at,
                    f"unknown field (did you mean '{close[0]}'? a field the server "
                    "really takes can go in request.extra)",
                )
            )
        elif (problem := body_field_problem(key, item)) is not None:
            problems.append((at, problem))
        else:
            body[key] = item
    if problems:
        raise Invalid(problems)
    return body


def body_field_problem(key: str, value: Any) -> str | None:
    """Type/range check for the body fields we know; others pass through untouched."""

    def number(lo: float, hi: float) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            return f"must be a number from {lo:g} to {hi:g} (got {show(value)})"
        return None

    if key == "temperature":
        return number(0, 2)
    if key == "top_p":
        return number(0, 1)
    if key in ("presence_penalty", "frequency_penalty"):
        return number(-2, 2)
    if key in ("max_tokens", "max_completion_tokens", "n") and (
        isinstance(value, bool) or not isinstance(value, int) or value <= 0
    ):
        return f"must be a positive integer (got {show(value)})"
    if key == "seed" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"must be an integer (got {show(value)})"
    if key in ("logprobs", "store", "parallel_tool_calls") and not isinstance(value, bool):
        return f"must be true or false (got {show(value)})"
    if key == "stop" and not (
        isinstance(value, str)
        or (isinstance(value, list) and all(isinstance(s, str) for s in value))
    ):
        return f"must be a string or a list of strings (got {show(value)})"
    if key == "tools" and not (isinstance(value, list) and all(isinstance(t, dict) for t in value)):
        return f"must be a list of tool tables (got {show(value)})"
    return None


def option_value(text: Any) -> Any:
    """A body field's value as typed after an option: JSON when it reads as JSON
    (``0`` an integer, ``0.7`` a float, ``true``, ``[1, 2]``, as a job file's TOML would
    give them, so the same setting sends the same body), else the text itself.

    >>> option_value("0"), option_value("0.7"), option_value("high"), option_value('["a"]')
    (0, 0.7, 'high', ['a'])
    """
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def body_field(key: str) -> Check:
    """The check of one [request] body field given by its own option (``--temperature
    0.2``, ``--stop END`` repeatable: one is a string, several a list)."""

    def check(value: Any, where: Where) -> Any:
        if isinstance(value, list | tuple) and not where.from_file:
            items = [option_value(v) if key != "stop" else str(v) for v in value]
            value = items[0] if len(items) == 1 else items
        elif key != "stop":
            value = option_value(value) if not where.from_file else value
        problem = body_field_problem(key, value)
        if problem is not None:
            raise where.fail(problem)
        return value

    return check


def body_pairs(value: Any, where: Where) -> dict[str, Any]:
    """``--body FIELD=VALUE`` (repeatable): any body field, its value read as JSON when
    it is JSON (`option_value`), typo-checked like a job file's [request]."""
    pairs: dict[str, Any] = {}
    for item in value if isinstance(value, list | tuple) else (value,):
        name, sep, text = str(item).partition("=")
        if not sep or not name.strip():
            raise where.fail(f"must be FIELD=VALUE (got {show(item)})")
        pairs[name.strip()] = option_value(text)
    try:
        return body_defaults(pairs, Where(where.label))
    except Invalid as exc:
        labelled = [
            (w.replace(f"{where.label}.", f"{where.label} ", 1), m) for w, m in exc.problems
        ]
        raise Invalid(labelled) from None


def quota(value: Any, where: Where) -> Any:
    """``--rpm 500``, ``--rpm gpt-4.1=30`` (repeatable), ``rpm = 500`` or
    ``rpm = { "*" = 500, "gpt-4.1" = 30 }``: a `batchrun._settings.Quota`."""
    from batchrun._values import Quota

    if isinstance(value, Quota):
        if value.default is not None:
            positive_number(value.default, where)
        for model, amount in value.by_model:
            positive_number(amount, where.at(_key(model)))
        return value
    if isinstance(value, Mapping):
        items = [(str(m), n) for m, n in value.items()]
    elif isinstance(value, list | tuple):
        items = []
        for entry in value:
            model, sep, number = str(entry).rpartition("=")
            if sep and not model:
                raise where.fail(f"{entry!r}: a model name goes before '='")
            items.append((model if sep else "*", number))
    else:
        items = [("*", value)]
    default, by_model = None, []
    for model, number in items:
        label = (
            where.label
            if model == "*" or not isinstance(value, Mapping)
            else where.at(_key(model)).label
        )
        try:
            amount = positive_number(number, Where(label, where.base, where.from_file))
        except Invalid:
            form = ", or MODEL=N" if isinstance(value, list | tuple) else ""  # option texts
            raise Invalid(
                [(label, f"must be a positive number{form} (got {show(number)})")]
            ) from None
        if model == "*":
            default = amount
        else:
            by_model.append((model, amount))
    return Quota(default, tuple(by_model))


@shown_as("TEMPLATE")
def template_text(value: Any, where: Where) -> str:
    """A message template: {column} placeholders, or Jinja when it looks like Jinja
    (see `batchrun._templating.text.looks_like_jinja`)."""
    if not isinstance(value, str):
        raise where.fail(f"must be a string (got {show(value)})")
    problems = _template_problems(value, where.label)
    if problems:
        raise Invalid(list(problems))
    return value


@functools.lru_cache(maxsize=256)
def _template_problems(text: str, label: str) -> tuple[tuple[str, str], ...]:
    """A template's problems, remembered: compiling a Jinja template takes about a
    millisecond, and the settings check theirs every time they are built."""
    from batchrun._templating.text import looks_like_jinja, template_problems

    if looks_like_jinja(text):
        from batchrun._templating.jinja import jinja_template_problems

        return tuple(("", p) for p in jinja_template_problems(text, label))
    return tuple((label, p) for p in template_problems(text))


@shown_as("TEMPLATE")
def prompt(value: Any, where: Where) -> Any:
    """The user message template, or (Python) a function of the row."""
    if callable(value):
        return value
    return template_text(value, where)


def messages(value: Any, where: Where) -> tuple[dict[str, str], ...]:
    if not isinstance(value, list | tuple) or not value:
        raise where.fail("must be a non-empty list of { role, content } tables")
    problems: list[tuple[str, str]] = []
    out = []
    for i, message in enumerate(value):
        at = f"{where.label}[{i}]"
        if not isinstance(message, Mapping):
            problems.append((at, f"must be a table {{ role, content }} (got {show(message)})"))
            continue
        for key in message:
            if key not in ("role", "content"):
                problems.append((f"{at}.{key}", "unknown key" + suggest(key, ("role", "content"))))
        role = message.get("role")
        if role is None:
            problems.append((f"{at}.role", "required"))
        elif role not in ("system", "developer", "user", "assistant"):
            problems.append(
                (f"{at}.role", f"must be system, developer, user or assistant (got {role!r})")
            )
        content = message.get("content")
        if content is None:
            problems.append((f"{at}.content", "required"))
        else:
            try:
                template_text(content, Where(f"{at}.content"))
            except Invalid as exc:
                problems.extend(exc.problems)
        out.append({"role": str(role), "content": str(content)})
    if problems:
        raise Invalid(problems)
    return tuple(out)


def model_names(value: Any, where: Where) -> str | tuple[str, ...]:
    """One model, or several (a list, or a repeated --model): every row runs once per
    model. One name in a list is that model."""
    if isinstance(value, str):
        return text(value, where)
    if not isinstance(value, list | tuple) or not value:
        raise where.fail(f"must be a model name or a list of them (got {show(value)})")
    names = [text(v, where) for v in value]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise where.fail(f"names {', '.join(twice)} more than once")
    bad = [n for n in names if "@" in n]
    if bad:
        raise where.fail(f"a model name in a list cannot hold '@' (got {bad[0]!r})")
    return names[0] if len(names) == 1 else tuple(names)


VARIANT_KEYS = ("system", "user", "messages")


def prompt_variants(value: Any, where: Where) -> dict[str, Any]:
    """Named prompt variants: ``{name: "user template"}`` or ``{name: {system, user}}``
    / ``{name: {messages}}``; from the command line ``NAME=TEMPLATE`` (repeatable).
    Python: a variant may also be a function of the row (as ``prompt``)."""
    if isinstance(value, list | tuple) and not where.from_file:
        pairs = {}
        for item in value:
            name, sep, template = str(item).partition("=")
            if not sep or not name.strip():
                raise where.fail(f"must be NAME=TEMPLATE (got {show(item)})")
            pairs[name.strip()] = template
        value = pairs
    if not isinstance(value, Mapping) or (not value and where.from_file):
        raise where.fail(f"must be a table of named prompts (got {show(value)})")
    out: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    for name, spec in value.items():
        at = where.at(str(name))
        if not isinstance(name, str) or not name or "@" in name or "/" in name:
            problems.append((at.label, "a variant name is a non-empty name without '@' or '/'"))
            continue
        try:
            if callable(spec) or isinstance(spec, str):
                out[name] = {"user": prompt(spec, at)}
                continue
            if not isinstance(spec, Mapping):
                raise at.fail(f"must be a template or a table {{system, user}} (got {show(spec)})")
            for key in spec:
                if key not in VARIANT_KEYS:
                    raise at.at(str(key)).fail("unknown key" + suggest(str(key), VARIANT_KEYS))
            if ("messages" in spec) == ("user" in spec):
                raise at.fail("give either user (and system) or messages")
            entry: dict[str, Any] = {}
            if "messages" in spec:
                entry["messages"] = messages(spec["messages"], at.at("messages"))
            else:
                entry["user"] = prompt(spec["user"], at.at("user"))
                if spec.get("system") is not None:
                    entry["system"] = template_text(spec["system"], at.at("system"))
            out[name] = entry
        except Invalid as exc:
            problems.extend(exc.problems)
    if problems:
        raise Invalid(problems)
    return out


def cache_location(value: Any, where: Where) -> str | None:
    """The response cache: a directory (its ``responses.sqlite``) or a ``.sqlite`` file;
    ``true`` (or a bare --cache) the default, ``$BATCHRUN_CACHE`` or
    ``~/.cache/batchrun``; ``false`` none."""
    if value is False:
        return None
    if value is True or value == DEFAULT_CACHE_FLAG:
        return os.environ.get("BATCHRUN_CACHE") or os.path.expanduser("~/.cache/batchrun")
    return path_value(value, where)


DEFAULT_CACHE_FLAG = "\0default"


def json_schema(value: Any, where: Where) -> dict[str, Any]:
    """An object schema, valid against its meta-schema (checked before any request)."""
    from batchrun._schemas import schema_problem

    if not isinstance(value, Mapping):
        raise where.fail(f"must be a JSON object schema (got {kind_of(value)})")
    schema = dict(value)
    if schema.get("type", "object") != "object" or not isinstance(schema.get("properties"), dict):
        raise where.fail('the top level must be {"type": "object", "properties": {...}}')
    problem = schema_problem(schema)
    if problem is not None:
        raise where.fail(f"not a valid JSON Schema: {problem}")
    return schema


PRICE_KEYS = ("file", "models")


def prices(value: Any, where: Where) -> Any:
    """The user's model prices: a price file (a path; ``--prices FILE``), or a job
    file's [prices] table (``file = "..."`` and/or ``[prices.models."NAME"]`` entries),
    or in Python a dict of model -> entry (or ``{"file": ..., "models": {...}}``). A
    file alone stays its path; entries make a `batchrun._settings.Prices`. Every entry
    is checked here, before anything is sent.

    >>> prices({"m": {"input": 1, "output": 2}}, Where("prices=")).models["m"]["input"]
    1
    """
    from batchrun._cost.pricefile import model_prices
    from batchrun._values import Prices

    if isinstance(value, Prices):  # built in Python: its entries held to the same rules
        wrong: list[str] = []
        model_prices(value.models, where.label, wrong)
        if wrong:
            raise Invalid([("", problem) for problem in wrong])
        return value
    if value is None:
        return value
    if isinstance(value, str | os.PathLike):
        return existing_file(os.fspath(value), where)
    if not isinstance(value, Mapping):
        raise where.fail(
            f"must be a price file's path or a table of model prices (got {show(value)})"
        )
    table_form = where.from_file or (bool(value) and set(value) <= set(PRICE_KEYS))
    problems: list[tuple[str, str]] = []
    file: str | None = None
    models: Any = value
    if table_form:
        problems.extend(unknown_keys(value, PRICE_KEYS, where))
        if value.get("file") is not None:
            try:
                file = existing_file(value["file"], where.at("file"))
            except Invalid as exc:
                problems.extend(exc.problems)
        models = value.get("models", {})
        if not isinstance(models, Mapping):
            problems.append((where.at("models").label, f"must be a table (got {show(models)})"))
            models = {}
    at = where.at("models").label if table_form else where.label
    found: list[str] = []
    model_prices(models, at, found)
    problems.extend(("", problem) for problem in found)
    if problems:
        raise Invalid(problems)
    if not models:
        return file
    entries = {str(name): dict(entry) for name, entry in models.items()}
    return Prices(file, entries)


def unknown_keys(
    table: Mapping[Any, Any], known: Sequence[str], where: Where
) -> list[tuple[str, str]]:
    """An "unknown key" problem, with the known key it is nearest to, for each key of
    ``table`` not in ``known``."""
    return [
        (where.at(str(key)).label, "unknown key" + suggest(str(key), known))
        for key in table
        if key not in known
    ]


def table_problems(
    value: Any, known: Sequence[str], required: str | None, where: Where, *, what: str = "a table"
) -> list[tuple[str, str]]:
    """The first problems of a table of settings: it fails at once when ``value`` is no
    table (``must be {what}``); else an "unknown key" for each key not in ``known``, then
    "required" when the ``required`` key (if any) is missing (None)."""
    if not isinstance(value, Mapping):
        raise where.fail(f"must be {what} (got {show(value)})")
    problems = unknown_keys(value, known, where)
    if required is not None and value.get(required) is None:
        problems.append((f"{where.label}.{required}", "required"))
    return problems


def _method_problems(method: Any, where: Where) -> list[tuple[str, str]]:
    """The problem with a confidence method's name, if it is given and not one."""
    if method is None or method in CONFIDENCE_METHODS:
        return []
    return [
        (
            where.label,
            f"must be one of {', '.join(CONFIDENCE_METHODS)} (got {show(method)})"
            + suggest(str(method), CONFIDENCE_METHODS),
        )
    ]


def evaluation(value: Any, where: Where) -> Any:
    """A `batchrun._settings.Evaluation` from an [eval] table or keyword dict."""
    from batchrun._values import Evaluation

    if value is None:
        return value
    if isinstance(value, Evaluation):  # built in Python: held to the same rules
        evaluation(dict(vars(value)), where)
        return value
    problems = table_problems(
        value,
        ("reference_column", "compare", "field", "normalize", "tolerance", "interval"),
        "reference_column",
        where,
    )
    reference = value.get("reference_column")
    if reference is not None and (not isinstance(reference, str) or not reference.strip()):
        problems.append(
            (
                f"{where.label}.reference_column",
                f"must be a non-empty string (got {show(reference)})",
            )
        )
    compare = value.get("compare") or "exact"
    if compare not in COMPARES:
        problems.append(
            (
                f"{where.label}.compare",
                f"must be one of {', '.join(COMPARES)} (got {compare!r})"
                + suggest(str(compare), COMPARES),
            )
        )
    field = value.get("field")
    if field is None and compare == "json_field":
        problems.append((f"{where.label}.field", "required"))
    elif field is not None and compare == "exact":
        problems.append(
            (f"{where.label}.field", 'only applies to compare = "json_field" or "number"')
        )
    tolerance = value.get("tolerance", 0)
    if isinstance(tolerance, bool) or not isinstance(tolerance, int | float) or tolerance < 0:
        problems.append(
            (f"{where.label}.tolerance", f"must be a number of 0 or more (got {show(tolerance)})")
        )
    elif tolerance and compare != "number":
        problems.append((f"{where.label}.tolerance", 'only applies to compare = "number"'))
    for key in ("interval", "normalize"):
        flag = value.get(key, True)
        if not isinstance(flag, bool):
            problems.append((f"{where.label}.{key}", f"must be true or false (got {show(flag)})"))
    if problems:
        raise Invalid(problems)
    return Evaluation(
        str(reference),
        str(compare),
        field,
        bool(value.get("normalize", True)),
        tolerance=float(tolerance) if not isinstance(tolerance, bool) else 0.0,
        interval=bool(value.get("interval", True)),
    )


def confidence(value: Any, where: Where) -> Any:
    """A `batchrun._settings.Confidence` from a method name ("logprobs"), a
    [confidence] table or a keyword dict."""
    from batchrun._values import Confidence

    if value is None or isinstance(value, Confidence):
        return value
    if isinstance(value, str):
        value = {"method": value}
    problems = table_problems(
        value,
        ("method", "label_field", "labels", "top_logprobs", "samples", "score_field"),
        "method",
        where,
        what="a method name or a table",
    )
    method = value.get("method")
    problems.extend(_method_problems(method, where.at("method")))
    for key in ("label_field", "score_field"):
        field = value.get(key)
        if field is not None and (not isinstance(field, str) or not field.strip()):
            problems.append(
                (f"{where.label}.{key}", f"must be a non-empty string (got {show(field)})")
            )
    labels = value.get("labels") or ()
    if isinstance(labels, str) or not isinstance(labels, list | tuple):
        problems.append(
            (f"{where.label}.labels", f"must be a list of strings (got {show(labels)})")
        )
        labels = ()
    elif not all(isinstance(label, str) and label for label in labels):
        problems.append((f"{where.label}.labels", "must be a list of non-empty strings"))
    numbers: dict[str, int] = {}
    for key, low, high, default in (
        ("top_logprobs", 0, MAX_TOP_LOGPROBS, 5),
        ("samples", 2, 128, 5),
    ):
        number = _number(value.get(key, default), where)
        if number is None or not number.is_integer() or not low <= number <= high:
            problems.append(
                (
                    f"{where.label}.{key}",
                    f"must be a whole number from {low} to {high} (got {show(value.get(key))})",
                )
            )
        else:
            numbers[key] = int(number)
    if problems:
        raise Invalid(problems)
    return Confidence(
        str(method),
        value.get("label_field"),
        tuple(str(label) for label in labels),
        top_logprobs=numbers["top_logprobs"],
        samples=numbers["samples"],
        score_field=value.get("score_field"),
    )


def cascade(value: Any, where: Where) -> Any:
    """A `batchrun._settings.Cascade` from a list of models (``["weak", "strong"]``), a
    [cascade] table or a keyword dict (``{"models": [...], "escalate_below": 0.8}``)."""
    from batchrun._values import Cascade

    if value is None or isinstance(value, Cascade):
        return value
    if isinstance(value, list | tuple):
        value = {"models": value}
    problems = table_problems(
        value,
        ("models", "escalate_below", "escalate_when", "confidence"),
        None,
        where,
        what="a list of models or a table",
    )
    models = value.get("models")
    if isinstance(models, str) or not isinstance(models, list | tuple):
        problems.append((f"{where.label}.models", f"must be a list of models (got {show(models)})"))
        models = ()
    elif not all(isinstance(m, str) and m.strip() for m in models):
        problems.append((f"{where.label}.models", "must be a list of model names"))
    elif len(models) < 2:
        problems.append((f"{where.label}.models", "a cascade needs two models at least"))
    elif len(set(models)) != len(models):
        problems.append((f"{where.label}.models", "names a model twice"))
    below = value.get("escalate_below", (0.8,))
    below = list(below) if isinstance(below, list | tuple) else [below]
    thresholds: list[float] = []
    for item in below:
        number = _number(item, where)
        if number is None or not 0.0 < number <= 1.0:
            problems.append(
                (
                    f"{where.label}.escalate_below",
                    f"must be above 0 and at most 1 (got {show(item)})",
                )
            )
        else:
            thresholds.append(number)
    stages = len(models) - 1
    if models and len(below) not in (1, stages):
        problems.append(
            (
                f"{where.label}.escalate_below",
                f"give one threshold, or one per stage but the last ({stages}), not {len(below)}",
            )
        )
    when = value.get("escalate_when")
    if when is not None and when not in CASCADE_WHEN:
        problems.append(
            (
                f"{where.label}.escalate_when",
                f"must be {' or '.join(CASCADE_WHEN)} (got {show(when)})",
            )
        )
    method = value.get("confidence")
    problems.extend(_method_problems(method, where.at("confidence")))
    if problems:
        raise Invalid(problems)
    return Cascade(
        tuple(str(m) for m in models),
        tuple(thresholds),
        None if when is None else str(when),
        None if method is None else str(method),
    )


# -- endpoint pools ------------------------------------------------------------------------
ENDPOINT_KEYS = (
    "base_url", "api_key_env", "api_key_file", "auth", "auth_header", "headers",
    "rpm", "tpm", "concurrency", "weight", "models", "prices", "batch",
    "sim_rpm", "sim_tpm", "sim_fault",
)  # fmt: skip
"""The keys of an ``[endpoints.NAME]`` table (`batchrun._settings.Endpoint`)."""
SIM_KEYS = ("sim_rpm", "sim_tpm", "sim_fault")
_ENDPOINT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def endpoint_name(value: Any, where: Where) -> str:
    """A pool endpoint's name: it names the endpoint in result lines, summaries and
    file names, so it is short and plain.

    >>> endpoint_name("azure-eu", Where("--endpoint"))
    'azure-eu'
    """
    if not isinstance(value, str) or not _ENDPOINT_NAME.fullmatch(value):
        raise where.fail(
            "an endpoint's name is 1 to 64 letters, digits, '_' or '-', starting with a "
            f"letter or digit (got {show(value)})"
        )
    return value


def endpoints(value: Any, where: Where) -> dict[str, Any]:
    """A run's endpoint pool: name -> `batchrun._settings.Endpoint`, from a job file's
    ``[endpoints.NAME]`` tables, a dict of name -> table (Python), or a pool file's
    path (``--endpoints FILE``; ``endpoints = "pool.toml"`` in a job file): a TOML
    file of ``[endpoints.NAME]`` tables, read like a job file (keys refused, paths
    relative to it). Names differ also when case is ignored (they name files).

    >>> pool = endpoints({"b": {"base_url": "sim", "sim_rpm": 600}}, Where("endpoints="))
    >>> pool["b"].identity, pool["b"].sim_rpm
    ('sim:b', 600)
    """
    if value is None:
        return {}
    if isinstance(value, str | os.PathLike):
        return _pool_file(os.fspath(value), where)
    if not isinstance(value, Mapping):
        raise where.fail(
            f"must be a table of named endpoints ([endpoints.NAME]) or a pool file "
            f"(got {show(value)})"
        )
    problems: list[tuple[str, str]] = []
    refused = False
    out: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for name, table in value.items():
        at = where.at(_key(name))
        try:
            endpoint_name(name, Where(where.label))
            twin = seen.setdefault(name.lower(), name)
            if twin != name:
                raise at.fail(f"names the same endpoint as {twin!r} (names ignore case)")
            out[name] = _endpoint(name, table, at)
        except Invalid as exc:
            refused = refused or isinstance(exc, Refused)
            problems.extend(exc.problems)
    if problems:
        raise (Refused if refused else Invalid)(problems)
    return out


def _endpoint(name: str, table: Any, where: Where) -> Any:
    """One ``[endpoints.NAME]`` table (or an `Endpoint` built in Python, held to the
    same rules) as an `Endpoint`."""
    from batchrun._values import Endpoint

    simulated = False
    if isinstance(table, Endpoint):
        if table.name != name:
            raise where.fail(f"holds the endpoint named {table.name!r}")
        simulated = table.simulated
        table = table.declared()
    if not isinstance(table, Mapping):
        raise where.fail(f"must be a table of the endpoint's keys (got {show(table)})")
    problems: list[tuple[str, str]] = []
    refused = False
    clean: dict[str, Any] = {}
    for key, item in table.items():
        at = where.at(_key(key))
        if key not in ENDPOINT_KEYS:
            if str(key).lower() in SECRET_KEY_NAMES:
                if not where.from_file:  # a job or pool file: its secret scan says it
                    problems.append((at.label, f"API keys are never read here; {USE_ENV}"))
                continue
            problems.append((at.label, "unknown key" + suggest(str(key), ENDPOINT_KEYS)))
            continue
        if item is None:  # Python: not given
            continue
        try:
            clean[key] = _ENDPOINT_CHECKS[key](item, at)
        except Invalid as exc:
            refused = refused or isinstance(exc, Refused)
            problems.extend(exc.problems)
    if "base_url" not in clean and "base_url" not in table:
        problems.append((where.at("base_url").label, "required"))
    sim_keys = [k for k in SIM_KEYS if k in clean]
    if sim_keys and clean.get("base_url", SIM) != SIM and not simulated:
        problems.extend(
            (where.at(k).label, 'only applies to base_url = "sim" (a simulated endpoint)')
            for k in sim_keys
        )
    if problems:
        raise (Refused if refused else Invalid)(problems)
    return Endpoint(name, simulated=simulated, **clean)


def endpoint_models(value: Any, where: Where) -> tuple[tuple[str, str], ...]:
    """The job's models an endpoint serves: a list of names, or a table of job model
    -> its name there (an Azure deployment, a relay's alias).

    >>> endpoint_models({"gpt-4o": "gpt4o-eu"}, Where("models")), endpoint_models(["m"], Where("m"))
    ((('gpt-4o', 'gpt4o-eu'),), (('m', 'm'),))
    """
    if isinstance(value, Mapping):
        pairs = [(k, v) for k, v in value.items()]
    elif isinstance(value, list | tuple) and not isinstance(value, str):
        pairs = [tuple(v) if isinstance(v, list | tuple) else (v, v) for v in value]
    else:
        pairs = [(value, value)] if isinstance(value, str) else []
    if not pairs or any(len(p) != 2 for p in pairs):
        raise where.fail(
            f"must be a list of the job's model names, or a table of job model = "
            f"name there (got {show(value)})"
        )
    out: list[tuple[str, str]] = []
    for job_model, remote in pairs:
        text(job_model, where)
        text(remote, where.at(_key(job_model)))
        if any(m == job_model for m, _ in out):
            raise where.fail(f"names {job_model!r} twice")
        out.append((str(job_model), str(remote)))
    return tuple(out)


def sim_faults(value: Any, where: Where) -> tuple[tuple[int, float], ...]:
    """A simulated endpoint's injected statuses in the simulator's own language
    (``batchrun sim --error-rate STATUS=P``): a table ``{ 503 = 0.2 }``, the text
    ``"503=0.2,429=0.05"`` or a list of such texts; checked by the simulator's rules
    (a 4xx or 5xx status, probabilities from 0 to 1 adding up to 1 at most).

    >>> sim_faults("503=0.2, 401=0.01", Where("sim_fault"))
    ((503, 0.2), (401, 0.01))
    """
    from batchrun.sim.config import SimConfig

    items: list[tuple[Any, Any]] = []
    if isinstance(value, Mapping):
        items = list(value.items())
    elif isinstance(value, str | list | tuple):
        texts = value.split(",") if isinstance(value, str) else value
        for entry in texts:
            if isinstance(entry, list | tuple) and len(entry) == 2:
                items.append((entry[0], entry[1]))
                continue
            status, sep, rate = str(entry).partition("=")
            if not sep:
                raise where.fail(f"must be STATUS=P, e.g. 503=0.2 (got {show(entry)})")
            items.append((status.strip(), rate.strip()))
    else:
        raise where.fail(f"must be a table of STATUS = probability (got {show(value)})")
    try:
        rates = tuple((int(status), float(rate)) for status, rate in items)
        if any(isinstance(x, bool) for pair in items for x in pair):
            raise ValueError("a status and a probability are numbers")
        SimConfig(error_rates=dict(rates))
    except (TypeError, ValueError) as exc:
        raise where.fail(f"{exc} (STATUS = probability, e.g. 503 = 0.2)") from None
    return rates


_ENDPOINT_CHECKS: dict[str, Check] = {
    "base_url": base_url,
    "api_key_env": env_name,
    "api_key_file": existing_file,
    "auth": choice(*AUTH_STYLES),
    "auth_header": text,
    "headers": headers,
    "rpm": quota,
    "tpm": quota,
    "concurrency": positive_int,
    "weight": positive_number,
    "models": endpoint_models,
    "prices": prices,
    "batch": boolean,
    "sim_rpm": positive_int,
    "sim_tpm": positive_int,
    "sim_fault": sim_faults,
}


def _pool_file(path: str, where: Where) -> dict[str, Any]:
    """The endpoints of a pool file (see `endpoints`); its problems are the file's, one
    a line with their key paths, like a job file's (`batchrun.errors.JobFileError`)."""
    import tomllib

    from batchrun._checks import secret_problems
    from batchrun.errors import JobFileError

    found = existing_file(path, where)
    try:
        with open(found, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise where.fail(f"cannot read the pool file {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise where.fail(f"the pool file {path} is not valid TOML: {exc}") from None
    problems = secret_problems(data, "")
    problems.extend(
        f"{_key(key)}: unknown key (a pool file holds [endpoints.NAME] tables)"
        for key in data
        if key != "endpoints" and str(key).lower() not in SECRET_KEY_NAMES
    )
    table = data.get("endpoints")
    pool: dict[str, Any] = {}
    if not isinstance(table, Mapping) or not table:
        problems.append("endpoints: no [endpoints.NAME] table")
    else:
        inner = Where("endpoints", Path(found).parent, from_file=True, entry=where.entry)
        try:
            pool = endpoints(table, inner)
        except Invalid as exc:
            problems.extend(f"{w}: {m}" if w else m for w, m in exc.problems)
    if problems:
        raise JobFileError(found, problems)
    return pool


def endpoint_pairs(check: Check, form: str) -> Check:
    """An option giving one key of a pool's endpoints, ``NAME=VALUE`` (repeatable):
    ``--endpoint NAME=URL``, ``--endpoint-key-env NAME=VARIABLE``; name -> value."""

    def pairs(value: Any, where: Where) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for item in value if isinstance(value, list | tuple) else (value,):
            name, sep, rest = str(item).partition("=")
            if not sep or not name.strip():
                shown = "a value holding a credential" if "@" in str(item) else show(item)
                raise where.fail(f"must be {form} (got {shown})")
            name = endpoint_name(name.strip(), where)
            if name in out:
                raise where.fail(f"names the endpoint {name!r} twice")
            out[name] = check(rest.strip(), where)
        return out

    return pairs


def _key(name: Any) -> str:
    shown = str(name)
    return shown if re.fullmatch(r"[A-Za-z0-9_-]+", shown) else json.dumps(shown)


key_path = _key


def secret_problems(value: Any, where: str) -> list[str]:
    """Refuse anything that looks like a literal key, wherever it is (a job file, a
    pool file: `batchrun._checks.endpoints`)."""
    out: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key_path(key)}" if where else key_path(key)
            # below [response_format]'s own keys is a schema: a property may be named "token"
            in_schema = where.startswith("response_format.")
            if not in_schema and isinstance(key, str) and key.lower() in SECRET_KEY_NAMES:
                out.append(f"{path}: API keys are never read from a job file; {USE_ENV}")
                continue
            out.extend(secret_problems(item, path))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            out.extend(secret_problems(item, f"{where}[{i}]"))
    elif isinstance(value, str) and looks_like_key(value):
        out.append(f"{where}: looks like a literal API key; {USE_ENV}")
    return out
