"""A sharded run as one run: its summary from its shards', and a recount of their lines.

Every shard directory is a complete run directory with its own summary.json; the
run's top-level summary.json adds them up (`merged_summary`), in the same shape as a
single process's, plus ``shards``. `recount` rebuilds the same figures from the
shards' results.jsonl and errors.jsonl alone (what a test compares the summary with).
What ``batchrun status RUN_DIR`` shows of a sharded run is the report of any run
(`batchrun._report.text.run_report`): the run directory's reader
(`batchrun._output.rundir.RunDir`) knows a sharded run's layout.

    >>> summary = merged_summary("runs/big", plan, total=10_000)   # doctest: +SKIP
    >>> summary["requests"] == recount("runs/big")["requests"]     # doctest: +SKIP
    True
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from batchrun._output.rundir import RunDir, is_complete
from batchrun._output.summary import pool_rows, summary_figures
from batchrun._output.tally import Tally
from batchrun._scale.shards import ShardPlan, shard_dir
from batchrun._version import __version__


def shard_summaries(run_dir: str, plan: ShardPlan) -> list[dict[str, Any] | None]:
    return [RunDir(shard_dir(run_dir, s)).summary() or None for s in plan.shards]


def merged_summary(
    run_dir: str,
    plan: ShardPlan,
    *,
    total: int,
    summaries: list[dict[str, Any] | None] | None = None,
    status: str = "running",
    stop_reason: str | None = None,
    elapsed_s: float = 0.0,
    pacing: Mapping[str, Any] | None = None,
    prices: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The run's summary.json from its shards' (``total``: valid rows of the input)."""
    if summaries is None:
        summaries = shard_summaries(run_dir, plan)
    tally = Tally()
    succeeded = failed = invalid = 0
    codes: Counter[str] = Counter()
    done = 0
    for summary in summaries:
        if summary is None:
            continue
        requests = summary.get("requests") or {}
        succeeded += int(requests.get("succeeded", 0))
        failed += int(requests.get("failed", 0))
        invalid += int(requests.get("invalid", 0))
        codes.update({str(k): int(v) for k, v in (summary.get("error_codes") or {}).items()})
        state = (summary.get("journal") or {}).get("tally")
        if state:
            tally.merge(Tally.from_state(state))
        if is_complete(summary):
            done += 1
    out: dict[str, Any] = {
        "status": status,
        "batchrun_version": __version__,
        "stop_reason": stop_reason,
        "input": plan.input_path,
        "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "requests": {
            "total": total,
            "succeeded": succeeded,
            "failed": failed,
            "pending": max(0, total - succeeded - failed),
            "invalid": invalid,
        },
        **summary_figures(tally),
        "error_codes": dict(codes),
        "elapsed_s": round(elapsed_s, 3),
        "pacing": dict(pacing or {}),
        **merged_cost(summaries, prices),
        "shards": {"total": len(plan.shards), "complete": done, "shard_rows": plan.shard_rows},
    }
    if extra:
        out.update(extra)
    breakers = merged_breakers(summaries)
    if breakers or "endpoints" in out:
        # a pool: each endpoint's row, its breaker as the workers saw it, its cost
        by_endpoint = out["pacing"].setdefault("by_endpoint", {})
        for name, breaker in breakers.items():
            by_endpoint.setdefault(name, {}).update(breaker)
        pool_rows(out)
    return out


BREAKER_RANK = {"closed": 0, "half_open": 1, "open": 2, "removed": 3}
"""An endpoint's breaker over a cluster: the worst any worker's was in at its end."""


def merged_breakers(summaries: Iterable[dict[str, Any] | None]) -> dict[str, dict[str, Any]]:
    """A pool's breakers over the shards: each endpoint's worst state (`BREAKER_RANK`)
    and its trips added up (each worker has its own breaker per endpoint)."""
    out: dict[str, dict[str, Any]] = {}
    for summary in summaries:
        rows = ((summary or {}).get("pacing") or {}).get("by_endpoint") or {}
        for name, row in rows.items():
            seen = out.setdefault(name, {"breaker": "closed", "breaker_trips": 0})
            state = row.get("breaker") or "closed"
            if BREAKER_RANK.get(state, 0) > BREAKER_RANK.get(seen["breaker"], 0):
                seen["breaker"] = state
            seen["breaker_trips"] += int(row.get("breaker_trips") or 0)
    return out


def merged_cost(summaries: Iterable[dict[str, Any] | None], prices: Any) -> dict[str, Any]:
    """``cost_usd`` and ``batch_api_cost_usd``: each shard's own (priced request by
    request) added up per model."""
    from batchrun._cost.bill import CostBreakdown, CostTotals, round_usd
    from batchrun._cost.prices import PriceBook

    totals = CostTotals(PriceBook.load(prices))
    any_cost = False
    by_endpoint: dict[str, float] | None = None
    for summary in summaries:
        cost = (summary or {}).get("cost_usd")
        if not isinstance(cost, Mapping):
            continue
        any_cost = True
        if isinstance(cost.get("by_endpoint"), Mapping):  # a pool: each at its own prices
            by_endpoint = by_endpoint or {}
            for name, usd in cost["by_endpoint"].items():
                by_endpoint[name] = by_endpoint.get(name, 0.0) + float(usd or 0.0)
        batch = ((summary or {}).get("batch_api_cost_usd") or {}).get("by_model") or {}
        for model, entry in (cost.get("by_model") or {}).items():
            if not isinstance(entry, Mapping) or entry.get("total") is None:
                totals.unpriced[model] = totals.unpriced.get(model, 0)
                continue
            part = CostBreakdown(
                float(entry.get("input", 0.0)),
                float(entry.get("cached_input", 0.0)),
                float(entry.get("output", 0.0)),
                batch.get(model),
            )
            before = totals.by_model.get(model)
            totals.by_model[model] = part if before is None else before + part
    if not any_cost:
        return {}
    report = totals.report()
    if by_endpoint is not None:
        report["cost_usd"]["by_endpoint"] = {n: round_usd(v) for n, v in by_endpoint.items()}
    return report


def merged_eval(
    reports: Iterable[Mapping[str, Any] | None], *, interval: bool | None = None
) -> dict[str, Any] | None:
    """One evaluation from each shard's: the counts add up (the confusion table too,
    while every shard kept one and the labels stay few), and the figures made from
    them (macro-F1, kappa, the accuracy interval, the MAE) are those one process
    scoring every row writes (`batchrun._jobs.evaluate.Evaluator.merged`)."""
    from batchrun._jobs.evaluate import Evaluator

    parts = [r for r in reports if r]
    merged = Evaluator.merged(parts, interval=interval)
    if merged is None:
        return None
    out = merged.report()
    for key in ("pending", "invalid"):
        out[key] = sum(int(p.get(key) or 0) for p in parts)
    return out


# -- from the lines alone ---------------------------------------------------------------
def recount(run_dir: str) -> dict[str, Any]:
    """The run's figures rebuilt from every shard's output lines, no summary trusted
    (nothing else read but run.json's row count and each shard's invalid.jsonl), in
    the summary's shape."""
    counted = RunDir(run_dir).counts(from_checkpoints=False)
    return {
        "requests": counted.requests,
        **counted.figures(),
        "error_codes": counted.error_codes,
    }


__all__ = [
    "merged_breakers",
    "merged_cost",
    "merged_eval",
    "merged_summary",
    "recount",
    "shard_summaries",
]
