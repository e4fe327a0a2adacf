from __future__ import annotations

import datetime as dt

import pytest

from batchrun._templating.cells import as_text
from batchrun._templating.text import (
    PromptTemplate,
    apply_defaults,
    body_builder,
    build_body,
    openai_response_format,
    template_problems,
)
from batchrun.errors import ConfigError, InputError


def test_render_system_and_user_from_section() -> None:
    t = PromptTemplate.from_section(
        {"system": "Label {product} reviews.", "user": "Review: {text}"}
    )
    messages = t.render({"text": "Great", "product": "kettle", "unused": 1}, "line 3")
    assert messages == [
        {"role": "system", "content": "Label kettle reviews."},
        {"role": "user", "content": "Review: Great"},
    ]
    assert t.placeholders == ("product", "text")


def test_render_without_system() -> None:
    t = PromptTemplate.from_section({"user": "Hi {name}"})
    assert t.render({"name": "Ada"}, "row 1") == [{"role": "user", "content": "Hi Ada"}]


def test_render_messages_list_keeps_order_and_roles() -> None:
    t = PromptTemplate.from_section(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Q: 1+1"},
                {"role": "assistant", "content": "2"},
                {"role": "user", "content": "Q: {q}"},
            ]
        }
    )
    out = t.render({"q": "2+2"}, "row 1")
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]
    assert out[-1]["content"] == "Q: 2+2"


def test_escaped_braces_are_literal_and_values_are_not_reformatted() -> None:
    t = PromptTemplate.from_section({"user": 'Return {{"label": ...}} for: {text}'})
    out = t.render({"text": "set {brightness} to 70 {{ok}}"}, "line 1")
    assert out[0]["content"] == 'Return {"label": ...} for: set {brightness} to 70 {{ok}}'
    assert t.placeholders == ("text",)


def test_missing_column_names_column_row_and_file() -> None:
    t = PromptTemplate.from_section({"user": "{text} / {title}"})
    with pytest.raises(InputError) as info:
        t.render({"id": 1, "text": "x", "body": "y"}, "line 42", path="data/reviews.jsonl")
    err = info.value
    assert err.path == "data/reviews.jsonl"
    assert err.where == "line 42"
    assert (
        err.reason == "template placeholder {title} has no column 'title' (columns: id, text, body)"
    )
    assert str(err).startswith("data/reviews.jsonl:line 42: template placeholder {title}")


def test_missing_column_lists_at_most_twenty_columns() -> None:
    t = PromptTemplate.from_section({"user": "{nope}"})
    row = {f"c{i}": i for i in range(30)}
    with pytest.raises(InputError, match=r"c19, \.\.\. \(30 in all\)"):
        t.render(row, "row 7")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("{a.b}", "{a.b}: only plain column names"),
        ("{a[0]}", "{a[0]}: only plain column names"),
        ("{a!r}", "{a!r}: only plain column names"),
        ("{a:>5}", "{a:>5}: only plain column names"),
        ("{}", "must name a column"),
        ("{0}", "must name a column"),
        ("oops {", "invalid template"),
        ("oops }", "invalid template"),
    ],
)
def test_bad_placeholders_are_refused_at_load(text: str, fragment: str) -> None:
    problems = template_problems(text)
    assert problems and fragment in problems[0]
    with pytest.raises(ConfigError, match="only plain|must name|invalid template"):
        PromptTemplate([{"role": "user", "content": text}])


def test_value_conversion() -> None:
    assert as_text(None) == ""
    assert as_text(True) == "true" and as_text(False) == "false"
    assert as_text(3) == "3"
    assert as_text(0.1) == "0.1"
    assert as_text(2.5e-7) == "2.5e-07"
    assert as_text([1, "a", None]) == '[1,"a",null]'
    assert as_text({"k": [1.5]}) == '{"k":[1.5]}'
    assert as_text("é".encode()) == "é"
    assert as_text(dt.date(2024, 5, 1)) == "2024-05-01"
    t = PromptTemplate.from_section({"user": "{a}|{b}|{c}|{d}"})
    content = t.render({"a": "", "b": 4, "c": 0.5, "d": ["x"]}, "row 1")[0]["content"]
    assert content == '|4|0.5|["x"]'


