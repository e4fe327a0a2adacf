"""Calibration: how far each answer's confidence can be trusted, against gold labels. Pure.

Given, for every labelled row, the answer's confidence (`batchrun._confidence`)
and whether the answer was right:

* `reliability_bins`: equal-width confidence bins (10 by default), each with its rows,
  mean confidence and accuracy: a calibrated model's bins sit on the diagonal;
* `expected_calibration_error`: the bins' gaps |accuracy - confidence| weighted by
  their rows (ECE; 0 is perfectly calibrated);
* `accuracy_at_coverage`: sort the rows by confidence, most confident first; the
  accuracy of the top x% of them, for each coverage x (the cost/accuracy trade of
  sending the rest elsewhere);
* `suggest_threshold`: the lowest confidence threshold whose accepted rows (confidence
  at or above it) are at least ``target_accuracy`` right on the labelled sample, with
  a seeded bootstrap interval for the threshold and for the accepted rows' accuracy
  (`batchrun._jobs.metrics.accuracy_interval`). The point threshold is fitted on the
  sample, so it is optimistic; the interval's upper end is the cautious pick for the
  whole run.

Ties in confidence are never split: a threshold accepts every row at its value.

    >>> conf = [0.95, 0.9, 0.8, 0.6, 0.4]
    >>> right = [True, True, False, True, False]
    >>> round(expected_calibration_error(conf, right), 3)
    0.35
    >>> suggest_threshold(conf, right, 0.75, resamples=200).threshold
    0.6
"""

from __future__ import annotations

import math
import random
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from batchrun._jobs.metrics import _binomial, _check_bootstrap, _percentiles, accuracy_interval

DEFAULT_BINS = 10
DEFAULT_COVERAGES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
DIRECT_BOOTSTRAP_ROWS = 1_000
"""Up to this many rows the bootstrap resamples rows; above, it resamples cells of
confidence (rounded to `CELL`) and rightness by binomial draws, so its cost stops
growing with the rows (1,000 resamples: well under a second at any size)."""
CELL = 0.01
_NONE = 2.0  # a resample no threshold satisfies, above any confidence

__all__ = [
    "DEFAULT_BINS",
    "DEFAULT_COVERAGES",
    "Bin",
    "CalibrationSample",
    "CoveragePoint",
    "Threshold",
    "accuracy_at_coverage",
    "expected_calibration_error",
    "format_calibration",
    "format_threshold",
    "reliability_bins",
    "suggest_threshold",
]


def _checked(confidences: Sequence[float], correct: Sequence[bool]) -> None:
    if len(confidences) != len(correct):
        raise ValueError(
            f"confidences and correct differ in length ({len(confidences)} != {len(correct)})"
        )
    for c in confidences:
        if not 0.0 <= c <= 1.0:
            raise ValueError(f"a confidence must be between 0 and 1 (got {c!r})")


@dataclass(frozen=True)
class Bin:
    """One reliability bin: confidences in [low, high) (the last bin includes 1.0)."""

    low: float
    high: float
    n: int
    confidence: float | None
    """Mean confidence of its rows (None: empty)."""
    accuracy: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bin_of(confidence: float, bins: int) -> int:
    return min(int(confidence * bins), bins - 1)


def reliability_bins(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = DEFAULT_BINS
) -> list[Bin]:
    """Equal-width bins over [0, 1], every one listed (empty ones with None figures).

    >>> [(b.n, b.accuracy) for b in reliability_bins([0.1, 0.15, 0.9], [False, True, True], 2)]
    [(2, 0.5), (1, 1.0)]
    """
    if bins < 1:
        raise ValueError(f"bins must be at least 1 (got {bins})")
    _checked(confidences, correct)
    n = [0] * bins
    total = [0.0] * bins
    right = [0] * bins
    for c, ok in zip(confidences, correct, strict=True):
        b = _bin_of(c, bins)
        n[b] += 1
        total[b] += c
        right[b] += bool(ok)
    return [
        Bin(
            round(b / bins, 12),
            round((b + 1) / bins, 12),
            n[b],
            total[b] / n[b] if n[b] else None,
            right[b] / n[b] if n[b] else None,
        )
        for b in range(bins)
    ]


