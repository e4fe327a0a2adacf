from __future__ import annotations

import pytest

from batchrun._jobs.evaluate import MAX_CATEGORICAL_LABELS, Evaluator, format_eval
from batchrun._jobs.metrics import accuracy_interval
from batchrun._labels import normalize_answer

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
    report = ev.report()
    text = format_eval(report)
    lines = text.splitlines()
    ci = accuracy_interval(4, 8)
    assert lines[0] == (
        f"accuracy 0.500 [{ci.low:.3f}, {ci.high:.3f}] (4/8 correct; 2 without prediction)"
        "; 95% bootstrap interval"
    )
    assert lines[1] == f"macro-F1 {report['macro_f1']:.3f}  kappa {report['kappa']:.3f}"
    header = lines[3].split()
    # reference order first, "(none)" last
    assert header[-4:] == ["negative", "neutral", "positive", "(none)"]
    assert lines[4].split() == ["negative", "1", "0", "1", "0"]
    assert lines[5].split() == ["neutral", "0", "1", "0", "2"]
    assert any(line.split()[:3] == ["negative", "1.000", "0.500"] for line in lines[7:])
    without = Evaluator("label", "json_field", field="sentiment", interval=False)
    without.add("positive", "positive")
    assert "accuracy_interval" not in without.report()


def test_macro_f1_and_kappa_by_hand() -> None:
    """Two labels, 10 rows: reference pos x6 / neg x4; predicted pos for 5 of the pos
    rows and 1 of the neg rows. pos: P=5/6 R=5/6 F1=5/6; neg: P=3/4 R=3/4 F1=3/4;
    macro-F1 = (5/6 + 3/4)/2 = 19/24. p_o = 8/10; p_e = .6*.6 + .4*.4 = .52;
    kappa = (.8 - .52)/(1 - .52) = 7/12."""
    ev = Evaluator("label", interval=False)
    pairs = [("pos", "pos")] * 5 + [("pos", "neg")] + [("neg", "pos")] + [("neg", "neg")] * 3
    for reference, predicted in pairs:
        ev.add(reference, predicted)
    report = ev.report()
    assert report["accuracy"] == 0.8
    assert report["macro_f1"] == pytest.approx(19 / 24)
    assert report["kappa"] == pytest.approx(7 / 12)


def test_numbers_are_scored_by_absolute_error() -> None:
    ev = Evaluator("stars", "number", tolerance=0.5, interval=False)
    for reference, predicted in [(4, "4"), (2, "3.5"), ("5", "4.6"), (1, "one"), (3, None)]:
        ev.add(reference, ev.predicted(predicted, None))
    report = ev.report()
    # errors 0, 1.5, 0.4 over the 3 parseable answers; within 0.5: rows 1 and 3
    assert report["mae"] == pytest.approx((0 + 1.5 + 0.4) / 3)
    assert (report["scored"], report["unparseable"], report["missing_predictions"]) == (3, 1, 1)
    assert (report["correct"], report["n"]) == (2, 5)
    assert ev.is_correct("5", "4.6") and not ev.is_correct(2, "3.5")
    assert "MAE 0.6333 over 3 rows; 1 answers not a number" in format_eval(report)
    field = Evaluator("stars", "number", field="stars")
    assert field.predicted('{"stars": 4}', None) == "4"


def test_of_the_settings() -> None:
    from batchrun._values import Evaluation

    assert Evaluator.of(None) is None
    ev = Evaluator.of(Evaluation("label", "json_field", "s", normalize=False))
    assert ev is not None and (ev.field, ev.normalize) == ("s", False)
    with pytest.raises(ValueError):
        Evaluator("x", "fuzzy")
    with pytest.raises(ValueError):
        Evaluator("x", "json_field")


def test_shards_merged_report_what_one_process_scoring_every_row_reports() -> None:
    """A run on a Ray cluster scores each shard apart: added up, its evaluation has the
    interval, macro-F1, kappa and per-label figures of one process (issue 24 item 8)."""
    import random

    from batchrun._scale.aggregate import merged_eval

    rng = random.Random(5)
    labels = ["positive", "negative", "neutral"]
    rows = []
    for _ in range(600):
        reference = rng.choice(labels)
        answer = reference if rng.random() < 0.6 else rng.choice([*labels, None])
        rows.append((reference, answer))
    whole = Evaluator("label")
    shards = [Evaluator("label") for _ in range(3)]
    for i, (reference, answer) in enumerate(rows):
        whole.add(reference, answer)
        shards[i % 3].add(reference, answer)
    expected = whole.report()
    merged = merged_eval([s.report() for s in shards])
    assert merged is not None
    assert {k: v for k, v in merged.items() if k not in ("pending", "invalid")} == expected
    assert merged["accuracy_interval"] is not None and merged["kappa"] is not None

    numbers = [Evaluator("stars", "number", tolerance=0.5) for _ in range(2)]
    one = Evaluator("stars", "number", tolerance=0.5)
    for i, (reference, answer) in enumerate([(4, "4.2"), (2, "3"), (5, "x"), (1, None)]):
        one.add(reference, answer)
        numbers[i % 2].add(reference, answer)
    merged = merged_eval([n.report() for n in numbers])
    assert merged is not None
    want = one.report()
    assert merged["mae"] == pytest.approx(want["mae"])
    del merged["mae"], want["mae"]
    assert {k: merged[k] for k in want} == want


def test_rows_that_all_went_unanswered_are_not_scored_zero() -> None:
    ev = Evaluator("label")
    for reference in ("a", "b", "a"):
        ev.add(reference, None)
    report = {**ev.report(), "pending": 7}
    assert report["accuracy"] == 0.0  # counted as wrong, as a stopped run's summary says
    text = format_eval(report)
    assert text == (
        "not scored: none of the 3 rows with a reference got an answer (7 rows not sent yet)"
    )
    ev.add("a", "a")
    assert format_eval(ev.report()).startswith("accuracy 0.250")