def test_a_null_template_value_is_a_bad_row_not_an_empty_prompt() -> None:
    t = PromptTemplate.from_section({"user": "Review: {text}"})
    with pytest.raises(InputError, match=r"data.jsonl:line 4: .*\{text\}: column 'text' is null"):
        t.render({"text": None}, "line 4", path="data.jsonl")


def test_build_body_adds_messages_and_response_format() -> None:
    t = PromptTemplate.from_section({"user": "Review: {text}"})
    rf = openai_response_format("json_schema", name="s", schema={"type": "object"}, strict=True)
    defaults = {"model": "gpt-4o-mini", "temperature": 0, "stop": ["\n"]}
    body = build_body({"text": "ok"}, defaults, t, rf, row_label="line 1")
    assert body == {
        "model": "gpt-4o-mini",
        "temperature": 0,
        "stop": ["\n"],
        "messages": [{"role": "user", "content": "Review: ok"}],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "s", "schema": {"type": "object"}, "strict": True},
        },
    }
    assert "messages" not in defaults  # defaults are not mutated between rows
    assert openai_response_format("json_object") == {"type": "json_object"}


def test_body_builder_from_settings_uses_the_merged_model() -> None:
    from batchrun._settings import Settings
    from batchrun._values import ResponseFormat

    settings = Settings(
        input="qa.parquet",
        messages=({"role": "user", "content": "{q}"},),
        request={"max_tokens": 5},
        response_format=ResponseFormat("json_object"),
        model="cli-model",
    )
    build = body_builder(settings)
    assert build is not None
    assert build({"q": "why?"}, "row 1") == {
        "max_tokens": 5,
        "model": "cli-model",
        "messages": [{"role": "user", "content": "why?"}],
        "response_format": {"type": "json_object"},
    }
    with pytest.raises(InputError, match=r"^qa\.parquet:row 2: template placeholder \{q\}"):
        build({"x": 1}, "row 2")
    assert body_builder(Settings(input="r.jsonl", model="m")) is None


def test_a_prompt_function_builds_messages_or_a_whole_body() -> None:
    from batchrun._settings import Settings

    messages = body_builder(
        Settings(input="d.jsonl", model="m", prompt=lambda row: f"Say {row['w']}")
    )
    assert messages is not None
    assert messages({"w": "hi"}, "line 1") == {
        "model": "m",
        "messages": [{"role": "user", "content": "Say hi"}],
    }
    whole = body_builder(
        Settings(
            input="d.jsonl",
            model="m",
            request={"temperature": 0},
            prompt=lambda row: {"messages": [{"role": "user", "content": "x"}], "temperature": 1},
        )
    )
    assert whole is not None
    assert whole({}, "line 2")["temperature"] == 1  # the function's body wins
    failing = body_builder(Settings(input="d.jsonl", model="m", prompt=lambda row: row["nope"]))
    assert failing is not None
    with pytest.raises(InputError, match=r"d\.jsonl:line 3: prompt function: KeyError"):
        failing({}, "line 3")


def test_apply_defaults_fills_only_missing_fields() -> None:
    body = {"model": "a", "messages": [], "max_completion_tokens": 5}
    merged = apply_defaults(body, {"model": "b", "max_tokens": 9, "temperature": 0})
    assert merged == {"model": "a", "messages": [], "max_completion_tokens": 5, "temperature": 0}
    assert apply_defaults({"messages": []}, {"max_tokens": 9}) == {"messages": [], "max_tokens": 9}


def test_render_is_fast_enough_for_large_datasets() -> None:
    # Not a benchmark: a guard against accidental per-row re-parsing of the template.
    import time

    t = PromptTemplate.from_section({"system": "Label it.", "user": "P: {product}\nR: {text}"})
    row = {"product": "kettle", "text": "Boils fast, looks nice.", "id": 1}
    start = time.perf_counter()
    for _ in range(50_000):
        t.render(row, "row 1")
    assert time.perf_counter() - start < 5.0
