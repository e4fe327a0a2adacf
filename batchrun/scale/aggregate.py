"""A sharded run as one run: its summary, a recount from the shards' journals, its report.

Every shard directory is a complete run directory with its own summary.json; the
run's top-level summary.json adds them up (`merged_summary`), in the same shape as a
single process's, plus ``shards``. `recount` rebuilds the same figures from the
shards' results.jsonl and errors.jsonl alone (what a test compares the summary with),
and `sharded_report` is what ``batchrun status RUN_DIR`` shows for a sharded run.

    >>> summary = merged_summary("runs/big", plan, total=10_000)   # doctest: +SKIP
    >>> summary["requests"] == recount("runs/big")["requests"]     # doctest: +SKIP
    True
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from batchrun import __version__
from batchrun.errors import RunDirError
from batchrun.output.journal import ERRORS, RESULTS, RUN_INFO, SUMMARY, read_journal
from batchrun.output.lines import decode, decode_meta
from batchrun.output.summary import read_json_object
from batchrun.output.tally import Tally, UnreadBilled
from batchrun.report.statistics import OutputStats
from batchrun.scale.shards import PLAN, ShardPlan, shard_dir

REQUEST_KEYS = ("total", "succeeded", "failed", "pending", "invalid")


def is_sharded(run_dir: str) -> bool:
    return os.path.isfile(os.path.join(run_dir, PLAN))


def load_plan(run_dir: str) -> ShardPlan:
    data = read_json_object(os.path.join(run_dir, PLAN))
    if data is None:
        raise RunDirError(f"{run_dir}: no readable {PLAN}")
    return ShardPlan.from_dict(data)


def merge_tally(into: Tally, other: Tally) -> Tally:
    """``into`` plus ``other``: every figure a `Tally` keeps (usage, reused answers and
    the usage they saved, the Batch API's part, retries, 429s, codes, quality, modes,
    the models answers named and the unreadable answers paid for)."""
    for mine, theirs in (
        (into.usage, other.usage),
        (into.saved, other.saved),
        (into.batch_usage, other.batch_usage),
    ):
        for model, usage in theirs.by_model.items():
            mine.add(model, usage)  # the total is the sum over models
        mine.missing += theirs.missing
    into.retries += other.retries
    into.rate_limited += other.rate_limited
    into.error_codes.update(other.error_codes)
    into.quality.merge(other.quality)
    into.paid_quality.merge(other.paid_quality)
    into.reused.update(other.reused)
    into.by_mode.update(other.by_mode)
    for answered, asked in other.asked.items():
        into.asked.setdefault(answered, asked)
    for model, unread in other.unread.items():
        into.unread.setdefault(model, UnreadBilled()).add_totals(unread)
    return into


def shard_summaries(run_dir: str, plan: ShardPlan) -> list[dict[str, Any] | None]:
    return [read_json_object(os.path.join(shard_dir(run_dir, s), SUMMARY)) for s in plan.shards]


def tally_figures(tally: Tally) -> dict[str, Any]:
    """The summary's figures from finished requests, as `build_summary` writes them."""
    from batchrun.output.summary import Counts, build_summary

    summary = build_summary(
        status="",
        input_path="",
        counts=Counts(),
        tally=tally,
        elapsed_s=0.0,
        results_bytes=0,
        errors_bytes=0,
    )
    keys = ("usage", "by_model", "retries", "rate_limited", "quality", "reused")
    return {k: summary[k] for k in keys if k in summary}


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
            merge_tally(tally, Tally.from_state(state))
        if summary.get("status") in ("complete",) and not requests.get("pending"):
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
        **tally_figures(tally),
        "error_codes": dict(codes),
        "elapsed_s": round(elapsed_s, 3),
        "pacing": dict(pacing or {}),
        **merged_cost(summaries, prices),
        "shards": {"total": len(plan.shards), "complete": done, "shard_rows": plan.shard_rows},
    }
    if extra:
        out.update(extra)
    return out


def merged_cost(summaries: Iterable[dict[str, Any] | None], prices: Any) -> dict[str, Any]:
    """``cost_usd`` and ``batch_api_cost_usd``: each shard's own (priced request by
    request) added up per model."""
    from batchrun.cost.bill import CostBreakdown, CostTotals
    from batchrun.cost.prices import PriceBook

    totals = CostTotals(PriceBook.load(prices))
    any_cost = False
    for summary in summaries:
        cost = (summary or {}).get("cost_usd")
        if not isinstance(cost, Mapping):
            continue
        any_cost = True
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
    return totals.report()


