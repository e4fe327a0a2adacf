"""Deterministic values that fit a JSON schema (the subset structured outputs use).

Handles object/array/string/number/integer/boolean/null, ``enum``/``const``,
``required``, nesting, ``anyOf``/``oneOf``/``allOf``, ``$ref`` into ``$defs``, and the
usual bounds (min/max, lengths, item counts) and string formats. Choices are drawn
from a `random.Random` the caller seeds from the request, so the same request always
gets the same value. Recursive schemas stop at a fixed depth.

    >>> import random
    >>> fake_value({"type": "object", "properties": {"ok": {"type": "boolean"}},
    ...             "required": ["ok"]}, random.Random(1))
    {'ok': True}
"""

from __future__ import annotations

import random
import uuid
from typing import Any

MAX_DEPTH = 6
WORDS = (
    "alpha bravo cedar delta ember fjord garnet harbor iris juniper kestrel lumen "
    "maple nectar orbit pebble quartz river sierra tundra umber violet willow xenon "
    "yarrow zephyr"
).split()


def fake_value(schema: Any, rng: random.Random, root: Any = None, depth: int = 0) -> Any:
    """A value valid against `schema`; `root` resolves ``$ref`` (defaults to schema)."""
    if root is None:
        root = schema
    if schema is True or not isinstance(schema, dict) or not schema:
        return _string({}, rng)
    if "$ref" in schema:
        target = _resolve(root, schema["$ref"])
        if depth >= MAX_DEPTH:
            return _smallest(target, root)
        return fake_value(target, rng, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return rng.choice(enum)
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            if depth >= MAX_DEPTH:
                return _smallest(options[0], root, options)
            return fake_value(rng.choice(options), rng, root, depth + 1)
    if isinstance(schema.get("allOf"), list):
        merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                part = _resolve(root, part["$ref"]) if "$ref" in part else part
                _merge(merged, part)
        return fake_value(merged, rng, root, depth)
    kind = _kind(schema)
    if kind == "object":
        return _object(schema, rng, root, depth)
    if kind == "array":
        return _array(schema, rng, root, depth)
    if kind == "integer":
        return _integer(schema, rng)
    if kind == "number":
        return _number(schema, rng)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return _string(schema, rng)


def _kind(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        real = [k for k in kind if k != "null"]
        kind = real[0] if real else "null"
    if isinstance(kind, str):
        return kind
    if "properties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return "string"


def _resolve(root: Any, ref: Any) -> Any:
    if not isinstance(ref, str) or not ref.startswith("#"):
        return {}
    node = root
    for part in ref.lstrip("#").split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return {}
    return node


def _merge(into: dict[str, Any], part: dict[str, Any]) -> None:
    for key, value in part.items():
        if key == "properties" and isinstance(value, dict):
            into.setdefault("properties", {}).update(value)
        elif key == "required" and isinstance(value, list):
            into["required"] = list(dict.fromkeys([*into.get("required", []), *value]))
        else:
            into.setdefault(key, value)


def _smallest(schema: Any, root: Any, options: list[Any] | None = None, depth: int = 0) -> Any:
    """The cheapest valid value at the depth limit: null if allowed, else empty."""
    for option in options or [schema]:
        if isinstance(option, dict) and "$ref" in option:
            option = _resolve(root, option["$ref"])
        if not isinstance(option, dict):
            continue
        kind = option.get("type")
        if kind == "null" or (isinstance(kind, list) and "null" in kind):
            return None
    if isinstance(schema, dict) and "$ref" in schema:
        schema = _resolve(root, schema["$ref"])
    if not isinstance(schema, dict) or depth > MAX_DEPTH:
        return None
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return _smallest(schema[key][0], root, schema[key], depth + 1)
    if "const" in schema or "enum" in schema or "allOf" in schema:
        return fake_value(schema, random.Random(0), root, MAX_DEPTH + 1)
    kind = _kind(schema)
    if kind == "array":
        items = schema.get("items", {})
        return [_smallest(items, root, None, depth + 1) for _ in range(schema.get("minItems", 0))]
    if kind == "object":
        properties = schema.get("properties") or {}
        return {
            name: _smallest(properties.get(name, {"type": "string"}), root, None, depth + 1)
            for name in schema.get("required", [])
        }
    return fake_value(schema, random.Random(0), root, MAX_DEPTH + 1)


def _object(schema: dict[str, Any], rng: random.Random, root: Any, depth: int) -> dict[str, Any]:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    result: dict[str, Any] = {}
    # structured outputs (strict) require every property, so fill them all
    for name, sub in properties.items():
        result[name] = fake_value(sub, rng, root, depth + 1)
    for name in schema.get("required", []) or []:
        if isinstance(name, str) and name not in result:
            result[name] = _string({}, rng)
    extra = schema.get("additionalProperties")
    if not properties and isinstance(extra, dict) and extra:
        result[rng.choice(WORDS)] = fake_value(extra, rng, root, depth + 1)
    return result


def _array(schema: dict[str, Any], rng: random.Random, root: Any, depth: int) -> list[Any]:
    low = int(schema.get("minItems", 0) or 0)
    high = schema.get("maxItems")
    high = int(high) if isinstance(high, int) else max(low, 3)
    prefix = schema.get("prefixItems")
    prefix = prefix if isinstance(prefix, list) else []
    if depth >= MAX_DEPTH:
        count = low
    else:
        count = rng.randint(max(low, 1 if high >= 1 else 0), max(low, min(high, 3)))
    items = schema.get("items", {})
    values: list[Any] = []
    for index in range(max(count, min(len(prefix), high))):
        sub = prefix[index] if index < len(prefix) else items
        values.append(fake_value(sub, rng, root, depth + 1))
    if schema.get("uniqueItems"):
        unique: list[Any] = []
        for value in values:
            if value not in unique:
                unique.append(value)
        values = unique if len(unique) >= low else values
    return values


def _bounds(schema: dict[str, Any], low: float, high: float) -> tuple[float, float, bool, bool]:
    exclusive_low = exclusive_high = False
    if isinstance(schema.get("minimum"), int | float):
        low = schema["minimum"]
    if isinstance(schema.get("exclusiveMinimum"), int | float):
        low, exclusive_low = schema["exclusiveMinimum"], True
    if isinstance(schema.get("maximum"), int | float):
        high = schema["maximum"]
    if isinstance(schema.get("exclusiveMaximum"), int | float):
        high, exclusive_high = schema["exclusiveMaximum"], True
    if high < low:
        high = low + 100
    return low, high, exclusive_low, exclusive_high


def _integer(schema: dict[str, Any], rng: random.Random) -> int:
    low, high, ex_low, ex_high = _bounds(schema, 0, 100)
    first = int(low) + 1 if ex_low or low != int(low) else int(low)
    last = int(high) - 1 if ex_high and high == int(high) else int(high)
    if last < first:
        last = first
    step = schema.get("multipleOf")
    if isinstance(step, int) and step > 0:
        start = -(-first // step) * step
        choices = range(start, last + 1, step)
        return rng.choice(choices) if len(choices) else start
    return rng.randint(first, last)


def _number(schema: dict[str, Any], rng: random.Random) -> float:
    low, high, _, _ = _bounds(schema, 0.0, 100.0)
    value = round(rng.uniform(low, high), 2)
    if not low < value < high:
        value = (low + high) / 2
    return float(value)


def _string(schema: dict[str, Any], rng: random.Random) -> str:
    fmt = schema.get("format")
    if fmt == "date-time":
        day = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        text = f"{day}T{rng.randint(0, 23):02d}:00:00Z"
    elif fmt == "date":
        text = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    elif fmt == "time":
        text = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00"
    elif fmt == "email":
        text = f"{rng.choice(WORDS)}{rng.randint(1, 99)}@example.com"
    elif fmt == "uuid":
        text = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    elif fmt in ("uri", "url"):
        text = f"https://example.com/{rng.choice(WORDS)}"
    else:
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
    low = schema.get("minLength")
    high = schema.get("maxLength")
    if isinstance(low, int) and len(text) < low:
        text = (text + " " + rng.choice(WORDS)) * (low // max(1, len(text)) + 1)
        text = text[: max(low, len(text) if not isinstance(high, int) else min(high, len(text)))]
    if isinstance(high, int) and len(text) > high:
        text = text[:high]
    return text
