"""Streaming end to end: assembled streams equal plain answers; torn streams retry.

A streamed run and a plain run of the same rows must record the same assembled
``chat.completion`` (messages, finish reasons, usage) -- checked against the
deterministic simulator for every seed request plus tool/n=2/legacy-function cases,
and against an ``httpx.MockTransport`` server that streams a richer answer
(interleaved n=2, parallel tool calls, reasoning, refusal, logprobs). Then the ways
a stream goes wrong: torn (clean end or dropped connection), ``[DONE]`` without a
finish_reason and the reverse, an error object inside the 200, no usage chunk,
a stall between chunks longer than ``--timeout``, and a trickle cut by
``--total-timeout``. Real waits are a few hundred milliseconds each.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from itertools import zip_longest
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from batchrun._cli import cli
from batchrun._engine.stops import EXIT_OK, EXIT_SOME_FAILED
from batchrun.sim import SimConfig, SimThread
from tests.test_surface import (
    SEED_DIR,
    FakeTime,
    batch_line,
    exact,
    load_seed,
    read_jsonl,
    run_rows,
    seed_rows,
)

# -- rows ------------------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city", "days"],
        },
    },
}


def extra_rows() -> list[dict[str, Any]]:
    """Shapes the seeds do not combine: n=2 tool calls, legacy functions, reasoning+tools."""
    ask = [{"role": "user", "content": "Weather in Oslo for three days?"}]
    return [
        batch_line(
            "n2-tools",
            {
                "model": "gpt-4o",
                "messages": ask,
                "n": 2,
                "tools": [WEATHER_TOOL],
                "tool_choice": "required",
            },
        ),
        batch_line(
            "legacy-functions",
            {"model": "gpt-4o", "messages": ask, "functions": [WEATHER_TOOL["function"]]},
        ),
        batch_line(
            "reasoning-tools-n2",
            {
                "model": "o4-mini",
                "messages": ask,
                "n": 2,
                "tools": [WEATHER_TOOL],
                "reasoning_effort": "low",
            },
        ),
        batch_line(
            "n3-logprobs",
            {
                "model": "gpt-4o-mini",
                "n": 3,
                "logprobs": True,
                "messages": [{"role": "user", "content": "Say hi."}],
            },
        ),
    ]


def plain(row: dict[str, Any]) -> dict[str, Any]:
    body = {k: v for k, v in row["body"].items() if k not in ("stream", "stream_options")}
    return batch_line(row["custom_id"], body)


def _short(record: dict[str, Any]) -> dict[str, Any]:
    body = record["response"]["body"]
    keep = ("object", "model", "choices", "usage", "system_fingerprint", "service_tier")
    return {key: body.get(key) for key in keep}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    with SimThread(SimConfig()) as server:
        yield server


# -- streamed == plain -----------------------------------------------------------------


def test_streamed_and_plain_runs_record_equal_messages_and_usage(
    tmp_path: Path, sim: SimThread
) -> None:
    rows = [plain(row) for row in seed_rows() + extra_rows()]
    plain_run = run_rows(tmp_path, rows, base_url=sim.base_url, name="plain")
    stream_run = run_rows(tmp_path, rows, base_url=sim.base_url, name="stream", stream=True)
    assert plain_run.exit_code == stream_run.exit_code == EXIT_OK
    assert set(plain_run.results) == set(stream_run.results) == {r["custom_id"] for r in rows}
    for cid, record in plain_run.results.items():
        streamed = stream_run.results[cid]
        assert _short(streamed) == _short(record), cid
        assert record["batchrun"]["ttft_ms"] is None
        assert streamed["batchrun"]["ttft_ms"] is not None
    # the cases the extras were added for really came out as intended
    n2 = stream_run.results["n2-tools"]["response"]["body"]["choices"]
    assert [len(c["message"]["tool_calls"]) for c in n2] == [1, 1]
    assert all(
        set(json.loads(c["message"]["tool_calls"][0]["function"]["arguments"])) == {"city", "days"}
        for c in n2
    )
    legacy = stream_run.results["legacy-functions"]["response"]["body"]["choices"][0]
    assert legacy["finish_reason"] == "function_call"
    assert json.loads(legacy["message"]["function_call"]["arguments"])["city"]
    mixed = stream_run.results["reasoning-tools-n2"]["response"]["body"]["choices"]
    assert all(c["message"]["reasoning_content"] and c["message"]["tool_calls"] for c in mixed)
    assert len(stream_run.results["n3-logprobs"]["response"]["body"]["choices"]) == 3
    assert stream_run.summary["usage"] == plain_run.summary["usage"]
    assert stream_run.summary["by_model"] == plain_run.summary["by_model"]
    assert stream_run.summary["usage"]["missing"] == 0


# -- a richer streamed answer from a scripted server -----------------------------------

RICH_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-rich",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Oslo blir kald og klar \u2744\ufe0f \u2014 \u5bd2\u51b7\u6674\u6717.",
                "refusal": None,
                "reasoning_content": "Cold city. Check the season.",
            },
            "logprobs": {
                "content": [
                    {
                        "token": "Oslo",
                        "logprob": -0.1,
                        "bytes": [79, 115, 108, 111],
                        "top_logprobs": [],
                    },
                    {"token": " will", "logprob": -0.2, "bytes": None, "top_logprobs": []},
                    {"token": " be", "logprob": -0.3, "bytes": None, "top_logprobs": []},
                ],
                "refusal": None,
            },
            "finish_reason": "stop",
        },
        {
            "index": 1,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"city": "Oslo", "days": 3}',
                        },
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {
                            "name": "get_weather",
                            "arguments": '{"city": "Bergen", "days": 1}',
                        },
                    },
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        },
        {
            "index": 2,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": "I can't help with that request.",
            },
            "logprobs": {
                "content": None,
                "refusal": [
                    {"token": "I", "logprob": -0.01, "bytes": [73], "top_logprobs": []},
                    {"token": " can't", "logprob": -0.02, "bytes": None, "top_logprobs": []},
                ],
            },
            "finish_reason": "stop",
        },
    ],
    "usage": {
        "prompt_tokens": 31,
        "completion_tokens": 57,
        "total_tokens": 88,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 7,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
    "system_fingerprint": "fp_rich",
}


def _pieces(text: str, size: int = 6) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _choice_deltas(choice: dict[str, Any]) -> list[dict[str, Any]]:
    """One choice as OpenAI streams it: role, reasoning, content with logprobs, tool
    calls (head then argument pieces), refusal, finish."""
    index, message = choice["index"], choice["message"]
    first_content = None if message.get("content") is None else ""
    out: list[dict[str, Any]] = [
        {"delta": {"role": "assistant", "content": first_content, "refusal": None}}
    ]
    for piece in _pieces(message.get("reasoning_content") or ""):
        out.append({"delta": {"reasoning_content": piece}})
    logprobs = choice["logprobs"] or {}
    tokens = list(logprobs.get("content") or [])
    for piece in _pieces(message.get("content") or ""):
        part: dict[str, Any] = {"delta": {"content": piece}}
        if tokens:
            part["logprobs"] = {"content": [tokens.pop(0)], "refusal": None}
        out.append(part)
    # parallel calls: both heads, then their argument pieces interleaved, so only
    # the index can tell which call a piece belongs to
    calls = message.get("tool_calls") or []
    for position, call in enumerate(calls):
        head = {
            "index": position,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        out.append({"delta": {"tool_calls": [head]}})
    split = [_pieces(call["function"]["arguments"], 5) for call in calls]
    for row in zip_longest(*split):
        for position, piece in enumerate(row):
            if piece is not None:
                out.append(
                    {
                        "delta": {
                            "tool_calls": [{"index": position, "function": {"arguments": piece}}]
                        }
                    }
                )
    refusal_tokens = list(logprobs.get("refusal") or [])
    for piece in _pieces(message.get("refusal") or ""):
        part = {"delta": {"refusal": piece}}
        if refusal_tokens:
            part["logprobs"] = {"content": None, "refusal": [refusal_tokens.pop(0)]}
        out.append(part)
    out.append({"delta": {}, "finish_reason": choice["finish_reason"]})
    return [{"index": index, "logprobs": None, "finish_reason": None, **d} for d in out]


def sse_events(
    completion: dict[str, Any],
    *,
    usage: bool = True,
    done: bool = True,
    finish: bool = True,
    cut: int | None = None,
    error: dict[str, Any] | None = None,
) -> list[bytes]:
    """The completion as SSE events, choices interleaved round-robin.

    ``usage=False`` plays a server that ignores include_usage; ``finish=False`` drops
    every finish_reason; ``cut`` keeps only that many chunks; ``error`` is sent as
    a chunk after them, as some relays do when the upstream fails mid-stream.
    """
    head = {
        k: completion[k] for k in ("id", "created", "model", "system_fingerprint", "service_tier")
    }
    per_choice = [_choice_deltas(c) for c in completion["choices"]]
    chunks: list[dict[str, Any]] = []
    while any(per_choice):
        for queue in per_choice:
            if queue:
                choice = queue.pop(0)
                if not finish:
                    choice["finish_reason"] = None
                chunks.append({**head, "object": "chat.completion.chunk", "choices": [choice]})
    if usage:
        chunks.append(
            {**head, "object": "chat.completion.chunk", "choices": [], "usage": completion["usage"]}
        )
    if cut is not None:
        chunks = chunks[:cut]
    # raw UTF-8 on the wire: multi-byte characters get split across reads
    events = [
        b"data: " + json.dumps(chunk, ensure_ascii=False).encode() + b"\n\n" for chunk in chunks
    ]
    if error is not None:
        events.append(b"data: " + json.dumps(error).encode() + b"\n\n")
    if done:
        events.append(b"data: [DONE]\n\n")
    return events


async def _dribble(data: bytes, size: int = 37) -> AsyncIterator[bytes]:
    # odd-sized pieces: events and UTF-8 characters are split across reads
    for start in range(0, len(data), size):
        yield data[start : start + size]


def sse_response(events: list[bytes]) -> httpx.Response:
    return httpx.Response(
        200,
        headers={"content-type": "text/event-stream", "x-request-id": "req_mock"},
        content=_dribble(b"".join(events)),
    )


class ScriptedServer:
    """A MockTransport handler: plain JSON or SSE per the body, bad streams on cue."""

    def __init__(
        self, completion: dict[str, Any], *bad_first: dict[str, Any], usage: bool = True
    ) -> None:
        self.completion = completion
        self.bad_first = list(bad_first)
        self.usage = usage
        self.bodies: list[dict[str, Any]] = []
        self.accepts: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        self.accepts.append(request.headers.get("accept", ""))
        if body.get("stream") is not True:
            payload = dict(self.completion)
            if not self.usage:
                payload.pop("usage")
            return httpx.Response(200, json=payload, headers={"x-request-id": "req_mock"})
        include = (body.get("stream_options") or {}).get("include_usage") is True
        if self.bad_first:
            return sse_response(sse_events(self.completion, **self.bad_first.pop(0)))
        return sse_response(sse_events(self.completion, usage=include and self.usage))


def _ask(text: str = "Weather in Oslo?", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [{"role": "user", "content": text}], **extra}


def test_rich_stream_assembles_to_the_plain_completion(tmp_path: Path) -> None:
    server = ScriptedServer(RICH_COMPLETION)
    rows = [batch_line("rich", _ask(n=3, logprobs=True, tools=[WEATHER_TOOL]))]
    transport = httpx.MockTransport(server)
    plain_run = run_rows(tmp_path, rows, name="plain", transport=transport, fake_time=FakeTime())
    stream_run = run_rows(
        tmp_path, rows, name="stream", transport=transport, fake_time=FakeTime(), stream=True
    )
    assert plain_run.results["rich"]["response"]["body"] == RICH_COMPLETION
    assembled = stream_run.results["rich"]["response"]["body"]
    assert assembled == RICH_COMPLETION
    assert stream_run.results["rich"]["response"]["request_id"] == "req_mock"
    assert stream_run.summary["usage"] == plain_run.summary["usage"]
    assert server.bodies[1]["stream_options"] == {"include_usage": True}
    assert server.accepts == ["application/json", "text/event-stream"]


def test_server_that_ignores_stream_true_is_still_recorded(tmp_path: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=RICH_COMPLETION)  # plain JSON despite stream: true

    out = run_rows(
        tmp_path,
        [batch_line("a", _ask(stream=True))],
        transport=httpx.MockTransport(handler),
        fake_time=FakeTime(),
    )
    record = out.results["a"]
    assert record["response"]["body"] == RICH_COMPLETION
    assert record["batchrun"]["ttft_ms"] is None  # no stream, no first-token time
    assert out.summary["usage"]["total_tokens"] == RICH_COMPLETION["usage"]["total_tokens"]


# -- torn streams, errors in the stream --------------------------------------------------


def test_sim_truncated_stream_is_retried_and_ends_in_results(
    tmp_path: Path, sim: SimThread
) -> None:
    sim.reset()
    sim.fail_first("tear-me-once", "truncate")
    rows = [batch_line("torn", _ask("tear-me-once")), batch_line("fine", _ask("left alone"))]
    out = run_rows(tmp_path, rows, base_url=sim.base_url, stream=True)
    assert out.exit_code == EXIT_OK
    torn = out.results["torn"]
    assert torn["batchrun"]["attempts"] == 2
    assert torn["batchrun"]["statuses"][-1] == 200
    assert torn["response"]["body"]["choices"][0]["finish_reason"] == "stop"
    assert torn["response"]["body"]["usage"]["total_tokens"] > 0
    assert out.results["fine"]["batchrun"]["attempts"] == 1
    assert sim.snapshot()["faults"] == {"truncate": 1}
    assert out.summary["retries"] == 1


def test_dropped_connection_mid_stream_is_retried(tmp_path: Path) -> None:
    with SimThread(SimConfig(fail_first={"drop-me": ["truncate"]}, truncate_abort=True)) as sim:
        out = run_rows(
            tmp_path, [batch_line("a", _ask("drop-me"))], base_url=sim.base_url, stream=True
        )
        assert sim.snapshot()["faults"] == {"truncate": 1}
    assert out.exit_code == EXIT_OK
    assert out.results["a"]["batchrun"]["attempts"] == 2


def test_always_truncated_stream_fails_with_stream_truncated(tmp_path: Path) -> None:
    with SimThread(SimConfig(truncate_rate=1.0)) as sim:
        out = run_rows(
            tmp_path, [batch_line("a", _ask())], base_url=sim.base_url, stream=True, max_attempts=3
        )
    assert out.exit_code == EXIT_SOME_FAILED
    err = out.errors["a"]
    assert err["error"]["code"] == "stream_truncated"
    assert [a["code"] for a in err["error"]["attempts"]] == ["stream_truncated"] * 3
    assert out.summary["usage"]["total_tokens"] == 0  # nothing counted for a torn stream


@pytest.mark.parametrize(
    "bad",
    [
        {"done": False, "usage": False, "cut": 5},  # ends mid-answer, cleanly
        {"finish": False},  # [DONE] arrives but no choice ever finished
        {"done": False},  # every choice finished, usage sent, but no [DONE]
        {"cut": 0, "done": True},  # [DONE] and nothing else
    ],
    ids=["cut-short", "done-without-finish", "finish-without-done", "empty"],
)
def test_incomplete_streams_are_failed_attempts(tmp_path: Path, bad: dict[str, Any]) -> None:
    server = ScriptedServer(RICH_COMPLETION, bad)
    out = run_rows(
        tmp_path,
        [batch_line("a", _ask(n=3))],
        transport=httpx.MockTransport(server),
        fake_time=FakeTime(),
        stream=True,
    )
    record = out.results["a"]
    assert record["batchrun"]["attempts"] == 2
    assert record["response"]["body"] == RICH_COMPLETION
    assert len(server.bodies) == 2


def test_error_inside_a_200_stream_is_retried(tmp_path: Path, sim: SimThread) -> None:
    sim.reset()
    sim.fail_first("fail-mid-stream", "stream_error")
    out = run_rows(
        tmp_path, [batch_line("a", _ask("fail-mid-stream"))], base_url=sim.base_url, stream=True
    )
    assert out.exit_code == EXIT_OK
    assert out.results["a"]["batchrun"]["attempts"] == 2
    assert out.results["a"]["response"]["body"]["choices"][0]["message"]["content"]
    assert sim.snapshot()["faults"] == {"stream_error": 1}


def test_error_inside_every_200_stream_is_recorded_from_its_envelope(tmp_path: Path) -> None:
    error = {
        "error": {
            "message": "upstream model crashed",
            "type": "server_error",
            "param": None,
            "code": "upstream_error",
        }
    }
    bad = {"cut": 3, "done": False, "error": error}
    server = ScriptedServer(RICH_COMPLETION, bad, bad)
    out = run_rows(
        tmp_path,
        [batch_line("a", _ask())],
        transport=httpx.MockTransport(server),
        fake_time=FakeTime(),
        stream=True,
        max_attempts=2,
    )
    err = out.errors["a"]
    assert err["error"]["code"] == "upstream_error"
    assert "upstream model crashed" in err["error"]["message"]
    assert [a["code"] for a in err["error"]["attempts"]] == ["upstream_error"] * 2
    assert out.summary["error_codes"] == {"upstream_error": 1}


def test_failed_stream_attempt_keeps_its_http_200(tmp_path: Path) -> None:
    error = {
        "error": {
            "message": "upstream model crashed",
            "type": "server_error",
            "param": None,
            "code": "upstream_error",
        }
    }
    bad = {"cut": 3, "done": False, "error": error}
    server = ScriptedServer(RICH_COMPLETION, bad)
    out = run_rows(
        tmp_path,
        [batch_line("a", _ask())],
        transport=httpx.MockTransport(server),
        fake_time=FakeTime(),
        stream=True,
        max_attempts=1,
    )
    err = out.errors["a"]
    assert err["error"]["attempts"][0]["status"] == 200
    assert err["response"]["status_code"] == 200
    assert err["response"]["request_id"] == "req_mock"


# -- usage -----------------------------------------------------------------------------


def test_server_ignoring_include_usage_is_recorded_as_missing(tmp_path: Path) -> None:
    no_usage = httpx.MockTransport(ScriptedServer(RICH_COMPLETION, usage=False))
    rows = [batch_line("a", _ask())]
    out = run_rows(
        tmp_path, rows, name="none", transport=no_usage, fake_time=FakeTime(), stream=True
    )
    record = out.results["a"]
    assert record["response"]["body"]["usage"] is None
    assert record["response"]["body"]["choices"] == RICH_COMPLETION["choices"]
    assert out.summary["requests"]["succeeded"] == 1
    assert out.summary["usage"]["missing"] == 1
    for key in ("prompt_tokens", "completion_tokens", "total_tokens", "reasoning_tokens"):
        assert out.summary["usage"][key] == 0, key  # never invented
    assert out.summary["by_model"] == {}
    # a second run with usage: only the real numbers are added up
    both = [batch_line("x", _ask("x")), batch_line("y", _ask("y"))]
    mixed_server = ScriptedServer(RICH_COMPLETION, {"usage": False})
    mixed = run_rows(
        tmp_path,
        both,
        name="mixed",
        transport=httpx.MockTransport(mixed_server),
        fake_time=FakeTime(),
        stream=True,
        concurrency=1,
    )
    assert mixed.summary["usage"]["missing"] == 1
    assert mixed.summary["usage"]["total_tokens"] == RICH_COMPLETION["usage"]["total_tokens"]


def test_plain_answer_without_usage_is_missing_too(tmp_path: Path) -> None:
    server = ScriptedServer(RICH_COMPLETION, usage=False)
    out = run_rows(
        tmp_path,
        [batch_line("a", _ask())],
        transport=httpx.MockTransport(server),
        fake_time=FakeTime(),
    )
    assert "usage" not in out.results["a"]["response"]["body"]
    assert out.summary["usage"]["missing"] == 1
    assert out.summary["usage"]["total_tokens"] == 0


def test_row_that_turns_include_usage_off_keeps_its_choice(tmp_path: Path, sim: SimThread) -> None:
    sim.reset()
    body = _ask("no usage please", stream=True, stream_options={"include_usage": False})
    out = run_rows(
        tmp_path,
        [batch_line("a", body), batch_line("b", _ask("b", stream=True))],
        base_url=sim.base_url,
        concurrency=1,
    )
    sent = sim.snapshot()["bodies"]
    assert exact(sent[0]) == exact(body)
    assert sent[1]["stream_options"] == {"include_usage": True}
    assert out.results["a"]["response"]["body"]["usage"] is None
    assert out.results["b"]["response"]["body"]["usage"]["total_tokens"] > 0
    assert out.summary["usage"]["missing"] == 1
    assert (
        out.summary["usage"]["total_tokens"]
        == (out.results["b"]["response"]["body"]["usage"]["total_tokens"])
    )


# -- timing ----------------------------------------------------------------------------


def test_ttft_recorded_for_streams_and_null_for_plain_calls(tmp_path: Path) -> None:
    # the server holds the first token 80 ms after its headers; allow 20 ms for the
    # headers' own trip (today's client starts the clock when they arrive)
    with SimThread(SimConfig(first_token_ms=80)) as sim:
        rows = [batch_line("s", _ask("streamed", stream=True)), batch_line("p", _ask("plain"))]
        out = run_rows(tmp_path, rows, base_url=sim.base_url)
    streamed = out.results["s"]["batchrun"]
    assert 60 <= streamed["ttft_ms"] <= streamed["latency_ms"]
    assert streamed["latency_ms"] >= 80
    assert out.results["p"]["batchrun"]["ttft_ms"] is None
    assert out.results["p"]["batchrun"]["latency_ms"] > 0


def test_ttft_includes_the_wait_for_the_response_headers(tmp_path: Path) -> None:
    with SimThread(SimConfig(latency_ms=80)) as sim:
        out = run_rows(tmp_path, [batch_line("s", _ask(stream=True))], base_url=sim.base_url)
    meta = out.results["s"]["batchrun"]
    assert meta["latency_ms"] >= 80
    assert meta["ttft_ms"] >= 80


def test_stall_between_chunks_longer_than_timeout_is_a_retried_timeout(tmp_path: Path) -> None:
    with SimThread(SimConfig(chunk_delay_ms=600)) as sim:
        out = run_rows(
            tmp_path,
            [batch_line("a", _ask())],
            base_url=sim.base_url,
            stream=True,
            timeout=0.2,
            max_attempts=2,
        )
        assert sim.snapshot()["streams"] == 2
    err = out.errors["a"]
    assert err["error"]["code"] == "timeout"
    assert [a["code"] for a in err["error"]["attempts"]] == ["timeout", "timeout"]
    assert err["batchrun"]["latency_ms"] < 1200  # cut after ~0.2 s per attempt


def test_slow_start_then_normal_stream_succeeds_on_retry(tmp_path: Path) -> None:
    with SimThread(SimConfig(fail_first={"slow-once": ["delay:600"]})) as sim:
        out = run_rows(
            tmp_path,
            [batch_line("a", _ask("slow-once"))],
            base_url=sim.base_url,
            stream=True,
            timeout=0.2,
        )
    record = out.results["a"]
    assert record["batchrun"]["attempts"] == 2
    assert record["batchrun"]["statuses"] == [None, 200]


def test_steady_stream_longer_than_timeout_succeeds(tmp_path: Path) -> None:
    """Chunks every 0.2 s for ~1.2 s with --timeout 0.5: the timeout is per chunk."""
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(batch_line("a", _ask("steady please"))) + "\n")
    with SimThread(SimConfig(chunk_delay_ms=200, stream_pieces=4)) as sim:
        args = [
            "run",
            str(path),
            "-o",
            str(tmp_path / "out"),
            "--base-url",
            sim.base_url,
            "--auth",
            "none",
            "--stream",
            "--timeout",
            "0.5",
            "--total-timeout",
            "10",
            "--max-attempts",
            "1",
            "-q",
            "--no-parquet",
        ]
        result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (record,) = read_jsonl(tmp_path / "out" / "results.jsonl")
    meta = record["batchrun"]
    assert meta["attempts"] == 1
    assert meta["latency_ms"] > 1000  # well past --timeout, yet never idle that long
    assert record["response"]["body"]["choices"][0]["finish_reason"] == "stop"


def test_total_timeout_cuts_a_trickling_stream(tmp_path: Path) -> None:
    with SimThread(SimConfig(chunk_delay_ms=150, stream_pieces=6)) as sim:
        out = run_rows(
            tmp_path,
            [batch_line("a", _ask())],
            base_url=sim.base_url,
            stream=True,
            timeout=0.5,
            total_timeout=0.4,
            max_attempts=2,
        )
    err = out.errors["a"]
    assert err["error"]["code"] == "timeout_total"
    assert [a["code"] for a in err["error"]["attempts"]] == ["timeout_total"] * 2
    assert 800 <= err["batchrun"]["latency_ms"] < 2000


def test_seed_stream_fixture_through_the_cli(tmp_path: Path, sim: SimThread) -> None:
    """seed004 asks for a stream itself (no --stream): assembled and usage-counted."""
    path = tmp_path / "in.jsonl"
    row = batch_line("seed004", load_seed(SEED_DIR / "seed004_request.json"))
    path.write_text(json.dumps(row, ensure_ascii=False) + "\n", encoding="utf-8")
    args = [
        "run",
        str(path),
        "-o",
        str(tmp_path / "out"),
        "--base-url",
        sim.base_url,
        "--auth",
        "none",
        "-q",
        "--no-parquet",
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (record,) = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert record["batchrun"]["ttft_ms"] is not None
    assert record["response"]["body"]["usage"]["prompt_tokens"] > 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["usage"]["missing"] == 0
