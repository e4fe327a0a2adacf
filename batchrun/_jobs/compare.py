"""Compare a job's variants side by side: accuracy (with an interval), cost, tokens,
latency and answer quality per variant, the best marked, and how often they agree.

`Comparison.observe` is handed every joined output row by the pass that writes
results.parquet (`batchrun._output.parquet.write_results_parquet`), in input order,
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

from batchrun._cost.bill import cost_of_totals
from batchrun._cost.prices import PriceBook
from batchrun._input.variants import plan_variants
from batchrun._jobs import metrics
from batchrun._jobs.evaluate import Evaluator
from batchrun._labels import NO_PREDICTION
from batchrun._models import Outcome
from batchrun._output.quality import CATEGORIES, OK
from batchrun._output.usage import Usage
from batchrun._report.statistics import LatencyStats
from batchrun._settings import Settings

SUCCEEDED, FAILED, PENDING = "succeeded", "failed", "pending"


@dataclass
class _Figures:
    """One variant's counters. Tokens and usage are split between the answers this run
    paid for and those it reused (the response cache, or an identical request of the
    run, perhaps another variant's): a row's answer is counted once, where it was paid."""

    model: str | None
    prompt: str | None
    statuses: dict[str, int] = field(default_factory=lambda: {SUCCEEDED: 0, FAILED: 0, PENDING: 0})
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reused_prompt_tokens: int = 0
    reused_completion_tokens: int = 0
    quality: dict[str, int] = field(default_factory=dict)
    reused: int = 0
    latency: LatencyStats = field(default_factory=LatencyStats)
    """How long each answer took on the wire: its own request's time, or for a reused
    answer the time of the request that first got it (when its line says)."""
    paid: dict[tuple[str, bool], Usage] = field(default_factory=dict)
    """(model, answered through the Batch API) -> tokens paid for."""
    saved: dict[tuple[str, bool], Usage] = field(default_factory=dict)
    """(model, through the Batch API) -> tokens of the reused answers (not paid again)."""


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
        record: Outcome | None,
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
        if status == PENDING or record is None:
            return  # (only a pending row, or an invalid one, has no line)
        reused = record.reused is not None
        if reused:
            figures.reused += 1
        if status == SUCCEEDED:
            quality = record.quality or OK
            figures.quality[quality] = figures.quality.get(quality, 0) + 1
            prompt, completion = values.get("prompt_tokens"), values.get("completion_tokens")
            if reused:
                figures.reused_prompt_tokens += prompt or 0
                figures.reused_completion_tokens += completion or 0
                latency: float | None = record.original_latency_ms
            else:
                figures.prompt_tokens += prompt or 0
                figures.completion_tokens += completion or 0
                latency = values.get("latency_ms")
            if isinstance(latency, int | float) and not isinstance(latency, bool):
                figures.latency.add(latency)
            model = values.get("model") or figures.model
            if model and (prompt is not None or completion is not None):
                counted = figures.saved if reused else figures.paid
                key = (model, record.via == "batch")
                usage = counted.get(key)
                if usage is None:
                    usage = counted[key] = Usage()
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
        """(the ``variants`` list, the ``comparison`` block) for summary.json.

        ``cost_usd`` is what the run paid for the variant's rows, each at the prices it
        was paid (a row answered through the Batch API at batch prices), so the
        variants' costs add up to the run's cost. When the run reused answers (the
        cache, identical requests), every variant also has ``reused_cost_usd`` (what
        its reused answers cost when first paid for, at the same prices) and
        ``answer_cost_usd`` (the two together: what answering its rows costs whoever
        paid), which is what comparisons use; reused tokens are counted apart.
        """
        self._close_row()
        any_reused = any(f.reused for f in self.figures.values())
        rows = []
        for name in self.names:
            figures = self.figures[name]
            # priced from the variant's usage totals (a tiered model at its base tier)
            paid = _cost(figures.paid, self.book)
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
                "cost_usd": paid,
                "latency_p50_ms": latency.get("p50"),
                "latency_p95_ms": latency.get("p95"),
                "reused": figures.reused,
            }
            if any_reused:
                saved = _cost(figures.saved, self.book)
                row["reused_prompt_tokens"] = figures.reused_prompt_tokens
                row["reused_completion_tokens"] = figures.reused_completion_tokens
                row["reused_cost_usd"] = saved
                row["answer_cost_usd"] = (
                    None if paid is None or saved is None else round(paid + saved, 10)
                )
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
                cost = cost_to_answer(row)
                if cost is not None and correct:
                    row["cost_per_correct_usd"] = round(cost / correct, 10)
            rows.append(row)
        pairs = self._pairs()
        verdict = _verdict(rows, pairs)
        for row in rows:
            row["best"] = row["name"] == verdict["best"]
        by = "accuracy" if any(r.get("accuracy") is not None for r in rows) else None
        return rows, {**verdict, "best_by": by, "pairs": pairs}

    def _pairs(self) -> list[dict[str, Any]]:
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
        return pairs


def _cost(usage: Mapping[tuple[str, bool], Usage], book: PriceBook) -> float | None:
    """USD of (model, via batch) -> usage totals, each at the prices it was paid; None
    when no model of it has a price (the unpriced ones are left out otherwise, as in
    the run's cost table)."""
    online, unpriced = cost_of_totals({m: u for (m, b), u in usage.items() if not b}, book)
    batch, unpriced_batch = cost_of_totals(
        {m: u for (m, b), u in usage.items() if b}, book, via_batch=True
    )
    models = {m for m, _ in usage}
    if models and models <= {*unpriced, *unpriced_batch}:
        return None
    return round(online + batch, 10)


def cost_to_answer(row: Mapping[str, Any]) -> float | None:
    """What answering a variant's rows costs, whoever paid: its ``answer_cost_usd``
    when the run reused answers, else its ``cost_usd``."""
    return row["answer_cost_usd"] if "answer_cost_usd" in row else row.get("cost_usd")


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


def _verdict(rows: list[dict[str, Any]], pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Which variant is best, if one clearly is.

    The ``leader`` is the most accurate (a tie goes to the cheaper to answer, see
    `cost_to_answer`). It is the ``best`` only when it is clearly more accurate than
    every other scored variant: the paired accuracy difference's bootstrap interval
    lies above 0 (without intervals, the difference itself is above 0). Otherwise
    there is no clear winner: ``best`` is None, ``contenders`` names the leader and
    the variants it cannot be told apart from, and ``cheapest_contender`` the one of
    them cheapest to answer (None on a tie). A tie in cost never makes a winner.

    >>> rows = [{"name": "a", "accuracy": .8, "cost_usd": 2}, {"name": "b", "accuracy": .7,
    ...         "cost_usd": 1}]
    >>> pair = {"a": "a", "b": "b", "accuracy_difference": .1}
    >>> _verdict(rows, [{**pair, "difference_low": .05, "difference_high": .15}])["best"]
    'a'
    >>> v = _verdict(rows, [{**pair, "difference_low": -.02, "difference_high": .2}])
    >>> v["best"], v["leader"], v["contenders"], v["cheapest_contender"]
    (None, 'a', ['a', 'b'], 'b')
    """
    scored = [r for r in rows if r.get("accuracy") is not None]
    if not scored:
        return {"best": None, "leader": None}

    def cost(row: Mapping[str, Any]) -> float:
        value = cost_to_answer(row)
        return float("inf") if value is None else float(value)

    ranked = sorted(scored, key=lambda r: (-r["accuracy"], cost(r)))
    leader = str(ranked[0]["name"])
    by_pair = {(str(p["a"]), str(p["b"])): p for p in pairs}
    close = [r for r in ranked[1:] if not _clearly_ahead(leader, str(r["name"]), by_pair)]
    if not close:
        return {"best": leader, "leader": leader}
    contenders = [ranked[0], *close]
    costs = sorted(cost(r) for r in contenders)
    cheapest = None
    if costs[0] < costs[1]:
        cheapest = next(str(r["name"]) for r in contenders if cost(r) == costs[0])
    return {
        "best": None,
        "leader": leader,
        "contenders": [str(r["name"]) for r in contenders],
        "cheapest_contender": cheapest,
    }


def _clearly_ahead(a: str, b: str, pairs: Mapping[tuple[str, str], Mapping[str, Any]]) -> bool:
    """Is variant ``a`` clearly more accurate than ``b`` on the rows both answered?"""
    pair, sign = pairs.get((a, b)), 1.0
    if pair is None:
        pair, sign = pairs.get((b, a)), -1.0
    if pair is None or pair.get("accuracy_difference") is None:
        return False  # never scored on the same rows: nothing to tell them apart
    low, high = pair.get("difference_low"), pair.get("difference_high")
    if low is None or high is None:  # no interval: the difference itself
        return bool(sign * pair["accuracy_difference"] > 0)
    return bool(low > 0) if sign > 0 else bool(high < 0)


_VERDICT = ("best", "leader", "contenders", "cheapest_contender")


def judged(
    rows: list[dict[str, Any]], block: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``rows`` and ``block`` (copies) with the verdict made again from their figures
    and pairs: the ``best`` flags and the block's verdict keys (see `_verdict`). A
    summary written by an older batchrun, or a selection of the variants, is judged by
    today's rule."""
    pairs = list(block.get("pairs") or [])
    verdict = _verdict(rows, pairs)
    picked = [{**r, "best": r["name"] == verdict["best"]} for r in rows]
    rest = {k: v for k, v in block.items() if k not in _VERDICT}
    return picked, {**rest, **verdict, "pairs": pairs}


def verdict_line(block: Mapping[str, Any]) -> str | None:
    """The comparison's verdict in one sentence (the text report and the HTML page);
    None without scores.

    >>> import textwrap
    >>> print(textwrap.fill(verdict_line({"best": None, "leader": "a", "contenders": ["a", "b"],
    ...     "cheapest_contender": "b", "pairs": [{"difference_low": -0.1}]}), 78))
    no clear winner: a is the most accurate, but not clearly more than b (the
    interval of the accuracy difference includes 0); the cheapest of them to
    answer is b
    """
    leader = block.get("leader")
    if not leader:
        return None
    pairs = [p for p in block.get("pairs") or () if leader in (p.get("a"), p.get("b"))]
    intervals = any(p.get("difference_low") is not None for p in block.get("pairs") or ())
    if block.get("best"):
        how = (
            "every paired accuracy difference's interval lies above 0"
            if intervals
            else "by accuracy alone: no intervals were computed"
        )
        if not pairs:
            how = "the only variant scored"
        return f"best: {block['best']}, clearly more accurate than the others ({how})"
    others = [n for n in block.get("contenders") or () if n != leader]
    why = (
        "the interval of the accuracy difference includes 0"
        if intervals
        else "the same accuracy, or not scored on the same rows"
    )
    text = (
        f"no clear winner: {leader} is the most accurate, but not clearly more than "
        f"{', '.join(others)} ({why})"
    )
    if block.get("cheapest_contender"):
        text += f"; the cheapest of them to answer is {block['cheapest_contender']}"
    return text


def select_variants(
    variants: list[dict[str, Any]], block: Mapping[str, Any], names: list[str]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The comparison of some of the variants only (the best among them; their pairs).

    >>> rows = [{"name": "a", "accuracy": .5, "cost_usd": 1}, {"name": "b", "accuracy": .7,
    ...         "cost_usd": 1}, {"name": "c", "accuracy": .6, "cost_usd": 1}]
    >>> pair = {"a": "a", "b": "c", "accuracy_difference": -.1, "difference_low": -.15,
    ...         "difference_high": -.05}
    >>> picked, block = select_variants(rows, {"pairs": [pair]}, ["a", "c"])
    >>> [r["name"] for r in picked], block["best"], len(block["pairs"])
    (['a', 'c'], 'c', 1)
    """
    from batchrun._checks import suggest
    from batchrun.errors import ConfigError

    known = [str(r["name"]) for r in variants]
    for name in names:
        if name not in known:
            raise ConfigError(
                f"no variant {name!r} in this run{suggest(name, known)} "
                f"(variants: {', '.join(known)})"
            )
    picked = [r for r in variants if r["name"] in names]
    pairs = [p for p in block.get("pairs") or [] if p["a"] in names and p["b"] in names]
    return judged(picked, {**block, "pairs": pairs})


def format_comparison(rows: list[dict[str, Any]], block: Mapping[str, Any]) -> str:
    """The comparison as a terminal table, the best (if one clearly is) marked with
    ``*``, then how the variants agree and the verdict.

    The ``cost`` column is what answering each variant's rows costs whoever paid
    (`cost_to_answer`); when the run reused answers, ``paid`` (what this run paid for
    them: it adds up to the run's cost) and ``reused`` (rows answered without being
    sent) follow it."""
    from batchrun._report.tables import format_usd

    rows, block = judged(rows, block)
    reused = any("answer_cost_usd" in r for r in rows)
    head = ["variant", "accuracy", "interval", "macro-F1", "cost"]
    head += ["paid", "reused"] if reused else []
    head += ["ok", "failed", "p50 ms"]
    lines = []
    for row in rows:
        low, high = row.get("accuracy_low"), row.get("accuracy_high")
        bad = sum(v for k, v in row.items() if k.startswith("quality_"))
        cells = [
            ("* " if row.get("best") else "  ") + row["name"],
            _num(row.get("accuracy")),
            f"[{_num(low)}, {_num(high)}]" if low is not None else "-",
            _num(row.get("macro_f1")),
            format_usd(cost_to_answer(row)),
        ]
        if reused:
            cells += [format_usd(row.get("cost_usd")), str(row.get("reused") or 0)]
        cells += [
            str(row["succeeded"] - bad),
            str(row["failed"] + bad),
            "-" if row.get("latency_p50_ms") is None else f"{row['latency_p50_ms']:.0f}",
        ]
        lines.append(cells)
    widths = [max(len(r[i]) for r in [head, *lines]) for i in range(len(head))]
    text = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in [head, *lines]
    ]
    if reused:
        text.append(
            "cost: of answering the variant's rows, whoever paid; paid: by this run (adds "
            "up to the run's cost); reused: rows answered by the cache or an identical request"
        )
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
    verdict = verdict_line(block)
    if verdict is not None:
        text.append(verdict)
    return "\n".join(text)


def _num(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


__all__ = [
    "Comparison",
    "cost_to_answer",
    "format_comparison",
    "judged",
    "select_variants",
    "verdict_line",
]
