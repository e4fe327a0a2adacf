"""Score answers against a reference column: accuracy, confusion table, precision/recall.

A job's [eval] section names the reference column and how to read the prediction:
``compare = "exact"`` takes the whole response content, ``compare = "json_field"``
one field of the parsed JSON, ``compare = "number"`` a number (the content, or
``field``) scored by its absolute error (correct within ``tolerance``). Labels are
normalised (strip, casefold, collapse whitespace, drop trailing punctuation) unless
``normalize = false``, so "Paris." and " paris" agree. Labels also get macro-F1 and
Cohen's kappa, and any accuracy a seeded bootstrap interval (`batchrun._jobs.metrics`).
Pure: the runner feeds pairs in, the summary takes the report out.

    >>> ev = Evaluator("label", "json_field", field="sentiment")
    >>> ev.add("positive", ev.predicted('{"sentiment": "Positive"}', None))
    >>> ev.add("negative", None)
    >>> ev.report()["accuracy"]
    0.5

Call `add` for every row that has a reference, failed requests included (their
prediction is None): accuracy is over all rows, ``accuracy_answered`` over those that
got an answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from batchrun._labels import NO_PREDICTION, normalize_answer
from batchrun._output.answers import load_json
from batchrun._templating.cells import as_text
from batchrun._values import Evaluation

MAX_CATEGORICAL_LABELS = 50


class Evaluator:
    """Accumulates (reference, predicted) pairs; `report` summarises them.

    Label counts are kept only while the references look categorical (at most
    `MAX_CATEGORICAL_LABELS` distinct values), so a million free-text answers cost
    two integers, not a million-entry table.
    """

    def __init__(
        self,
        reference_column: str,
        compare: str = "exact",
        field: str | None = None,
        normalize: bool = True,
        *,
        tolerance: float = 0.0,
        interval: bool = True,
    ) -> None:
        if compare not in ("exact", "json_field", "number"):
            raise ValueError(f"compare must be 'exact', 'json_field' or 'number', not {compare!r}")
        if compare == "json_field" and not field:
            raise ValueError("compare = 'json_field' needs a field name")
        self.reference_column = reference_column
        self.compare = compare
        self.field = field
        self.normalize = normalize
        self.tolerance = tolerance
        self.interval = interval
        self.n = 0
        self.correct = 0
        self.missing_predictions = 0
        self.missing_references = 0
        self._confusion: dict[str, dict[str, int]] | None = {} if compare != "number" else None
        self._abs_error = 0.0
        self._scored = 0
        self._unparseable = 0
        self._bad_references = 0

    @classmethod
    def of(cls, spec: Evaluation | None) -> Evaluator | None:
        """The evaluator for a run's [eval] settings, or None when it has none."""
        if spec is None:
            return None
        return cls(
            spec.reference_column,
            spec.compare,
            spec.field,
            spec.normalize,
            tolerance=spec.tolerance,
            interval=spec.interval,
        )

    @classmethod
    def merged(
        cls, reports: Iterable[Mapping[str, Any] | None], *, interval: bool | None = None
    ) -> Evaluator | None:
        """One evaluator holding the counts of several reports (the shards of a run on a
        Ray cluster), so its `report` is what one process scoring every row writes: the
        confusion table, macro-F1, kappa, the interval, the MAE. None without any.

        ``interval``: compute the accuracy interval (default: when a part has one).

            >>> a, b = Evaluator("y"), Evaluator("y")
            >>> a.add("x", "x"); b.add("z", "x")
            >>> merged = Evaluator.merged([a.report(), b.report()])
            >>> merged.report()["confusion"], merged.report()["accuracy_interval"]["high"]
            ({'x': {'x': 1}, 'z': {'x': 1}}, 1.0)
        """
        parts = [r for r in reports if r]
        if not parts:
            return None
        first = parts[0]
        if interval is None:
            interval = any(p.get("accuracy_interval") for p in parts)
        merged = cls(
            str(first.get("reference_column")),
            str(first.get("compare") or "exact"),
            first.get("field"),
            bool(first.get("normalize", True)),
            tolerance=float(first.get("tolerance") or 0.0),
            interval=interval,
        )

        def total(key: str) -> int:
            return sum(int(p.get(key) or 0) for p in parts)

        merged.n, merged.correct = total("n"), total("correct")
        merged.missing_predictions = total("missing_predictions")
        merged.missing_references = total("missing_references")
        if merged._confusion is not None:
            confusion: dict[str, dict[str, int]] | None = {}
            for part in parts:
                table = part.get("confusion")
                if table is None:
                    if part.get("n"):  # a shard of free text: no table for the whole
                        confusion = None
                        break
                    continue
                assert confusion is not None
                for ref, row in table.items():
                    target = confusion.setdefault(ref, {})
                    for pred, count in row.items():
                        target[pred] = target.get(pred, 0) + int(count)
            if confusion is not None and len(confusion) > MAX_CATEGORICAL_LABELS:
                confusion = None
            merged._confusion = confusion
        if merged.compare == "number":
            merged._scored = total("scored")
            merged._abs_error = sum(
                float(p.get("mae") or 0.0) * int(p.get("scored") or 0) for p in parts
            )
            merged._unparseable = total("unparseable")
            merged._bad_references = total("bad_references")
        return merged

    def predicted(self, content: str | None, parsed: Mapping[str, Any] | None) -> str | None:
        """The prediction in one response: its content, or one field of its JSON.

        ``parsed`` is the structured values when the job has a schema (see
        `batchrun._output.answers.parse_content`); otherwise the content is parsed here.
        """
        if self.compare == "exact" or (self.compare == "number" and not self.field):
            return content
        assert self.field is not None
        if parsed is not None and self.field in parsed:
            value = parsed[self.field]
        else:
            data, error = load_json(content)
            if error is not None or not isinstance(data, dict):
                return None
            value = data.get(self.field)
        return None if value is None else as_text(value)

    def _label(self, value: Any) -> str:
        text = value if isinstance(value, str) else as_text(value)
        return normalize_answer(text) if self.normalize else text

    def add(self, reference: Any, predicted: str | None) -> None:
        """Count one row. A row whose reference is None/empty is counted apart."""
        if reference is None or (isinstance(reference, str) and not reference.strip()):
            self.missing_references += 1
            return
        if self.compare == "number":
            self._add_number(reference, predicted)
            return
        ref = self._label(reference)
        self.n += 1
        if predicted is None:
            self.missing_predictions += 1
            pred = NO_PREDICTION
        else:
            pred = self._label(predicted)
            if pred == ref:
                self.correct += 1
        if self._confusion is not None:
            row = self._confusion.get(ref)
            if row is None:
                if len(self._confusion) >= MAX_CATEGORICAL_LABELS:
                    self._confusion = None  # free text: stop tabulating
                    return
                row = self._confusion[ref] = {}
            row[pred] = row.get(pred, 0) + 1

    def _add_number(self, reference: Any, predicted: str | None) -> None:
        from batchrun._jobs.metrics import parse_number

        self.n += 1
        expected = parse_number(reference)
        if expected is None:
            self._bad_references += 1
            return
        if predicted is None:
            self.missing_predictions += 1
            return
        got = parse_number(predicted)
        if got is None:
            self._unparseable += 1
            return
        error = abs(got - expected)
        self._scored += 1
        self._abs_error += error
        if error <= self.tolerance:
            self.correct += 1

    def label(self, value: Any) -> str:
        """A reference or prediction as the confusion table names it (normalised)."""
        return self._label(value)

    def is_correct(self, reference: Any, predicted: str | None) -> bool | None:
        """Whether `add` would count this row correct; None when it has no reference
        (the HTML report marks its sample rows this way, one row at a time)."""
        if reference is None or (isinstance(reference, str) and not reference.strip()):
            return None
        if predicted is None:
            return False
        if self.compare == "number":
            from batchrun._jobs.metrics import parse_number

            expected, got = parse_number(reference), parse_number(predicted)
            return (
                expected is not None and got is not None and abs(got - expected) <= self.tolerance
            )
        return self._label(predicted) == self._label(reference)

    def report(self) -> dict[str, Any]:
        """The evaluation summary, JSON-ready (goes into summary.json)."""
        answered = self.n - self.missing_predictions
        report: dict[str, Any] = {
            "reference_column": self.reference_column,
            "compare": self.compare,
            "field": self.field,
            "normalize": self.normalize,
            "n": self.n,
            "correct": self.correct,
            "accuracy": self.correct / self.n if self.n else None,
            "accuracy_answered": self.correct / answered if answered else None,
            "missing_predictions": self.missing_predictions,
            "missing_references": self.missing_references,
            "categorical": self._confusion is not None,
            "confusion": None,
            "per_label": None,
        }
        from batchrun._jobs import metrics

        if self._confusion is not None and self.n:
            confusion = {
                ref: dict(sorted(row.items())) for ref, row in sorted(self._confusion.items())
            }
            report["confusion"] = confusion
            report["per_label"] = _per_label(confusion)
            report["macro_f1"] = metrics.macro_f1(confusion)
            report["kappa"] = metrics.cohen_kappa(confusion)
        if self.compare == "number":
            report["tolerance"] = self.tolerance
            report["mae"] = self._abs_error / self._scored if self._scored else None
            report["scored"] = self._scored
            report["unparseable"] = self._unparseable
            report["bad_references"] = self._bad_references
        if self.interval and self.n:
            ci = metrics.accuracy_interval(self.correct, self.n)
            report["accuracy_interval"] = {
                "low": ci.low,
                "high": ci.high,
                "confidence": ci.confidence,
                "resamples": ci.resamples,
                "seed": ci.seed,
            }
        return report


