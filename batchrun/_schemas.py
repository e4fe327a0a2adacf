"""JSON answers and JSON Schemas: parse an answer (Markdown fences allowed), compile a
schema once, check a schema against its meta-schema, one readable line per error.

The bottom layer: used by the settings' checks (a schema is checked before anything is
sent), by the input stage and by the answer classification (`batchrun._output.quality`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import jsonschema_rs
import orjson

MAX_DETAIL = 200
"""The longest error detail kept, in characters."""


# -- JSON answers ----------------------------------------------------------------------
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*[ \t]*\r?\n(.*?)\r?\n?```\s*$", re.DOTALL)


def strip_fences(content: str) -> str:
    """Remove a Markdown code fence (```json ... ```) that models sometimes add.

    >>> strip_fences('```json\\n{"a": 1}\\n```')
    '{"a": 1}'
    """
    if "```" not in content:
        return content
    match = _FENCE.match(content)
    return match.group(1) if match else content


def load_json(content: str | None) -> tuple[Any, str | None]:
    """Parse response content as JSON (fences stripped): (value, None) or (None, error)."""
    if content is None:
        return None, "no content"
    text = strip_fences(content).strip()
    if not text:
        return None, "empty content"
    try:
        return orjson.loads(text), None
    except orjson.JSONDecodeError as exc:
        return None, f"invalid JSON: {exc}"


# -- schemas ---------------------------------------------------------------------------
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def json_path(parts: Iterable[str | int]) -> str:
    """``$.items[2].label`` for ['items', 2, 'label'] (odd keys quoted: ``$['a b']``)."""
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif _NAME.match(part):
            path += "." + part
        else:
            path += "[" + orjson.dumps(part).decode() + "]"
    return path


def one_line(text: str, limit: int = MAX_DETAIL) -> str:
    """Whitespace collapsed; a long text keeps its head and tail (the verb is at the end)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    keep = (limit - 5) // 2
    return text[:keep] + " ... " + text[-keep:]


def _error_line(error: jsonschema_rs.ValidationError) -> str:
    return one_line(f"{json_path(error.instance_path)}: {error.message}")


_TYPES = "string, number, integer, boolean, object, array, null"


def _schema_error_line(error: jsonschema_rs.ValidationError) -> str:
    """Like `_error_line`, for an error in a schema itself (a meta-schema failure)."""
    message = error.message
    if list(error.schema_path[-2:]) == ["type", "anyOf"]:  # the usual typo, made readable
        message = f"{orjson.dumps(error.instance).decode()} is not a type ({_TYPES})"
    if not error.instance_path:
        return one_line(message)
    return one_line(f"{json_path(error.instance_path)}: {message}")


class SchemaValidator:
    """A JSON schema compiled once; `error` says what is wrong with an instance.

    A schema that cannot be compiled does not raise: every instance then gets the
    error ``invalid schema: ...`` (check schemas before a run with `schema_problem`).

        >>> v = SchemaValidator({"type": "array", "items": {"type": "integer"}})
        >>> v.error([1, "2"])
        '$[1]: "2" is not of type "integer"'
    """

    __slots__ = ("schema", "problem", "_validator")

    def __init__(self, schema: Any) -> None:
        self.schema = schema
        self.problem: str | None = None
        self._validator: jsonschema_rs.Validator | None = None
        if not isinstance(schema, dict | bool):
            self.problem = f"must be a JSON object, got {type(schema).__name__}"
            return
        try:
            self._validator = jsonschema_rs.validator_for(schema, offline=True)
        except jsonschema_rs.ValidationError as exc:
            self.problem = _schema_error_line(exc)
        except ValueError as exc:  # defensive: the library's other complaints
            self.problem = one_line(str(exc))

    def error(self, instance: Any) -> str | None:
        """None when ``instance`` is valid, else one line: ``$.where: what``."""
        validator = self._validator
        if validator is None:
            return f"invalid schema: {self.problem}"
        if validator.is_valid(instance):
            return None
        for error in validator.iter_errors(instance):
            return _error_line(error)
        return "not valid against the schema"  # is_valid said no; be safe anyway

    def content_error(self, content: str | None) -> str | None:
        """None when the content is JSON (fences allowed) valid against the schema."""
        data, error = load_json(content)
        return error if error is not None else self.error(data)


_COMPILED: dict[int, SchemaValidator] = {}
COMPILED_MAX = 64


def compile_schema(schema: Any) -> SchemaValidator:
    """The `SchemaValidator` for a schema object, compiled once per object (cached by id)."""
    cached = _COMPILED.get(id(schema))
    if cached is not None and cached.schema is schema:
        return cached
    compiled = SchemaValidator(schema)
    if len(_COMPILED) >= COMPILED_MAX:
        _COMPILED.clear()
    _COMPILED[id(schema)] = compiled  # holds the schema, so its id cannot be reused
    return compiled


def schema_problem(schema: Any) -> str | None:
    """Why ``schema`` is not a usable JSON Schema (one line), or None when it is.

    Checks it against its draft's meta-schema (2020-12 unless ``$schema`` names
    another) and that it compiles: ``$ref`` targets exist, patterns are regexes.

        >>> schema_problem({"type": "object", "properties": {"n": {"enum": 3}}})
        '$.properties.n.enum: 3 is not of type "array"'
        >>> schema_problem({"type": "object", "properties": {"n": {"$ref": "#/$defs/n"}}})
        "Pointer '/$defs/n' does not exist"
    """
    # compile first: it fails offline on an unknown $schema, where the meta-schema
    # check would try to download it
    compiled = SchemaValidator(schema)
    if compiled.problem is not None:
        return compiled.problem
    try:
        jsonschema_rs.meta.validate(schema)
    except jsonschema_rs.ValidationError as exc:
        return _schema_error_line(exc)
    return None
