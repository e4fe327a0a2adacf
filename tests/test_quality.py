"""Answer quality (batchrun._output.quality): categories, schema checks, counts, decisions. Pure."""

from __future__ import annotations

from collections import Counter
from typing import Any

import orjson
import pytest

from batchrun._output.quality import (
    BREAKER_Z,
    CATEGORIES,
    CONTENT_FILTER,
    EMPTY,
    NO_CHOICES,
    NO_FINISH_REASON,
    OK,
    REFUSAL,
    SCHEMA_ERROR,
    TRUNCATED,
    QualityCounts,
    Verdict,
    breaker_trips,
    classify,
    fix_for,
    quality_stop,
    quality_warnings,
    wilson_lower_bound,
)
from batchrun._schemas import SchemaValidator, compile_schema, json_path, schema_problem

LABELS = ["positive", "negative", "neutral"]
SENTIMENT = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": LABELS},
        "confidence": {"type": "number"},
    },
    "required": ["sentiment", "confidence"],
    "additionalProperties": False,
}
NESTED = {
    "type": "object",
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "label": {"type": "string", "enum": LABELS},
                },
                "required": ["text", "label"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["items"],
}


def choice(content: Any = "hello", finish: Any = "stop", **message: Any) -> dict[str, Any]:
    return {
        "index": 0,
        "message": {"role": "assistant", "content": content, **message},
        "finish_reason": finish,
    }


