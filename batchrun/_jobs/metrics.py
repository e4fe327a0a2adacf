"""Evaluation metrics as pure functions: labels, numbers, intervals, agreement.

`batchrun._jobs.evaluate.Evaluator` streams (reference, prediction) pairs into a confusion
table; this module turns such tables (or plain sequences) into the figures that say
whether one prompt or model is better than another: accuracy, per-label
precision/recall/F1, macro-F1, Cohen's kappa, mean absolute error, bootstrap intervals
for an accuracy and for the difference between two variants on the same rows, and how
often two variants agree.

Conventions, the same as `Evaluator`'s:

* a confusion table is ``{reference: {predicted: count}}``;
* a prediction of None (failed request, unreadable answer) is its own label,
  `NO_PREDICTION`; it is always wrong, and it is never a class of its own;
* a reference of None or blank text is not scored (counted in ``missing_references``);
* functions taking raw values normalise them with `normalize_answer` unless
  ``normalize=False``, so "Positive." and "positive" are one label.

Everything is pure Python (no numpy, no scikit-learn): counting pairs is one pass
over the rows, and every metric is computed from the counts. The bootstrap resamples
counts, not rows (see `accuracy_interval`), so 10,000 resamples cost the same for a
hundred rows as for a million. BENCHMARKS.md ("Evaluation metrics") has the numbers.

    >>> table = confusion(["pos", "pos", "neg", "neg"], ["pos", "neg", "neg", None])
    >>> accuracy(table), round(macro_f1(table), 3), round(cohen_kappa(table), 3)
    (0.5, 0.583, 0.2)
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, cast

from batchrun._labels import NO_PREDICTION, normalize_answer
from batchrun._templating.cells import as_text

__all__ = [
    "NO_PREDICTION",
    "Agreement",
    "ClassificationReport",
    "Interval",
    "LabelScores",
    "NumericReport",
    "PairedCounts",
    "accuracy",
    "accuracy_difference_interval",
    "accuracy_interval",
    "agreement",
    "agreement_table",
    "classification_report",
    "cohen_kappa",
    "confusion",
    "label_scores",
    "macro_f1",
    "mean_absolute_error",
    "paired_counts",
    "parse_number",
]

Confusion = Mapping[str, Mapping[str, int]]
"""``{reference label: {predicted label: count}}``, as `Evaluator.report` gives it."""


# ---------------------------------------------------------------------------
# Labels and the confusion table


_MEMO_LIMIT = 65536


def _labeler(normalize: bool) -> Callable[[Any], str]:
    """value -> label, memoised: labels repeat, and normalising one costs ~1 us
    where a dict hit costs ~50 ns (5x faster on 100,000 rows of 5 labels). The memo
    stops growing at `_MEMO_LIMIT` texts, so free-text answers cannot fill memory."""
    memo: dict[str, str] = {}

    def label(value: Any) -> str:
        if isinstance(value, str):
            hit = memo.get(value)
            if hit is not None:
                return hit
            out = normalize_answer(value) if normalize else value
            if len(memo) < _MEMO_LIMIT:
                memo[value] = out
            return out
        if value is None:
            return NO_PREDICTION
        text = as_text(value)
        return normalize_answer(text) if normalize else text

    return label


def _is_missing(reference: Any) -> bool:
    return reference is None or (isinstance(reference, str) and not reference.strip())


def confusion(
    reference: Iterable[Any], predicted: Iterable[Any], *, normalize: bool = True
) -> dict[str, dict[str, int]]:
    """Count (reference, predicted) pairs; rows without a reference are left out.

    >>> confusion(["a", "a", None], ["A.", None, "b"])
    {'a': {'a': 1, '(none)': 1}}
    """
    label = _labeler(normalize)
    table: dict[str, dict[str, int]] = {}
    for ref, pred in zip(reference, predicted, strict=True):
        if _is_missing(ref):
            continue
        row = table.setdefault(label(ref), {})
        got = label(pred)
        row[got] = row.get(got, 0) + 1
    return table


def _totals(table: Confusion) -> tuple[int, int, dict[str, int], dict[str, int]]:
    """(n, agreeing, row totals, column totals) of a table, all exact integers."""
    n = diagonal = 0
    rows: dict[str, int] = {}
    columns: dict[str, int] = {}
    for ref, row in table.items():
        for pred, count in row.items():
            n += count
            rows[ref] = rows.get(ref, 0) + count
            columns[pred] = columns.get(pred, 0) + count
            if pred == ref:
                diagonal += count
    return n, diagonal, rows, columns


def accuracy(table: Confusion) -> float | None:
    """Share of scored rows predicted right; None when nothing was scored.

    >>> accuracy({"a": {"a": 3, "b": 1}})
    0.75
    """
    n, diagonal, _rows, _columns = _totals(table)
    return diagonal / n if n else None


class _AsDict:
    """A dataclass of figures that gives itself as a plain dict (for JSON)."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(cast(Any, self))


