"""Everything the HTML report shows, as one JSON-ready dict, aggregated to stay small.

The counts, usage, cost, quality and evaluation are the text report's
(`batchrun._report.text.report_from` of the directory's `batchrun._output.rundir.RunDir`
snapshot, for an online, Batch API or sharded run alike), so the page says what
``batchrun status`` says. What the text report has no room
for comes from one pass over results.jsonl and errors.jsonl (`OutputScan`): the
time series (`batchrun._report.html.timeseries`), latency, wait and time-to-first-token
distributions, error examples per code, and a sample of rows when there is no
results.parquet to sample from. The pass is resumable: a live page keeps its scan
and reads only the lines appended since the last poll.

The page never holds every row: series are binned to at most 600 points, the
distributions are 103 quantiles each, and the sample table has at most 200 rows,
so the data is a few hundred KB for a million rows. See `build_page_data` for the
shape (DATA_VERSION says which).

    >>> data = build_page_data("runs/sentiment")      # doctest: +SKIP
    >>> data["requests"]["succeeded"], data["series"]["bin_s"]   # doctest: +SKIP
    (300, 1)
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from batchrun._models import Outcome
from batchrun._output.journal import READ_CHUNK
from batchrun._output.lines import decode, milliseconds
from batchrun._output.quality import CATEGORIES, QualityCounts, quality_warnings
from batchrun._output.rundir import PARQUET, RunDir
from batchrun._output.usage import usage_of
from batchrun._report.html.headline import headline, latency_note
from batchrun._report.html.sample import LineSample, cut, parquet_sample
from batchrun._report.html.timeseries import TimeSeries
from batchrun._report.statistics import LatencyStats, OutputStats
from batchrun._report.text import online_price_of_batch_run, report_from
from batchrun._settings import Settings
from batchrun._values import ResponseFormat

DATA_VERSION = 1
QUANTILES = tuple(sorted([q / 100 for q in range(101)] + [0.995, 0.999]))
"""Where each distribution is sampled (sorted, 0 and 1 included: min and max)."""
ERROR_EXAMPLES = 3
"""Example rows kept per error code (the latest lines)."""


def run_options(run_dir: str, info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The options a run recorded in run.json (``info``, else read); {} before it has."""
    if info is None:
        info = RunDir(run_dir).info()
    options = info.get("options")
    return options if isinstance(options, dict) else {}


class OutputScan:
    """The figures drawn from the output lines, read once and then only as they grow.

    `update` reads the complete lines appended to results.jsonl and errors.jsonl
    since the last call (a line still being written waits for its newline); a file
    that shrank or was replaced starts the scan over.
    """

    def __init__(self, run_dir: str, options: Mapping[str, Any] | None = None) -> None:
        """``options``: run.json's (read from there when not given)."""
        self.run_dir = run_dir
        self.options = dict(run_options(run_dir) if options is None else options)
        self._reset()

    def _reset(self) -> None:
        self.outputs = OutputStats()
        """Latency, TTFT and retry causes, as `batchrun._report.text.run_report` counts them."""
        self.wait_ms = LatencyStats()
        self.series = TimeSeries()
        self.examples: dict[str, deque[dict[str, Any]]] = {}
        self.lines = LineSample(self.options)
        self._read: dict[str, tuple[int, int]] = {}  # name -> (inode, bytes read)

    def update(self) -> bool:
        """Read what was appended since the last call; True when anything was."""
        grew = False
        # the run's own files, or (a run on a cluster) each shard's
        for path, answers in RunDir(self.run_dir).line_files():
            try:
                st = os.stat(path)
            except FileNotFoundError:
                continue
            inode, done = self._read.get(path, (st.st_ino, 0))
            if inode != st.st_ino or st.st_size < done:
                self._reset()  # replaced or cut: count everything again
                return self.update() or True
            if st.st_size > done:
                self._read[path] = (inode, self._scan(path, answers, done))
                grew = True
        return grew

    def _scan(self, path: str, succeeded: bool, start: int) -> int:
        """Count the complete lines from byte ``start``; returns where the next begins."""
        add = self._add_result if succeeded else self._add_error
        with open(path, "rb") as f:
            f.seek(start)
            pos, rest = start, b""
            while chunk := f.read(READ_CHUNK):
                lines = (rest + chunk).split(b"\n")
                rest = lines.pop()
                for line in lines:
                    pos += len(line) + 1
                    try:
                        outcome = decode(line)
                    except ValueError:
                        continue  # not a line we wrote; the journal reports those
                    add(outcome)
        return pos

    def _add_result(self, outcome: Outcome) -> None:
        # once per line of a possibly million-line run: the common shape first
        self.outputs.add(outcome)
        statuses = [a.status for a in outcome.attempts] or [outcome.status_code]
        if outcome.reused is not None:
            # answered without being sent (cache, identical request): it waited for
            # nothing, spent no time on the wire and no tokens were paid for it
            self._add_time(outcome, statuses, None, failed=False, sent=False)
            self.lines.add(outcome)
            return
        self.wait_ms.add(milliseconds(outcome.wait_s))
        body = outcome.body
        usage = body.get("usage") if type(body) is dict else None
        tokens = usage.get("total_tokens") if type(usage) is dict else None
        if type(tokens) is not int or not tokens:  # counted as `usage_of` counts it
            parsed = usage_of(body)
            tokens = parsed.total_tokens if parsed else None
        self._add_time(outcome, statuses, tokens, failed=False)
        self.lines.add(outcome)

    def _add_error(self, outcome: Outcome) -> None:
        self.outputs.add(outcome)
        attempts = outcome.attempts
        self._add_time(outcome, [a.status for a in attempts], None, failed=True)
        error = outcome.error or {}
        code = str(error.get("code") or "unknown")
        examples = self.examples.get(code)
        if examples is None:
            examples = self.examples[code] = deque(maxlen=ERROR_EXAMPLES)
        examples.append(
            {
                "custom_id": outcome.custom_id,
                "row": outcome.row,
                "status": outcome.status_code,
                "attempts": len(attempts),
                "message": cut(error.get("message"), 300),
            }
        )
        self.lines.add(outcome)

    def _add_time(
        self,
        outcome: Outcome,
        statuses: list[int | None],
        tokens: int | None,
        failed: bool,
        *,
        sent: bool = True,
    ) -> None:
        at = outcome.finished_at
        if at is None:
            return  # written before lines recorded their finish time: no place in time
        route = outcome.route
        self.series.add(
            at=at,
            latency_ms=milliseconds(outcome.latency_s) if sent else None,
            tokens=tokens,
            statuses=statuses,
            failed=failed,
            # a pool's answer: the endpoint that gave it, by its name as the table has it
            # (``batchrun.endpoint`` is its URL, which two names with two keys share)
            endpoint=route[-1] if sent and route else None,
        )


