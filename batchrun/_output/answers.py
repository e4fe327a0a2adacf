"""Structured outputs: a JSON schema's top-level fields as typed output columns.

When a job gives a JSON schema, each response's content is parsed and its top-level
properties become columns of the Parquet output, typed from the schema: string ->
string, integer -> int64, number -> float64, boolean -> bool, anything nested (object,
array, anyOf, $ref) -> its JSON text. Content that is not JSON, not an object, lacks a
required field, has a wrongly typed one, or breaks any other rule of the whole schema
(nested objects and arrays, enums, additionalProperties..., checked with
`batchrun._output.quality.SchemaValidator`) gives no values and a ``parse_error``: a model's
bad answer is data to look at, never a crash.

    >>> schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    >>> parse_content('```json\\n{"n": 3}\\n```', schema)
    ({'n': 3}, None)
    >>> parse_content('{"n": "three"}', schema)
    (None, "field 'n': expected integer, got string")
    >>> parse_content('{"n": 3, "tags": [1]}', {**schema, "additionalProperties": False})
    (None, "$: Additional properties are not allowed ('tags' was unexpected)")
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from batchrun._schemas import SchemaValidator, compile_schema, load_json, strip_fences

__all__ = ["load_json", "parse_content", "parsed_columns", "strip_fences"]

_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
}
_JSON_TYPE_NAMES = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
    type(None): "null",
}


def _properties(schema: Mapping[str, Any] | None) -> Mapping[str, Any]:
    if not isinstance(schema, Mapping):
        return {}
    props = schema.get("properties")
    return props if isinstance(props, Mapping) else {}


def _scalar_kind(prop: Any) -> str | None:
    """'string' | 'integer' | 'number' | 'boolean' for a flat property, else None (JSON text).

    A ``["string", "null"]`` union (how OpenAI's strict mode spells optional) counts as
    its non-null type; an enum without a type takes the type of its values.
    """
    if not isinstance(prop, Mapping):
        return None
    kind = prop.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if k != "null"]
        kind = non_null[0] if len(non_null) == 1 else None
    if kind is None and isinstance(prop.get("enum"), list) and prop["enum"]:
        kinds = {_JSON_TYPE_NAMES.get(type(v)) for v in prop["enum"] if v is not None}
        kind = kinds.pop() if len(kinds) == 1 else None
    return kind if kind in _ARROW_TYPES else None


def parsed_columns(schema: Mapping[str, Any] | None) -> list[tuple[str, pa.DataType]]:
    """(name, Arrow type) for each top-level property, in schema order.

    >>> parsed_columns({"properties": {"label": {"enum": ["a", "b"]}, "tags": {"type": "array"}}})
    [('label', DataType(string)), ('tags', DataType(string))]
    """
    columns = []
    for name, prop in _properties(schema).items():
        kind = _scalar_kind(prop)
        columns.append((str(name), _ARROW_TYPES[kind] if kind else pa.string()))
    return columns


def _type_name(value: Any) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    kind: str | None  # None: kept as JSON text
    enum: tuple[Any, ...] | None


@dataclass(frozen=True, slots=True)
class _Compiled:
    schema: Any  # held so its id() cannot be reused while cached
    fields: tuple[_Field, ...]
    required: tuple[str, ...]
    validator: SchemaValidator  # the whole schema, for what the fields do not check


_COMPILED: dict[int, _Compiled] = {}
_COMPILED_MAX = 64


def _as_json_schema(schema: Mapping[str, Any] | None) -> Any:
    """The schema for the validator: no schema (None) accepts any JSON object."""
    if isinstance(schema, dict):
        return schema
    return dict(schema) if isinstance(schema, Mapping) else True


def _compile(schema: Mapping[str, Any] | None) -> _Compiled:
    """The schema's fields, worked out once: parse_content runs once per response."""
    cached = _COMPILED.get(id(schema))
    if cached is not None and cached.schema is schema:
        return cached
    fields = []
    for name, prop in _properties(schema).items():
        enum = prop.get("enum") if isinstance(prop, Mapping) else None
        fields.append(
            _Field(
                str(name),
                _scalar_kind(prop),
                tuple(enum) if isinstance(enum, list) and enum else None,
            )
        )
    required = schema.get("required") if isinstance(schema, Mapping) else None
    compiled = _Compiled(
        schema,
        tuple(fields),
        tuple(str(r) for r in required) if isinstance(required, list) else (),
        compile_schema(_as_json_schema(schema)),
    )
    if len(_COMPILED) >= _COMPILED_MAX:
        _COMPILED.clear()
    _COMPILED[id(schema)] = compiled
    return compiled


def _coerce(field: _Field, value: Any) -> tuple[Any, str | None]:
    """The column value for one field, or an error saying why it does not fit."""
    if value is None:
        return None, None
    kind = field.kind
    if kind is None:
        return orjson.dumps(value).decode(), None
    value_type = type(value)
    if kind == "string":
        ok = value_type is str or isinstance(value, str)
    elif kind == "boolean":
        ok = value_type is bool
    elif kind == "integer":
        if value_type is float and value.is_integer():
            value = int(value)
            value_type = int
        ok = value_type is int
    else:  # number
        ok = value_type is float or value_type is int
        value = float(value) if ok else value
    if not ok:
        return None, f"field '{field.name}': expected {kind}, got {_type_name(value)}"
    if field.enum is not None and value not in field.enum:
        allowed = ", ".join(str(v) for v in field.enum)
        return None, f"field '{field.name}': {value!r} is not one of {allowed}"
    return value, None


def parse_content(
    content: str | None, schema: Mapping[str, Any] | None
) -> tuple[dict[str, Any] | None, str | None]:
    """(typed values by column, None) or (None, parse_error) for one response's content.

    Every top-level property gets a key (None when an optional field is absent); fields
    the schema does not name are ignored. A schema without properties only checks that
    the content is a JSON object.
    """
    data, error = load_json(content)
    if error is not None:
        return None, error
    if type(data) is not dict:
        return None, f"expected a JSON object, got {_type_name(data)}"
    compiled = _compile(schema)
    missing = [name for name in compiled.required if name not in data]
    if missing:
        return None, "missing required field(s): " + ", ".join(missing)
    values: dict[str, Any] = {}
    for field in compiled.fields:
        value, error = _coerce(field, data.get(field.name))
        if error is not None:
            return None, error
        values[field.name] = value
    error = compiled.validator.error(data)
    if error is not None:
        return None, error
    return values, None