def body(*choices: Any, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {"object": "chat.completion", "model": model, "choices": list(choices)}


def nested_answer(*labels: str) -> str:
    return orjson.dumps(
        {"items": [{"text": f"t{i}", "label": x} for i, x in enumerate(labels)]}
    ).decode()


# -- categories ------------------------------------------------------------------------
def test_plain_answer_is_ok_and_reuses_a_shared_verdict() -> None:
    verdict = classify(body(choice("Paris.")))
    assert verdict == Verdict(OK, "stop")
    assert classify(body(choice("Rome."))) is verdict  # the hot path allocates nothing
    assert classify(body(choice("x", finish=None))) == Verdict(OK, None)
    assert classify(body(choice("x", finish="eos"))) == Verdict(OK, "eos")


@pytest.mark.parametrize(
    "degenerate",
    [
        None,
        [],
        "not a body",
        {},
        {"choices": None},
        {"choices": {}},
        body(),  # choices: []
        body({}),  # [{}]: a choice without a message
        body(None),  # [null]
        body({"message": "text", "finish_reason": "stop"}),
    ],
)
def test_degenerate_bodies_have_no_choices(degenerate: Any) -> None:
    verdict = classify(degenerate)
    assert verdict.category == NO_CHOICES
    assert verdict.detail


def test_no_message_keeps_its_finish_reason() -> None:
    assert classify(body({"finish_reason": "stop"})) == Verdict(
        NO_CHOICES, "stop", "a choice has no message"
    )


def test_finish_reasons_and_refusal() -> None:
    assert classify(body(choice('{"sentiment": "pos', finish="length"))) == Verdict(
        TRUNCATED, "length"
    )
    assert classify(body(choice("partial", finish="content_filter"))) == Verdict(
        CONTENT_FILTER, "content_filter"
    )
    refused = classify(body(choice(None, refusal="I can't help with that.")))
    assert refused == Verdict(REFUSAL, "stop", "I can't help with that.")
    long_refusal = classify(body(choice(None, refusal="no " * 200))).detail
    assert long_refusal is not None and len(long_refusal) <= 200
    assert classify(body(choice("fine", refusal=None))).category == OK
    assert classify(body(choice("fine", refusal=""))).category == OK


@pytest.mark.parametrize("content", [None, "", "  \n\t", [], [{"type": "text", "text": ""}]])
def test_no_content_and_no_tool_calls_is_empty(content: Any) -> None:
    assert classify(body(choice(content))) == Verdict(EMPTY, "stop")
    # a schema does not turn an empty answer into a schema error
    assert classify(body(choice(content)), compile_schema(SENTIMENT)).category == EMPTY


def test_tool_calls_without_content_are_ok() -> None:
    call = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    schema = compile_schema(SENTIMENT)
    assert classify(body(choice(None, "tool_calls", tool_calls=call))) == Verdict(OK, "tool_calls")
    # content beside a tool call is commentary, not the schema's answer
    assert (
        classify(body(choice("Let me look.", "tool_calls", tool_calls=call)), schema).category == OK
    )
    legacy = choice(None, "function_call", function_call={"name": "f", "arguments": "{}"})
    assert classify(body(legacy), schema) == Verdict(OK, "function_call")
    assert classify(body(choice(None, tool_calls=[]))).category == EMPTY
    # arguments cut off at max_tokens are truncated all the same
    assert classify(body(choice(None, "length", tool_calls=call))).category == TRUNCATED


def test_content_parts_are_joined() -> None:
    parts = [
        {"type": "text", "text": '{"sentiment": "neutral", '},
        {"type": "text", "text": '"confidence": 1}'},
    ]
    assert classify(body(choice(parts)), compile_schema(SENTIMENT)).category == OK
    assert classify(body(choice([{"type": "text", "text": "hi"}]))).category == OK


def test_schema_answers() -> None:
    schema = compile_schema(SENTIMENT)
    assert classify(
        body(choice('{"sentiment": "positive", "confidence": 0.9}')), schema
    ) == Verdict(OK, "stop")
    fenced = '```json\n{"sentiment": "negative", "confidence": 0.2}\n```'
    assert classify(body(choice(fenced)), schema).category == OK
    not_json = classify(body(choice("It is positive.")), schema)
    assert not_json.category == SCHEMA_ERROR and not_json.finish_reason == "stop"
    assert not_json.detail is not None and not_json.detail.startswith("invalid JSON")
    cases = {
        '{"sentiment": "mixed", "confidence": 1}': (
            '$.sentiment: "mixed" is not one of "positive", "negative" or "neutral"'
        ),
        '{"sentiment": "neutral"}': '$: "confidence" is a required property',
        '{"sentiment": "neutral", "confidence": 1, "why": "x"}': (
            "$: Additional properties are not allowed ('why' was unexpected)"
        ),
        '{"sentiment": "neutral", "confidence": true}': (
            '$.confidence: true is not of type "number"'
        ),
        '["positive"]': '$: ["positive"] is not of type "object"',
    }
    for content, detail in cases.items():
        assert classify(body(choice(content)), schema) == Verdict(SCHEMA_ERROR, "stop", detail)


def test_nested_enum_violation_is_caught_with_its_path() -> None:
    schema = compile_schema(NESTED)
    assert classify(body(choice(nested_answer("positive", "neutral"))), schema).category == OK
    verdict = classify(body(choice(nested_answer("positive", "negative", "neutralish"))), schema)
    assert verdict == Verdict(
        SCHEMA_ERROR,
        "stop",
        '$.items[2].label: "neutralish" is not one of "positive", "negative" or "neutral"',
    )
    missing = classify(body(choice('{"items": [{"label": "neutral"}]}')), schema)
    assert missing.detail == '$.items[0]: "text" is a required property'


def test_truncation_wins_over_the_schema_and_is_not_validated() -> None:
    schema = compile_schema(SENTIMENT)
    assert classify(body(choice('{"sentiment": "posi', "length")), schema) == Verdict(
        TRUNCATED, "length"
    )
    # valid JSON cut off is still a cut-off answer
    valid = '{"sentiment": "positive", "confidence": 0.9}'
    assert classify(body(choice(valid, "length")), schema).category == TRUNCATED


def test_precedence_within_a_choice() -> None:
    both = choice(None, "content_filter", refusal="no")
    assert classify(body(both)).category == CONTENT_FILTER
    assert classify(body(choice(None, "length", refusal="no"))).category == REFUSAL
    assert classify(body(choice(None, "length"))).category == TRUNCATED  # not empty


def test_several_choices_take_the_most_severe() -> None:
    schema = compile_schema(SENTIMENT)
    good = choice('{"sentiment": "positive", "confidence": 0.9}')
    assert classify(body(good, good), schema) == Verdict(OK, "stop")
    assert classify(body(good, choice("{", "length")), schema) == Verdict(TRUNCATED, "length")
    mixed = body(choice("nope"), choice("{", "length"), choice(None, refusal="no"), good)
    assert classify(mixed, schema) == Verdict(REFUSAL, "stop", "no")
    assert classify(body(good, None), schema).category == NO_CHOICES
    # first choice ok, the second decides: its finish reason is reported
    assert classify(body(choice("a"), choice("", "eos"))) == Verdict(EMPTY, "eos")


def test_categories_are_ordered_most_severe_first() -> None:
    assert CATEGORIES == (NO_CHOICES, CONTENT_FILTER, REFUSAL, TRUNCATED, EMPTY, SCHEMA_ERROR, OK)


# -- schemas ---------------------------------------------------------------------------
def test_compile_schema_caches_per_object() -> None:
    schema = {"type": "object"}
    assert compile_schema(schema) is compile_schema(schema)
    assert compile_schema(dict(schema)) is not compile_schema(schema)


def test_a_broken_schema_never_raises_but_fails_every_answer() -> None:
    broken = SchemaValidator({"properties": {"n": {"$ref": "#/$defs/missing"}}})
    assert broken.problem == "Pointer '/$defs/missing' does not exist"
    assert broken.error({"n": 1}) == "invalid schema: Pointer '/$defs/missing' does not exist"
    assert SchemaValidator([1]).error({}) == "invalid schema: must be a JSON object, got list"
    verdict = classify(body(choice('{"n": 1}')), broken)
    assert verdict.category == SCHEMA_ERROR


def test_refs_and_formats() -> None:
    schema = {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "who": {"$ref": "#/$defs/who"},
        },
        "$defs": {"who": {"enum": ["a", "b"]}},
    }
    validator = SchemaValidator(schema)
    assert validator.error({"who": "a", "when": "not a date"}) is None  # format: annotation only
    assert validator.error({"who": "c"}) == '$.who: "c" is not one of "a" or "b"'
    assert SchemaValidator(True).error(123) is None
    assert SchemaValidator({"type": "integer"}).error(5.0) is None  # 5.0 is an integer