def distribution(stats: LatencyStats) -> dict[str, Any]:
    """`LatencyStats.summary` (count, mean, p50/p95/p99, max, as the text report has
    them) plus ``curve``: the value at each of `QUANTILES`, for the page's plot."""
    out = stats.summary()
    out["curve"] = []
    if stats.values:
        import pyarrow as pa
        import pyarrow.compute as pc

        data = pa.Array.from_buffers(
            pa.float32(), len(stats.values), [None, pa.py_buffer(stats.values)]
        ).cast(pa.float64())
        values = pc.quantile(data, q=list(QUANTILES), interpolation="linear").to_pylist()
        out["curve"] = [round(v, 1) for v in values]
    return out


def public_base_url(url: Any) -> Any:
    """The endpoint without anything that could be a credential (user:password@,
    a query string such as ``?key=...``).

    >>> public_base_url("https://user:pw@example.com/v1?api-key=x")
    'https://example.com/v1'
    """
    if not isinstance(url, str):
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def run_settings(options: Mapping[str, Any]) -> list[list[Any]]:
    """The settings that shaped the run, as (name, value) rows, from run.json's options.

    Header values are never shown (only their names), the endpoint loses any
    credential-like part, and the prompt template stays out (it is in run.json).
    """
    try:
        settings = Settings.from_public_dict(options)
    except (TypeError, ValueError):  # a run.json this version cannot read: show nothing
        return []
    rows: list[list[Any]] = []

    def put(name: str, value: Any) -> None:
        if value not in (None, [], {}, ""):
            rows.append([name, value])

    put("model", ", ".join(settings.models))
    put("endpoint", public_base_url(settings.base_url))
    put("concurrency", settings.concurrency)
    for key in ("rpm", "tpm"):
        quota = getattr(settings, key)
        put(key, _fmt_number(quota.default) if quota.default is not None else None)
        put(f"model_{key}", ", ".join(f"{m}={_fmt_number(n)}" for m, n in quota.by_model))
    put("stream", settings.stream)
    for key in ("max_attempts", "timeout", "total_timeout", "max_cost", "quality_breaker"):
        put(key, getattr(settings, key))
    for key in ("retry_failed", "retry_bad_answers", "force", "skip_invalid"):
        if getattr(settings, key):
            put(key, True)
    put("id_column", settings.id_column)
    put("headers", ", ".join(name for name, _ in settings.headers))
    for key, value in (settings.request or {}).items():
        put(f"request.{key}", value if isinstance(value, str | int | float | bool) else cut(value))
    rf = settings.response_format
    if isinstance(rf, ResponseFormat):
        named = rf.type == "json_schema" and rf.name
        put("response_format", f"{rf.type}" + (f" ({rf.name})" if named else ""))
    spec = settings.eval
    if spec is not None:
        how = spec.compare + (f" on {spec.field}" if spec.field else "")
        put("eval", f"{spec.reference_column} vs {how}")
    return rows