@dataclass(frozen=True)
class LabelScores:
    """One reference label's figures. ``precision`` is None for a label never predicted
    (no prediction to be precise about); ``f1`` is then 0, as F1 = 2TP / (2TP+FP+FN)."""

    support: int
    predicted: int
    precision: float | None
    recall: float
    f1: float


def label_scores(table: Confusion) -> dict[str, LabelScores]:
    """Precision, recall and F1 of every reference label (sorted by label).

    Labels that were predicted but never appear as a reference (an invented label,
    `NO_PREDICTION`) are not classes: they get no entry, and they cost the classes
    whose rows they took recall.

    >>> label_scores({"a": {"a": 1, "b": 1}, "b": {"b": 2}})["a"]
    LabelScores(support=2, predicted=1, precision=1.0, recall=0.5, f1=0.6666666666666666)
    """
    _n, _diagonal, rows, columns = _totals(table)
    out = {}
    for label in sorted(table):
        support = rows.get(label, 0)
        if not support:
            continue
        hits = table[label].get(label, 0)
        predicted = columns.get(label, 0)
        out[label] = LabelScores(
            support=support,
            predicted=predicted,
            precision=hits / predicted if predicted else None,
            recall=hits / support,
            f1=2 * hits / (support + predicted),
        )
    return out


def macro_f1(table: Confusion) -> float | None:
    """Mean F1 over the reference labels (each class weighs the same, however rare).

    The classes are the labels that occur as references. scikit-learn's
    ``f1_score(average="macro")`` averages over every label seen on either side, so a
    missing prediction or an invented label would count as a class with F1 0; passing
    ``labels=`` the reference labels and ``zero_division=0`` gives this function's figure.

    >>> macro_f1({"a": {"a": 1, "b": 1}, "b": {"b": 2}})  # (2/3 + 4/5) / 2
    0.7333333333333334
    """
    scores = label_scores(table)
    if not scores:
        return None
    return sum(s.f1 for s in scores.values()) / len(scores)


def cohen_kappa(table: Confusion) -> float | None:
    """Agreement beyond chance between the two sides of a table (reference and
    prediction, or two variants), from -1 through 0 (chance) to 1 (perfect).

    kappa = (p_o - p_e) / (1 - p_e), with p_o the observed share of agreement and p_e
    the share expected if both sides labelled independently with their own label
    frequencies. Computed in exact integers, (n*agree - S) / (n*n - S) with S the sum
    over labels of row total x column total, so "expected agreement is 1" is an exact
    test: that happens only when both sides give every row the same single label, and
    kappa is then undefined (None), not 0 or 1. None for an empty table.

    >>> cohen_kappa({"a": {"a": 2}, "b": {"b": 2}})
    1.0
    >>> cohen_kappa({"a": {"a": 5}}) is None
    True
    """
    n, diagonal, rows, columns = _totals(table)
    chance = sum(count * columns.get(label, 0) for label, count in rows.items())
    denominator = n * n - chance
    if not n or not denominator:
        return None
    return (n * diagonal - chance) / denominator


@dataclass(frozen=True)
class ClassificationReport(_AsDict):
    """Every classification figure for one variant; `as_dict` is JSON-ready."""

    n: int
    correct: int
    accuracy: float | None
    macro_f1: float | None
    kappa: float | None
    missing_predictions: int
    missing_references: int
    per_label: dict[str, LabelScores]