def test_error_lines_are_short_and_keep_the_verb() -> None:
    validator = SchemaValidator({"type": "array"})
    error = validator.error({f"key{i}": "x" * 40 for i in range(40)})
    assert error is not None and len(error) <= 200 and "\n" not in error
    assert error.startswith("$: {") and error.endswith('is not of type "array"')


def test_json_path() -> None:
    assert json_path([]) == "$"
    assert json_path(["items", 2, "label"]) == "$.items[2].label"
    assert json_path(["a b", 0, "_ok1", "1st"]) == '$["a b"][0]._ok1["1st"]'


@pytest.mark.parametrize(
    ("schema", "problem"),
    [
        (SENTIMENT, None),
        (NESTED, None),
        (True, None),
        (
            {"type": "object", "properties": {"n": {"type": "int"}}},
            '$.properties.n.type: "int" is not a type '
            "(string, number, integer, boolean, object, array, null)",
        ),
        ({"properties": {"n": {"$ref": "#/$defs/n"}}}, "Pointer '/$defs/n' does not exist"),
        ({"properties": {"n": {"pattern": "("}}}, '$.properties.n.pattern: "(" is not a "regex"'),
        ({"properties": []}, '$.properties: [] is not of type "object"'),
        ({"required": "n"}, '$.required: "n" is not of type "array"'),
        ({"enum": 3}, '$.enum: 3 is not of type "array"'),
        ({"description": 5}, '$.description: 5 is not of type "string"'),
        ("{}", "must be a JSON object, got str"),
    ],
)
def test_schema_problem(schema: Any, problem: str | None) -> None:
    assert schema_problem(schema) == problem


def test_schema_problem_never_downloads() -> None:
    remote_ref = schema_problem({"$ref": "https://example.com/schema.json"})
    assert remote_ref is not None and "Retrieval is disabled" in remote_ref
    custom = schema_problem({"$schema": "https://example.com/meta", "type": "object"})
    assert custom is not None and "Unknown meta-schema" in custom
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"}
    assert schema_problem(draft7) is None


