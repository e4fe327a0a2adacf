"""The report on a run: counts, usage, cost, throughput, latency, retries, files.

Built from the run directory (`batchrun._output.rundir.RunDir`, which knows how an
online run, a Batch API run and a run on a cluster lay out their files), so it says
the same thing at the end of a run, in `batchrun status` while a run is still going
(read-only: nothing is repaired or rewritten), and after any number of resumes.
Counts and usage come from the journal (or, at the end of a run, from the summary
the runner has just written from the same lines); latency, time to first token and
retry causes come from the per-line ``batchrun`` meta, streamed once (see
batchrun._report.statistics). `report_from` is the one place the report's keys are
made.

    >>> report = status_report("runs/a")       # doctest: +SKIP
    >>> report["complete"], report["latency_ms"]["p95"]   # doctest: +SKIP
    (True, 1930.4)
    >>> print(format_status(report))           # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from batchrun._output.rundir import RunDir, Snapshot
from batchrun._report.statistics import OutputStats
from batchrun._report.tables import align_table, format_usd
from batchrun.errors import BatchrunError


def scan_outputs(run: str | RunDir) -> OutputStats:
    """Latency, TTFT and retry causes over every complete line of the run (each
    shard's, for a run on a cluster); answers are read without their bodies."""
    stats = OutputStats()
    for outcome in _as_run(run).outcomes(meta=True):
        stats.add(outcome)
    return stats


def _as_run(run: str | os.PathLike[str] | RunDir) -> RunDir:
    return run if isinstance(run, RunDir) else RunDir.open(run)


def _cost_blocks(
    summary: Mapping[str, Any], by_model: Mapping[str, Any], prices: Any
) -> tuple[Any, Any, str | None]:
    """(cost_usd, batch_api_cost_usd, source) from the summary, else priced afresh.

    A run records its cost as it goes (exact for tiered prices); a summary without
    one (older run, or no cost hook) is priced from its usage totals, offline.
    """
    if summary.get("cost_usd") is not None:
        return summary["cost_usd"], summary.get("batch_api_cost_usd"), "run"
    if not by_model:
        return None, None, None
    from batchrun._cost.bill import cost_report
    from batchrun._cost.prices import PriceBook
    from batchrun._output.usage import Usage

    try:
        book = PriceBook.load(prices)  # the run's own: a file's path or inline entries
    except (BatchrunError, OSError):
        return None, None, None
    priced = cost_report({m: Usage.from_dict(u) for m, u in by_model.items()}, book)
    return priced["cost_usd"], priced["batch_api_cost_usd"], "usage totals"


def run_report(
    run_dir: str | os.PathLike[str] | RunDir,
    *,
    summary: Mapping[str, Any] | None = None,
    outputs: OutputStats | None = None,
) -> dict[str, Any]:
    """Everything the end-of-run report and `batchrun status` show, as plain data, for
    an online run, a Batch API run and a run on a cluster alike.

    ``summary``: the runner's final summary (its counts come from the lines it has
    just written); without it the counts are rebuilt from the files
    (`batchrun._output.rundir.RunDir.snapshot`). ``outputs``: the lines' latency and
    retry figures when the caller has already read them (the HTML report reads every
    line once for its charts); else `scan_outputs`.
    """
    run = _as_run(run_dir)
    snap = run.snapshot(summary)
    return report_from(snap, scan_outputs(run) if outputs is None else outputs)


def report_from(snap: Snapshot, outputs: OutputStats) -> dict[str, Any]:
    """The report of a run directory's `Snapshot` and its lines' statistics: the one
    place its keys are made."""
    summary, figures, requests = snap.summary, snap.figures, snap.requests
    usage = figures["usage"]
    by_model = figures["by_model"]
    if isinstance(summary.get("cascade"), Mapping):
        # a cascade's lines are its deciding answers; what every stage used is summed
        # in its summary (`batchrun._jobs.cascade_outputs`)
        usage = {**usage, **(summary.get("usage") or {})}
        by_model = summary.get("by_model") or by_model
    options = snap.info.get("options") or {}
    prices = options.get("prices") or options.get("prices_path")
    cost, batch_cost, cost_source = _cost_blocks(summary, by_model, prices)
    elapsed = summary.get("elapsed_s")
    finished = requests["succeeded"] + requests["failed"]
    throughput: dict[str, Any] = {
        "elapsed_s": elapsed,
        "requests_per_s": None,
        "tokens_per_s": None,
    }
    if elapsed:
        throughput["requests_per_s"] = round(finished / elapsed, 3)
        throughput["tokens_per_s"] = round(usage.get("total_tokens", 0) / elapsed, 1)
    return {
        "run_dir": snap.path,
        "input": snap.info.get("input_path"),
        "complete": requests["pending"] == 0,
        "status": snap.status,
        "running_pid": snap.running_pid,
        "requests": requests,
        "usage": usage,
        "by_model": by_model,
        "retries": figures["retries"],
        "rate_limited": figures["rate_limited"],
        "quality": figures["quality"],
        "retry_causes": dict(outputs.retry_causes.most_common()),
        "error_codes": snap.error_codes,
        "cost_usd": cost,
        "batch_api_cost_usd": batch_cost,
        "cost_source": cost_source,
        "elapsed_s": elapsed,
        "throughput": throughput,
        "pacing": summary.get("pacing"),
        "endpoints": _endpoints(figures, summary),
        "latency_ms": outputs.latency_ms.summary(),
        "ttft_ms": outputs.ttft_ms.summary(),
        "eval": summary.get("eval"),
        "pilot": summary.get("pilot"),
        "reused": figures.get("reused"),
        "saved_usd": summary.get("saved_usd"),
        "variants": summary.get("variants"),
        "comparison": summary.get("comparison"),
        "cascade": summary.get("cascade"),
        "batch": snap.batches,
        # pending rows a running batch has answered (taken in when the batch ends)
        "at_provider": (snap.batches or {}).get("at_provider", {}).get("answered", 0),
        "by_mode": snap.by_mode,
        "shards": snap.shards,
        "files": snap.files,
    }


def _endpoints(figures: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """A pool's rows, one per endpoint: what its lines say (counted now), with the
    breaker and cost the run's summary.json recorded for it."""
    counted = figures.get("endpoints")
    recorded = summary.get("endpoints") or {}
    if not counted and not recorded:
        return None
    rows: dict[str, Any] = {}
    for name in [*recorded, *(counted or {})]:
        row = dict(recorded.get(name) or {})
        row.update((counted or {}).get(name) or {})
        rows[name] = row
    return rows


def status_report(run_dir: str | os.PathLike[str] | RunDir) -> dict[str, Any]:
    """`batchrun status`: the run report rebuilt from the files (read-only), for any
    kind of run (a run on a cluster is its shards added up)."""
    return run_report(run_dir)


# ------------------------------------------------------------------------ text


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def format_duration(seconds: float | None) -> str:
    """``4.2 s`` under a minute, else ``1:02:03`` (h:mm:ss); ``-`` when unknown.

    >>> format_duration(4.24), format_duration(3723.4)
    ('4.2 s', '1:02:03')
    """
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    whole = int(round(seconds))
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def format_bytes(size: int) -> str:
    """``512 B``, ``1.2 KB``, ``3.4 MB`` (powers of 1024)."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"  # pragma: no cover


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _percentiles(stats: Mapping[str, Any], what: str) -> str:
    return (
        f"p50 {_ms(stats['p50'])}, p95 {_ms(stats['p95'])}, p99 {_ms(stats['p99'])}, "
        f"max {_ms(stats['max'])} ({_n(stats['count'])} {what})"
    )


def _breakdown(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k}: {_n(v)}" for k, v in counts.items())


def _quality_lines(state: Mapping[str, Any]) -> list[str]:
    """How usable the answers were, and a warning per problem worth a look."""
    from batchrun._output.quality import QualityCounts, quality_warnings

    counts = QualityCounts.from_state(state)
    if not counts.answers:
        return []
    totals = counts.totals()
    ranked = sorted(totals.items(), key=lambda kv: (kv[0] != "ok", -kv[1]))
    line = f"answers     {_n(counts.answers)}: " + ", ".join(f"{_n(n)} {c}" for c, n in ranked)
    if counts.finish_reasons:
        reasons = ", ".join(f"{r} {_n(n)}" for r, n in counts.finish_reasons.most_common())
        line += f" (finish reasons: {reasons})"
    return [line, *(f"warning     {a.message}" for a in quality_warnings(counts))]


def _endpoint_lines(endpoints: Mapping[str, Any] | None) -> list[str]:
    """A pool's table: one row per endpoint (requests sent there, rows it answered or
    failed, rows answered by its earlier answers without sending, its 429s, failed
    attempts, latency, tokens, cost, breaker)."""
    if not endpoints:
        return []
    rows = [
        ("  endpoint", "requests", "answered", "failed", "reused", "429s", "failures", "p50")
        + ("p95",)
        + ("tokens", "cost", "breaker")
    ]
    for name, e in endpoints.items():
        failures = e.get("failures") or {}
        breaker = e.get("breaker") or "-"
        if e.get("breaker_trips"):
            breaker += f" ({e['breaker_trips']} trips)"
        rows.append(
            (
                f"  {name}",
                _n(e.get("requests", 0)),
                _n(e.get("answered", 0)),
                _n(e.get("failed", 0)),
                _n(e.get("reused", 0)),
                _n(e.get("rate_limited", 0)),
                _breakdown(failures) if failures else "0",
                _ms(e.get("latency_p50_ms")),
                _ms(e.get("latency_p95_ms")),
                _n((e.get("usage") or {}).get("total_tokens", 0)),
                format_usd(e["cost_usd"]) if e.get("cost_usd") is not None else "-",
                breaker,
            )
        )
    return ["endpoints", *align_table(rows)]


def _cost_lines(report: Mapping[str, Any]) -> list[str]:
    from batchrun._report.tables import format_cost_table, format_usd

    cost = report.get("cost_usd")
    if cost is None:
        return ["cost        n/a (no priced usage)"]
    if not isinstance(cost, Mapping):  # a bare number
        return [f"cost        {format_usd(float(cost))}"]
    batch = report.get("batch_api_cost_usd") or {
        "total": None,
        "by_model": {},
        "models_without_batch_price": [],
    }
    head = f"cost        {format_usd(cost.get('total'))}"
    if not cost.get("complete", True):
        head += " (incomplete: some models have no price)"
    online = online_price_of_batch_run(cost, batch)
    if online is not None:
        head += f" (Batch API prices; {format_usd(online)} at online prices)"
    if report.get("cost_source") == "usage totals":
        head += " (priced now from usage totals)"
    table = format_cost_table({"cost_usd": cost, "batch_api_cost_usd": batch})
    return [head, *("  " + line for line in table.splitlines())]


def online_price_of_batch_run(cost: Mapping[str, Any], batch: Mapping[str, Any]) -> float | None:
    """What a run that paid Batch API prices for some rows would have cost with every
    row sent online (``batch_api_cost_usd.standard_cost_of_same_models``); None when
    no row was paid at batch prices, or some model has no batch price (its rows are
    not in that figure).

    >>> online_price_of_batch_run({"by_mode": {"batch": 1.0}},
    ...     {"standard_cost_of_same_models": 2.0, "complete": True})
    2.0
    """
    paid = cost.get("by_mode") or {}
    standard = batch.get("standard_cost_of_same_models")
    if not paid.get("batch") or standard is None or not batch.get("complete"):
        return None
    return float(standard)


def _mode_lines(report: Mapping[str, Any]) -> list[str]:
    """Rows by the way they went (Batch API or online), what each cost, and where
    the run's batches stand."""
    from batchrun._report.tables import format_usd

    lines: list[str] = []
    by_mode = report.get("by_mode") or {}
    batch = report.get("batch")
    if by_mode.get("batch") or by_mode.get("batch_failed") or batch:
        cost = report.get("cost_usd")
        paid = (cost.get("by_mode") if isinstance(cost, Mapping) else None) or {}
        parts = []
        for mode, label in (("batch", "via the Batch API"), ("online", "online")):
            answered = int(by_mode.get(mode, 0))
            failed = int(by_mode.get(f"{mode}_failed", 0))
            text = f"{_n(answered)} {label}"
            if failed:
                text += f" (+{_n(failed)} failed)"
            if mode in paid:
                text += f" ({format_usd(paid[mode])})"
            parts.append(text)
        lines.append("ways        " + ", ".join(parts))
    if batch:
        import time

        lines.extend(status_lines(batch, time.time()))
    return lines


def shown_path(path: str | None) -> str | None:
    """A recorded (absolute) path as the report shows it: relative to the working
    directory when it lies inside it, as the run directory is shown as given, so a
    notebook's or a log's output names no machine's directories; else as recorded.

    >>> shown_path(os.path.join(os.getcwd(), "runs", "a", "input.jsonl"))
    'runs/a/input.jsonl'
    >>> shown_path("/elsewhere/data.jsonl") if not os.getcwd().startswith("/elsewhere") else 0
    '/elsewhere/data.jsonl'
    """
    if not path:
        return path
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return path
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        return path
    return relative


def _ago(seconds: float) -> str:
    whole = int(max(0.0, seconds))
    if whole < 60:
        return f"{whole} s"
    if whole < 3600:
        return f"{whole // 60}:{whole % 60:02d}"
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def shard_line(entry: Mapping[str, Any], now: float) -> str:
    """One open batch on one line (status, counts, time since submission).

    >>> shard_line({"shard": "s000001", "status": "in_progress", "completed": 5,
    ...     "failed": 1, "total": 10, "created_at": 100.0}, now=160.0)
    's000001  in_progress  5 done, 1 failed of 10  (submitted 1:00 ago)'
    >>> shard_line({"shard": "s000002", "endpoint": "eu", "status": "validating",
    ...     "total": 10}, now=0.0)
    's000002 at eu  validating  10 rows'
    """
    status = str(entry.get("status"))
    at = f" at {entry['endpoint']}" if entry.get("endpoint") else ""  # a pool's shard
    text = f"{entry.get('shard')}{at}  {status}"
    total = int(entry.get("total") or 0)
    if status.startswith(("in_progress", "finalizing", "cancelling")) or entry.get("completed"):
        text += (
            f"  {int(entry.get('completed') or 0):,} done, {int(entry.get('failed') or 0):,} "
            f"failed of {total:,}"
        )
    else:
        text += f"  {total:,} rows"
    created = entry.get("created_at")
    if isinstance(created, int | float):
        text += f"  (submitted {_ago(now - created)} ago)"
    return text


def status_lines(status: Mapping[str, Any], now: float) -> list[str]:
    """The batch part of the text report."""
    head = f"batches     {len(status['open'])} open, {status['shards_done']} done"
    if isinstance(status.get("updated_at"), int | float):
        head += f"; last checked {_ago(now - status['updated_at'])} ago"
    inside = (status.get("at_provider") or {}).get("answered")
    if inside:
        head += f"; {inside:,} rows answered inside the open ones, collected when each ends"
    lines = [head]
    lines.extend("  " + shard_line(entry, now) for entry in status["open"])
    return lines


def format_status(report: Mapping[str, Any]) -> str:
    """The report as a compact text table (stderr at the end of a run, stdout for status)."""
    req = report["requests"]
    usage = report["usage"]
    state = "complete" if report["complete"] else "incomplete"
    status = report["status"]
    if report.get("running_pid"):
        status = f"running, pid {report['running_pid']}"
    elif status == "stopped":
        status = "stopped: the process ended without finishing (killed?); rerun to resume"
    elif status == "partial" and report.get("pilot"):
        pilot = report["pilot"]
        status = (
            f"partial: a pilot of {_n(pilot.get('rows') or 0)} of "
            f"{_n(pilot.get('input_rows') or 0)} rows"
        )
    lines = [
        f"run         {report['run_dir']}  ({state}; status: {status})",
        f"input       {shown_path(report['input'])}",
    ]
    requests = (
        f"requests    {_n(req['succeeded'])} succeeded, {_n(req['failed'])} failed, "
        f"{_n(req['pending'])} pending of {_n(req['total'])}"
    )
    if report.get("at_provider"):
        requests += (
            f" ({_n(report['at_provider'])} of the pending answered inside running batches, "
            "collected when each ends)"
        )
    if req.get("invalid"):
        requests += f"; {_n(req['invalid'])} invalid rows skipped"
    lines.append(requests)
    shards = report.get("shards")
    if shards:
        line = f"shards      {_n(shards.get('complete', 0))} of {_n(shards['total'])} complete"
        if shards.get("shard_rows"):
            line += f" ({_n(shards['shard_rows'])} rows each)"
        lines.append(line)
    tokens = (
        f"tokens      {_n(usage['total_tokens'])}: {_n(usage['prompt_tokens'])} prompt "
        f"({_n(usage['cached_tokens'])} cached), {_n(usage['completion_tokens'])} completion "
        f"({_n(usage['reasoning_tokens'])} reasoning)"
    )
    if usage.get("missing"):
        tokens += f"; {_n(usage['missing'])} responses without usage"
    lines.append(tokens)
    reused = report.get("reused")
    if reused:
        saved = reused.get("saved_usage") or {}
        line = (
            f"reused      {_n(reused.get('cache', 0))} answers from the cache, "
            f"{_n(reused.get('run', 0))} from identical requests of this run; "
            f"{_n(saved.get('total_tokens', 0))} tokens not paid again"
        )
        if report.get("saved_usd") is not None:
            line += f" ({format_usd(report['saved_usd'])})"
        lines.append(line)
    lines.extend(_quality_lines(report.get("quality") or {}))
    tp = report.get("throughput") or {}
    if tp.get("requests_per_s") is not None:
        lines.append(
            f"throughput  {tp['requests_per_s']:,.2f} req/s, {tp['tokens_per_s']:,.0f} tok/s "
            f"over {format_duration(tp['elapsed_s'])}"
        )
    latency = report.get("latency_ms") or {}
    if latency.get("count"):
        lines.append(f"latency     {_percentiles(latency, 'requests')}")
    ttft = report.get("ttft_ms") or {}
    if ttft.get("count"):
        lines.append(f"first token {_percentiles(ttft, 'streams')}")
    # attempts that were retried and 429 answers are different counts (a 429 can be
    # the last attempt of a failed row); say both without one reading as a subset
    retries = (
        f"retries     {_n(report['retries'])} attempts retried; "
        f"{_n(report['rate_limited'])} answers were 429"
    )
    if report.get("retry_causes"):
        retries += f"; retries by cause: {_breakdown(report['retry_causes'])}"
    lines.append(retries)
    if report["error_codes"]:
        failed = sum(report["error_codes"].values())
        lines.append(
            f"errors      {_n(failed)} rows failing now, by code: "
            f"{_breakdown(report['error_codes'])}"
        )
    pacing = report.get("pacing")
    if pacing:
        lines.append(
            f"pacing      concurrency limit {_n(pacing.get('concurrency_limit', '-'))}; "
            f"{pacing.get('cooldown_s', 0):,.1f} s cooling down after 429s; "
            f"{pacing.get('paced_s', 0):,.1f} s paced by rate-limit headers"
        )
    lines.extend(_endpoint_lines(report.get("endpoints")))
    lines.extend(_mode_lines(report))
    lines.extend(_cost_lines(report))
    if report.get("cascade"):
        from batchrun._report.cascade import format_cascade

        lines.extend(format_cascade({**report, "status": report["status"]}).splitlines())
    if report.get("variants"):
        from batchrun._jobs.compare import format_comparison

        lines.append("variants    (* best)")
        block = report.get("comparison") or {}
        lines.extend(
            "  " + line for line in format_comparison(report["variants"], block).splitlines()
        )
    elif report.get("eval"):
        from batchrun._jobs.evaluate import format_eval

        lines.append("evaluation")
        lines.extend("  " + line for line in format_eval(report["eval"]).splitlines())
    if report.get("files"):
        lines.append("files")
        width = max(len(f["path"]) for f in report["files"])
        for f in report["files"]:
            lines.append(f"  {f['path'].ljust(width)}  {format_bytes(f['bytes'])}")
    return "\n".join(lines)


__all__ = [
    "format_duration",
    "format_status",
    "online_price_of_batch_run",
    "shown_path",
    "report_from",
    "run_report",
    "scan_outputs",
    "shard_line",
    "status_lines",
    "status_report",
]