def classification_report(
    reference: Sequence[Any], predicted: Sequence[Any], *, normalize: bool = True
) -> ClassificationReport:
    """Accuracy, macro-F1, kappa and per-label scores of predictions against references.

    >>> r = classification_report(["a", "b", None], ["a", None, "a"])
    >>> (r.n, r.correct, r.missing_predictions, r.missing_references)
    (2, 1, 1, 1)
    """
    if len(reference) != len(predicted):
        raise ValueError(f"{len(reference)} references but {len(predicted)} predictions")
    table = confusion(reference, predicted, normalize=normalize)
    n, diagonal, _rows, columns = _totals(table)
    return ClassificationReport(
        n=n,
        correct=diagonal,
        accuracy=accuracy(table),
        macro_f1=macro_f1(table),
        kappa=cohen_kappa(table),
        missing_predictions=columns.get(NO_PREDICTION, 0),
        missing_references=len(reference) - n,
        per_label=label_scores(table),
    )


# ---------------------------------------------------------------------------
# Numeric answers


def parse_number(value: Any) -> float | None:
    """A finite number from a prediction or reference, or None when there is none.

    Strings are read strictly: ``float`` after stripping spaces and one trailing
    period; digit separators are refused ("1,5" is ambiguous, and ``float`` would
    read "1_5" as 15); booleans, NaN and infinities are not numbers here.

    >>> parse_number(" 42 "), parse_number("3.5."), parse_number(7), parse_number("seven")
    (42.0, 3.5, 7.0, None)
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(".") and text[:-1][-1:].isdigit():
            text = text[:-1]
        if not text or "_" in text:
            return None
        try:
            number = float(text)
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class NumericReport(_AsDict):
    """Mean absolute error over the rows where both sides are numbers.

    ``scored`` rows entered the mean; ``missing`` had no prediction, ``unparseable``
    a prediction that is not a number, ``bad_references`` a reference that is not
    one (those rows are not scored at all).
    """

    n: int
    scored: int
    mae: float | None
    missing: int
    unparseable: int
    bad_references: int


def mean_absolute_error(reference: Iterable[Any], predicted: Iterable[Any]) -> NumericReport:
    """MAE of numeric predictions, counting what could not be scored.

    >>> mean_absolute_error([1, "2", 3, None], ["1.5", 2, "three", 4])
    NumericReport(n=3, scored=2, mae=0.25, missing=0, unparseable=1, bad_references=0)
    """
    n = scored = missing = unparseable = bad = 0
    total = 0.0
    for ref, pred in zip(reference, predicted, strict=True):
        if _is_missing(ref):
            continue
        n += 1
        expected = parse_number(ref)
        if expected is None:
            bad += 1
            continue
        if pred is None:
            missing += 1
            continue
        got = parse_number(pred)
        if got is None:
            unparseable += 1
            continue
        scored += 1
        total += abs(got - expected)
    return NumericReport(n, scored, total / scored if scored else None, missing, unparseable, bad)


# ---------------------------------------------------------------------------
# Bootstrap intervals


@dataclass(frozen=True)
class Interval(_AsDict):
    """A percentile bootstrap interval around ``estimate`` (None when nothing was scored)."""

    estimate: float | None
    low: float | None
    high: float | None
    confidence: float
    resamples: int
    seed: int


def accuracy_interval(
    correct: int,
    n: int,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Bootstrap interval for an accuracy of ``correct`` out of ``n`` rows.

    Resampling n rows with replacement from rows that are right or wrong gives a
    number right that is exactly Binomial(n, correct/n), so each resample is one
    binomial draw instead of n row draws: the same distribution as the row bootstrap,
    at a cost independent of n (BENCHMARKS.md: 100,000 rows, 2,000 resamples in
    milliseconds, where resampling rows takes seconds). Seeded: the same arguments
    give the same interval on every run and machine. At accuracy 0 or 1 every
    resample agrees and the interval is a point, as any bootstrap's is.

    >>> accuracy_interval(80, 100, seed=1)
    Interval(estimate=0.8, low=0.72, high=0.88, confidence=0.95, resamples=2000, seed=1)
    """
    _check_bootstrap(resamples, confidence)
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be between 0 and n ({correct} of {n})")
    if not n:
        return Interval(None, None, None, confidence, resamples, seed)
    rng = random.Random(seed)
    p = correct / n
    draws = sorted(_binomial(rng, n, p) / n for _ in range(resamples))
    low, high = _percentiles(draws, confidence)
    return Interval(p, low, high, confidence, resamples, seed)