# -- counts ----------------------------------------------------------------------------
def test_counts_per_model_and_finish_reason() -> None:
    counts = QualityCounts()
    schema = compile_schema(SENTIMENT)
    assert counts.count(body(choice("{", "length"), model="m1"), schema).category == TRUNCATED
    assert counts.count(body(choice("x"), model="m1"), schema).category == SCHEMA_ERROR
    counts.count({"model": "m2", "choices": []})
    counts.count(body(choice("hi", None), model=""), requested_model="asked")
    assert counts.by_model == {
        "m1": Counter({TRUNCATED: 1, SCHEMA_ERROR: 1}),
        "m2": Counter({NO_CHOICES: 1}),
        "asked": Counter({OK: 1}),
    }
    assert counts.finish_reasons == Counter({"length": 1, "stop": 1, NO_FINISH_REASON: 2})
    assert counts.answers == 4
    assert counts.totals() == Counter({TRUNCATED: 1, SCHEMA_ERROR: 1, NO_CHOICES: 1, OK: 1})


def test_counts_state_round_trips_through_json() -> None:
    counts = QualityCounts()
    for verdict, model in [
        (Verdict(OK, "stop"), "b"),
        (Verdict(OK, "stop"), "b"),
        (Verdict(TRUNCATED, "length"), "b"),
        (Verdict(REFUSAL, "stop", "no"), "a"),
        (Verdict(NO_CHOICES, None), "a"),
    ]:
        counts.add(verdict, model)
    state = counts.to_state()
    assert state == {
        "by_model": {"a": {NO_CHOICES: 1, REFUSAL: 1}, "b": {TRUNCATED: 1, OK: 2}},
        "finish_reasons": {NO_FINISH_REASON: 1, "length": 1, "stop": 3},
    }
    rebuilt = QualityCounts.from_state(orjson.loads(orjson.dumps(state)))
    assert rebuilt == counts
    assert rebuilt.to_state() == state
    assert QualityCounts.from_state({}) == QualityCounts()
    # a category from a newer version survives a round trip
    future = {"by_model": {"m": {"novel": 2}}, "finish_reasons": {}}
    assert QualityCounts.from_state(future).to_state() == future


def test_merge_adds_counts() -> None:
    one = QualityCounts({"a": Counter({OK: 2})}, Counter({"stop": 2}))
    two = QualityCounts({"a": Counter({EMPTY: 1}), "b": Counter({OK: 1})}, Counter({"stop": 2}))
    one.merge(two)
    assert one.by_model == {"a": Counter({OK: 2, EMPTY: 1}), "b": Counter({OK: 1})}
    assert one.finish_reasons == Counter({"stop": 4})
    assert two.by_model["a"] == Counter({EMPTY: 1})  # the merged-in counts are not shared
    one.by_model["b"][OK] += 1
    assert two.by_model["b"][OK] == 1


# -- the breaker -----------------------------------------------------------------------
def counts_of(**per_model: dict[str, int]) -> QualityCounts:
    return QualityCounts({m: Counter(c) for m, c in per_model.items()})


Z95 = 1.6448536269514722  # the one-sided 95 % normal quantile


def test_the_breaker_is_95_percent_sure() -> None:
    assert BREAKER_Z == pytest.approx(Z95, abs=1e-12)


@pytest.mark.parametrize(
    ("bad", "answers", "z", "lower"),
    [
        # every answer bad: (p + z2/2n - z2/2n) / (1 + z2/n) = n / (n + z2)
        (20, 20, Z95, 20 / (20 + Z95**2)),  # 20 / 22.7055 = 0.88084
        (10, 10, 1.96, 10 / (10 + 1.96**2)),  # 10 / 13.8416 = 0.72246
        # 46 of 50: p = .92, z2 = 2.70554; centre .92 + .0270554 = .9470554;
        # margin 1.64485 * sqrt(.92 * .08 / 50 + 2.70554 / 10000) = 1.64485 * .0417439
        # = .0686631; (.9470554 - .0686631) / (1 + .0541109) = .833302
        (46, 50, Z95, 0.833302),
        # 22 of 25 (the resumed process): p = .88; centre .88 + .0541109 =
        # .9341109; margin 1.64485 * sqrt(.88 * .12 / 25 + 2.70554 / 2500) =
        # 1.64485 * .0728438 = .1198174; .8142935 / 1.1082217 = .734775
        (22, 25, Z95, 0.734775),
        (0, 10, Z95, 0.0),
        (0, 0, Z95, 0.0),
    ],
)
def test_wilson_lower_bound_against_hand_computed_values(
    bad: int, answers: int, z: float, lower: float
) -> None:
    assert wilson_lower_bound(bad, answers, z) == pytest.approx(lower, abs=2e-6)


