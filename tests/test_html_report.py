"""The HTML report's data, page and live server, checked against the run's own files.

The page itself is opened in a real browser in tests/test_html_browser.py.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from batchrun._labels import normalize_answer
from batchrun._report.html import (
    build_page_data,
    render_html,
    report_command,
    serve_command,
    serve_run_dir,
    write_html_report,
)
from batchrun._report.html import cli as html_cli
from batchrun._report.html import sample as sample_module
from batchrun._report.html.data import public_base_url, run_settings, variants_of
from batchrun._report.html.timeseries import MAX_BINS, TimeSeries
from batchrun._report.text import format_status, status_report

pytest_plugins = ["tests.conftest_html"]  # sentiment_run


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# ------------------------------------------------------------------ time series


def test_series_totals_and_in_flight_match_a_brute_force_count() -> None:
    rng = random.Random(3)
    ts = TimeSeries()
    intervals = []
    for _ in range(500):
        end = 1_800_000_000 + rng.uniform(0, 40)
        wire = rng.uniform(0.01, 3)
        statuses = rng.choice([[200], [429, 200], [500, 429, 200]])
        ts.add(at=end, latency_ms=wire * 1000, tokens=7, statuses=statuses, failed=False)
        intervals.append((end - wire, end, statuses))
    b = ts.binned()
    assert b["bin_s"] == 0.1 and len(b["t"]) <= MAX_BINS
    assert sum(b["finished"]) == 500 and sum(b["tokens"]) == 3500
    assert sum(b["retries"]) == sum(len(s) - 1 for _, _, s in intervals)
    assert sum(b["rate_limited"]) == sum(s.count(429) for _, _, s in intervals)
    # the mean in flight of a middle bin, by sampling the bin finely
    k = len(b["t"]) // 2
    left = b["t0"] + b["t"][k]
    points = [left + (i + 0.5) * b["bin_s"] / 200 for i in range(200)]
    sampled = sum(sum(s <= p < e for s, e, _ in intervals) for p in points) / 200
    assert b["in_flight"][k] == pytest.approx(sampled, abs=0.2)


def test_a_day_long_run_gets_coarse_bins_and_keeps_its_totals() -> None:
    ts = TimeSeries()
    for i in range(10_000):
        ts.add(at=1e9 + i * 8.64, latency_ms=500.0, tokens=1, statuses=[200], failed=i % 10 == 0)
    b = ts.binned()
    assert b["bin_s"] == 300 and len(b["t"]) <= MAX_BINS
    assert sum(b["finished"]) == 10_000 and sum(b["failed"]) == 1_000
    # one request of 0.5 s every 8.64 s
    assert b["in_flight"][len(b["t"]) // 2] == pytest.approx(0.5 / 8.64, abs=0.01)


def test_an_empty_run_has_empty_series() -> None:
    b = TimeSeries().binned()
    assert b["t"] == [] and b["finished"] == [] and b["t0"] is None


# ------------------------------------------------------------------ page data


def test_page_data_says_what_the_summary_and_the_lines_say(sentiment_run: Path) -> None:
    summary = json.loads((sentiment_run / "summary.json").read_text())
    data = build_page_data(str(sentiment_run))
    for key in ("requests", "by_model", "retries", "rate_limited", "eval"):
        assert data[key] == summary[key], key
    assert data["usage"]["total_tokens"] == summary["usage"]["total_tokens"]
    assert data["cost"]["total"] == summary["cost_usd"]["total"]
    assert data["cost"]["batch_total"] == summary["batch_api_cost_usd"]["total"]
    assert data["run"]["status"] == "complete" and not data["run"]["running"]
    assert ["concurrency", 16] in data["settings"] and ["model", "gpt-4o-mini"] in data["settings"]

    # the series add up to the lines' totals
    s = data["series"]
    results, errors = lines(sentiment_run / "results.jsonl"), lines(sentiment_run / "errors.jsonl")
    assert sum(s["finished"]) == len(results) + len(errors)
    assert sum(s["failed"]) == len(errors) == summary["requests"]["failed"]
    assert sum(s["tokens"]) == summary["usage"]["total_tokens"]
    assert sum(s["rate_limited"]) == summary["rate_limited"] > 0
    assert sum(s["retries"]) == summary["retries"]
    assert max(s["in_flight"]) <= 16 + 0.1  # never more than the concurrency

    # the same latency figures as the text report, plus a curve to draw
    text = status_report(str(sentiment_run))
    wire = data["latency"]["wire"]
    assert {k: wire[k] for k in text["latency_ms"]} == text["latency_ms"]
    assert len(wire["curve"]) == len(data["latency"]["quantiles"])
    assert wire["curve"] == sorted(wire["curve"]) and wire["curve"][-1] == wire["max"]
    assert data["latency"]["wait"]["count"] == len(results)
    assert data["latency"]["ttft"]["count"] == 0  # nothing was streamed

    # errors by code, with the latest example lines
    assert {e["code"]: e["rows"] for e in data["errors"]} == summary["error_codes"]
    failed_ids = {e["custom_id"] for e in errors}
    for group in data["errors"]:
        assert 1 <= len(group["examples"]) <= 3
        assert {x["custom_id"] for x in group["examples"]} <= failed_ids
        assert all(x["status"] == 400 and x["message"] for x in group["examples"])

    assert data["quality"]["answers"] == summary["requests"]["succeeded"]
    assert data["quality"]["by_model"] == summary["quality"]["by_model"]


def test_the_sample_comes_from_parquet_with_every_failure_and_true_marks(
    sentiment_run: Path,
) -> None:
    sample = build_page_data(str(sentiment_run))["sample"]
    assert sample["source"] == "results.parquet" and sample["total_rows"] == 300
    assert len(sample["rows"]) == 200
    assert sample["input_columns"] == ["id", "text", "product", "label"]
    assert sample["parsed_columns"] == ["sentiment", "confidence", "reason", "parse_error"]
    table = {
        r["custom_id"]: r for r in pq.read_table(sentiment_run / "results.parquet").to_pylist()
    }
    cols = sample["columns"]
    failed = [r for r in table.values() if r["status"] == "failed"]
    assert sum(r["status"] == "failed" for r in sample["rows"]) == len(failed) > 0
    for row in sample["rows"]:
        source = table[row["cells"][cols.index("custom_id")]]
        assert row["cells"][cols.index("text")] == source["text"]
        assert row["label"] == normalize_answer(source["label"])
        right = source["status"] == "succeeded" and normalize_answer(
            source["sentiment"] or ""
        ) == normalize_answer(source["label"])
        assert row["correct"] is right


def test_every_row_marked_correct_adds_up_to_the_runs_accuracy(
    sentiment_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sample_module, "SAMPLE_ROWS", 1000)
    data = build_page_data(str(sentiment_run))
    rows = data["sample"]["rows"]
    assert len(rows) == 300
    assert sum(r["correct"] is True for r in rows) == data["eval"]["correct"]
    assert sum(r["correct"] is not None for r in rows) == data["eval"]["n"]


def test_without_parquet_the_sample_comes_from_the_lines(
    sentiment_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "copy"
    shutil.copytree(sentiment_run, run)
    (run / "results.parquet").unlink()
    sample = build_page_data(str(run))["sample"]
    assert sample["source"] == "results.jsonl" and sample["total_rows"] == 300
    assert len(sample["rows"]) == 200
    cols = sample["columns"]
    assert cols[:3] == ["custom_id", "row", "status"] and "sentiment" in cols
    statuses = [r["status"] for r in sample["rows"]]
    assert statuses.count("failed") == 18 and "succeeded" in statuses
    rows = [r["cells"][cols.index("row")] for r in sample["rows"]]
    assert rows == sorted(rows)
    ok = next(r for r in sample["rows"] if r["status"] == "succeeded")
    assert ok["cells"][cols.index("sentiment")] in ("positive", "negative", "neutral")
    assert ok["correct"] is None  # the lines hold no reference
    (run / "results.parquet").write_bytes(b"not parquet")  # unreadable: the lines again
    assert build_page_data(str(run))["sample"]["source"] == "results.jsonl"


def test_a_live_scan_reads_only_what_was_appended(sentiment_run: Path, tmp_path: Path) -> None:
    from batchrun._report.html.data import OutputScan

    run = tmp_path / "growing"
    run.mkdir()
    for name in ("run.json", "summary.json"):
        shutil.copy(sentiment_run / name, run / name)
    source = (sentiment_run / "results.jsonl").read_bytes().splitlines(keepends=True)
    scan = OutputScan(str(run))
    (run / "results.jsonl").write_bytes(b"".join(source[:100]) + source[100][:50])  # torn
    first = build_page_data(str(run), scan=scan)
    assert sum(first["series"]["finished"]) == 100
    with open(run / "results.jsonl", "ab") as f:
        f.write(source[100][50:] + b"".join(source[101:150]))
    second = build_page_data(str(run), scan=scan)
    assert sum(second["series"]["finished"]) == 150
    assert second["latency"]["wire"]["count"] == 150
    (run / "results.jsonl").write_bytes(b"".join(source[:20]))  # replaced: counted afresh
    assert sum(build_page_data(str(run), scan=scan)["series"]["finished"]) == 20


def test_settings_show_no_credentials() -> None:
    options = {
        "base_url": "https://user:hunter2@relay.example/v1?api-key=abc123",
        "headers": [["X-Api-Key", "***"], ["X-Team", "ml"]],
        "concurrency": 8,
        "job": {"request": {"max_tokens": 5}, "eval": {"reference_column": "y"}},
    }
    rows = dict(run_settings(options))
    assert rows["endpoint"] == "https://relay.example/v1"
    assert rows["headers"] == "X-Api-Key, X-Team"
    assert rows["request.max_tokens"] == 5 and rows["eval"] == "y vs exact"
    assert "hunter2" not in json.dumps(rows) and "ml" not in rows["headers"].split(", ")
    assert public_base_url("http://[::1]:8000/v1") == "http://[::1]:8000/v1"


def test_variants_render_from_a_list_and_are_skipped_when_absent() -> None:
    two = [{"name": "a", "accuracy": 0.5, "cost_usd": 0.01, "nested": {"x": 1}}, {"name": "b"}]
    assert variants_of({"variants": two}) == [
        {"name": "a", "accuracy": 0.5, "cost_usd": 0.01},
        {"name": "b"},
    ]
    assert variants_of({"eval": {"variants": {"a": {"accuracy": 1}, "b": {}}}}) == [
        {"name": "a", "accuracy": 1},
        {"name": "b"},
    ]
    assert variants_of({}) is None and variants_of({"variants": two[:1]}) is None


# ------------------------------------------------------------------ the page


def test_the_page_is_one_file_that_fetches_nothing(sentiment_run: Path) -> None:
    data = build_page_data(str(sentiment_run))
    # an answer that tries to end the data's script element
    data["sample"]["rows"][0]["cells"][0] = "</script><script>alert(1)</script>"
    page = render_html(data)
    assert page.count("</script>") == 3  # the data, uPlot, the report's own code
    assert "\\u003c/script>\\u003cscript>alert(1)" in page
    assert "connect-src 'none'" in page and "default-src 'none'" in page
    for fetching in ("<script src", "<link", "@import", "url(http", "<img", "<iframe"):
        assert fetching not in page
    assert len(page.encode()) < 400_000


def test_a_registered_key_never_reaches_the_page(sentiment_run: Path) -> None:
    from batchrun._redact import register_secret

    key = "sk-html-report-canary-000000000000000000"
    register_secret(key)
    data = build_page_data(str(sentiment_run))
    data["sample"]["rows"][0]["cells"][0] = f"echoed {key}"
    assert key not in render_html(data)


def test_write_html_report_replaces_report_html_atomically(sentiment_run: Path) -> None:
    path = write_html_report(str(sentiment_run))
    assert path == os.path.join(str(sentiment_run), "report.html")
    assert Path(path).read_text().startswith("<!doctype html>")
    assert not [n for n in os.listdir(sentiment_run) if n.startswith(".tmp")]


# ------------------------------------------------------------------ commands


def test_report_command_prints_the_text_report_or_writes_html(
    sentiment_run: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    text = runner.invoke(report_command, [str(sentiment_run)], catch_exceptions=False)
    assert text.exit_code == 0
    assert text.output.strip() == format_status(status_report(str(sentiment_run)))

    default = runner.invoke(report_command, [str(sentiment_run), "--html"])
    assert default.exit_code == 0 and default.output.strip() == str(sentiment_run / "report.html")
    out = tmp_path / "mail" / "run.html"
    out.parent.mkdir()
    named = runner.invoke(report_command, [str(sentiment_run), "--html", str(out)])
    assert named.exit_code == 0 and out.read_text().startswith("<!doctype html>")

    missing = runner.invoke(report_command, [str(tmp_path / "nope"), "--html"])
    assert missing.exit_code == 1 and "no such run directory" in missing.output


def at(url: str, path: str) -> str:
    """``path`` on the live server whose page is ``url``, with its token."""
    base, _, query = url.partition("?")
    return f"{base}{path}?{query}"


def get(url: str, host: str | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_live_server_serves_the_page_and_its_data_and_nothing_else(
    sentiment_run: Path,
) -> None:
    with serve_run_dir(str(sentiment_run), poll_s=2) as url:
        assert url.startswith("http://127.0.0.1:")
        status, page = get(url)
        assert status == 200 and b'id="batchrun-live"' in page and b"connect-src 'self'" in page
        status, body = get(at(url, "data.json"))
        assert status == 200 and json.loads(body)["requests"]["failed"] == 18
        for path in ("results.jsonl", "summary.json", "run.json", "../run.json", "%2e%2e/x"):
            assert get(at(url, path))[0] == 404, path
        # a page on another site, resolved to 127.0.0.1 (DNS rebinding), is refused
        assert get(at(url, "data.json"), host="attacker.example:80")[0] == 403
        assert get(url, host=f"localhost:{urllib.parse.urlsplit(url).port}")[0] == 200


def test_the_live_page_waits_for_a_run_that_has_not_started(
    sentiment_run: Path, tmp_path: Path
) -> None:
    run = tmp_path / "later"
    with serve_run_dir(str(run), poll_s=2) as url:
        status, page = get(url)
        assert status == 200 and b"Waiting for the run to start" in page
        assert get(at(url, "data.json"))[0] == 503
        shutil.copytree(sentiment_run, run)
        status, body = get(at(url, "data.json"))
        assert status == 200 and json.loads(body)["requests"]["total"] == 300
    missing = CliRunner().invoke(serve_command, [str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "no such run directory" in missing.output


def test_serve_command_prints_the_url_and_serves_until_interrupted(
    sentiment_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Any] = {}

    def fetch_then_interrupt(url: str) -> None:
        seen["url"] = url
        seen["data"] = json.loads(get(at(url, "data.json"))[1])
        raise KeyboardInterrupt

    monkeypatch.setattr(html_cli, "wait_until_interrupted", fetch_then_interrupt)
    result = CliRunner().invoke(serve_command, [str(sentiment_run), "--port", "0"])
    assert result.exit_code == 130
    assert seen["url"] in result.output and seen["url"].startswith("http://127.0.0.1:")
    assert seen["data"]["requests"]["total"] == 300
    with pytest.raises(urllib.error.URLError):  # stopped with the command
        get(seen["url"])


# ------------------------------------------------------------------ what the page leads with


def test_a_comparison_leads_with_its_verdict_and_every_pair(compare_run: Path) -> None:
    summary = json.loads((compare_run / "summary.json").read_text())
    data = build_page_data(str(compare_run))
    block = summary["comparison"]
    assert block["best"] is None  # 60 reviews of the simulator's noise: no clear winner
    line = data["headline"]
    assert line["tone"] == "warn" and line["title"] == "Pilot: No clear winner among 4 variants"
    leader = next(v for v in summary["variants"] if v["name"] == block["leader"])
    assert (
        f"most accurate: {leader['name']} at {leader['accuracy']:.1%} "
        f"[{leader['accuracy_low']:.1%}, {leader['accuracy_high']:.1%}]" in line["detail"]
    )
    assert "0.0%" not in line["title"]
    # every pair as the CLI prints it: agreement, kappa, the difference and its interval
    pairs = data["comparison"]["pairs"]
    assert [(p["a"], p["b"]) for p in pairs] == [(p["a"], p["b"]) for p in block["pairs"]]
    for mine, theirs in zip(pairs, block["pairs"], strict=True):
        for key in ("agree", "kappa", "accuracy_difference", "difference_low", "difference_high"):
            assert mine[key] == theirs[key], key
    assert data["comparison"]["verdict"] in format_status(status_report(str(compare_run)))
    # the evaluation section is the leader's, named, with every variant's at hand
    assert data["eval"]["variant"] == block["leader"]
    assert set(data["eval"]["variants"]) == {v["name"] for v in summary["variants"]}


def test_a_failed_runs_headline_says_why_and_scores_nothing(failed_run: Path) -> None:
    summary = json.loads((failed_run / "summary.json").read_text())
    assert summary["eval"]["accuracy"] == 0.0  # what the page must not lead with
    data = build_page_data(str(failed_run))
    line = data["headline"]
    assert line["tone"] == "bad"
    assert line["title"] == "No answers. Stopped: the endpoint failed every recent request"
    failed, pending = summary["requests"]["failed"], summary["requests"]["pending"]
    code = next(iter(summary["error_codes"]))
    assert line["detail"].startswith(
        f"{failed} rows failed ({code}), {pending} not sent; nothing to score. Stopping:"
    )
    assert "%" not in line["title"] + line["detail"]
    assert data["latency"]["note"] == (
        "No answers: no request was answered, so there is no time to show."
    )
    text = format_status(status_report(str(failed_run)))
    assert f"not scored: none of the {failed} rows with a reference got an answer" in text
    assert "accuracy 0.000" not in text


def test_a_batch_runs_page_has_its_batches_and_says_why_no_latency(batch_run: Path) -> None:
    data = build_page_data(str(batch_run))
    batches = data["batches"]
    assert batches["batches"] == 4 and batches["open"] == 0
    assert batches["by_status"] == {"completed": 3, "expired": 1}
    assert batches["resubmissions"] == 1 and batches["rows_sent_again"] == 60
    shards = {s["shard"]: s for s in batches["shards"]}
    expired = shards["s000002"]
    assert expired["status"] == "expired" and expired["answered"] == 40 and expired["rows"] == 100
    again = shards["s000004"]
    assert again["attempt"] == 2 and again["rows"] == 60 and again["answered"] == 60
    for shard in shards.values():
        assert shard["batch_id"].startswith("batch_")
        assert shard["created_at"] <= shard["finished_at"]
    ids = {r["batchrun"]["batch_id"] for r in lines(batch_run / "results.jsonl")}
    assert ids == {s["batch_id"] for s in shards.values()}
    assert data["by_mode"] == {"batch": 300}
    # no answer of a batch has a time of its own: the section says so, not "No answers yet"
    assert data["latency"]["wire"]["count"] == 0
    assert data["latency"]["note"].startswith(
        "None of the 300 answers has a time on the wire: 300 came through the Batch API"
    )
    assert data["headline"]["title"].startswith("Accuracy ")


def test_a_report_of_a_run_answered_from_the_cache_says_so(
    sentiment_run: Path, tmp_path: Path
) -> None:
    from batchrun._report.html.headline import latency_note

    report = {"requests": {"succeeded": 282}, "reused": {"cache": 282, "run": 0}}
    assert latency_note(report, 0, running=False) == (
        "None of the 282 answers has a time on the wire: 282 were reused (282 from the "
        "cache, 0 from identical requests of this run) and never sent."
    )
    assert latency_note(report, 282, running=False) is None
    assert latency_note({"requests": {"succeeded": 0}}, 0, running=True) == "No answers yet."
    assert build_page_data(str(sentiment_run))["latency"]["note"] is None


def test_headlines_of_a_stopped_a_running_and_a_finished_run() -> None:
    from batchrun._report.html.headline import headline

    stopped = {
        "status": "budget_exceeded",
        "running_pid": None,
        "error_codes": {},
        "requests": {"total": 300, "succeeded": 120, "failed": 0, "pending": 180},
    }
    evaluation = {
        "n": 120,
        "correct": 90,
        "accuracy": 0.75,
        "missing_predictions": 0,
        "accuracy_interval": {"low": 0.675, "high": 0.825},
        "macro_f1": 0.7,
        "kappa": 0.6,
    }
    line = headline(stopped, evaluation, None)
    assert line == {
        "tone": "warn",
        "title": "Stopped at the --max-cost cap: 120 of 300 rows answered",
        "detail": "180 pending; so far accuracy 75.0% [67.5%, 82.5%] on 120 rows; "
        "macro-F1 0.700, kappa 0.600 (unfinished rows not scored)",
    }
    running = {**stopped, "status": "running", "running_pid": 42, "at_provider": 90}
    assert headline(running, None, None)["title"] == (
        "Running: 120 of 300 rows finished, 90 more answered inside running batches"
    )
    done = {**stopped, "status": "complete", "requests": {"total": 2, "succeeded": 2}}
    assert headline(done, evaluation, None)["title"] == (
        "Accuracy 75.0% [67.5%, 82.5%] on 120 rows; macro-F1 0.700, kappa 0.600"
    )
    best = {"best": "b", "leader": "b", "verdict": "best: b, ..."}
    rows = [{"name": "a", "accuracy": 0.5}, {"name": "b", "accuracy": 0.75}]
    line = headline(done, evaluation, best, variants=rows)
    assert (line["tone"], line["title"]) == ("ok", "Best of 2 variants: b")
    unanswered = {**evaluation, "missing_predictions": 120}
    assert headline(done, unanswered, best, variants=rows)["title"] == (
        "Not scored: no row with a reference got an answer"
    )