def _fmt_number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _cost(report: Mapping[str, Any]) -> dict[str, Any] | None:
    cost = report.get("cost_usd")
    if not isinstance(cost, Mapping):
        return None if cost is None else {"total": cost, "by_model": []}
    batch = report.get("batch_api_cost_usd") or {}
    batch_by_model = batch.get("by_model") or {}
    by_model = [
        {
            "model": model,
            "input": row.get("input"),
            "cached_input": row.get("cached_input"),
            "output": row.get("output"),
            "total": row.get("total"),
            "batch": batch_by_model.get(model),
        }
        for model, row in (cost.get("by_model") or {}).items()
        if isinstance(row, Mapping)
    ]
    return {
        "total": cost.get("total"),
        "input": cost.get("input"),
        "cached_input": cost.get("cached_input"),
        "output": cost.get("output"),
        "batch_total": batch.get("total"),
        "online_total": online_price_of_batch_run(cost, batch),
        "complete": cost.get("complete", True),
        "unpriced_models": cost.get("unpriced_models") or [],
        "source": report.get("cost_source"),
        "by_model": by_model,
    }


def _quality(state: Mapping[str, Any]) -> dict[str, Any]:
    counts = QualityCounts.from_state(dict(state))
    return {
        "categories": list(CATEGORIES[::-1]),  # ok first, then the problems
        "by_model": state.get("by_model") or {},
        "finish_reasons": state.get("finish_reasons") or {},
        "answers": counts.answers,
        "warnings": [alert.message for alert in quality_warnings(counts)],
    }


