"""batchrun._jobs.metrics against values worked out by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math
import random

import pytest

from batchrun._jobs.metrics import (
    NO_PREDICTION,
    Agreement,
    LabelScores,
    PairedCounts,
    _binomial,
    accuracy,
    accuracy_difference_interval,
    accuracy_interval,
    agreement,
    agreement_table,
    classification_report,
    cohen_kappa,
    confusion,
    label_scores,
    macro_f1,
    mean_absolute_error,
    paired_counts,
    parse_number,
)

# Six scored rows and one without a reference:
#   reference  cat cat cat dog dog  bird  None
#   predicted  cat cat dog dog None cat   cat
REFERENCE = ["cat", "Cat", "cat", "dog", "dog", "bird", None]
PREDICTED = ["cat", "cat.", "dog", "dog", None, "cat", "cat"]


def test_confusion_skips_missing_references_and_names_missing_predictions() -> None:
    assert confusion(REFERENCE, PREDICTED) == {
        "cat": {"cat": 2, "dog": 1},
        "dog": {"dog": 1, NO_PREDICTION: 1},
        "bird": {"cat": 1},
    }


def test_hand_computed_classification_figures() -> None:
    table = confusion(REFERENCE, PREDICTED)
    # right: cat 2 + dog 1 = 3 of 6
    assert accuracy(table) == 0.5
    scores = label_scores(table)
    # cat: 2 hits, 3 references, predicted 3 times (2 cat rows + the bird row)
    #   P = 2/3, R = 2/3, F1 = 2*2 / (3 + 3) = 2/3
    assert scores["cat"] == LabelScores(3, 3, 2 / 3, 2 / 3, 2 / 3)
    # dog: 1 hit, 2 references, predicted 2 times (a cat row and a dog row)
    #   P = 1/2, R = 1/2, F1 = 2*1 / (2 + 2) = 1/2
    assert scores["dog"] == LabelScores(2, 2, 0.5, 0.5, 0.5)
    # bird: never predicted: precision undefined, recall 0/1, F1 = 0 / (1 + 0) = 0
    assert scores["bird"] == LabelScores(1, 0, None, 0.0, 0.0)
    # "(none)" is not a class
    assert list(scores) == ["bird", "cat", "dog"]
    # macro-F1 = (2/3 + 1/2 + 0) / 3 = 7/18
    assert macro_f1(table) == pytest.approx(7 / 18)
    # kappa: row totals cat 3, dog 2, bird 1; column totals cat 3, dog 2, (none) 1
    #   S = 3*3 + 2*2 + 1*0 = 13; kappa = (6*3 - 13) / (6*6 - 13) = 5/23
    #   (p_o = 0.5, p_e = 13/36: (0.5 - 13/36) / (1 - 13/36) = 5/23)
    assert cohen_kappa(table) == pytest.approx(5 / 23)


def test_classification_report_puts_it_together() -> None:
    report = classification_report(REFERENCE, PREDICTED)
    assert (report.n, report.correct, report.missing_predictions, report.missing_references) == (
        6,
        3,
        1,
        1,
    )
    assert report.accuracy == 0.5
    assert report.macro_f1 == pytest.approx(7 / 18)
    assert report.kappa == pytest.approx(5 / 23)
    assert report.as_dict()["per_label"]["bird"]["precision"] is None


def test_normalize_off_keeps_labels_apart() -> None:
    # "Cat" and "cat." are labels of their own: only rows 1, 4 are right
    report = classification_report(REFERENCE, PREDICTED, normalize=False)
    assert report.correct == 2


def test_agrees_with_evaluator_confusion() -> None:
    from batchrun._jobs.evaluate import Evaluator

    ev = Evaluator("label", "exact")
    for ref, pred in zip(REFERENCE, PREDICTED, strict=True):
        ev.add(ref, pred)
    assert ev.report()["confusion"] == {
        k: dict(sorted(v.items())) for k, v in sorted(confusion(REFERENCE, PREDICTED).items())
    }
    assert accuracy(ev.report()["confusion"]) == ev.report()["accuracy"]


def test_empty_input() -> None:
    assert confusion([], []) == {}
    assert accuracy({}) is None
    assert macro_f1({}) is None
    assert cohen_kappa({}) is None
    report = classification_report([], [])
    assert (report.n, report.accuracy, report.macro_f1, report.kappa) == (0, None, None, None)
    # only rows without reference: nothing is scored either
    assert classification_report([None, " "], ["a", "b"]).missing_references == 2


def test_one_label_everywhere_has_no_kappa() -> None:
    table = confusion(["a"] * 4, ["a"] * 4)
    assert accuracy(table) == 1.0
    assert macro_f1(table) == 1.0
    # p_o = 1 and p_e = (4*4)/(4*4) = 1: (1 - 1) / (1 - 1) is undefined
    assert cohen_kappa(table) is None


def test_one_reference_label_with_mixed_predictions() -> None:
    table = confusion(["a"] * 4, ["a", "a", "b", None])
    # rows a 4; columns a 2, b 1, (none) 1; S = 4*2 = 8; kappa = (4*2 - 8) / (16 - 8) = 0
    assert cohen_kappa(table) == 0.0
    # a: 2 hits, support 4, predicted 2: F1 = 4 / 6
    assert macro_f1(table) == pytest.approx(2 / 3)


def test_all_predictions_missing() -> None:
    report = classification_report(["a", "b", "a"], [None, None, None])
    assert (report.accuracy, report.macro_f1, report.missing_predictions) == (0.0, 0.0, 3)
    # columns: only (none), which is no row label: S = 0; kappa = (0 - 0) / (9 - 0) = 0
    assert report.kappa == 0.0
    assert report.per_label["a"].precision is None


def test_kappa_of_perfect_disagreement() -> None:
    # diag 0; rows a 1, b 1; columns a 1, b 1; S = 2; kappa = (0 - 2) / (4 - 2) = -1
    assert cohen_kappa(confusion(["a", "b"], ["b", "a"])) == -1.0


def test_lengths_must_match() -> None:
    with pytest.raises(ValueError):
        classification_report(["a"], ["a", "b"])
    with pytest.raises(ValueError):
        agreement(["a"], [])


# --- numbers


def test_parse_number() -> None:
    assert parse_number(" 7. ") == 7.0
    assert parse_number("-3") == -3.0
    assert parse_number("1e3") == 1000.0
    assert parse_number(2) == 2.0
    for bad in ("nan", "inf", "-Infinity", True, "1,5", "1_000", "", ".", "forty", None, [1]):
        assert parse_number(bad) is None, bad


def test_mean_absolute_error_counts_what_it_could_not_score() -> None:
    reference = [10, 20, "30", 40, "n/a", None]
    predicted = ["12", 17.5, None, "forty", 5, 3]
    report = mean_absolute_error(reference, predicted)
    # |12 - 10| = 2 and |17.5 - 20| = 2.5 -> (2 + 2.5) / 2 = 2.25; row 3 has no prediction,
    # row 4 a word, row 5 a reference that is no number, row 6 no reference at all
    assert report.as_dict() == {
        "n": 5,
        "scored": 2,
        "mae": 2.25,
        "missing": 1,
        "unparseable": 1,
        "bad_references": 1,
    }
    assert mean_absolute_error([], []).mae is None


# --- bootstrap


def test_binomial_draws_have_the_right_mean_and_variance() -> None:
    rng = random.Random(7)
    # geometric-gap branch (n p < 10), BTRS branch, and p > 1/2 (mirrored)
    for n, p in [(50, 0.05), (1000, 0.3), (100_000, 0.8), (20, 0.5)]:
        draws = [_binomial(rng, n, p) for _ in range(20_000)]
        mean = sum(draws) / len(draws)
        var = sum((d - mean) ** 2 for d in draws) / (len(draws) - 1)
        sd_of_mean = math.sqrt(n * p * (1 - p) / len(draws))
        assert abs(mean - n * p) < 5 * sd_of_mean, (n, p, mean)
        assert var == pytest.approx(n * p * (1 - p), rel=0.05), (n, p, var)
        assert 0 <= min(draws) and max(draws) <= n


def test_binomial_small_n_matches_the_exact_distribution() -> None:
    rng = random.Random(3)
    n, p, draws = 10, 0.3, 50_000
    counts = [0] * (n + 1)
    for _ in range(draws):
        counts[_binomial(rng, n, p)] += 1
    for k in range(n + 1):
        expected = draws * math.comb(n, k) * p**k * (1 - p) ** (n - k)
        assert abs(counts[k] - expected) < 5 * math.sqrt(expected) + 5, (k, counts[k], expected)


def test_binomial_edges() -> None:
    rng = random.Random(0)
    assert _binomial(rng, 0, 0.5) == 0
    assert _binomial(rng, 10, 0.0) == 0
    assert _binomial(rng, 10, 1.0) == 10


def _row_bootstrap(rows: list[int], resamples: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return sorted(sum(rng.choices(rows, k=len(rows))) / len(rows) for _ in range(resamples))


def test_accuracy_interval_matches_resampling_rows() -> None:
    # 150 of 200 right; the row bootstrap's 2.5/97.5 % points vs the binomial draws
    rows = [1] * 150 + [0] * 50
    naive = _row_bootstrap(rows, 4000, seed=11)
    interval = accuracy_interval(150, 200, resamples=4000, seed=11)
    assert interval.estimate == 0.75
    assert interval.low == pytest.approx(naive[int(0.025 * 3999)], abs=0.012)
    assert interval.high == pytest.approx(naive[int(0.975 * 3999)], abs=0.012)
    # and both near the normal approximation 0.75 +- 1.96 * sqrt(.75 * .25 / 200) = +- 0.060
    assert interval.low == pytest.approx(0.69, abs=0.012)
    assert interval.high == pytest.approx(0.81, abs=0.012)


def test_accuracy_interval_is_reproducible_and_seeded() -> None:
    first = accuracy_interval(612, 1000, resamples=500, seed=42)
    assert accuracy_interval(612, 1000, resamples=500, seed=42) == first
    others = {accuracy_interval(612, 1000, resamples=500, seed=s).low for s in range(5)}
    assert len(others) > 1
    assert first.as_dict()["resamples"] == 500


def test_accuracy_interval_edges() -> None:
    assert accuracy_interval(10, 10).as_dict() == {
        "estimate": 1.0,
        "low": 1.0,
        "high": 1.0,
        "confidence": 0.95,
        "resamples": 2000,
        "seed": 0,
    }
    assert (accuracy_interval(0, 10).low, accuracy_interval(0, 10).high) == (0.0, 0.0)
    assert accuracy_interval(0, 0).estimate is None
    with pytest.raises(ValueError):
        accuracy_interval(11, 10)
    with pytest.raises(ValueError):
        accuracy_interval(1, 10, resamples=0)
    with pytest.raises(ValueError):
        accuracy_interval(1, 10, confidence=1.0)


def test_paired_counts_by_hand() -> None:
    reference = ["x", "y", "z", "w", None]
    a = ["x", "y", "q", None, "x"]
    b = ["X", "q", "z", "v", "x"]
    # row 1 both right, row 2 a only, row 3 b only, row 4 neither, row 5 not scored
    counts = paired_counts(reference, a, b)
    assert counts == PairedCounts(both=1, only_a=1, only_b=1, neither=1)
    assert (counts.n, counts.difference) == (4, 0.0)
    assert PairedCounts(0, 0, 0, 0).difference is None


def test_paired_difference_interval_matches_resampling_row_pairs() -> None:
    counts = PairedCounts(both=120, only_a=30, only_b=14, neither=36)
    pairs = [(1, 1)] * 120 + [(1, 0)] * 30 + [(0, 1)] * 14 + [(0, 0)] * 36
    rng = random.Random(5)
    naive = sorted(
        sum(x - y for x, y in rng.choices(pairs, k=len(pairs))) / len(pairs) for _ in range(4000)
    )
    interval = accuracy_difference_interval(counts, resamples=4000, seed=5)
    # estimate (30 - 14) / 200 = 0.08
    assert interval.estimate == pytest.approx(0.08)
    assert interval.low == pytest.approx(naive[int(0.025 * 3999)], abs=0.012)
    assert interval.high == pytest.approx(naive[int(0.975 * 3999)], abs=0.012)
    # normal approximation: sd = sqrt((.15 + .07 - .08**2) / 200) = 0.0327 -> 0.08 +- 0.064
    assert interval.low == pytest.approx(0.016, abs=0.012)
    assert interval.low > 0


def test_paired_difference_interval_edges() -> None:
    same = accuracy_difference_interval(PairedCounts(5, 0, 0, 5))
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    assert accuracy_difference_interval(PairedCounts(0, 0, 0, 0)).low is None
    # every row right for a only: the difference is 1 in every resample
    assert accuracy_difference_interval(PairedCounts(0, 7, 0, 0)).low == 1.0
    assert accuracy_difference_interval(PairedCounts(0, 0, 7, 0)).high == -1.0


# --- agreement


def test_agreement_by_hand() -> None:
    a = ["yes", "no", "Yes", None, "no"]
    b = ["yes.", "yes", "yes", None, "no"]
    # same on rows 1, 3, 4 (both missing), 5: 4 of 5
    # table a->b: yes {yes 2}, no {yes 1, no 1}, (none) {(none) 1}
    # rows yes 2, no 2, (none) 1; columns yes 3, no 1, (none) 1
    # S = 2*3 + 2*1 + 1*1 = 9; kappa = (5*4 - 9) / (25 - 9) = 11/16
    result = agreement(a, b)
    assert result == Agreement(n=5, same=4, share=0.8, kappa=11 / 16, both_missing=1)


def test_agreement_table_covers_every_pair_once() -> None:
    variants = {
        "gpt-4o": ["a", "b", "a", "c"],
        "mini": ["a", "b", "b", "c"],
        "prompt2": ["A", "b", "a", None],
    }
    table = agreement_table(variants)
    assert list(table) == [("gpt-4o", "mini"), ("gpt-4o", "prompt2"), ("mini", "prompt2")]
    assert table[("gpt-4o", "mini")].same == 3
    assert table[("gpt-4o", "prompt2")].same == 3
    assert table[("mini", "prompt2")].same == 2
    # gpt-4o vs mini: rows a 2, b 1, c 1; columns a 1, b 2, c 1
    # S = 2*1 + 1*2 + 1*1 = 5; kappa = (4*3 - 5) / (16 - 5) = 7/11
    assert table[("gpt-4o", "mini")].kappa == pytest.approx(7 / 11)
    assert agreement_table({"only": ["a"]}) == {}


def test_agreement_of_identical_constant_variants() -> None:
    result = agreement(["a", "a"], ["a", "a"])
    assert (result.share, result.kappa) == (1.0, None)
    assert agreement([], []).share is None
