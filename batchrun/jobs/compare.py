"""Compare a job's variants side by side: accuracy (with an interval), cost, tokens,
latency and answer quality per variant, the best marked, and how often they agree.

`Comparison.observe` is handed every joined output row by the pass that writes
results.parquet (`batchrun.output.parquet.write_results_parquet`), in input order,
the variants of one input row one after another; nothing is kept per row but the
current row's labels, so a comparison of ten million rows holds a few counters per
variant and per pair of variants. `Comparison.report` gives the ``variants`` list of
summary.json (one flat object per variant: what the HTML report's table shows) and
the ``comparison`` block (the best variant, agreement and accuracy differences per
pair, with paired bootstrap intervals).

    comparison = Comparison(settings)
    write_results_parquet(settings, path, observe=comparison.observe)
    variants, block = comparison.report(eval_by_variant)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchrun.cost.bill import cost_report
from batchrun.cost.prices import PriceBook
from batchrun.input.variants import plan_variants
from batchrun.jobs import metrics
from batchrun.jobs.evaluate import NO_PREDICTION, Evaluator
from batchrun.output.quality import CATEGORIES, OK
from batchrun.output.usage import Usage
from batchrun.report.statistics import LatencyStats
from batchrun.settings import Settings

SUCCEEDED, FAILED, PENDING = "succeeded", "failed", "pending"


@dataclass
class _Figures:
    """One variant's counters."""

    model: str | None
    prompt: str | None
    statuses: dict[str, int] = field(default_factory=lambda: {SUCCEEDED: 0, FAILED: 0, PENDING: 0})
    prompt_tokens: int = 0
    completion_tokens: int = 0
    quality: dict[str, int] = field(default_factory=dict)
    reused: int = 0
    latency: LatencyStats = field(default_factory=LatencyStats)
    usage: dict[str, Usage] = field(default_factory=dict)
    """Model -> tokens paid for (reused answers excluded)."""


