"""The spine end to end over httpx.MockTransport: retries, final errors, totals, files."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from batchrun._engine.runner import Runner
from batchrun._engine.stops import EXIT_OK, EXIT_SOME_FAILED
from batchrun._settings import Settings
from tests.conftest import FakeTime, body, completion, read_lines


def run(cfg: Settings, handler: Any, fake: FakeTime | None = None, **kw: Any) -> Any:
    fake = fake or FakeTime()
    runner = Runner(
        cfg, transport=httpx.MockTransport(handler), clock=fake.clock, sleep=fake.sleep, **kw
    )
    return anyio.run(runner.run)


def make_cfg(tmp_path: Path, path: Path, **kw: Any) -> Settings:
    return Settings(
        input=str(path),
        out_dir=str(tmp_path / "run"),
        base_url="http://test/v1",
        concurrency=4,
        **kw,
    )


def content_of(request: httpx.Request) -> str:
    return str(json.loads(request.content)["messages"][0]["content"])


def test_retries_429_and_503_then_succeeds(tmp_path: Path, write_jsonl) -> None:
    path = write_jsonl([{**body("flaky"), "custom_id": "a"}, {**body("fine"), "custom_id": "b"}])
    seen: dict[str, int] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        text = content_of(request)
        seen[text] = seen.get(text, 0) + 1
        if text == "flaky" and seen[text] == 1:
            return httpx.Response(
                429,
                json={"error": {"message": "slow down", "type": "rate"}},
                headers={"retry-after": "2"},
            )
        if text == "flaky" and seen[text] == 2:
            return httpx.Response(503, json={"error": {"message": "busy"}})
        return httpx.Response(200, json=completion(text), headers={"x-request-id": "req_1"})

    fake = FakeTime()
    result = run(make_cfg(tmp_path, path), handler, fake)
    assert result.exit_code == EXIT_OK
    assert seen == {"flaky": 3, "fine": 1}
    lines = {r["custom_id"]: r for r in read_lines(tmp_path / "run" / "results.jsonl")}
    assert set(lines) == {"a", "b"}
    assert lines["a"]["response"]["status_code"] == 200
    assert lines["a"]["response"]["request_id"] == "req_1"
    assert lines["a"]["response"]["body"]["choices"][0]["message"]["content"] == "flaky"
    assert lines["a"]["batchrun"]["attempts"] == 3
    assert lines["a"]["batchrun"]["statuses"] == [429, 503, 200]
    assert any(s >= 2.0 for s in fake.sleeps)  # Retry-After honoured
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["retries"] == 2 and summary["rate_limited"] == 1
    assert summary["requests"] == {
        "total": 2,
        "succeeded": 2,
        "failed": 0,
        "pending": 0,
        "invalid": 0,
    }
    assert read_lines(tmp_path / "run" / "errors.jsonl") == []


def test_400_is_recorded_and_not_retried(tmp_path: Path, write_jsonl) -> None:
    path = write_jsonl([{**body("bad"), "custom_id": "a"}, {**body("ok"), "custom_id": "b"}])
    calls: list[str] = []
    envelope = {
        "error": {
            "message": "Invalid 'messages'",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "invalid_value",
        }
    }

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(content_of(request))
        if content_of(request) == "bad":
            return httpx.Response(400, json=envelope)
        return httpx.Response(200, json=completion())

    result = run(make_cfg(tmp_path, path), handler)
    assert result.exit_code == EXIT_SOME_FAILED
    assert calls.count("bad") == 1
    errors = read_lines(tmp_path / "run" / "errors.jsonl")
    assert len(errors) == 1
    err = errors[0]
    assert err["custom_id"] == "a"
    assert err["response"]["status_code"] == 400
    assert err["response"]["body"] == envelope
    assert err["error"]["code"] == "invalid_value"
    assert err["error"]["message"] == "Invalid 'messages'"
    assert err["error"]["attempts"] == [
        {"status": 400, "code": "invalid_value", "message": "Invalid 'messages'"}
    ]
    assert [r["custom_id"] for r in read_lines(tmp_path / "run" / "results.jsonl")] == ["b"]


def test_gives_up_after_max_attempts_with_every_status(tmp_path: Path, write_jsonl) -> None:
    path = write_jsonl([body("x")])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>bad gateway</html>")

    fake = FakeTime()
    result = run(make_cfg(tmp_path, path, max_attempts=3), handler, fake)
    assert result.exit_code == EXIT_SOME_FAILED
    (err,) = read_lines(tmp_path / "run" / "errors.jsonl")
    assert [a["status"] for a in err["error"]["attempts"]] == [502, 502, 502]
    assert err["error"]["code"] == "http_502"
    assert "bad gateway" in err["error"]["message"]
    assert len(fake.sleeps) >= 2


def test_transport_errors_are_retried(tmp_path: Path, write_jsonl) -> None:
    path = write_jsonl([body("x")])
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            raise httpx.ConnectError("connection refused")
        if len(calls) == 2:
            raise httpx.ReadTimeout("slow")
        return httpx.Response(200, json=completion())

    result = run(make_cfg(tmp_path, path), handler)
    assert result.exit_code == EXIT_OK
    (line,) = read_lines(tmp_path / "run" / "results.jsonl")
    assert line["batchrun"]["statuses"] == [None, None, 200]


def test_usage_totals_equal_the_sum_over_results(tmp_path: Path, write_jsonl) -> None:
    rows = [
        {**body(f"r{i}", model="gpt-4o" if i % 2 else "gpt-4o-mini"), "custom_id": str(i)}
        for i in range(40)
    ]
    path = write_jsonl(rows)

    def handler(request: httpx.Request) -> httpx.Response:
        data = json.loads(request.content)
        i = int(data["messages"][0]["content"][1:])
        return httpx.Response(
            200,
            json=completion(
                model=data["model"],
                prompt=10 + i,
                completion_tokens=i,
                cached=i % 3,
                reasoning=i % 5,
            ),
        )

    run(make_cfg(tmp_path, path), handler)
    results = read_lines(tmp_path / "run" / "results.jsonl")
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert len(results) == 40

    def total(key: str, sub: str | None = None, model: str | None = None) -> int:
        out = 0
        for r in results:
            u = r["response"]["body"]["usage"]
            if model and r["response"]["body"]["model"] != model:
                continue
            out += u[sub][key] if sub else u[key]
        return out

    usage = summary["usage"]
    assert usage["prompt_tokens"] == total("prompt_tokens")
    assert usage["completion_tokens"] == total("completion_tokens")
    assert usage["total_tokens"] == total("total_tokens")
    assert usage["cached_tokens"] == total("cached_tokens", "prompt_tokens_details")
    assert usage["reasoning_tokens"] == total("reasoning_tokens", "completion_tokens_details")
    for model in ("gpt-4o", "gpt-4o-mini"):
        assert summary["by_model"][model]["prompt_tokens"] == total("prompt_tokens", model=model)


def test_error_object_in_a_200_is_a_failed_attempt(tmp_path: Path, write_jsonl) -> None:
    path = write_jsonl([body("x")])
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(
                200, json={"error": {"message": "upstream overloaded", "code": "overloaded"}}
            )
        if len(calls) == 2:
            return httpx.Response(200, text="not json at all")
        return httpx.Response(200, json=completion())

    result = run(make_cfg(tmp_path, path), handler)
    assert result.exit_code == EXIT_OK
    (line,) = read_lines(tmp_path / "run" / "results.jsonl")
    assert line["batchrun"]["attempts"] == 3


def test_auth_headers_and_extra_headers(tmp_path: Path, write_jsonl) -> None:
    path = write_jsonl([body("x")])
    seen: list[httpx.Headers] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, json=completion())

    cfg = make_cfg(tmp_path, path, headers=(("X-Title", "demo"),))
    run(cfg, handler, api_key="sk-test-123")
    assert seen[-1]["authorization"] == "Bearer sk-test-123"
    assert seen[-1]["x-title"] == "demo"
    run(replace(cfg, auth="raw", out_dir=str(tmp_path / "r2")), handler, api_key="sk-test-123")
    assert seen[-1]["authorization"] == "sk-test-123"
    run(
        replace(cfg, auth_header="api-key", out_dir=str(tmp_path / "r3")),
        handler,
        api_key="sk-test-123",
    )
    assert seen[-1]["api-key"] == "sk-test-123" and "authorization" not in seen[-1]


def test_summary_is_valid_json_at_every_checkpoint(tmp_path: Path, write_jsonl) -> None:
    path = write_jsonl([{**body(f"r{i}"), "custom_id": str(i)} for i in range(30)])
    snapshots: list[dict[str, Any]] = []
    summary_path = tmp_path / "run" / "summary.json"

    async def handler(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(0.01)
        if summary_path.exists():
            snapshots.append(json.loads(summary_path.read_text()))
        return httpx.Response(200, json=completion())

    cfg = replace(make_cfg(tmp_path, path), summary_interval=0.02, concurrency=2)
    anyio.run(Runner(cfg, transport=httpx.MockTransport(handler)).run)
    final = json.loads(summary_path.read_text())
    assert final["status"] == "complete"
    assert snapshots, "summary.json was never rewritten during the run"
    assert all(s["status"] == "running" for s in snapshots)
    done = [s["requests"]["succeeded"] for s in snapshots]
    assert done == sorted(done)
    assert final["requests"]["succeeded"] == 30


@pytest.mark.parametrize("status", [401, 403, 404, 422])
def test_other_4xx_are_final(tmp_path: Path, write_jsonl, status: int) -> None:
    path = write_jsonl([body("x")])
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(status, json={"error": {"message": "no", "type": "t", "code": None}})

    run(make_cfg(tmp_path, path), handler)
    assert len(calls) == 1
    (err,) = read_lines(tmp_path / "run" / "errors.jsonl")
    assert err["response"]["status_code"] == status
    assert err["error"]["code"] == "t"


def _sse(*chunks: dict[str, Any], done: bool = True) -> bytes:
    out = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks)
    return out + (b"data: [DONE]\n\n" if done else b"")


def _delta(index: int, content: str | None = None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
    }


def test_stream_missing_a_whole_choice_is_retried(tmp_path: Path, write_jsonl) -> None:
    path = write_jsonl([body("x", n=2, stream=True)])
    calls = []
    usage = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        chunks = [_delta(0, "a"), _delta(0, finish="stop")]
        if len(calls) > 1:  # the second attempt streams both choices
            chunks += [_delta(1, "b"), _delta(1, finish="stop")]
        return httpx.Response(
            200, content=_sse(*chunks, usage), headers={"content-type": "text/event-stream"}
        )

    result = run(make_cfg(tmp_path, path), handler)
    assert result.exit_code == EXIT_OK
    (line,) = read_lines(tmp_path / "run" / "results.jsonl")
    choices = line["response"]["body"]["choices"]
    assert [c["message"]["content"] for c in choices] == ["a", "b"]
    assert line["batchrun"]["attempts"] == 2
    assert line["response"]["body"]["usage"]["total_tokens"] == 7


def test_429_with_only_reset_headers_does_not_stall_for_a_full_bucket(
    tmp_path: Path, write_jsonl
) -> None:
    # OpenAI-style: no Retry-After, and reset = time until the bucket is *full* (60 s);
    # one request refills in 1 s. Neither the pool nor the request waits 60 s.
    path = write_jsonl([{**body(f"r{i}"), "custom_id": str(i)} for i in range(4)])
    calls = []
    limits = {"x-ratelimit-limit-requests": "60", "x-ratelimit-reset-requests": "60s"}

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(
                429,
                json={"error": {"message": "Rate limit reached", "code": "rate_limit_exceeded"}},
                headers={**limits, "x-ratelimit-remaining-requests": "0"},
            )
        return httpx.Response(
            200, json=completion(), headers={**limits, "x-ratelimit-remaining-requests": "30"}
        )

    fake = FakeTime()
    result = run(replace(make_cfg(tmp_path, path), concurrency=1), handler, fake)
    assert result.exit_code == EXIT_OK
    assert len(read_lines(tmp_path / "run" / "results.jsonl")) == 4
    assert fake.now - 1000.0 < 10.0, fake.sleeps  # not the 60 s of a full refill
    assert max(fake.sleeps) < 10.0


def test_endpoint_down_stops_the_run_instead_of_failing_every_row(
    tmp_path: Path, write_jsonl
) -> None:
    path = write_jsonl([{**body(f"r{i}"), "custom_id": str(i)} for i in range(200)])

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")

    result = run(replace(make_cfg(tmp_path, path), max_attempts=2), handler)
    assert result.exit_code == 1
    assert result.status == "endpoint_down"
    failed = read_lines(tmp_path / "run" / "errors.jsonl")
    assert 16 <= len(failed) < 16 + 4  # the breaker plus what was in flight
    assert result.summary["requests"]["pending"] == 200 - len(failed)
    assert any("--retry-failed" in n and "endpoint down" in n for n in result.notes), result.notes

    # back up: --retry-failed finishes everything
    ok = run(
        replace(make_cfg(tmp_path, path), retry_failed=True),
        lambda request: httpx.Response(200, json=completion()),
    )
    assert ok.exit_code == EXIT_OK
    assert len(read_lines(tmp_path / "run" / "results.jsonl")) == 200


def test_final_client_errors_do_not_trip_the_breaker(tmp_path: Path, write_jsonl) -> None:
    path = write_jsonl([{**body(f"r{i}"), "custom_id": str(i)} for i in range(40)])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": "bad", "code": "invalid"}})

    result = run(make_cfg(tmp_path, path), handler)
    assert result.status == "complete" and result.exit_code == 4
    assert len(read_lines(tmp_path / "run" / "errors.jsonl")) == 40


@pytest.mark.parametrize(
    ("status", "envelope"),
    [
        (401, {"message": "Incorrect API key provided", "code": "invalid_api_key"}),
        (429, {"message": "You exceeded your current quota", "code": "insufficient_quota"}),
    ],
)
def test_a_bad_key_or_exhausted_quota_stops_the_run_early(
    tmp_path: Path, write_jsonl, status: int, envelope: dict[str, Any]
) -> None:
    path = write_jsonl([{**body(f"r{i}"), "custom_id": str(i)} for i in range(100)])
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(status, json={"error": envelope})

    result = run(make_cfg(tmp_path, path), handler)
    assert result.status == "endpoint_down" and result.exit_code == 1
    assert len(calls) < 16 + 4  # never retried, and the run stopped early
    assert result.summary["requests"]["pending"] > 75