@pytest.mark.parametrize(("bad", "answers"), [(1, 3), (13, 20), (45, 50), (290, 557), (999, 1000)])
def test_wilson_lower_bound_is_the_lower_root_of_its_definition(bad: int, answers: int) -> None:
    # Wilson's interval holds the shares w with |p - w| <= z * sqrt(w (1 - w) / n):
    # its lower end solves (p - w)^2 = z^2 w (1 - w) / n with w <= p
    p = bad / answers
    w = wilson_lower_bound(bad, answers)
    assert w <= p
    assert (p - w) ** 2 == pytest.approx(Z95**2 * w * (1 - w) / answers, rel=1e-9)


@pytest.mark.parametrize(
    ("bad", "answers", "trips"),
    [
        (19, 19, False),  # every answer bad, but under the minimum of 20
        (20, 20, True),  # 0.881 > 0.8
        (19, 20, True),  # 0.804
        (18, 20, False),  # 90 %, but only "over 73.8 %" with 95 % confidence
        (22, 25, False),  # 88 %, over 73.5 %: the resumed process of issue 31
        (45, 50, True),  # 0.808
        (44, 50, False),  # 0.784
        (87, 100, True),  # 0.805
        (86, 100, False),  # 0.793
        (290, 557, False),  # the whole run: 52.1 %
        (25, 65, False),  # a bad stretch of 25 after 40 good answers
    ],
)
def test_breaker_rule(bad: int, answers: int, trips: bool) -> None:
    assert breaker_trips(bad, answers, threshold=0.8) == trips
    assert wilson_lower_bound(bad, answers) > 0.8 or not trips


def test_breaker_rule_settings() -> None:
    assert not breaker_trips(100, 100, threshold=0)  # 0: off
    assert not breaker_trips(10**6, 10**6, threshold=1)  # the bound is never above 1
    assert breaker_trips(5, 5, threshold=0.5, min_answers=5)  # 5 / 7.7 = 0.65
    assert not breaker_trips(5, 5, threshold=0.5, min_answers=6)
    assert not breaker_trips(5, 5, threshold=0.5, min_answers=5, z=3.0)  # 5 / 14 = 0.36


def test_breaker_stops_100_of_100_truncated() -> None:
    alert = quality_stop(counts_of(m={TRUNCATED: 100}), max_tokens=6)
    assert alert is not None
    assert (alert.model, alert.category, alert.count, alert.bad, alert.answers) == (
        "m",
        TRUNCATED,
        100,
        100,
        100,
    )
    # 100 / (100 + 2.7055) = 97.4 %
    assert alert.message == (
        'stopping: 100 of 100 answers from m are truncated (finish_reason "length"); '
        "unusable: 100.0% of the 100 judged (at least 97.4% with 95% confidence, "
        "over --quality-breaker 0.8): raise max_tokens (now 6)"
    )


def test_breaker_message_gives_the_sample_and_the_whole_run() -> None:
    judged = counts_of(m={OK: 4, TRUNCATED: 46})
    overall = counts_of(m={OK: 60, TRUNCATED: 140}, other={OK: 10})
    alert = quality_stop(judged, max_tokens=16, overall=overall)
    assert alert is not None
    assert alert.message == (
        'stopping: 46 of 50 answers from m are truncated (finish_reason "length"); '
        "unusable: 92.0% of the 50 judged (at least 83.3% with 95% confidence, "
        "over --quality-breaker 0.8), 70.0% of the run's 200: raise max_tokens (now 16)"
    )