class Comparison:
    """Counts per variant and per pair of variants, fed one output row at a time."""

    def __init__(self, settings: Settings, book: PriceBook | None = None) -> None:
        self.variants = plan_variants(settings)
        self.names = [v.name for v in self.variants]
        self.figures = {v.name: _Figures(v.model, v.prompt) for v in self.variants}
        self.book = book if book is not None else PriceBook.load(settings.prices)
        self.evaluator = Evaluator.of(settings.eval)
        self.interval = settings.eval.interval if settings.eval is not None else False
        self._row: int | None = None
        self._reference: Any = None
        self._reference_label: str | None = None
        self._labels: dict[str, str] = {}
        self._right: dict[str, bool] = {}
        pairs = [(a, b) for i, a in enumerate(self.names) for b in self.names[i + 1 :]]
        self.agreement: dict[tuple[str, str], dict[str, dict[str, int]]] = {p: {} for p in pairs}
        self.paired: dict[tuple[str, str], list[int]] = {p: [0, 0, 0, 0] for p in pairs}

    # -- fed by the parquet pass -------------------------------------------------------
    def observe(
        self,
        obj: Any,
        values: Mapping[str, Any],
        parsed: Mapping[str, Any] | None,
        record: Mapping[str, Any] | None,
    ) -> None:
        name = values.get("variant")
        figures = self.figures.get(name) if isinstance(name, str) else None
        if figures is None:
            return  # an invalid row (no variant), or a variant the job no longer has
        assert isinstance(name, str)
        if values["row"] != self._row:
            self._close_row()
            self._row = values["row"]
            column = self.evaluator.reference_column if self.evaluator else None
            self._reference = obj.get(column) if column and isinstance(obj, dict) else None
            blank = self._reference is None or (
                isinstance(self._reference, str) and not self._reference.strip()
            )
            self._reference_label = (
                None if blank or self.evaluator is None else self.evaluator.label(self._reference)
            )
        status = values["status"]
        if status in figures.statuses:
            figures.statuses[status] += 1
        if status == PENDING:
            return
        meta = (record or {}).get("batchrun") or {}
        if meta.get("reused"):
            figures.reused += 1
        if status == SUCCEEDED:
            quality = str(meta.get("quality") or OK)
            figures.quality[quality] = figures.quality.get(quality, 0) + 1
            prompt, completion = values.get("prompt_tokens"), values.get("completion_tokens")
            figures.prompt_tokens += prompt or 0
            figures.completion_tokens += completion or 0
            if not meta.get("reused"):
                if values.get("latency_ms") is not None:
                    figures.latency.add(values["latency_ms"])
                model = values.get("model") or figures.model
                if model and (prompt is not None or completion is not None):
                    usage = figures.usage.get(model)
                    if usage is None:
                        usage = figures.usage[model] = Usage()
                    usage.prompt_tokens += prompt or 0
                    usage.completion_tokens += completion or 0
                    usage.total_tokens += values.get("total_tokens") or 0
                    usage.cached_tokens += values.get("cached_tokens") or 0
                    usage.reasoning_tokens += values.get("reasoning_tokens") or 0
        evaluator = self.evaluator
        if evaluator is not None:
            predicted = (
                evaluator.predicted(values.get("content"), parsed) if status == SUCCEEDED else None
            )
            label = NO_PREDICTION if predicted is None else evaluator.label(predicted)
            self._labels[name] = label
            if self._reference_label is not None:
                if evaluator.compare == "number":
                    self._right[name] = bool(evaluator.is_correct(self._reference, predicted))
                else:
                    self._right[name] = label == self._reference_label

    def _close_row(self) -> None:
        """The row's variants are all in: count agreement and paired outcomes."""
        labels, right = self._labels, self._right
        if len(labels) > 1:
            for (a, b), table in self.agreement.items():
                if a in labels and b in labels:
                    row = table.setdefault(labels[a], {})
                    row[labels[b]] = row.get(labels[b], 0) + 1
            for (a, b), counts in self.paired.items():
                if a in right and b in right:
                    counts[(not right[a]) * 2 + (not right[b])] += 1
        self._labels = {}
        self._right = {}

    # -- the report ----------------------------------------------------------------------
    def report(
        self, eval_by_variant: Mapping[str, Mapping[str, Any]] | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """(the ``variants`` list, the ``comparison`` block) for summary.json."""
        self._close_row()
        rows = []
        for name in self.names:
            figures = self.figures[name]
            # priced from the variant's usage totals (a tiered model at its base tier)
            cost = cost_report(figures.usage, self.book)["cost_usd"]
            latency = figures.latency.summary() if figures.latency.values else {}
            row: dict[str, Any] = {
                "name": name,
                "model": figures.model,
                "prompt": figures.prompt,
                "succeeded": figures.statuses[SUCCEEDED],
                "failed": figures.statuses[FAILED],
                "pending": figures.statuses[PENDING],
                "prompt_tokens": figures.prompt_tokens,
                "completion_tokens": figures.completion_tokens,
                "cost_usd": cost["total"],
                "latency_p50_ms": latency.get("p50"),
                "latency_p95_ms": latency.get("p95"),
                "reused": figures.reused,
            }
            for category in CATEGORIES:
                if category != OK and figures.quality.get(category):
                    row[f"quality_{category}"] = figures.quality[category]
            score = (eval_by_variant or {}).get(name)
            if score is not None:
                row["n"] = score.get("n")
                row["correct"] = score.get("correct")
                row["accuracy"] = score.get("accuracy")
                ci = score.get("accuracy_interval") or {}
                row["accuracy_low"] = ci.get("low")
                row["accuracy_high"] = ci.get("high")
                for key in ("macro_f1", "kappa", "mae"):
                    if score.get(key) is not None:
                        row[key] = score[key]
                correct = score.get("correct") or 0
                if row["cost_usd"] is not None and correct:
                    row["cost_per_correct_usd"] = round(row["cost_usd"] / correct, 10)
            rows.append(row)
        best = _best(rows)
        for row in rows:
            row["best"] = row["name"] == best
        return rows, self._comparison(rows, best)

    def _comparison(self, rows: list[dict[str, Any]], best: str | None) -> dict[str, Any]:
        pairs = []
        for (a, b), table in self.agreement.items():
            entry: dict[str, Any] = {"a": a, "b": b}
            if table:
                agreement = _agreement(table)
                entry.update(
                    rows=agreement.n,
                    agree=agreement.share,
                    kappa=agreement.kappa,
                    both_unanswered=agreement.both_missing,
                )
            counts = metrics.PairedCounts(*self.paired[(a, b)])
            if counts.n:
                entry["accuracy_difference"] = counts.difference
                if self.interval:
                    ci = metrics.accuracy_difference_interval(counts)
                    entry["difference_low"] = ci.low
                    entry["difference_high"] = ci.high
            pairs.append(entry)
        by = "accuracy" if any(r.get("accuracy") is not None for r in rows) else None
        return {"best": best, "best_by": by, "pairs": pairs}


def _agreement(table: Mapping[str, Mapping[str, int]]) -> metrics.Agreement:
    n = sum(sum(row.values()) for row in table.values())
    same = sum(row.get(label, 0) for label, row in table.items())
    return metrics.Agreement(
        n=n,
        same=same,
        share=same / n if n else None,
        kappa=metrics.cohen_kappa({k: dict(v) for k, v in table.items()}),
        both_missing=table.get(NO_PREDICTION, {}).get(NO_PREDICTION, 0),
    )


def _best(rows: list[dict[str, Any]]) -> str | None:
    """The most accurate variant; a tie goes to the cheaper. None without scores."""
    scored = [r for r in rows if r.get("accuracy") is not None]
    if not scored:
        return None
    cost = float("inf")

    def key(row: dict[str, Any]) -> tuple[float, float]:
        return (-row["accuracy"], row["cost_usd"] if row["cost_usd"] is not None else cost)

    return str(min(scored, key=key)["name"])


def select_variants(
    variants: list[dict[str, Any]], block: Mapping[str, Any], names: list[str]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The comparison of some of the variants only (the best among them; their pairs).

    >>> rows = [{"name": "a", "accuracy": .5, "cost_usd": 1}, {"name": "b", "accuracy": .7,
    ...         "cost_usd": 1}, {"name": "c", "accuracy": .6, "cost_usd": 1}]
    >>> picked, block = select_variants(rows, {"pairs": [{"a": "a", "b": "c"}]}, ["a", "c"])
    >>> [r["name"] for r in picked], block["best"], len(block["pairs"])
    (['a', 'c'], 'c', 1)
    """
    from batchrun.checks import suggest
    from batchrun.errors import ConfigError

    known = [str(r["name"]) for r in variants]
    for name in names:
        if name not in known:
            raise ConfigError(
                f"no variant {name!r} in this run{suggest(name, known)} "
                f"(variants: {', '.join(known)})"
            )
    picked = [dict(r) for r in variants if r["name"] in names]
    best = _best(picked)
    for row in picked:
        row["best"] = row["name"] == best
    pairs = [p for p in block.get("pairs") or [] if p["a"] in names and p["b"] in names]
    return picked, {**block, "best": best, "pairs": pairs}


def format_comparison(rows: list[dict[str, Any]], block: Mapping[str, Any]) -> str:
    """The comparison as a terminal table, best first marked with ``*``."""
    from batchrun.report.tables import format_usd

    head = ["variant", "accuracy", "interval", "macro-F1", "cost", "ok", "failed", "p50 ms"]
    lines = []
    for row in rows:
        low, high = row.get("accuracy_low"), row.get("accuracy_high")
        bad = sum(v for k, v in row.items() if k.startswith("quality_"))
        lines.append(
            [
                ("* " if row.get("best") else "  ") + row["name"],
                _num(row.get("accuracy")),
                f"[{_num(low)}, {_num(high)}]" if low is not None else "-",
                _num(row.get("macro_f1")),
                format_usd(row.get("cost_usd")),
                str(row["succeeded"] - bad),
                str(row["failed"] + bad),
                "-" if row.get("latency_p50_ms") is None else f"{row['latency_p50_ms']:.0f}",
            ]
        )
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    text = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [head, *lines]
    ]
    for pair in block.get("pairs") or []:
        if pair.get("agree") is None:
            continue
        line = f"{pair['a']} vs {pair['b']}: agree on {pair['agree']:.1%} of {pair['rows']} rows"
        if pair.get("kappa") is not None:
            line += f" (kappa {pair['kappa']:.2f})"
        if pair.get("accuracy_difference") is not None:
            line += f"; accuracy difference {pair['accuracy_difference']:+.3f}"
            if pair.get("difference_low") is not None:
                line += f" [{pair['difference_low']:+.3f}, {pair['difference_high']:+.3f}]"
        text.append(line)
    return "\n".join(text)


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


__all__ = ["Comparison", "format_comparison", "select_variants"]