@dataclass(frozen=True)
class PairedCounts:
    """Two variants scored on the same rows: how many rows each got right.

    Only these four counts matter for the paired bootstrap, so a runner can keep four
    integers per pair of variants instead of every row.
    """

    both: int
    only_a: int
    only_b: int
    neither: int

    @property
    def n(self) -> int:
        return self.both + self.only_a + self.only_b + self.neither

    @property
    def difference(self) -> float | None:
        """accuracy(a) - accuracy(b)."""
        return (self.only_a - self.only_b) / self.n if self.n else None


def paired_counts(
    reference: Iterable[Any],
    predicted_a: Iterable[Any],
    predicted_b: Iterable[Any],
    *,
    normalize: bool = True,
) -> PairedCounts:
    """Count the rows right for both variants, for a only, for b only, for neither.

    >>> paired_counts(["x", "y", "z", None], ["x", "y", "q", "x"], ["x", "q", "z", "x"])
    PairedCounts(both=1, only_a=1, only_b=1, neither=0)
    """
    label = _labeler(normalize)
    counts = [0, 0, 0, 0]
    for ref, a, b in zip(reference, predicted_a, predicted_b, strict=True):
        if _is_missing(ref):
            continue
        expected = label(ref)
        a_right = a is not None and label(a) == expected
        b_right = b is not None and label(b) == expected
        counts[(not a_right) * 2 + (not b_right)] += 1
    both, only_a, only_b, neither = counts
    return PairedCounts(both, only_a, only_b, neither)


def accuracy_difference_interval(
    counts: PairedCounts,
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Interval:
    """Paired bootstrap interval for accuracy(a) - accuracy(b) on the same rows.

    Resampling rows keeps each row's pair of outcomes together (the pairing is what
    makes a 1-point difference detectable when both variants get the same easy rows
    right). A resample of n rows is a multinomial draw over the four kinds of row;
    only "a only" and "b only" move the difference, so each resample is two binomial
    draws: x ~ Bin(n, only_a/n), then y ~ Bin(n - x, only_b/(n - only_a)).
    An interval that excludes 0 says the difference is unlikely to be resampling luck.

    >>> accuracy_difference_interval(PairedCounts(70, 15, 3, 12), seed=1)
    Interval(estimate=0.12, low=0.04, high=0.2, confidence=0.95, resamples=2000, seed=1)
    """
    _check_bootstrap(resamples, confidence)
    n = counts.n
    if not n:
        return Interval(None, None, None, confidence, resamples, seed)
    rng = random.Random(seed)
    p_a = counts.only_a / n
    rest = n - counts.only_a
    p_b = counts.only_b / rest if rest else 0.0
    draws = []
    for _ in range(resamples):
        x = _binomial(rng, n, p_a)
        y = _binomial(rng, n - x, p_b)
        draws.append((x - y) / n)
    draws.sort()
    low, high = _percentiles(draws, confidence)
    return Interval(counts.difference, low, high, confidence, resamples, seed)


def _check_bootstrap(resamples: int, confidence: float) -> None:
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1 (got {resamples})")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1 (got {confidence})")


def _percentiles(ordered: Sequence[float], confidence: float) -> tuple[float, float]:
    """The (1-c)/2 and (1+c)/2 quantiles, interpolated (numpy's default, "type 7")."""

    def quantile(q: float) -> float:
        position = q * (len(ordered) - 1)
        below = math.floor(position)
        above = min(below + 1, len(ordered) - 1)
        value = ordered[below] + (ordered[above] - ordered[below]) * (position - below)
        return round(value, 12)  # no 0.7200000000000001 in reports

    return quantile((1 - confidence) / 2), quantile((1 + confidence) / 2)