def _per_label(confusion: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, Any]]:
    predicted_totals: dict[str, int] = {}
    for row in confusion.values():
        for pred, count in row.items():
            predicted_totals[pred] = predicted_totals.get(pred, 0) + count
    out = {}
    for label, row in confusion.items():
        hits = row.get(label, 0)
        support = sum(row.values())
        predicted = predicted_totals.get(label, 0)
        precision = hits / predicted if predicted else None
        recall = hits / support if support else None
        f1 = (
            2 * precision * recall / (precision + recall)
            if precision is not None and recall is not None and precision + recall
            else None
        )
        out[label] = {
            "support": support,
            "predicted": predicted,
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }
    return out


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def not_scored(report: Mapping[str, Any]) -> bool:
    """True when rows with a reference were counted but none got an answer (a run
    stopped on its endpoint): its accuracy of 0 says nothing about the answers.

    >>> not_scored({"n": 32, "missing_predictions": 32}), not_scored({"n": 0})
    (True, False)
    """
    n = int(report.get("n") or 0)
    return n > 0 and int(report.get("missing_predictions") or 0) >= n


def format_eval(report: Mapping[str, Any]) -> str:
    """A small text rendering of `Evaluator.report` for the terminal::

    accuracy 0.500 (1/2 correct; 1 without prediction)

    reference \\ predicted  positive  (none)
    positive                    1       0
    ...
    """
    n, correct = report["n"], report["correct"]
    if not_scored(report):
        # every row with a reference failed or went unanswered: a 0.000 would read as
        # the model being always wrong, when it was never asked (or never answered)
        head = f"not scored: none of the {n:,} rows with a reference got an answer"
        if report.get("pending"):
            head += f" ({report['pending']:,} rows not sent yet)"
        return head
    head = f"accuracy {_fmt(report['accuracy'])}"
    ci = report.get("accuracy_interval")
    if ci and ci.get("low") is not None:
        head += f" [{_fmt(ci['low'])}, {_fmt(ci['high'])}]"
    head += f" ({correct}/{n} correct"
    if report["missing_predictions"]:
        head += f"; {report['missing_predictions']} without prediction"
    if report.get("missing_references"):
        head += f"; {report['missing_references']} rows without reference skipped"
    lines = [head + ")"]
    if ci and ci.get("low") is not None:
        lines[0] += f"; {ci['confidence']:.0%} bootstrap interval"
    if report.get("macro_f1") is not None or report.get("kappa") is not None:
        lines.append(f"macro-F1 {_fmt(report.get('macro_f1'))}  kappa {_fmt(report.get('kappa'))}")
    if report.get("compare") == "number":
        mae = report.get("mae")
        extra = f"MAE {'-' if mae is None else f'{mae:.4g}'} over {report.get('scored', 0)} rows"
        if report.get("unparseable"):
            extra += f"; {report['unparseable']} answers not a number"
        if report.get("tolerance"):
            extra += f"; correct within {report['tolerance']:g}"
        lines.append(extra)
    if report.get("gold_rows"):
        lines.append(f"{report['gold_rows']} references are labels people gave (gold.jsonl)")
    if isinstance(report.get("calibration"), dict):
        from batchrun._jobs.calibration import format_calibration

        lines.extend(format_calibration(report["calibration"]))
    confusion = report.get("confusion")
    if confusion:
        refs = list(confusion)
        preds = sorted({p for row in confusion.values() for p in row}, key=_pred_order(refs))
        width = max(len("reference \\ predicted"), *(len(r) for r in refs))
        cols = [max(len(p), 5) for p in preds]
        lines.append("")
        lines.append(
            "reference \\ predicted".ljust(width)
            + "".join("  " + p.rjust(w) for p, w in zip(preds, cols, strict=True))
        )
        for ref in refs:
            cells = "".join(
                "  " + str(confusion[ref].get(p, 0)).rjust(w)
                for p, w in zip(preds, cols, strict=True)
            )
            lines.append(ref.ljust(width) + cells)
        per_label = report.get("per_label") or {}
        lines.append("")
        lines.append("label".ljust(width) + "  precision     recall         f1   support")
        for ref in refs:
            stats = per_label.get(ref, {})
            lines.append(
                ref.ljust(width)
                + f"  {_fmt(stats.get('precision')):>9}  {_fmt(stats.get('recall')):>9}"
                + f"  {_fmt(stats.get('f1')):>9}  {stats.get('support', 0):>8}"
            )
    return "\n".join(lines)


def _pred_order(refs: list[str]) -> Any:
    """Predicted columns in reference order, then other labels, then "(none)" last."""
    rank = {label: i for i, label in enumerate(refs)}

    def key(label: str) -> tuple[int, int, str]:
        if label == NO_PREDICTION:
            return (2, 0, label)
        if label in rank:
            return (0, rank[label], label)
        return (1, 0, label)

    return key