def expected_calibration_error(
    confidences: Sequence[float], correct: Sequence[bool], bins: int = DEFAULT_BINS
) -> float | None:
    """Sum over the bins of (rows in bin / rows) * |accuracy - mean confidence|; None
    without rows.

    >>> expected_calibration_error([0.8, 0.8, 0.8, 0.8, 0.8], [True, True, True, True, False])
    0.0
    """
    table = reliability_bins(confidences, correct, bins)
    rows = sum(b.n for b in table)
    if not rows:
        return None
    gap = 0.0
    for b in table:
        if b.n:
            assert b.accuracy is not None and b.confidence is not None
            gap += b.n / rows * abs(b.accuracy - b.confidence)
    return round(gap, 12)


@dataclass(frozen=True)
class CoveragePoint:
    """The most confident ``coverage`` share of the rows: how many, how right, and the
    lowest confidence among them (the threshold that keeps them)."""

    coverage: float
    rows: int
    accuracy: float
    threshold: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _by_confidence(confidences: Sequence[float]) -> list[int]:
    """Row indices, most confident first (ties in input order)."""
    return sorted(range(len(confidences)), key=lambda i: -confidences[i])


def accuracy_at_coverage(
    confidences: Sequence[float],
    correct: Sequence[bool],
    coverages: Sequence[float] = DEFAULT_COVERAGES,
) -> list[CoveragePoint]:
    """For each coverage x: the accuracy of the ceil(x * rows) most confident rows
    (ties in confidence kept in input order). No rows: an empty list.

    >>> points = accuracy_at_coverage([0.9, 0.5, 0.8, 0.2], [True, False, True, True], (0.5, 1.0))
    >>> [(p.rows, p.accuracy, p.threshold) for p in points]
    [(2, 1.0, 0.8), (4, 0.75, 0.2)]
    """
    _checked(confidences, correct)
    n = len(confidences)
    if not n:
        return []
    order = _by_confidence(confidences)
    right_so_far = []
    running = 0
    for i in order:
        running += bool(correct[i])
        right_so_far.append(running)
    points = []
    for coverage in coverages:
        if not 0 < coverage <= 1:
            raise ValueError(f"a coverage must be in (0, 1] (got {coverage!r})")
        k = max(1, math.ceil(coverage * n - 1e-9))
        points.append(
            CoveragePoint(coverage, k, right_so_far[k - 1] / k, confidences[order[k - 1]])
        )
    return points


