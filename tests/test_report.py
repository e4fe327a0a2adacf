"""The run report (batchrun._report.text and .statistics): figures checked against the files."""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from click.testing import CliRunner

from batchrun._cli import cli
from batchrun._cost.bill import cost_report
from batchrun._cost.prices import PriceBook
from batchrun._engine.runner import Runner
from batchrun._models import Attempt, Outcome, Request
from batchrun._output.lines import decode, decode_meta, encode
from batchrun._output.usage import Usage
from batchrun._report.statistics import LatencyStats, percentile, retry_cause
from batchrun._report.tables import format_cost_table
from batchrun._report.text import format_duration, format_status, run_report, status_report
from batchrun._settings import Settings
from tests.conftest import FakeTime, body, completion, read_lines

# ------------------------------------------------------------------ pure parts


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 1000])
def test_percentiles_match_the_inclusive_quantile_definition(n: int) -> None:
    rng = random.Random(n)
    values = sorted(rng.uniform(1, 5000) for _ in range(n))
    if n == 1:
        assert percentile(values, 50) == values[0]
        return
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    for q in (50, 95, 99):
        assert percentile(values, q) == pytest.approx(cuts[q - 1], rel=1e-12)
    assert percentile(values, 0) == values[0] and percentile(values, 100) == values[-1]


def test_latency_stats_summary() -> None:
    stats = LatencyStats()
    assert stats.summary() == {
        "count": 0,
        "mean": None,
        "p50": None,
        "p95": None,
        "p99": None,
        "max": None,
    }
    for ms in (100, 200, 300, 400, None):
        stats.add(ms)
    assert stats.summary() == {
        "count": 4,
        "mean": 250.0,
        "p50": 250.0,
        "p95": 385.0,
        "p99": 397.0,
        "max": 400.0,
    }


def _request(cid: str, row: int = 1) -> Request:
    return Request(cid, body(), row=row)


def test_decode_meta_reads_the_tail_and_agrees_with_a_full_parse() -> None:
    tricky = completion(content='evil ,"batchrun":{"latency_ms":1} text}')
    outcome = Outcome.success(
        _request("a"),
        status=200,
        request_id="r",
        body=tricky,
        attempts=[Attempt(429, "rate_limited"), Attempt(200, "ok")],
        latency_s=1.2345,
        ttft_s=0.1,
    )
    line = encode(outcome)
    tail, full = decode_meta(line), decode(line)
    assert tail.body is None and tail.status_code is None  # the body was not read
    for name in ("custom_id", "ok", "row", "latency_s", "wait_s", "ttft_s", "body_hash"):
        assert getattr(tail, name) == getattr(full, name), name
    assert [a.status for a in tail.attempts] == [a.status for a in full.attempts] == [429, 200]
    assert tail.latency_s == 1.2345 and orjson.loads(line)["batchrun"]["latency_ms"] == 1234.5
    # a line written by another tool (other key order) is parsed in full
    foreign = orjson.dumps({"batchrun": {"latency_ms": 7.0}, "custom_id": "x"}) + b"\n"
    assert decode_meta(foreign).latency_s == 0.007
    assert decode_meta(b'{"custom_id": "x"}\n').latency_s is None
    # a failure is read in full: its attempts are in its error
    failed = encode(
        Outcome.failure(_request("b"), code="c", message="m", attempts=[Attempt(500, "c")])
    )
    assert decode_meta(failed).error == decode(failed).error is not None


def test_retry_cause_names() -> None:
    assert retry_cause(429) == "429"
    assert retry_cause(503, "server_error") == "503"
    assert retry_cause(None, "timeout") == "timeout"
    assert retry_cause(None) == "no_response"
    assert retry_cause(200, "stream_truncated") == "stream_truncated"


def test_format_duration() -> None:
    assert format_duration(None) == "-"
    assert format_duration(0.04) == "0.0 s"
    assert format_duration(59.9) == "59.9 s"
    assert format_duration(60) == "0:01:00"
    assert format_duration(90061) == "25:01:01"


# ---------------------------------------------------------- a crafted run dir

