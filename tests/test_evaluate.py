from __future__ import annotations

import pytest

from batchrun.jobs.evaluate import MAX_CATEGORICAL_LABELS, Evaluator, format_eval, normalize_answer

# (reference, model content) for a sentiment job with JSON answers.
FIXTURE = [
    ("positive", '{"sentiment": "positive"}'),
    ("positive", '{"sentiment": "Positive"}'),
    ("positive", '{"sentiment": "neutral"}'),
    ("negative", '{"sentiment": "negative"}'),
    ("negative", '{"sentiment": "positive"}'),
    ("neutral", '{"sentiment": "neutral"}'),
    ("neutral", "not json at all"),
    ("neutral", None),  # the request failed
]


def test_normalize_answer() -> None:
    assert normalize_answer("  Paris. ") == "paris"
    assert normalize_answer("The   Eiffel\n\tTower!!") == "the eiffel tower"
    assert normalize_answer("STRASSE") == normalize_answer("straße")
    assert normalize_answer("3.14") == "3.14"
    assert normalize_answer("Yes?!") == "yes"


def test_accuracy_and_confusion_on_fixture() -> None:
    ev = Evaluator("label", "json_field", field="sentiment")
    for reference, content in FIXTURE:
        ev.add(reference, ev.predicted(content, None))
    report = ev.report()
    assert report["n"] == 8
    assert report["correct"] == 4
    assert report["accuracy"] == 0.5
    assert report["missing_predictions"] == 2
    assert report["accuracy_answered"] == pytest.approx(4 / 6)
    assert report["categorical"] is True
    assert report["confusion"] == {
        "negative": {"negative": 1, "positive": 1},
        "neutral": {"(none)": 2, "neutral": 1},
        "positive": {"neutral": 1, "positive": 2},
    }
    per = report["per_label"]
    # positive: predicted 3 times, right twice; 3 references, 2 found.
    assert per["positive"]["precision"] == pytest.approx(2 / 3)
    assert per["positive"]["recall"] == pytest.approx(2 / 3)
    assert per["neutral"]["precision"] == pytest.approx(1 / 2)
    assert per["neutral"]["recall"] == pytest.approx(1 / 3)
    assert per["negative"] == {
        "support": 2,
        "predicted": 1,
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
    }


def test_parsed_values_are_preferred_over_content() -> None:
    ev = Evaluator("label", "json_field", field="sentiment")
    assert ev.predicted("garbage", {"sentiment": "negative"}) == "negative"
    assert ev.predicted('{"sentiment": 3}', None) == "3"
    assert ev.predicted('{"other": 1}', None) is None
    assert ev.predicted('```json\n{"sentiment": "neutral"}\n```', None) == "neutral"


def test_exact_compare_normalises_both_sides() -> None:
    ev = Evaluator("answer", "exact")
    pairs = [
        ("Paris", "paris."),
        ("Canberra", " Sydney"),
        (1945, "1945"),
        ("O negative", "O  Negative"),
    ]
    for reference, content in pairs:
        ev.add(reference, ev.predicted(content, None))
    assert (ev.report()["correct"], ev.report()["n"]) == (3, 4)


def test_normalize_off_is_strict() -> None:
    ev = Evaluator("answer", "exact", normalize=False)
    ev.add("Paris", "paris")
    ev.add("Paris", "Paris")
    assert ev.report()["correct"] == 1


def test_rows_without_reference_are_skipped_and_counted() -> None:
    ev = Evaluator("answer")
    ev.add(None, "x")
    ev.add("  ", "x")
    ev.add("a", "a")
    report = ev.report()
    assert (report["n"], report["missing_references"], report["accuracy"]) == (1, 2, 1.0)


def test_free_text_references_drop_the_confusion_table() -> None:
    ev = Evaluator("answer")
    for i in range(MAX_CATEGORICAL_LABELS + 10):
        ev.add(f"answer {i}", f"answer {i}" if i % 2 else "wrong")
    report = ev.report()
    assert report["categorical"] is False
    assert report["confusion"] is None and report["per_label"] is None
    assert report["n"] == MAX_CATEGORICAL_LABELS + 10
    assert report["correct"] == (MAX_CATEGORICAL_LABELS + 10) // 2


def test_empty_report() -> None:
    report = Evaluator("answer").report()
    assert report["n"] == 0 and report["accuracy"] is None and report["confusion"] is None
    assert format_eval(report).startswith("accuracy - (0/0 correct")


def test_format_eval_table() -> None:
    ev = Evaluator("label", "json_field", field="sentiment")
    for reference, content in FIXTURE:
        ev.add(reference, ev.predicted(content, None))
    text = format_eval(ev.report())
    lines = text.splitlines()
    assert lines[0] == "accuracy 0.500 (4/8 correct; 2 without prediction)"
    header = lines[2].split()
    # reference order first, "(none)" last
    assert header[-4:] == ["negative", "neutral", "positive", "(none)"]
    assert lines[3].split() == ["negative", "1", "0", "1", "0"]
    assert lines[4].split() == ["neutral", "0", "1", "0", "2"]
    assert any(line.split()[:3] == ["negative", "1.000", "0.500"] for line in lines[6:])


def test_of_the_settings() -> None:
    from batchrun.settings import Evaluation

    assert Evaluator.of(None) is None
    ev = Evaluator.of(Evaluation("label", "json_field", "s", normalize=False))
    assert ev is not None and (ev.field, ev.normalize) == ("s", False)
    with pytest.raises(ValueError):
        Evaluator("x", "fuzzy")
    with pytest.raises(ValueError):
        Evaluator("x", "json_field")
