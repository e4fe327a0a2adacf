"""batchrun._templating.jinja: PromptTemplate's interface and rules, with Jinja's power."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from batchrun._templating.jinja import JinjaPromptTemplate, jinja_template_problems, load_examples
from batchrun._templating.text import PromptTemplate
from batchrun.errors import ConfigError, InputError


def user(content: str, **kwargs: Any) -> JinjaPromptTemplate:
    return JinjaPromptTemplate([{"role": "user", "content": content}], **kwargs)


def text(template: JinjaPromptTemplate, row: dict[str, Any], index: int = -1) -> str:
    return template.render(row, "line 1")[index]["content"]


# --- the same interface and output as PromptTemplate


def test_same_output_as_format_templates_for_every_value_type() -> None:
    row = {
        "s": "Great {value}!",
        "i": 3,
        "f": 0.1,
        "b": True,
        "l": [1, "a"],
        "d": {"k": 1},
        "day": dt.date(2024, 5, 1),
        "raw": b"bytes",
    }
    plain = PromptTemplate(
        [
            {"role": "system", "content": "Label it."},
            {"role": "user", "content": " | ".join(f"{{{k}}}" for k in row)},
        ]
    )
    jinja = JinjaPromptTemplate(
        [
            {"role": "system", "content": "Label it."},
            {"role": "user", "content": " | ".join(f"{{{{ {k} }}}}" for k in row)},
        ]
    )
    assert jinja.render(row, "line 1") == plain.render(row, "line 1")
    assert (
        text(jinja, row)
        == 'Great {value}! | 3 | 0.1 | true | [1,"a"] | {"k":1} | 2024-05-01 | bytes'
    )
    assert jinja.placeholders == tuple(row)
    assert [m["role"] for m in jinja.messages] == [m["role"] for m in plain.messages]


def test_text_without_jinja_syntax_is_kept_exactly() -> None:
    content = "Single {braces} stay, a trailing newline too\n\n"
    assert text(user(content), {}) == content
    assert user(content).placeholders == ()


def test_to_dict_names_the_engine_and_the_examples() -> None:
    t = user("{{ q }}", examples=[{"q": 1}])
    same = user("{{ q }}", examples=[{"q": 1}])
    other = user("{{ q }}", examples=[{"q": 2}])
    d = t.to_dict()
    assert d["engine"] == "jinja"
    assert d["messages"] == [{"role": "user", "content": "{{ q }}"}]
    assert d["examples_count"] == 1
    assert d["examples_blake2b"] == same.to_dict()["examples_blake2b"]
    assert d["examples_blake2b"] != other.to_dict()["examples_blake2b"]
    assert user("x").to_dict()["examples_blake2b"] is None
    json.dumps(d)  # JSON-ready


def test_from_section_system_and_user() -> None:
    t = JinjaPromptTemplate.from_section({"system": "Be brief.", "user": "Q: {{ q }}"})
    assert t.render({"q": "why"}, "line 1") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q: why"},
    ]
    with pytest.raises(ConfigError, match=r"^prompt\.user: line 2: unexpected '}'$"):
        JinjaPromptTemplate.from_section({"user": "ok\n{{ q }"})


# --- what Jinja adds


def test_conditionals_loops_and_filters_without_stray_blank_lines() -> None:
    t = user(
        "Product: {{ product | title }}\n"
        "{% if tags %}\n"
        "Tags:\n"
        "{% for tag in tags %}\n"
        "  - {{ tag | upper }}\n"
        "{% endfor %}\n"
        "{% endif %}\n"
        "Review: {{ text }}"
    )
    row = {"product": "desk lamp", "tags": ["cheap", "bright"], "text": "ok"}
    assert text(t, row) == "Product: Desk Lamp\nTags:\n  - CHEAP\n  - BRIGHT\nReview: ok"
    assert text(t, row | {"tags": []}) == "Product: Desk Lamp\nReview: ok"
    assert t.placeholders == ("product", "tags", "text")  # not the loop variable


def test_few_shot_examples_from_a_column() -> None:
    t = user("{% for ex in shots %}\nQ: {{ ex.q }}\nA: {{ ex.a }}\n{% endfor %}\nQ: {{ question }}")
    row = {"shots": [{"q": "2+2", "a": "4"}, {"q": "3+3", "a": "6"}], "question": "4+4"}
    assert text(t, row) == "Q: 2+2\nA: 4\nQ: 3+3\nA: 6\nQ: 4+4"


def test_few_shot_examples_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "shots.jsonl").write_text(
        '{"review": "love it", "label": "positive"}\n\n{"review": "meh", "label": "neutral"}\n'
    )
    section = {
        "user": "{% for ex in examples %}\n{{ ex.review }} -> {{ ex.label }}\n{% endfor %}\n"
        "{{ text }} ->",
        "examples_file": "shots.jsonl",
    }
    t = JinjaPromptTemplate.from_section(section, base_dir=str(tmp_path))
    assert t.placeholders == ("text",)  # examples is not a column
    assert text(t, {"text": "broken"}) == "love it -> positive\nmeh -> neutral\nbroken ->"
    assert t.to_dict()["examples_count"] == 2


def test_load_examples_formats_and_errors(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text('[{"q": 1}, "two"]')
    assert load_examples(tmp_path / "a.json") == [{"q": 1}, "two"]
    (tmp_path / "b.json").write_text('{"q": 1}')
    with pytest.raises(ConfigError, match="holds a JSON list"):
        load_examples(tmp_path / "b.json")
    (tmp_path / "c.jsonl").write_text('{"q": 1}\n{oops\n')
    with pytest.raises(ConfigError, match=r"c\.jsonl:line 2: not JSON"):
        load_examples(tmp_path / "c.jsonl")
    with pytest.raises(ConfigError, match="cannot read the examples file"):
        load_examples(tmp_path / "missing.jsonl")


def test_row_reaches_any_column_name() -> None:
    t = user("{{ row['user id'] }}/{{ row.get('maybe', 'none given') }}")
    assert text(t, {"user id": 7}) == "7/none given"
    assert t.placeholders == ()


def test_tojson_does_not_escape_html_and_keeps_unicode() -> None:
    t = user("{{ meta | tojson }}")
    assert text(t, {"meta": {"a": "<b>&é'", "n": None}}) == '{"a":"<b>&é\'","n":null}'


def test_set_and_namespace_do_not_leak_between_rows() -> None:
    t = user(
        "{% set ns = namespace(n=0) %}{% for x in xs %}{% set ns.n = ns.n + x %}{% endfor %}"
        "{{ ns.n }}"
    )
    assert text(t, {"xs": [1, 2, 3]}) == "6"
    assert text(t, {"xs": [10]}) == "10"


# --- missing and null values


def test_static_check_lists_missing_columns_with_a_suggestion() -> None:
    t = JinjaPromptTemplate(
        [
            {"role": "system", "content": "{% for i in range(2) %}{{ i }}{% endfor %}"},
            {"role": "user", "content": "{{ txt }} {{ label }} {% set y = 1 %}{{ y }}"},
        ]
    )
    assert t.placeholders == ("txt", "label")  # range, y and i are not columns
    assert t.column_problems(["text", "label"]) == [
        "template variable {{ txt }} has no column 'txt' (columns: text, label; "
        "did you mean 'text'?)"
    ]
    assert t.column_problems(["txt", "label", "extra"]) == []


def test_static_check_flags_a_column_hidden_by_the_examples_file() -> None:
    t = user("{{ q }}", examples=[])
    assert t.column_problems(["q", "examples"]) == [
        "the column 'examples' is hidden by the examples file: "
        "read it as row['examples'], or rename it"
    ]
    # without an examples file, a column called examples is just a column
    plain = user("{% for e in examples %}{{ e }}{% endfor %}")
    assert plain.placeholders == ("examples",)
    assert text(plain, {"examples": ["a", "b"]}) == "ab"


def test_missing_column_at_render_names_file_row_and_columns() -> None:
    t = user("Review: {{ txt }}")
    with pytest.raises(InputError) as info:
        t.render({"text": "x", "id": 1}, "line 7", path="reviews.jsonl")
    assert str(info.value) == (
        "reviews.jsonl:line 7: template variable {{ txt }} has no column 'txt' "
        "(columns: text, id; did you mean 'text'?)"
    )


def test_missing_attribute_names_the_template_line() -> None:
    t = user("first\n{{ meta.lang }}")
    with pytest.raises(
        InputError,
        match=r"^in:row 3: prompt.messages\[0\]: line 2: 'dict object' "
        r"has no attribute 'lang'$",
    ):
        t.render({"meta": {}}, "row 3", path="in")


def test_null_value_used_as_text_is_an_error_for_that_row() -> None:
    for content in ("{{ x }}", "{{ x ~ '!' }}", "{{ x | upper }}", "{% for c in x %}{% endfor %}"):
        with pytest.raises(InputError) as info:
            user(content).render({"x": None}, "line 4", path="data.parquet")
        # the same words as PromptTemplate's "template placeholder {x}: column 'x' is null"
        assert (
            str(info.value) == "data.parquet:line 4: template variable {{ x }}: column 'x' is null"
        )


def test_null_value_in_a_test_or_with_a_default_is_fine() -> None:
    t = user(
        "{% if x %}set{% else %}unset{% endif %}|{{ 'none' if x is none else 'value' }}|"
        "{{ x | default('n/a') }}|{{ x == none }}|{{ row.x is none }}|{{ y | default('-') }}"
    )
    assert text(t, {"x": None, "y": None}) == "unset|none|n/a|true|true|-"
    assert text(t, {"x": "v", "y": 0}) == "set|value|v|false|false|0"


def test_null_inside_a_value_names_the_line() -> None:
    t = user("{% for s in shots %}\n{{ s.a }}\n{% endfor %}")
    with pytest.raises(InputError, match=r"line 2: a null value is written as text"):
        t.render({"shots": [{"a": None}]}, "line 1")


def test_runtime_errors_name_row_and_template_line() -> None:
    t = user("ok\n\n{{ price * 2 - discount }}")
    assert text(t, {"price": 5, "discount": 1}) == "ok\n\n9"
    with pytest.raises(InputError, match=r"^input:line 9: prompt.messages\[0\]: line 3: TypeError"):
        t.render({"price": "5", "discount": 1}, "line 9")


# --- the sandbox and syntax errors


def test_sandbox_blocks_python_internals() -> None:
    with pytest.raises(ConfigError, match="unsafe"):
        user("{{ x.__class__.__mro__ }}").render({"x": 1}, "line 1")


def test_sandbox_blocks_changing_shared_values() -> None:
    shots = [{"q": 1}]
    t = user("{{ examples.append(2) }}", examples=shots)
    with pytest.raises(ConfigError, match="unsafe"):
        t.render({}, "line 1")
    assert t.examples == [{"q": 1}]
    with pytest.raises(ConfigError, match="unsafe"):
        user("{{ row.update({'a': 1}) }}").render({"a": 0}, "line 1")


def test_syntax_errors_are_one_line_with_the_line_number() -> None:
    with pytest.raises(ConfigError) as info:
        JinjaPromptTemplate(
            [
                {"role": "system", "content": "fine"},
                {"role": "user", "content": "a\nb\n{% if x %}unclosed"},
                {"role": "user", "content": "{{ x | shout }}"},
            ]
        )
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("prompt.messages[1]: line 3: Unexpected end of template")
    assert message.endswith("prompt.messages[2]: line 1: No filter named 'shout'")


def test_template_problems_function() -> None:
    assert jinja_template_problems("{{ a }}{% if b %}{% endif %}") == []
    assert jinja_template_problems("x\n{{ a ") == [
        "template: line 2: unexpected end of template, expected 'end of print statement'"
    ]
    assert jinja_template_problems("{% include 'other.j2' %}", "prompt.user") == [
        "prompt.user: line 1: {% include %} reads another template file; a prompt template "
        "is self-contained (few-shot examples: examples_file)"
    ]


def test_a_template_needs_a_message() -> None:
    with pytest.raises(ConfigError, match="at least one message"):
        JinjaPromptTemplate([])