LATENCIES = [120.5, 80.0, 300.0, 95.5, 1000.0, 150.0, 210.0]
TTFTS = [None, None, 40.0, None, 55.5, None, 12.0]


def _craft_run(run_dir: Path, input_rows: int = 10) -> None:
    """results.jsonl / errors.jsonl / run.json as the runner writes them."""
    run_dir.mkdir()
    (run_dir / "run.json").write_text(
        json.dumps({"input_path": "/data/req.jsonl", "input_rows": input_rows, "options": {}})
    )
    results = b""
    for i, (ms, ttft) in enumerate(zip(LATENCIES, TTFTS, strict=True)):
        attempts = [Attempt(200, "ok")]
        if i == 1:
            attempts = [Attempt(429, "rate_limited"), Attempt(503, "server"), Attempt(200, "ok")]
        if i == 2:
            attempts = [Attempt(None, "timeout"), Attempt(200, "ok")]
        outcome = Outcome.success(
            _request(f"ok-{i}", i + 1),
            status=200,
            request_id=None,
            body=completion(prompt=10 + i, completion_tokens=i),
            attempts=attempts,
            latency_s=ms / 1000,
            ttft_s=None if ttft is None else ttft / 1000,
        )
        results += encode(outcome)
    errors = b""
    for i, attempts in enumerate(
        [
            [Attempt(429, "rate_limited"), Attempt(500, "server"), Attempt(400, "invalid")],
            [Attempt(401, "invalid_api_key")],
        ]
    ):
        final = attempts[-1]
        errors += encode(
            Outcome.failure(
                _request(f"bad-{i}", 20 + i),
                code=final.code,
                message="no",
                attempts=attempts,
                status=final.status,
                latency_s=5.0,
            )
        )
    (run_dir / "results.jsonl").write_bytes(results)
    (run_dir / "errors.jsonl").write_bytes(errors)