def _binomial(rng: random.Random, n: int, p: float) -> int:
    """One Binomial(n, p) draw in O(1) expected time.

    Python 3.12 has ``random.binomialvariate``; batchrun supports 3.11 and wants the
    same draws on every version, so this is its own copy of the two classic methods:
    for n*p < 10, Devroye's waiting-time method (sum geometric gaps between successes
    until they pass n); otherwise Hormann's BTRS (transformed rejection with squeeze,
    "The generation of binomial random variates", 1993).
    """
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - _binomial(rng, n, 1.0 - p)
    if n * p < 10.0:
        successes = position = 0
        log_q = math.log1p(-p)
        while True:
            # 1 - random() is in (0, 1]: the log is finite
            position += math.floor(math.log(1.0 - rng.random()) / log_q) + 1
            if position > n:
                return successes
            successes += 1
    q = 1.0 - p
    spq = math.sqrt(n * p * q)
    b = 1.15 + 2.53 * spq
    a = -0.0873 + 0.0248 * b + 0.01 * p
    c = n * p + 0.5
    v_r = 0.92 - 4.2 / b
    alpha = (2.83 + 5.1 / b) * spq
    lpq = math.log(p / q)
    m = math.floor((n + 1) * p)
    h = math.lgamma(m + 1) + math.lgamma(n - m + 1)
    while True:
        u = rng.random() - 0.5
        v = rng.random()
        us = 0.5 - abs(u)
        if us <= 0.0:
            continue
        k = math.floor((2.0 * a / us + b) * u + c)
        if k < 0 or k > n:
            continue
        if us >= 0.07 and v <= v_r:
            return k
        v = math.log(v * alpha / (a / (us * us) + b))
        if v <= h - math.lgamma(k + 1) - math.lgamma(n - k + 1) + (k - m) * lpq:
            return k


# ---------------------------------------------------------------------------
# Agreement between variants


@dataclass(frozen=True)
class Agreement(_AsDict):
    """How often two variants give the same label, and kappa between them.

    ``both_missing`` rows had no prediction from either; they count as agreeing
    (`NO_PREDICTION` is a label like any other), and are reported so a reader can
    discount them.
    """

    n: int
    same: int
    share: float | None
    kappa: float | None
    both_missing: int


def agreement(a: Iterable[Any], b: Iterable[Any], *, normalize: bool = True) -> Agreement:
    """Agreement of two variants' labels on the same rows (no reference needed).

    >>> agreement(["yes", "no", "Yes", None], ["yes.", "yes", "yes", None])
    Agreement(n=4, same=3, share=0.75, kappa=0.5555555555555556, both_missing=1)
    """
    label = _labeler(normalize)
    table: dict[str, dict[str, int]] = {}
    for x, y in zip(a, b, strict=True):
        row = table.setdefault(label(x), {})
        got = label(y)
        row[got] = row.get(got, 0) + 1
    n, diagonal, _rows, _columns = _totals(table)
    return Agreement(
        n=n,
        same=diagonal,
        share=accuracy(table),
        kappa=cohen_kappa(table),
        both_missing=table.get(NO_PREDICTION, {}).get(NO_PREDICTION, 0),
    )


def agreement_table(
    variants: Mapping[str, Sequence[Any]], *, normalize: bool = True
) -> dict[tuple[str, str], Agreement]:
    """`agreement` for every pair of variants, keyed (first, second) in the given order.

    Labels are normalised once per variant, not once per pair.

    >>> table = agreement_table({"a": ["x", "y"], "b": ["x", "x"], "c": ["x", "y"]})
    >>> [(pair, t.share) for pair, t in table.items()]
    [(('a', 'b'), 0.5), (('a', 'c'), 1.0), (('b', 'c'), 0.5)]
    """
    names = list(variants)
    label = _labeler(normalize)
    labels = {name: [label(value) for value in variants[name]] for name in names}
    out = {}
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            out[(first, second)] = agreement(labels[first], labels[second], normalize=False)
    return out
