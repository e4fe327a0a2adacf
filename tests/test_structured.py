from __future__ import annotations

import pyarrow as pa
import pytest

from batchrun._output.answers import load_json, parse_content, parsed_columns, strip_fences

SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
        "confidence": {"type": "number"},
        "stars": {"type": "integer"},
        "sarcastic": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "detail": {"type": "object", "properties": {"a": {"type": "string"}}},
        "note": {"type": ["string", "null"]},
    },
    "required": ["sentiment", "confidence"],
}


def test_parsed_columns_types_in_schema_order() -> None:
    assert parsed_columns(SCHEMA) == [
        ("sentiment", pa.string()),
        ("confidence", pa.float64()),
        ("stars", pa.int64()),
        ("sarcastic", pa.bool_()),
        ("tags", pa.string()),
        ("detail", pa.string()),
        ("note", pa.string()),
    ]


def test_parsed_columns_untyped_enum_and_no_schema() -> None:
    assert parsed_columns({"properties": {"n": {"enum": [1, 2]}, "s": {"enum": ["a"]}}}) == [
        ("n", pa.int64()),
        ("s", pa.string()),
    ]
    assert parsed_columns(None) == []
    assert parsed_columns({"type": "object"}) == []


def test_parse_valid_content_gives_typed_values() -> None:
    content = (
        '{"sentiment": "positive", "confidence": 1, "stars": 5.0, "sarcastic": false,'
        ' "tags": ["a", "b"], "detail": {"a": "x"}, "extra": 1}'
    )
    values, error = parse_content(content, SCHEMA)
    assert error is None
    assert values == {
        "sentiment": "positive",
        "confidence": 1.0,
        "stars": 5,
        "sarcastic": False,
        "tags": '["a","b"]',
        "detail": '{"a":"x"}',
        "note": None,
    }
    assert isinstance(values["confidence"], float) and isinstance(values["stars"], int)


def test_parse_strips_markdown_fences() -> None:
    fenced = '```json\n{"sentiment": "neutral", "confidence": 0.5}\n```'
    values, error = parse_content(fenced, SCHEMA)
    assert error is None and values is not None
    assert values["sentiment"] == "neutral"
    assert strip_fences('```\n{"a": 1}\n```') == '{"a": 1}'
    assert strip_fences("  ```JSON \r\n[1]\r\n```  ") == "[1]"
    assert strip_fences("not fenced") == "not fenced"


@pytest.mark.parametrize(
    ("content", "error"),
    [
        (None, "no content"),
        ("   ", "empty content"),
        ("positive", "invalid JSON"),
        ('{"sentiment": "positive", ', "invalid JSON"),
        ('["positive"]', "expected a JSON object, got array"),
        ('{"sentiment": "positive"}', "missing required field(s): confidence"),
        (
            '{"sentiment": "positive", "confidence": "high"}',
            "field 'confidence': expected number, got string",
        ),
        (
            '{"sentiment": "positive", "confidence": true}',
            "field 'confidence': expected number, got boolean",
        ),
        (
            '{"sentiment": "mixed", "confidence": 0.4}',
            "field 'sentiment': 'mixed' is not one of positive",
        ),
        (
            '{"sentiment": "positive", "confidence": 1, "stars": 4.5}',
            "field 'stars': expected integer",
        ),
        (
            '{"sentiment": "positive", "confidence": 1, "sarcastic": "no"}',
            "field 'sarcastic': expected boolean, got string",
        ),
    ],
)
def test_parse_errors(content: str | None, error: str) -> None:
    values, message = parse_content(content, SCHEMA)
    assert values is None
    assert message is not None and message.startswith(error)


def test_nullable_field_accepts_null_and_schema_without_properties() -> None:
    values, error = parse_content(
        '{"sentiment": "negative", "confidence": 0, "note": null}', SCHEMA
    )
    assert error is None and values is not None and values["note"] is None
    assert parse_content('{"anything": 1}', {"type": "object"}) == ({}, None)
    assert load_json("[1, 2]") == ([1, 2], None)


@pytest.mark.parametrize(
    ("content", "error"),
    [
        # the top-level check alone let these through (the bug this closes)
        (
            '{"sentiment": "positive", "confidence": 1, "detail": {"a": 5}}',
            '$.detail.a: 5 is not of type "string"',
        ),
        (
            '{"sentiment": "positive", "confidence": 1, "tags": ["a", 3]}',
            '$.tags[1]: 3 is not of type "string"',
        ),
        (
            '{"sentiment": "positive", "confidence": 1, "stars": null}',
            '$.stars: null is not of type "integer"',
        ),
    ],
)
def test_parse_checks_the_whole_schema(content: str, error: str) -> None:
    assert parse_content(content, SCHEMA) == (None, error)


def test_parse_nested_enum_and_additional_properties() -> None:
    schema = {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"label": {"enum": ["positive", "negative", "neutral"]}},
                    "additionalProperties": False,
                },
            }
        },
        "additionalProperties": False,
    }
    good = '{"items": [{"label": "neutral"}]}'
    assert parse_content(good, schema) == ({"items": '[{"label":"neutral"}]'}, None)
    assert parse_content('{"items": [{}, {}, {"label": "neutralish"}]}', schema) == (
        None,
        '$.items[2].label: "neutralish" is not one of "positive", "negative" or "neutral"',
    )
    assert parse_content('{"items": [{"label": "neutral", "x": 1}]}', schema) == (
        None,
        "$.items[0]: Additional properties are not allowed ('x' was unexpected)",
    )
    assert parse_content('{"items": [], "more": 1}', schema) == (
        None,
        "$: Additional properties are not allowed ('more' was unexpected)",
    )


def test_a_broken_schema_gives_every_row_a_parse_error_not_a_crash() -> None:
    schema = {"type": "object", "properties": {"n": {"$ref": "#/$defs/missing"}}}
    assert parse_content('{"n": 1}', schema) == (
        None,
        "invalid schema: Pointer '/$defs/missing' does not exist",
    )
