"""The report on a run: counts, usage, cost, throughput, latency, retries, files.

Built from the run directory, so it says the same thing at the end of a run, in
`batchrun status` while a run is still going (read-only: nothing is repaired or
rewritten), and after any number of resumes. Counts and usage come from the
journal (or, at the end of a run, from the summary the runner has just written
from the same lines); latency, time to first token and retry causes come from the
per-line ``batchrun`` meta, streamed once (see batchrun.report.statistics).

    >>> report = status_report("runs/a")       # doctest: +SKIP
    >>> report["complete"], report["latency_ms"]["p95"]   # doctest: +SKIP
    (True, 1930.4)
    >>> print(format_status(report))           # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from typing import Any

from batchrun.engine.rundir import holder
from batchrun.errors import BatchrunError, RunDirError
from batchrun.output.journal import ERRORS, RESULTS, RUN_INFO, SUMMARY, JournalState, read_journal
from batchrun.output.lines import decode, decode_meta
from batchrun.output.summary import read_json_object
from batchrun.report.statistics import OutputStats
from batchrun.report.tables import format_usd

# files listed first in the report, in this order; anything else follows by name
_FILE_ORDER = (RESULTS, ERRORS, "results.parquet", "invalid.jsonl", SUMMARY, RUN_INFO)


def scan_outputs(run_dir: str) -> OutputStats:
    """Latency, TTFT and retry causes from results.jsonl and errors.jsonl.

    A last line without its newline (torn, or being written by a live run) is
    skipped, as the journal does.
    """
    stats = OutputStats()
    results = os.path.join(run_dir, RESULTS)
    errors = os.path.join(run_dir, ERRORS)
    try:
        if os.path.exists(results):
            with open(results, "rb") as f:
                for line in f:
                    if line.endswith(b"\n"):
                        stats.add(decode_meta(line))
        if os.path.exists(errors):
            with open(errors, "rb") as f:
                for line in f:
                    if line.endswith(b"\n"):
                        stats.add(decode(line))
    except (ValueError, OSError) as exc:
        raise RunDirError(f"{run_dir}: cannot read the output files ({exc})") from exc
    return stats


def _files(run_dir: str) -> list[dict[str, Any]]:
    names = [
        n
        for n in os.listdir(run_dir)
        if not n.startswith(".") and os.path.isfile(os.path.join(run_dir, n))
    ]
    rank = {name: i for i, name in enumerate(_FILE_ORDER)}
    names.sort(key=lambda n: (rank.get(n, len(rank)), n))
    return [
        {"path": os.path.join(run_dir, n), "bytes": os.path.getsize(os.path.join(run_dir, n))}
        for n in names
    ]


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
    from batchrun.cost.bill import cost_report
    from batchrun.cost.prices import PriceBook
    from batchrun.output.usage import Usage

    try:
        book = PriceBook.load(prices)  # the run's own: a file's path or inline entries
    except (BatchrunError, OSError):
        return None, None, None
    priced = cost_report({m: Usage.from_dict(u) for m, u in by_model.items()}, book)
    return priced["cost_usd"], priced["batch_api_cost_usd"], "usage totals"


def run_report(
    run_dir: str,
    *,
    summary: Mapping[str, Any] | None = None,
    outputs: OutputStats | None = None,
) -> dict[str, Any]:
    """Everything the end-of-run report and `batchrun status` show, as plain data.

    ``summary``: the runner's final summary (its counts come from the lines it has
    just written); without it the counts are rebuilt from the files. ``outputs``:
    the lines' latency and retry figures when the caller has already read them
    (the HTML report reads every line once for its charts); else `scan_outputs`.
    """
    if not os.path.isdir(run_dir):
        raise RunDirError(f"{run_dir}: no such run directory")
    info = read_json_object(os.path.join(run_dir, RUN_INFO))
    if info is None:
        raise RunDirError(f"{run_dir}: no run.json (is this a batchrun run directory?)")
    # the end-of-run report is built by the running process itself (it holds the lock)
    running_pid = holder(run_dir) if summary is None else None
    if summary is None:
        summary = read_json_object(os.path.join(run_dir, SUMMARY)) or {}
        try:
            journal = read_journal(run_dir, repair=False)
        except ValueError as exc:
            raise RunDirError(str(exc)) from exc
        if _summary_counts_hold(summary, info, journal):
            requests = {"invalid": 0, **summary["requests"]}
            error_codes = dict(summary.get("error_codes") or {})
        else:
            requests, error_codes = _recount(summary, info, journal)
        state = journal.tally.to_state()
        usage = {**state["usage"], "missing": state["missing_usage"]}
        by_model = state["by_model"]
        retries, rate_limited = state["retries"], state["rate_limited"]
        quality = state["quality"]
        status = summary.get("status", "unknown")
        if status == "running" and running_pid is None:
            status = "stopped"  # killed (kill -9, power cut) before it could say so
    else:
        requests = {"invalid": 0, **summary["requests"]}
        usage = dict(summary["usage"])
        by_model = dict(summary.get("by_model") or {})
        retries, rate_limited = int(summary["retries"]), int(summary["rate_limited"])
        error_codes = dict(summary.get("error_codes") or {})
        quality = summary.get("quality") or {}
        status = summary.get("status", "unknown")

    if outputs is None:
        outputs = scan_outputs(run_dir)
    from batchrun.batch.state import batch_status

    batch = batch_status(run_dir)

    tally_state = (summary.get("journal") or {}).get("tally") or {}
    by_mode = dict(tally_state.get("by_mode") or {})
    options = info.get("options") or {}
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
        "run_dir": run_dir,
        "input": info.get("input_path"),
        "complete": requests["pending"] == 0,
        "status": status,
        "running_pid": running_pid,
        "requests": requests,
        "usage": usage,
        "by_model": by_model,
        "retries": retries,
        "rate_limited": rate_limited,
        "quality": quality,
        "retry_causes": dict(outputs.retry_causes.most_common()),
        "error_codes": dict(sorted(error_codes.items(), key=lambda kv: (-kv[1], kv[0]))),
        "cost_usd": cost,
        "batch_api_cost_usd": batch_cost,
        "cost_source": cost_source,
        "elapsed_s": elapsed,
        "throughput": throughput,
        "pacing": summary.get("pacing"),
        "latency_ms": outputs.latency_ms.summary(),
        "ttft_ms": outputs.ttft_ms.summary(),
        "eval": summary.get("eval"),
        "pilot": summary.get("pilot"),
        "reused": summary.get("reused"),
        "saved_usd": summary.get("saved_usd"),
        "variants": summary.get("variants"),
        "comparison": summary.get("comparison"),
        "batch": batch,
        # pending rows a running batch has answered (taken in when the batch ends)
        "at_provider": (batch or {}).get("at_provider", {}).get("answered", 0),
        "by_mode": by_mode,
        "files": _files(run_dir),
    }


def _summary_counts_hold(
    summary: Mapping[str, Any], info: Mapping[str, Any], journal: JournalState
) -> bool:
    """Use the runner's own counts when nothing was written after them, or when
    rows changed under --force (only the runner, with the input at hand, can tell
    an answer to the old body from one to the new)."""
    if not isinstance(summary.get("requests"), Mapping):
        return False
    marks = summary.get("journal") or {}
    fresh = (
        marks.get("results_bytes") == journal.results_bytes
        and marks.get("errors_bytes") == journal.errors_bytes
    )
    foreign = info.get("outside_input") or {}
    changed = bool(info.get("changed_rows")) or any(foreign.values())
    return fresh or changed


def _recount(
    summary: Mapping[str, Any], info: Mapping[str, Any], journal: JournalState
) -> tuple[dict[str, int], dict[str, int]]:
    """Counts rebuilt from the lines (exact while no row's body changed)."""
    total = int(info.get("input_rows", 0))
    done = len(journal.done)
    failed = len(journal.failed)
    invalid = int((summary.get("requests") or {}).get("invalid", 0))
    requests = {
        "total": total,
        "succeeded": done,
        "failed": failed,
        "pending": max(0, total - done - failed),
        "invalid": invalid,
    }
    codes = Counter(journal.failed_codes.get(h, "unknown") for h in journal.failed)
    return requests, dict(codes)


def status_report(run_dir: str) -> dict[str, Any]:
    """`batchrun status`: the run report rebuilt from the files (read-only); a run made
    on a Ray cluster is its shards added up."""
    if os.path.isfile(os.path.join(run_dir, "shards.json")):
        from batchrun.scale.aggregate import sharded_report

        return sharded_report(run_dir)
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
    from batchrun.output.quality import QualityCounts, quality_warnings

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


def _cost_lines(report: Mapping[str, Any]) -> list[str]:
    from batchrun.report.tables import format_cost_table, format_usd

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
    from batchrun.report.tables import format_usd

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

        from batchrun.batch.state import status_lines

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
    lines.extend(_mode_lines(report))
    lines.extend(_cost_lines(report))
    if report.get("variants"):
        from batchrun.jobs.compare import format_comparison

        lines.append("variants    (* best)")
        block = report.get("comparison") or {}
        lines.extend(
            "  " + line for line in format_comparison(report["variants"], block).splitlines()
        )
    elif report.get("eval"):
        from batchrun.jobs.evaluate import format_eval

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
    "run_report",
    "scan_outputs",
    "status_report",
]
