"""What a ``response_format`` may be, and how each spelling becomes one
`batchrun._settings.ResponseFormat`.

A user has a schema in hand in whatever shape the last tool gave it, so every way in
(Python's ``response_format=``, a job file's ``[response_format]``, the command line's
``--response-format`` / ``--schema FILE``) takes all of these, and the same schema
gives the same format, the same request bodies and the same typed Parquet columns
whichever spelling carried it:

- a Pydantic model class (named after the class);
- a plain JSON Schema, a mapping whose top level has ``type``/``properties``/
  ``$schema``/``$defs``, or a ``.json`` file holding one: sent as a strict
  ``json_schema`` format named after its ``title``, else the job's name;
- OpenAI's envelope as the API takes it, ``{"type": "json_schema", "json_schema":
  {"name", "schema", "strict", "description"}}`` (``strict`` defaults to false there,
  as in the API);
- the short form ``{"type": "json_schema", "name", "schema" or "schema_file",
  "strict"}`` (a job file's table; ``strict`` defaults to true);
- ``"json_object"`` or ``"text"`` (or ``{"type": "json_object"}``).

A value that is none of these gets one message naming the first problem's path and
the accepted forms (`ACCEPTED`).

    >>> from batchrun._checks import Where
    >>> rf = response_format({"title": "Label", "type": "object",
    ...                       "properties": {"x": {"type": "string"}}}, Where("rf="))
    >>> rf.body()["json_schema"]["name"], rf.strict
    ('Label', True)
    >>> response_format("json_object", Where("rf=")).body()
    {'type': 'json_object'}
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchrun._checks import (
    FORMAT_TYPES,
    SECRET_KEY_NAMES,
    Invalid,
    Where,
    existing_file,
    json_schema,
    kind_of,
    show,
    suggest,
)
from batchrun._values import ResponseFormat, format_name

ACCEPTED = (
    "a response format is one of: a JSON Schema (type object with properties; or a .json "
    'file holding one); OpenAI\'s {"type": "json_schema", "json_schema": {"name", '
    '"schema", "strict"}}; the short {"type": "json_schema", "name", "schema"}; '
    '"json_object"; "text"; a Pydantic model class'
)
SCHEMA_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
SCHEMA_MARKERS = ("properties", "$schema", "$defs", "definitions", "$id")
"""Top-level keys only a JSON Schema has (a response format never does)."""
SHORT_KEYS = ("type", "name", "schema", "schema_file", "strict", "description")
ENVELOPE_KEYS = ("name", "schema", "strict", "description")
_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


def response_format(value: Any, where: Where) -> ResponseFormat | None:
    """The `batchrun._settings.ResponseFormat` a value spells (see the module doc), or
    `Invalid` with the path of the problem."""
    if value is None or isinstance(value, ResponseFormat):
        return value
    if isinstance(value, type):
        if hasattr(value, "model_json_schema"):  # a Pydantic model class
            schema = _strict_schema(value.model_json_schema())
            return ResponseFormat("json_schema", value.__name__[:64], json_schema(schema, where))
        raise _unknown(where, f"{value.__name__} is a class but not a Pydantic model")
    if isinstance(value, str | os.PathLike):
        return _from_text(os.fspath(value), where)
    if not isinstance(value, Mapping):
        raise _unknown(where, f"got {kind_of(value)}")
    if "json_schema" in value:
        return _envelope(value, where)
    kind = value.get("type")
    if kind in FORMAT_TYPES or (kind is None and not _looks_like_schema(value)):
        return _short_form(value, where)
    if _looks_like_schema(value):
        return _plain_schema(value, where)
    hint = suggest(str(kind), FORMAT_TYPES) if isinstance(kind, str) else ""
    raise _unknown(
        where.at("type"),
        f"must be one of {', '.join(FORMAT_TYPES)}, or a JSON Schema's type "
        f"(object) (got {show(kind)}){hint}",
    )


def _looks_like_schema(value: Mapping[str, Any]) -> bool:
    kind = value.get("type")
    if isinstance(kind, str) and kind in SCHEMA_TYPES:
        return True
    if isinstance(kind, list) and kind and all(k in SCHEMA_TYPES for k in kind):
        return True
    return kind is None and any(key in value for key in SCHEMA_MARKERS)


def _unknown(where: Where, problem: str) -> Invalid:
    """The one message for a value that is no accepted form."""
    return where.fail(f"{problem}; {ACCEPTED}")


def _from_text(text: str, where: Where) -> ResponseFormat | None:
    """``json_object``, ``text``, a .json file's path, or (command line) inline JSON."""
    stripped = text.strip()
    if stripped in ("json_object", "text"):
        return ResponseFormat(stripped)
    if stripped == "json_schema":
        raise _unknown(where, '"json_schema" needs a schema')
    if stripped.startswith("{") and not where.from_file:
        try:
            parsed = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise _unknown(where, f"not valid JSON: {exc}") from exc
        return response_format(parsed, where)
    looks_like_path = stripped.lower().endswith(".json") or os.sep in stripped
    if not looks_like_path and not Path(stripped).expanduser().is_file():
        raise _unknown(where, f"{show(text)} is not a format type" + suggest(text, FORMAT_TYPES))
    path = Path(existing_file(stripped, where))
    data = _read_json(path, where)
    if not isinstance(data, Mapping):
        raise _unknown(where, f"{path.name} holds {kind_of(data)}, not a JSON object")
    # a schema_file inside the file is relative to the file
    return response_format(data, Where(where.label, path.parent, where.from_file))