def merged_eval(
    reports: Iterable[Mapping[str, Any] | None], *, interval: bool | None = None
) -> dict[str, Any] | None:
    """One evaluation from each shard's: the counts add up (the confusion table too,
    while every shard kept one and the labels stay few), and the figures made from
    them (macro-F1, kappa, the accuracy interval, the MAE) are those one process
    scoring every row writes (`batchrun.jobs.evaluate.Evaluator.merged`)."""
    from batchrun.jobs.evaluate import Evaluator

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
    """The run's figures rebuilt from every shard's output lines (nothing else read but
    run.json's row count), in the summary's shape."""
    plan = load_plan(run_dir)
    info = read_json_object(os.path.join(run_dir, RUN_INFO)) or {}
    tally = Tally()
    succeeded = failed = invalid = 0
    codes: Counter[str] = Counter()
    for shard in plan.shards:
        directory = shard_dir(run_dir, shard)
        if not os.path.isdir(directory):
            continue
        try:
            journal = read_journal(directory, repair=False)
        except ValueError as exc:
            raise RunDirError(str(exc)) from exc
        # summary checkpoints are not trusted here: every line is parsed
        fresh = Tally()
        for name in (RESULTS, ERRORS):
            path = os.path.join(directory, name)
            if os.path.exists(path):
                with open(path, "rb") as f:
                    for line in f:
                        if line.endswith(b"\n"):
                            fresh.count_outcome(decode(line))
        merge_tally(tally, fresh)
        succeeded += len(journal.done)
        failed += len(journal.failed)
        invalid += _lines(os.path.join(directory, "invalid.jsonl"))
        codes.update(journal.failed_codes.get(h, "unknown") for h in journal.failed)
    total = int(info.get("input_rows") or 0)
    return {
        "requests": {
            "total": total,
            "succeeded": succeeded,
            "failed": failed,
            "pending": max(0, total - succeeded - failed),
            "invalid": invalid,
        },
        **tally_figures(tally),
        "error_codes": dict(codes),
    }


def _lines(path: str) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.endswith(b"\n"))
    except OSError:
        return 0


def sharded_report(
    run_dir: str, *, final: bool = False, outputs: OutputStats | None = None
) -> dict[str, Any]:
    """`batchrun status` for a sharded run: the shards added up, latency over all their
    lines, the run's own summary for cost and evaluation (``final``: the driver's own
    end-of-run report, not "running"; ``outputs``: the lines' figures when the caller
    has read them already, as `batchrun.report.text.run_report` takes them)."""
    from batchrun.engine.rundir import holder
    from batchrun.report.text import _cost_blocks

    info = read_json_object(os.path.join(run_dir, RUN_INFO))
    if info is None:
        raise RunDirError(f"{run_dir}: no run.json (is this a batchrun run directory?)")
    plan = load_plan(run_dir)
    summary = read_json_object(os.path.join(run_dir, SUMMARY)) or {}
    running_pid = None if final else holder(run_dir)
    counted = recount(run_dir)
    requests = counted["requests"]
    scanned = outputs is not None
    outputs = outputs if outputs is not None else OutputStats()
    for shard in [] if scanned else plan.shards:
        directory = shard_dir(run_dir, shard)
        for name, add in ((RESULTS, True), (ERRORS, False)):
            path = os.path.join(directory, name)
            if not os.path.exists(path):
                continue
            with open(path, "rb") as f:
                for line in f:
                    if not line.endswith(b"\n"):
                        continue
                    outputs.add(decode_meta(line) if add else decode(line))
    status = summary.get("status", "unknown")
    if status == "running" and running_pid is None and not final:
        status = "stopped"
    options = info.get("options") or {}
    cost, batch_cost, cost_source = _cost_blocks(
        summary, counted["by_model"], options.get("prices")
    )
    elapsed = summary.get("elapsed_s")
    finished = requests["succeeded"] + requests["failed"]
    usage = counted["usage"]
    throughput: dict[str, Any] = {
        "elapsed_s": elapsed,
        "requests_per_s": None,
        "tokens_per_s": None,
    }
    if elapsed:
        throughput["requests_per_s"] = round(finished / elapsed, 3)
        throughput["tokens_per_s"] = round(usage.get("total_tokens", 0) / elapsed, 1)
    files = []
    for name in sorted(os.listdir(run_dir)):
        path = os.path.join(run_dir, name)
        if name.startswith(".") or not os.path.isfile(path):
            continue
        files.append({"path": path, "bytes": os.path.getsize(path)})
    parts = os.path.join(run_dir, "results.parquet")
    if os.path.isdir(parts):
        size = sum(
            os.path.getsize(os.path.join(parts, n))
            for n in os.listdir(parts)
            if not n.startswith(".")
        )
        files.append({"path": parts + os.sep, "bytes": size})
    return {
        "run_dir": run_dir,
        "input": info.get("input_path"),
        "complete": requests["pending"] == 0,
        "status": status,
        "running_pid": running_pid,
        "requests": requests,
        "usage": usage,
        "by_model": counted["by_model"],
        "retries": counted["retries"],
        "rate_limited": counted["rate_limited"],
        "quality": counted["quality"],
        "retry_causes": dict(outputs.retry_causes.most_common()),
        "error_codes": dict(sorted(counted["error_codes"].items(), key=lambda kv: (-kv[1], kv[0]))),
        "cost_usd": cost,
        "batch_api_cost_usd": batch_cost,
        "cost_source": cost_source,
        "elapsed_s": elapsed,
        "throughput": throughput,
        "pacing": summary.get("pacing"),
        "latency_ms": outputs.latency_ms.summary(),
        "ttft_ms": outputs.ttft_ms.summary(),
        "eval": summary.get("eval"),
        "shards": summary.get("shards") or {"total": len(plan.shards)},
        "files": files,
    }


__all__ = [
    "is_sharded",
    "load_plan",
    "merge_tally",
    "merged_cost",
    "merged_eval",
    "merged_summary",
    "recount",
    "sharded_report",
]