def variants_of(summary: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The variants to compare, when the run tried several (prompts, models, settings).

    The page renders a table from a list of flat objects: ``name`` first, then the
    known figures it formats (``model``, ``accuracy``, ``n``, ``correct``,
    ``cost_usd``, ``cost_per_correct_usd``, ``latency_p50_ms``, ``latency_p95_ms``)
    and any other scalar keys as they are. It reads ``summary["variants"]`` (or
    ``summary["eval"]["variants"]``); fewer than two variants means no section.

        >>> variants_of({"variants": [{"name": "a", "accuracy": 0.5}, {"name": "b"}]})
        [{'name': 'a', 'accuracy': 0.5}, {'name': 'b'}]
    """
    found = summary.get("variants")
    if found is None and isinstance(summary.get("eval"), Mapping):
        found = summary["eval"].get("variants")
    if isinstance(found, Mapping):  # {name: {...}} reads as well as [{name, ...}]
        found = [{"name": name, **v} for name, v in found.items() if isinstance(v, Mapping)]
    if not isinstance(found, list):
        return None
    rows = []
    for item in found:
        if isinstance(item, Mapping) and item.get("name") is not None:
            rows.append(
                {
                    str(k): cut(v)
                    for k, v in item.items()
                    if v is None or isinstance(v, str | int | float | bool)
                }
            )
    return rows if len(rows) >= 2 else None


def comparison_of(
    summary: Mapping[str, Any], variants: list[dict[str, Any]] | None
) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    """The variants with their ``best`` flags made by today's rule, and the verdict the
    text report prints (``{"best", "leader", "contenders", "cheapest_contender",
    "verdict", "pairs"}``; ``pairs``: each pair's agreement and accuracy difference
    with its interval), from summary.json's ``comparison`` block.

        >>> rows = [{"name": "a", "accuracy": 0.6}, {"name": "b", "accuracy": 0.5}]
        >>> pair = {"a": "a", "b": "b", "accuracy_difference": 0.1,
        ...         "difference_low": -0.05, "difference_high": 0.25}
        >>> rows, verdict = comparison_of({"comparison": {"pairs": [pair]}}, rows)
        >>> [r["best"] for r in rows], verdict["verdict"][:15]
        ([False, False], 'no clear winner')
    """
    block = summary.get("comparison")
    if variants is None or not isinstance(block, Mapping):
        return variants, None
    from batchrun._jobs.compare import judged, verdict_line

    try:
        rows, judged_block = judged(variants, block)
    except (KeyError, TypeError, ValueError):  # a block this version cannot read
        return variants, None
    keep = ("best", "leader", "contenders", "cheapest_contender", "best_by")
    verdict = {k: judged_block.get(k) for k in keep}
    pairs = [
        {str(k): v for k, v in pair.items() if v is None or isinstance(v, str | int | float)}
        for pair in judged_block.get("pairs") or ()
        if isinstance(pair, Mapping) and {"a", "b"} <= set(pair)
    ]
    return rows, {**verdict, "verdict": verdict_line(judged_block), "pairs": pairs}


def build_page_data(run_dir: str, *, scan: OutputScan | None = None) -> dict[str, Any]:
    """Everything the page shows, as plain JSON-ready data (see the module docstring).

    ``scan``: a live page's `OutputScan`, kept between calls so each reads only the
    new lines; without it the lines are read once here.

    Keys: ``run`` (dir, input, status, times), ``requests``, ``usage``, ``by_model``,
    ``cost`` (per model, with the Batch API price), ``throughput``, ``retries``,
    ``rate_limited``, ``retry_causes``, ``pacing``, ``endpoints`` (a pool's rows, one
    per endpoint; None without a pool), ``settings`` (name/value rows),
    ``series`` (`TimeSeries.binned`), ``latency`` (``wire``, ``wait``, ``ttft``: each
    `distribution`, plus ``quantiles`` and ``note``: why answers lack a time, see
    `batchrun._report.html.headline.latency_note`), ``quality``, ``eval``
    (summary.json's, or None), ``variants`` (`variants_of`) and ``comparison``
    (`comparison_of`), ``headline`` (the page's first sentence,
    `batchrun._report.html.headline.headline`), ``at_provider`` (pending rows a
    running batch has answered), ``by_mode`` (rows by the way they were answered),
    ``batches`` (`batchrun._output.ledger.batch_history`, None without the Batch API),
    ``reused`` (answers not sent for: from the cache, from identical requests, the
    tokens and USD not paid again; None when none), ``errors`` (per code: rows
    failing now and the latest examples), ``sample`` (the table, see
    batchrun._report.html.sample).
    """
    run = RunDir.open(run_dir)
    snap = run.snapshot()
    info, summary = snap.info, snap.summary
    options = run_options(run_dir, info)
    if scan is None:
        scan = OutputScan(run_dir, options)
    scan.update()
    report = report_from(snap, scan.outputs)
    running = report["running_pid"] is not None
    parquet = os.path.join(run_dir, PARQUET)
    sample = None
    if os.path.exists(parquet) and not running:  # a live run's parquet is an old one
        try:
            sample = parquet_sample(parquet, options)
        except (OSError, ValueError):  # not our layout (ArrowInvalid is a ValueError)
            sample = None
    if sample is None:
        sample = scan.lines.sample()
    errors = [
        {"code": code, "rows": rows, "examples": list(scan.examples.get(code, ()))}
        for code, rows in report["error_codes"].items()
    ]
    variants, comparison = comparison_of(summary, variants_of(summary))
    reused = report.get("reused")
    evaluation = report["eval"]
    wire = distribution(scan.outputs.latency_ms)
    return {
        "version": DATA_VERSION,
        "generated_at": time.time(),
        "run": {
            "dir": os.path.abspath(run_dir),
            "name": os.path.basename(os.path.abspath(run_dir)),
            "input": report["input"],
            "status": report["status"],
            "complete": report["complete"],
            "running": running,
            "started_at": info.get("started_at"),
            "updated_at": summary.get("updated_at"),
            "batchrun_version": summary.get("batchrun_version") or info.get("batchrun_version"),
        },
        "headline": headline(
            report, evaluation, comparison, variants=variants, stop_note=summary.get("stop_note")
        ),
        "requests": report["requests"],
        "at_provider": report.get("at_provider") or 0,
        "by_mode": report.get("by_mode") or {},
        "usage": report["usage"],
        "by_model": report["by_model"],
        "cost": _cost(report),
        "elapsed_s": report["elapsed_s"],
        "throughput": report["throughput"],
        "retries": report["retries"],
        "rate_limited": report["rate_limited"],
        "retry_causes": report["retry_causes"],
        "pacing": report["pacing"] or None,
        "endpoints": report.get("endpoints"),
        "settings": run_settings(options),
        "series": scan.series.binned(),
        "latency": {
            "quantiles": list(QUANTILES),
            "wire": wire,
            "wait": distribution(scan.wait_ms),
            "ttft": distribution(scan.outputs.ttft_ms),
            "note": latency_note(report, int(wire["count"] or 0), running=running),
        },
        "quality": _quality(report["quality"] or {}),
        "eval": evaluation,
        "cascade": report.get("cascade"),
        "variants": variants,
        "comparison": comparison,
        "reused": (
            {**reused, "saved_usd": report.get("saved_usd")}
            if isinstance(reused, Mapping)
            else None
        ),
        "batches": run.batch_history(),
        "errors": errors,
        "sample": sample,
    }