def _read_json(path: Path, where: Where) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise where.fail(f"{path.name} is not valid JSON: {exc}") from exc


def _plain_schema(value: Mapping[str, Any], where: Where) -> ResponseFormat:
    """A JSON Schema as it is: strict, named after its title (else, later, the job)."""
    schema = json_schema(value, where)
    return ResponseFormat("json_schema", format_name(schema.get("title")), schema, True)


def _envelope(value: Mapping[str, Any], where: Where) -> ResponseFormat:
    """OpenAI's ``{"type": "json_schema", "json_schema": {...}}``, meaning what it means
    to the API (``strict`` false unless said)."""
    problems: list[tuple[str, str]] = []
    for key in value:
        if key not in ("type", "json_schema"):
            problems.append((where.at(str(key)).label, "unknown key beside json_schema"))
    if value.get("type", "json_schema") != "json_schema":
        problems.append(
            (where.at("type").label, f'must be "json_schema" (got {show(value.get("type"))})')
        )
    inner = value["json_schema"]
    if not isinstance(inner, Mapping):
        raise _unknown(where.at("json_schema"), f"must be an object (got {kind_of(inner)})")
    at = where.at("json_schema")
    for key in inner:
        if key not in ENVELOPE_KEYS:
            problems.append(
                (at.at(str(key)).label, "unknown key" + suggest(str(key), ENVELOPE_KEYS))
            )
    if "schema" not in inner:
        problems.append((at.at("schema").label, "required"))
    return _json_schema_format(inner, at, problems, default_strict=False, named=False)