def test_status_report_figures_from_crafted_files(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _craft_run(run_dir)
    report = status_report(str(run_dir))
    assert report["complete"] is False  # 10 input rows, 7 + 2 finished
    assert report["status"] == "unknown"  # no summary.json yet
    assert report["requests"] == {
        "total": 10,
        "succeeded": 7,
        "failed": 2,
        "pending": 1,
        "invalid": 0,
    }
    assert report["usage"]["prompt_tokens"] == sum(10 + i for i in range(7))
    assert report["usage"]["completion_tokens"] == sum(range(7))
    # latency over succeeded requests only; TTFT over streamed ones only
    cuts = statistics.quantiles(sorted(LATENCIES), n=100, method="inclusive")
    latency = report["latency_ms"]
    assert latency["count"] == 7
    assert latency["p50"] == pytest.approx(cuts[49], abs=0.05)
    assert latency["p95"] == pytest.approx(cuts[94], abs=0.05)
    assert latency["p99"] == pytest.approx(cuts[98], abs=0.05)
    assert latency["max"] == 1000.0
    ttft = report["ttft_ms"]
    assert ttft["count"] == 3 and ttft["p50"] == 40.0 and ttft["max"] == 55.5
    # retries: every attempt but the last, in results and errors alike
    assert report["retries"] == 3 + 2
    assert report["rate_limited"] == 2
    # a success line keeps only statuses: its timeout shows as "no_response"
    assert report["retry_causes"] == {"429": 2, "503": 1, "no_response": 1, "500": 1}
    assert report["error_codes"] == {"invalid": 1, "invalid_api_key": 1}
    assert [Path(f["path"]).name for f in report["files"]] == [
        "results.jsonl",
        "errors.jsonl",
        "run.json",
    ]
    assert report["files"][0]["bytes"] == (run_dir / "results.jsonl").stat().st_size
    assert report["throughput"]["requests_per_s"] is None  # no elapsed time recorded
    assert report["cost_usd"]["by_model"]["gpt-4o-mini"]["total"] > 0  # priced offline
    assert report["cost_source"] == "usage totals"

    text = format_status(report)
    assert "(incomplete; status: unknown)" in text
    assert "7 succeeded, 2 failed, 1 pending of 10" in text
    assert f"p50 {latency['p50']:,.0f} ms" in text
    assert "first token p50 40 ms" in text and "(3 streams)" in text
    assert "retries     5 attempts retried; 2 answers were 429; retries by cause: 429: 2, " in text
    assert "errors      2 rows failing now, by code: invalid: 1, invalid_api_key: 1" in text
    assert "gpt-4o-mini" in text and "(priced now from usage totals)" in text
    assert str(run_dir / "results.jsonl") in text


def test_status_skips_a_torn_last_line_and_changes_nothing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _craft_run(run_dir)
    results = run_dir / "results.jsonl"
    torn = results.read_bytes() + b'{"id":"batch_req_0123456789abcdef01234567","custom_id":"x'
    results.write_bytes(torn)
    report = status_report(str(run_dir))
    assert report["requests"]["succeeded"] == 7 and report["latency_ms"]["count"] == 7
    assert results.read_bytes() == torn


def test_cost_recorded_by_the_run_wins(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    _craft_run(run_dir, input_rows=9)
    book = PriceBook({}, use_genai_prices=False)
    recorded = cost_report({"gpt-4o-mini": Usage(prompt_tokens=1)}, book)  # "no price"
    summary = json.loads(json.dumps({"status": "complete", **recorded}))
    (run_dir / "summary.json").write_text(json.dumps(summary))
    report = status_report(str(run_dir))
    assert report["complete"] is True and report["status"] == "complete"
    assert report["cost_source"] == "run"
    assert report["cost_usd"] == recorded["cost_usd"]
    text = format_status(report)
    assert "cost        - (incomplete: some models have no price)" in text
    for line in format_cost_table(recorded).splitlines():
        assert "  " + line in text


def test_no_usage_means_no_cost_and_bare_numbers_are_shown(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "run.json").write_text(json.dumps({"input_path": "x", "input_rows": 1}))
    report = status_report(str(run_dir))
    assert report["cost_usd"] is None and report["latency_ms"]["count"] == 0
    assert "cost        n/a" in format_status(report)
    assert "cost        $1.5000" in format_status({**report, "cost_usd": 1.5})


def test_not_a_run_dir_is_a_clear_error(tmp_path: Path) -> None:
    from batchrun.errors import RunDirError

    with pytest.raises(RunDirError, match="no such run directory"):
        status_report(str(tmp_path / "nope"))
    with pytest.raises(RunDirError, match="no run.json"):
        status_report(str(tmp_path))


# ------------------------------------------------------- a real run, recounted


def _sse(text: str) -> bytes:
    first = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}],
    }
    last = {**first, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    usage = {
        **first,
        "choices": [],
        "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5},
    }
    events = [orjson.dumps(c).decode() for c in (first, last, usage)] + ["[DONE]"]
    return "".join(f"data: {e}\n\n" for e in events).encode()


def real_run(tmp_path: Path, n: int = 24) -> tuple[Settings, Any]:
    """n rows: every 5th is refused (400), every 4th is 429'd once, every 6th streams."""
    rows = []
    for i in range(n):
        extra = {"stream": True} if i % 6 == 0 else {}
        rows.append({"custom_id": f"r{i}", **body(f"q{i}", **extra)})
    path = tmp_path / "req.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = Settings(
        input=str(path), out_dir=str(tmp_path / "run"), base_url="http://t/v1", concurrency=3
    )
    fake = FakeTime()
    seen: dict[int, int] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        i = int(sent["messages"][0]["content"][1:])
        seen[i] = seen.get(i, 0) + 1
        fake.now += 0.01 * (i + 1)  # each row takes its own time: latencies differ
        if i % 5 == 0 and i % 6:
            return httpx.Response(400, json={"error": {"message": "bad", "code": "bad_thing"}})
        if i % 4 == 0 and seen[i] == 1:
            return httpx.Response(429, json={"error": {"message": "slow"}})
        if sent.get("stream"):
            return httpx.Response(
                200, content=_sse(f"a{i}"), headers={"content-type": "text/event-stream"}
            )
        return httpx.Response(200, json=completion(f"a{i}", prompt=5 + i, completion_tokens=i))

    runner = Runner(cfg, transport=httpx.MockTransport(handler), clock=fake.clock, sleep=fake.sleep)
    return cfg, anyio.run(runner.run)