@pytest.mark.parametrize(
    ("ok", "bad", "stops"),
    [
        (0, 19, False),  # under the minimum sample
        (0, 20, True),
        (2, 18, False),  # 90 %: not over 80 % with confidence on 20 answers
        (13, 87, True),  # 87 of 100: over 80.5 %
        (14, 86, False),  # 86 of 100: over 79.3 %
        (21, 84, False),  # 80 %: the threshold itself never stops
    ],
)
def test_breaker_boundaries(ok: int, bad: int, stops: bool) -> None:
    counts = counts_of(m={OK: ok, SCHEMA_ERROR: bad})
    alert = quality_stop(counts, threshold=0.8, min_answers=20)
    assert (alert is not None) == stops


def test_breaker_names_the_most_common_problem() -> None:
    counts = counts_of(m={OK: 2, SCHEMA_ERROR: 28, TRUNCATED: 30})
    alert = quality_stop(counts, max_tokens=50)
    assert alert is not None and alert.category == TRUNCATED
    assert alert.message.startswith(
        "stopping: 58 of 60 answers from m are not usable, 30 truncated "
        '(finish_reason "length"); unusable: 96.7% of the 60 judged'
    )
    assert alert.message.endswith(": raise max_tokens (now 50)")
    tie = quality_stop(counts_of(m={EMPTY: 15, REFUSAL: 15}))
    assert tie is not None and tie.category == REFUSAL  # the more severe wins a tie
    unset = quality_stop(counts_of(m={TRUNCATED: 20}))
    assert unset is not None and unset.message.endswith(
        "set a larger max_tokens (none is set: the server's limit cut the answers)"
    )


def test_breaker_judges_each_model_and_reports_the_worst() -> None:
    # overall 50 % bad, but one model is entirely useless
    counts = counts_of(good={OK: 100}, bad={CONTENT_FILTER: 95, OK: 5}, worse={EMPTY: 30})
    alert = quality_stop(counts)
    assert alert is not None and alert.model == "worse" and alert.category == EMPTY
    assert quality_stop(counts_of(good={OK: 100}, few={TRUNCATED: 5})) is None
    assert quality_stop(QualityCounts()) is None
    assert quality_stop(counts_of(m={OK: 1, EMPTY: 9}), threshold=0.5, min_answers=2) is not None


@pytest.mark.parametrize(
    ("category", "hint"),
    [
        (SCHEMA_ERROR, "check the schema / prompt"),
        (REFUSAL, "check the prompt"),
        (CONTENT_FILTER, "check the prompt / input"),
        (EMPTY, "check the prompt, stop sequences"),
        (NO_CHOICES, "check base_url"),
        ("novel", "check the request settings"),
    ],
)
def test_every_problem_names_a_setting(category: str, hint: str) -> None:
    assert fix_for(category).startswith(hint)


# -- warnings --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ok", "bad", "warns"),
    [
        (57, 3, True),  # 3 of 60 = 5 %: both thresholds met exactly
        (58, 3, False),  # 3 of 61 < 5 %
        (38, 2, False),  # 5 % but only 2 answers
        (0, 3, True),
        (0, 0, False),
    ],
)
def test_warning_boundaries(ok: int, bad: int, warns: bool) -> None:
    counts = counts_of(m={OK: ok, TRUNCATED: bad})
    assert bool(quality_warnings(counts, share=0.05, min_count=3)) == warns


def test_warnings_name_the_setting_per_model_and_category() -> None:
    counts = counts_of(
        b={OK: 80, TRUNCATED: 10, SCHEMA_ERROR: 10},
        a={OK: 57, REFUSAL: 3},
    )
    alerts = quality_warnings(counts, max_tokens=64)
    assert [(a.model, a.category) for a in alerts] == [
        ("a", REFUSAL),
        ("b", TRUNCATED),
        ("b", SCHEMA_ERROR),
    ]
    assert alerts[1].message == (
        '10 of 100 answers (10.0%) from b are truncated (finish_reason "length"): '
        "raise max_tokens (now 64)"
    )
    assert alerts[2].message == (
        "10 of 100 answers (10.0%) from b are not valid against the JSON schema: "
        "check the schema / prompt"
    )
    assert (alerts[2].count, alerts[2].bad, alerts[2].answers) == (10, 20, 100)