def _short_form(value: Mapping[str, Any], where: Where) -> ResponseFormat:
    """A job file's table: ``type`` (json_schema when a schema is given), ``name``,
    ``schema`` or ``schema_file``, ``strict`` (default true)."""
    kind = value.get("type")
    mixed = [key for key in value if key in SCHEMA_MARKERS]
    if mixed:  # a schema's own keys beside a format's: which one was meant is unclear
        where_schema = 'under "schema"' if kind == "json_schema" else "on its own"
        raise _unknown(
            where.at(mixed[0]),
            f"a JSON Schema keyword beside type {show(kind)}: give the schema {where_schema} "
            '(a plain schema has type "object")',
        )
    problems: list[tuple[str, str]] = []
    for key in value:
        if key not in SHORT_KEYS and key not in SECRET_KEY_NAMES:  # those: the secret scan
            problems.append(
                (where.at(str(key)).label, "unknown key" + suggest(str(key), SHORT_KEYS))
            )
    if kind is None:
        if "schema" not in value and "schema_file" not in value:
            first = problems[0][0] if problems else where.at("type").label
            raise Invalid([(first, f"{problems[0][1] if problems else 'required'}; {ACCEPTED}")])
        kind = "json_schema"
    if kind != "json_schema":
        for key in ("schema", "schema_file", "name", "strict", "description"):
            if key in value:
                problems.append((where.at(key).label, 'only applies to type = "json_schema"'))
        if problems:
            raise Invalid(problems)
        return ResponseFormat(kind)
    inline, file_key = value.get("schema"), value.get("schema_file")
    if (inline is None) == (file_key is None):
        problems.append(
            (
                where.label,
                'json_schema needs exactly one of schema = { ... } or schema_file = "..."',
            )
        )
        raise Invalid(problems)
    fields = dict(value)
    if file_key is not None:
        at = where.at("schema_file")
        try:
            path = Path(existing_file(file_key, at))
            fields["schema"] = _read_json(path, at)
        except Invalid as exc:
            raise Invalid([*problems, *exc.problems]) from None
        return _json_schema_format(
            fields, at, problems, default_strict=True, named=True, schema_at=at
        )
    return _json_schema_format(fields, where, problems, default_strict=True, named=True)


def _json_schema_format(
    fields: Mapping[str, Any],
    where: Where,
    problems: list[tuple[str, str]],
    *,
    default_strict: bool,
    named: bool,
    schema_at: Where | None = None,
) -> ResponseFormat:
    """name / schema / strict / description of a json_schema format, checked. Without a
    name: "response" (``named``: the short form, as it always was), else the schema's
    title or, later, the job's name."""
    strict = fields.get("strict", default_strict)
    if not isinstance(strict, bool):
        problems.append((where.at("strict").label, f"must be true or false (got {show(strict)})"))
    name = fields.get("name")
    if name is not None and (not isinstance(name, str) or not _NAME.fullmatch(name)):
        problems.append(
            (where.at("name").label, f"must be 1-64 letters, digits, _ or - (got {show(name)})")
        )
    description = fields.get("description")
    if description is not None and not isinstance(description, str):
        problems.append((where.at("description").label, f"must be text (got {show(description)})"))
    schema: dict[str, Any] | None = None
    if "schema" in fields:
        try:
            schema = json_schema(fields["schema"], schema_at or where.at("schema"))
        except Invalid as exc:
            problems.extend(exc.problems)
    if problems:
        raise Invalid(problems)
    assert schema is not None
    if name is None:
        name = "response" if named else format_name(schema.get("title"))
    return ResponseFormat("json_schema", name, schema, bool(strict), description)


def _strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A Pydantic model's schema as OpenAI's strict mode wants it: no extra keys."""
    out = dict(schema)
    if out.get("type") == "object":
        out.setdefault("additionalProperties", False)
    return out


def response_format_setting(value: Any, where: Where) -> Any:
    """A `batchrun._settings.ResponseFormat` from any accepted spelling: a Pydantic model
    class, a plain JSON Schema (or a .json file of one), OpenAI's envelope, the short
    ``{type, name, schema}`` form, "json_object" or "text" (the ``check`` of the setting).
    """
    if isinstance(value, ResponseFormat):  # already parsed: only its shape is looked at
        if value.type not in FORMAT_TYPES:
            raise where.at("type").fail(
                f"must be one of {', '.join(FORMAT_TYPES)} (got {show(value.type)})"
            )
        if value.type == "json_schema" and not isinstance(value.schema, Mapping):
            raise where.at("schema").fail("a json_schema format needs a schema")
        return value
    return response_format(value, where)


__all__ = ["ACCEPTED", "response_format", "response_format_setting"]