def test_final_report_figures_equal_a_recount_of_the_files(tmp_path: Path) -> None:
    cfg, result = real_run(tmp_path)
    run_dir = Path(cfg.out_dir)
    final = run_report(cfg.out_dir, summary=result.summary)
    # `batchrun status` rebuilds the same report from the files alone
    assert status_report(cfg.out_dir) == final

    results = read_lines(run_dir / "results.jsonl")
    errors = read_lines(run_dir / "errors.jsonl")
    assert final["requests"] == {
        "total": 24,
        "succeeded": len(results),
        "failed": len(errors),
        "pending": 0,
        "invalid": 0,
    }
    assert final["complete"] is True and final["status"] == result.status
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        assert final["usage"][key] == sum(r["response"]["body"]["usage"][key] for r in results)
    latencies = sorted(r["batchrun"]["latency_ms"] for r in results)
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    assert final["latency_ms"]["count"] == len(results)
    # the report rounds to 0.1 ms (from float32 values): equal within that unit. The
    # latencies are the handler's fake-clock times (time on the wire only: retry
    # back-off, whose jitter is random, is wait_ms), so this never depends on luck
    assert final["latency_ms"]["p50"] == pytest.approx(cuts[49], abs=0.1)
    assert final["latency_ms"]["p95"] == pytest.approx(cuts[94], abs=0.1)
    assert final["latency_ms"]["max"] == pytest.approx(latencies[-1], abs=0.1)
    assert [r["batchrun"]["latency_ms"] for r in sorted(results, key=lambda r: r["custom_id"])] == [
        round(10 * (int(r["custom_id"][1:]) + 1) * len(r["batchrun"].get("statuses", [1])), 1)
        for r in sorted(results, key=lambda r: r["custom_id"])
    ]
    streamed = [r for r in results if r["batchrun"]["ttft_ms"] is not None]
    assert final["ttft_ms"]["count"] == len(streamed) == 4  # rows 0, 6, 12, 18
    statuses = [s for r in results for s in r["batchrun"].get("statuses", [])[:-1]]
    assert final["retries"] == len(statuses) == final["retry_causes"]["429"]
    assert final["rate_limited"] == statuses.count(429)
    assert final["error_codes"] == {"bad_thing": len(errors)}
    elapsed = result.summary["elapsed_s"]
    assert final["throughput"]["requests_per_s"] == pytest.approx(24 / elapsed, rel=1e-3)
    assert final["throughput"]["tokens_per_s"] == pytest.approx(
        final["usage"]["total_tokens"] / elapsed, rel=1e-3
    )
    expected_cost = cost_report(
        {m: Usage.from_dict(u) for m, u in final["by_model"].items()}, PriceBook.load(None)
    )
    assert final["cost_usd"] == expected_cost["cost_usd"]
    names = [Path(f["path"]).name for f in final["files"]]
    assert names == ["results.jsonl", "errors.jsonl", "summary.json", "run.json"]


def test_status_command_prints_the_report_and_exits_by_completeness(tmp_path: Path) -> None:
    cfg, _ = real_run(tmp_path, n=12)
    out = CliRunner().invoke(cli, ["status", cfg.out_dir], catch_exceptions=False)
    assert out.exit_code == 0
    for needle in (
        "(complete; status: complete)",
        "latency     p50",
        "throughput",
        "by code:",
        "pacing      concurrency limit 3;",
    ):
        assert needle in out.stdout
    assert "model" in out.stdout and "batch API" in out.stdout  # the cost table
    as_json = CliRunner().invoke(cli, ["status", cfg.out_dir, "--json"])
    data = json.loads(as_json.stdout)
    assert data["latency_ms"]["count"] == data["requests"]["succeeded"]
    assert data["complete"] is True

    crafted = tmp_path / "crafted"
    _craft_run(crafted)
    incomplete = CliRunner().invoke(cli, ["status", str(crafted)])
    assert incomplete.exit_code == 1
    assert "1 pending of 10" in incomplete.stdout