@dataclass(frozen=True)
class Threshold:
    """What `suggest_threshold` found. ``threshold`` None: no threshold gives the
    target accuracy on the sample (not even the most confident rows alone)."""

    target_accuracy: float
    threshold: float | None
    rows: int
    """Labelled rows with a confidence."""
    accepted: int
    """Rows at or above the threshold."""
    coverage: float | None
    accuracy: float | None
    """Accuracy of the accepted rows."""
    accuracy_low: float | None
    accuracy_high: float | None
    """Bootstrap interval of ``accuracy`` (`batchrun._jobs.metrics.accuracy_interval`)."""
    low: float | None
    high: float | None
    """Bootstrap interval of the threshold (rows resampled, the threshold found again);
    ``high`` None: in more than the interval's share of resamples no threshold met
    the target."""
    feasible: float
    """Share of resamples in which some threshold met the target."""
    confidence: float
    resamples: int
    seed: int
    accepted_cost: float | None = None
    escalated_cost: float | None = None
    """With ``costs``: what the accepted rows, and the rows below the threshold, cost."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _groups(confidences: Sequence[float], correct: Sequence[bool]) -> list[tuple[float, int, int]]:
    """(confidence, rows, right) per distinct confidence, most confident first."""
    rows: dict[float, list[int]] = {}
    for c, ok in zip(confidences, correct, strict=True):
        cell = rows.setdefault(c, [0, 0])
        cell[0] += 1
        cell[1] += bool(ok)
    return [(c, cell[0], cell[1]) for c, cell in sorted(rows.items(), key=lambda kv: -kv[0])]


def _lowest(groups: Sequence[tuple[float, int, int]], target: float) -> int | None:
    """Index of the lowest group whose rows and every more confident group's are at
    least ``target`` right together (None: none)."""
    found = None
    n = right = 0
    for index, (_c, rows, ok) in enumerate(groups):
        n += rows
        right += ok
        if n and right >= target * n - 1e-12:
            found = index
    return found


def suggest_threshold(
    confidences: Sequence[float],
    correct: Sequence[bool],
    target_accuracy: float,
    *,
    costs: Sequence[float] | None = None,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Threshold:
    """The lowest threshold whose accepted rows reach ``target_accuracy`` on the sample.

    The threshold is one of the rows' confidences: accepting every row at or above it
    gives an accuracy of at least the target, and no lower one does. The bootstrap
    resamples the rows (seeded: the same call gives the same interval) and finds the
    threshold again in each resample. ``costs`` (one per row, e.g. what the next model
    would charge for it) price the rows accepted and the rows escalated.

    >>> t = suggest_threshold([0.9, 0.8, 0.7, 0.6], [True, True, False, True], 0.9,
    ...                       costs=[1, 1, 1, 2], resamples=100)
    >>> t.threshold, t.accepted, t.coverage, t.escalated_cost
    (0.8, 2, 0.5, 3.0)
    """
    _checked(confidences, correct)
    _check_bootstrap(resamples, confidence)
    if not 0 < target_accuracy <= 1:
        raise ValueError(f"target_accuracy must be in (0, 1] (got {target_accuracy!r})")
    if costs is not None and len(costs) != len(confidences):
        raise ValueError("costs must give one cost per row")
    n = len(confidences)
    groups = _groups(confidences, correct)
    found = _lowest(groups, target_accuracy)
    threshold = groups[found][0] if found is not None else None
    accepted = sum(g[1] for g in groups[: found + 1]) if found is not None else 0
    right = sum(g[2] for g in groups[: found + 1]) if found is not None else 0
    low = high = acc_low = acc_high = None
    feasible = 0.0
    if n:
        draws = _bootstrap(confidences, correct, target_accuracy, resamples, seed)
        feasible = sum(1 for d in draws if d <= 1.0) / resamples
        q_low, q_high = _percentiles(sorted(draws), confidence)
        low = q_low if q_low <= 1.0 else None
        high = q_high if q_high <= 1.0 else None
    if accepted:
        ci = accuracy_interval(right, accepted, confidence=confidence, seed=seed)
        acc_low, acc_high = ci.low, ci.high
    accepted_cost = escalated_cost = None
    if costs is not None:
        accepted_cost = float(
            sum(cost for c, cost in zip(confidences, costs, strict=True) if _kept(c, threshold))
        )
        escalated_cost = float(sum(costs)) - accepted_cost
    return Threshold(
        target_accuracy=target_accuracy,
        threshold=threshold,
        rows=n,
        accepted=accepted,
        coverage=accepted / n if n else None,
        accuracy=right / accepted if accepted else None,
        accuracy_low=acc_low,
        accuracy_high=acc_high,
        low=low,
        high=high,
        feasible=feasible,
        confidence=confidence,
        resamples=resamples,
        seed=seed,
        accepted_cost=accepted_cost,
        escalated_cost=escalated_cost,
    )


def _kept(c: float, threshold: float | None) -> bool:
    return threshold is not None and c >= threshold


def _bootstrap(
    confidences: Sequence[float],
    correct: Sequence[bool],
    target: float,
    resamples: int,
    seed: int,
) -> list[float]:
    """The threshold found in each resample (`_NONE` where none meets the target)."""
    rng = random.Random(seed)
    n = len(confidences)
    out: list[float] = []
    if n <= DIRECT_BOOTSTRAP_ROWS:
        order = _by_confidence(confidences)
        values = [confidences[i] for i in order]
        right = [bool(correct[i]) for i in order]
        # sorted positions -> group (distinct confidence) index
        group_of = []
        g = -1
        for k, value in enumerate(values):
            if k == 0 or value != values[k - 1]:
                g += 1
            group_of.append(g)
        heads = [values[k] for k in range(n) if k == 0 or values[k] != values[k - 1]]
        random_ = rng.random
        for _ in range(resamples):
            rows = [0] * len(heads)
            ok = [0] * len(heads)
            for _ in range(n):
                k = int(random_() * n)
                g = group_of[k]
                rows[g] += 1
                ok[g] += right[k]
            groups = [(heads[i], rows[i], ok[i]) for i in range(len(heads))]
            found = _lowest(groups, target)
            out.append(heads[found] if found is not None else _NONE)
        return out
    # many rows: resample cells of (confidence to CELL, right or not) by binomial draws
    digits = round(-math.log10(CELL))
    cells = Counter(
        (round(c, digits), bool(ok)) for c, ok in zip(confidences, correct, strict=True)
    )
    keys = sorted(cells, key=lambda key: (-key[0], key[1]))
    heads = sorted({c for c, _ in keys}, reverse=True)
    position = {c: i for i, c in enumerate(heads)}
    for _ in range(resamples):
        rows = [0] * len(heads)
        ok = [0] * len(heads)
        left, mass = n, n
        for key in keys:
            if left <= 0:
                break
            drawn = _binomial(rng, left, cells[key] / mass) if mass > cells[key] else left
            left -= drawn
            mass -= cells[key]
            rows[position[key[0]]] += drawn
            if key[1]:
                ok[position[key[0]]] += drawn
        groups = [(heads[i], rows[i], ok[i]) for i in range(len(heads))]
        found = _lowest(groups, target)
        out.append(heads[found] if found is not None else _NONE)
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_calibration(calibration: dict[str, Any]) -> list[str]:
    """Text lines for an evaluation's ``calibration`` (and its ``threshold``)::

    calibration: ECE 0.021 over 480 answers with a confidence (mean 0.874, accuracy 0.869)
    threshold 0.873 [0.850, 0.901]: accepts 356 of 480 rows (74.2%), accuracy 0.962 ...
    """
    lines = [
        f"calibration: ECE {_pct(calibration.get('ece'))} over {calibration.get('rows', 0)} "
        f"answers with a confidence (mean {_pct(calibration.get('mean_confidence'))}, "
        f"accuracy {_pct(calibration.get('accuracy'))})"
    ]
    threshold = calibration.get("threshold")
    if isinstance(threshold, dict):
        lines.append(format_threshold(threshold))
    return lines


def format_threshold(found: dict[str, Any]) -> str:
    """One line for a `Threshold` (as a dict)."""
    target = found["target_accuracy"]
    if found.get("threshold") is None:
        return (
            f"no confidence threshold reaches accuracy {target:g} on the "
            f"{found.get('rows', 0)} labelled rows with a confidence"
        )
    high = found.get("high")
    interval = f"[{_pct(found.get('low'))}, {_pct(high) if high is not None else 'none'}]"
    accuracy = f"accuracy {_pct(found.get('accuracy'))}"
    if found.get("accuracy_low") is not None:
        accuracy += f" [{_pct(found['accuracy_low'])}, {_pct(found['accuracy_high'])}]"
    line = (
        f"threshold {_pct(found['threshold'])} {interval}: accepts {found['accepted']} of "
        f"{found['rows']} labelled rows ({found['coverage']:.1%}) at {accuracy}, "
        f"target {target:g}; {found['confidence']:.0%} bootstrap intervals"
    )
    if high is None:
        line += f" (the target was out of reach in {1 - found['feasible']:.0%} of resamples)"
    return line


class CalibrationSample:
    """(confidence, right?) of every labelled row with a confidence, kept compactly
    (9 bytes a row) while results.parquet is written; `report` summarises them for
    summary.json, `threshold` suggests one.

        sample = CalibrationSample()
        sample.add(0.93, True)
        sample.report()["ece"]
    """

    __slots__ = ("_confidences", "_correct")

    def __init__(self) -> None:
        self._confidences = array("d")
        self._correct = bytearray()

    def __len__(self) -> int:
        return len(self._confidences)

    def add(self, confidence: float, correct: bool) -> None:
        self._confidences.append(min(1.0, max(0.0, float(confidence))))
        self._correct.append(1 if correct else 0)

    @property
    def confidences(self) -> Sequence[float]:
        return self._confidences

    @property
    def correct(self) -> list[bool]:
        return [bool(b) for b in self._correct]

    def report(self, bins: int = DEFAULT_BINS) -> dict[str, Any]:
        """``{"rows", "mean_confidence", "accuracy", "ece", "bins", "accuracy_at_coverage"}``."""
        n = len(self)
        correct = self.correct
        return {
            "rows": n,
            "mean_confidence": sum(self._confidences) / n if n else None,
            "accuracy": sum(correct) / n if n else None,
            "ece": expected_calibration_error(self._confidences, correct, bins),
            "bins": [b.as_dict() for b in reliability_bins(self._confidences, correct, bins)],
            "accuracy_at_coverage": [
                p.as_dict() for p in accuracy_at_coverage(self._confidences, correct)
            ],
        }

    def threshold(self, target_accuracy: float, **options: Any) -> Threshold:
        return suggest_threshold(self._confidences, self.correct, target_accuracy, **options)
