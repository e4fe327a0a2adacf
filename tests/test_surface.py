"""The chat-completions surface end to end: every seed request through batchrun.

Each request body from the five provider docs (tests/seeds/) goes through the real
runner and client, over loopback, to the simulator -- once as written and once with
``--stream`` -- and the recorded lines are checked: content or tool calls assembled,
reasoning kept, usage present, n=2 giving two choices. The simulator records the
bodies it received, so pass-through is checked exactly (field order and number
types included). Auth variants run against the simulator's ``require_key``; error
envelopes come from the simulator (real 400 validation, scripted statuses) and from
the seed fixtures replayed through ``httpx.MockTransport``.

Helpers at the top (`run_rows`, `batch_line`, `FakeTime`) are shared with
tests/test_stream_e2e.py.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest
from click.testing import CliRunner

from batchrun._cli import cli
from batchrun._engine.runner import Runner
from batchrun._engine.stops import EXIT_OK, EXIT_SOME_FAILED
from batchrun._settings import Settings
from batchrun.sim import SimConfig, SimThread
from tests.conftest import FakeTime

SEED_DIR = Path(__file__).parent / "seeds"
SEED_REQUESTS = sorted(SEED_DIR.glob("seed*_request*.json"))
REASONING_MODELS = {"o3-mini", "deepseek-reasoner"}
TEST_KEY = "sim-test-key-0123"  # not a real key: only the simulator checks it
FINISH_REASONS = {"stop", "length", "tool_calls", "function_call"}


# -- shared helpers --------------------------------------------------------------------


def load_seed(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def batch_line(custom_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """One input row in the Batch API format (the body is sent as is)."""
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}


def seed_rows() -> list[dict[str, Any]]:
    return [batch_line(path.stem, load_seed(path)) for path in SEED_REQUESTS]


async def no_wait(seconds: float) -> None:
    """Retry backoff without the wall-clock wait (the sim answers at once anyway)."""
    await anyio.lowlevel.checkpoint()


@dataclass
class RunOutput:
    exit_code: int
    results: dict[str, dict[str, Any]]
    errors: dict[str, dict[str, Any]]
    summary: dict[str, Any]
    out_dir: Path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run_rows(
    tmp_path: Path,
    rows: list[dict[str, Any]],
    *,
    base_url: str = "http://test/v1",
    name: str = "run",
    api_key: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    fake_time: FakeTime | None = None,
    **options: Any,
) -> RunOutput:
    """Write ``rows`` as a request file, run batchrun in-process, read what it wrote."""
    path = tmp_path / f"{name}.jsonl"
    path.write_text(
        "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8"
    )
    out_dir = tmp_path / name
    options.setdefault("concurrency", 4)
    cfg = Settings(
        input=str(path),
        out_dir=str(out_dir),
        base_url=base_url,
        write_parquet=False,
        quiet=True,
        summary_interval=60.0,
        **options,
    )
    if fake_time is not None:
        runner = Runner(
            cfg, api_key=api_key, transport=transport, clock=fake_time.clock, sleep=fake_time.sleep
        )
    else:
        runner = Runner(cfg, api_key=api_key, transport=transport, sleep=no_wait)
    result = anyio.run(runner.run)
    results = {r["custom_id"]: r for r in read_jsonl(out_dir / "results.jsonl")}
    errors = {r["custom_id"]: r for r in read_jsonl(out_dir / "errors.jsonl")}
    summary = json.loads((out_dir / "summary.json").read_text())
    return RunOutput(result.exit_code, results, errors, summary, out_dir)


def streamed_body(body: dict[str, Any]) -> dict[str, Any]:
    """What a streaming run must send: the body plus stream and include_usage, no more."""
    out = dict(body)
    out["stream"] = True
    options = body.get("stream_options")
    if options is None:
        out["stream_options"] = {"include_usage": True}
    elif "include_usage" not in options:
        out["stream_options"] = {**options, "include_usage": True}
    return out


def exact(value: Any) -> str:
    """A JSON rendering that tells 0 from 0.0 and keeps key order (dict == does not)."""
    return json.dumps(value, ensure_ascii=False)


def usage_sum(records: list[dict[str, Any]]) -> dict[str, int]:
    total = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for record in records:
        usage = record["response"]["body"]["usage"]
        for key in total:
            total[key] += usage[key]
    return total


# -- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    with SimThread(SimConfig(record_bodies=1000)) as server:
        yield server


@pytest.fixture(scope="module")
def keyed_sim() -> Iterator[SimThread]:
    with SimThread(SimConfig(require_key=TEST_KEY)) as server:
        yield server


@pytest.fixture
def fresh_sim(sim: SimThread) -> SimThread:
    sim.reset()
    return sim


# -- every seed request, plain and streamed --------------------------------------------


def test_seed_requests_cover_all_five_docs() -> None:
    docs = {path.name[:7] for path in SEED_REQUESTS}
    assert docs == {"seed000", "seed001", "seed002", "seed003", "seed004"}
    assert len(SEED_REQUESTS) == 10


def _wants_tool_call(body: dict[str, Any]) -> bool:
    tools = body.get("tools") or body.get("functions")
    choice = body.get("tool_choice", body.get("function_call"))
    return bool(tools) and choice != "none"


def _tool_names(body: dict[str, Any]) -> set[str]:
    names = {t["function"]["name"] for t in body.get("tools") or []}
    return names | {f["name"] for f in body.get("functions") or []}


def check_completion_record(record: dict[str, Any], sent: dict[str, Any], streamed: bool) -> None:
    """Everything a results line for ``sent`` must show, streamed or not."""
    cid = record["custom_id"]
    assert record["error"] is None, cid
    assert record["response"]["status_code"] == 200, cid
    assert record["response"]["request_id"].startswith("req_sim"), cid
    body = record["response"]["body"]
    assert body["object"] == "chat.completion", cid
    assert body["model"] == sent["model"], cid
    assert body["id"].startswith("chatcmpl-"), cid
    n = sent.get("n") or 1
    choices = body["choices"]
    assert [c["index"] for c in choices] == list(range(n)), cid
    for choice in choices:
        message = choice["message"]
        assert message["role"] == "assistant", cid
        assert choice["finish_reason"] in FINISH_REASONS, cid
        if _wants_tool_call(sent):
            calls = message["tool_calls"]
            assert calls, cid
            assert choice["finish_reason"] == "tool_calls", cid
            for call in calls:
                assert call["id"].startswith("call_") and call["type"] == "function", cid
                assert call["function"]["name"] in _tool_names(sent), cid
                assert isinstance(json.loads(call["function"]["arguments"]), dict), cid
            assert message["content"] is None, cid
        else:
            assert "tool_calls" not in message, cid
            content = message["content"]
            assert isinstance(content, str) and content, cid
            kind = (sent.get("response_format") or {}).get("type")
            if kind == "json_schema":
                schema = sent["response_format"]["json_schema"]["schema"]
                parsed = json.loads(content)
                assert set(schema["required"]) <= set(parsed), cid
            elif kind == "json_object":
                assert isinstance(json.loads(content), dict), cid
        if sent["model"] in REASONING_MODELS:
            reasoning = message["reasoning_content"]
            assert isinstance(reasoning, str) and reasoning.startswith("The user asks"), cid
        else:
            assert not message.get("reasoning_content"), cid
    usage = body["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0, cid
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], cid
    if sent["model"] in REASONING_MODELS:
        assert usage["completion_tokens_details"]["reasoning_tokens"] > 0, cid
    meta = record["batchrun"]
    assert meta["attempts"] == 1, cid
    assert meta["latency_ms"] > 0, cid
    if streamed:
        assert isinstance(meta["ttft_ms"], float), cid
        assert 0 <= meta["ttft_ms"] <= meta["latency_ms"], cid
    else:
        assert meta["ttft_ms"] is None, cid


@pytest.mark.parametrize("force_stream", [False, True], ids=["as-written", "--stream"])
def test_every_seed_request_is_answered_and_recorded(
    tmp_path: Path, fresh_sim: SimThread, force_stream: bool
) -> None:
    rows = seed_rows()
    out = run_rows(tmp_path, rows, base_url=fresh_sim.base_url, stream=force_stream)
    assert out.exit_code == EXIT_OK
    assert out.errors == {}
    assert set(out.results) == {row["custom_id"] for row in rows}
    for row in rows:
        streamed = force_stream or row["body"].get("stream") is True
        check_completion_record(out.results[row["custom_id"]], row["body"], streamed)
    # only rows that ask for a stream stream, unless --stream forces it
    wanted_streams = sum(1 for row in rows if row["body"].get("stream") is True)
    assert fresh_sim.snapshot()["streams"] == (len(rows) if force_stream else wanted_streams)
    summary = out.summary
    assert summary["status"] == "complete"
    assert summary["requests"]["succeeded"] == len(rows)
    assert summary["requests"]["failed"] == 0
    assert summary["usage"]["missing"] == 0
    totals = usage_sum(list(out.results.values()))
    for key, value in totals.items():
        assert summary["usage"][key] == value
    assert summary["usage"]["reasoning_tokens"] > 0


# -- pass-through ----------------------------------------------------------------------


@pytest.mark.parametrize("force_stream", [False, True], ids=["as-written", "--stream"])
def test_bodies_reach_the_server_unchanged(
    tmp_path: Path, fresh_sim: SimThread, force_stream: bool
) -> None:
    rows = seed_rows()
    run_rows(tmp_path, rows, base_url=fresh_sim.base_url, stream=force_stream, concurrency=1)
    received = fresh_sim.snapshot()["bodies"]
    assert len(received) == len(rows)
    expected = []
    for row in rows:
        sent = row["body"]
        expected.append(streamed_body(sent) if force_stream or sent.get("stream") is True else sent)
    # rows of different models go out in per-model lanes, so compare as multisets
    assert sorted(exact(got) for got in received) == sorted(exact(e) for e in expected)


def test_model_filled_only_when_absent_and_custom_id_stripped(
    tmp_path: Path, fresh_sim: SimThread
) -> None:
    seed = load_seed(SEED_DIR / "seed004_request.json")
    no_model = {k: v for k, v in seed.items() if k != "model"}
    rows = [
        batch_line("no-model", no_model),
        batch_line("own-model", seed),
        {"custom_id": "bare", **seed},  # bare body: custom_id is ours, not the server's
    ]
    out = run_rows(tmp_path, rows, base_url=fresh_sim.base_url, model="gpt-4o-mini", concurrency=1)
    assert out.exit_code == EXIT_OK
    received = sorted(exact(b) for b in fresh_sim.snapshot()["bodies"])
    assert received == sorted(
        [
            exact(streamed_body({**no_model, "model": "gpt-4o-mini"})),
            exact(streamed_body(seed)),
            exact(streamed_body(seed)),
        ]
    )
    assert out.results["no-model"]["response"]["body"]["model"] == "gpt-4o-mini"
    assert out.results["own-model"]["response"]["body"]["model"] == "gpt-4o"


# -- auth variants ---------------------------------------------------------------------


def _assert_key_not_written(out_dir: Path) -> None:
    for path in out_dir.iterdir():
        if path.is_file():
            assert TEST_KEY not in path.read_text(encoding="utf-8", errors="replace"), path.name


@pytest.mark.parametrize(
    ("auth", "auth_header"),
    [("bearer", "Authorization"), ("raw", "Authorization"), ("bearer", "api-key")],
    ids=["bearer", "raw-seed004", "azure-api-key"],
)
def test_auth_variants_are_accepted_by_a_keyed_server(
    tmp_path: Path, keyed_sim: SimThread, auth: str, auth_header: str
) -> None:
    rows = [batch_line("a", load_seed(SEED_DIR / "seed004_request.json"))]
    out = run_rows(
        tmp_path,
        rows,
        base_url=keyed_sim.base_url,
        api_key=TEST_KEY,
        auth=auth,
        auth_header=auth_header,
    )
    assert out.exit_code == EXIT_OK, out.errors
    check_completion_record(out.results["a"], rows[0]["body"], streamed=True)
    _assert_key_not_written(out.out_dir)


@pytest.mark.parametrize(
    ("api_key", "auth"),
    [("wrong-key", "bearer"), ("wrong-key", "raw"), (None, "bearer"), (TEST_KEY, "none")],
    ids=["wrong-bearer", "wrong-raw", "no-key", "auth-none"],
)
def test_rejected_key_is_a_final_401_with_its_envelope(
    tmp_path: Path, keyed_sim: SimThread, api_key: str | None, auth: str
) -> None:
    rows = [batch_line("a", load_seed(SEED_DIR / "seed003_request_json_object.json"))]
    out = run_rows(tmp_path, rows, base_url=keyed_sim.base_url, api_key=api_key, auth=auth)
    assert out.exit_code == EXIT_SOME_FAILED
    err = out.errors["a"]
    assert err["response"]["status_code"] == 401
    assert err["error"]["code"] == "invalid_api_key"
    assert err["error"]["message"] == err["response"]["body"]["error"]["message"]
    assert err["error"]["message"].startswith("Incorrect API key provided")
    assert err["batchrun"]["attempts"] == 1  # a 401 is never retried
    _assert_key_not_written(out.out_dir)


def test_extra_headers_are_sent_with_every_auth_style(tmp_path: Path) -> None:
    seen: list[httpx.Headers] = []
    completion = load_seed(SEED_DIR / "seed002_response.json")

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers)
        return httpx.Response(200, json=completion)

    rows = [batch_line("a", load_seed(SEED_DIR / "seed002_request.json"))]
    extra = (("X-Title", "surface test"), ("HTTP-Referer", "https://example.test/app"))
    styles = [
        ("bearer", "Authorization", "authorization", f"Bearer {TEST_KEY}"),
        ("raw", "Authorization", "authorization", TEST_KEY),
        ("bearer", "api-key", "api-key", TEST_KEY),
    ]
    for number, (auth, header, wire_name, wire_value) in enumerate(styles):
        run_rows(
            tmp_path,
            rows,
            name=f"r{number}",
            api_key=TEST_KEY,
            auth=auth,
            auth_header=header,
            headers=extra,
            transport=httpx.MockTransport(handler),
            fake_time=FakeTime(),
        )
        headers = seen[-1]
        assert headers[wire_name] == wire_value
        assert headers["x-title"] == "surface test"
        assert headers["http-referer"] == "https://example.test/app"
        assert headers["content-type"] == "application/json"
        if wire_name != "authorization":
            assert "authorization" not in headers
        run_json = json.loads((tmp_path / f"r{number}" / "run.json").read_text())
        assert ["X-Title", "surface test"] in run_json["options"]["headers"]
    assert len(seen) == len(styles)


def test_cli_auth_raw_and_repeated_headers_against_the_sim(
    tmp_path: Path, keyed_sim: SimThread
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(
        json.dumps(
            batch_line("cli-1", load_seed(SEED_DIR / "seed004_request.json")), ensure_ascii=False
        )
        + "\n",
        encoding="utf-8",
    )
    out_dir = tmp_path / "out"
    args = [
        "run",
        str(path),
        "-o",
        str(out_dir),
        "--base-url",
        keyed_sim.base_url,
        "--api-key-env",
        "BATCHRUN_SURFACE_KEY",
        "--auth",
        "raw",
        "-H",
        "X-Title: surface",
        "-H",
        "X-Trace-Id: 42",
        "--stream",
        "-q",
        "--no-parquet",
    ]
    result = CliRunner().invoke(
        cli, args, env={"BATCHRUN_SURFACE_KEY": TEST_KEY}, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    (record,) = read_jsonl(out_dir / "results.jsonl")
    assert record["custom_id"] == "cli-1"
    assert record["batchrun"]["ttft_ms"] is not None
    run_json = json.loads((out_dir / "run.json").read_text())
    assert run_json["options"]["headers"] == [["X-Title", "surface"], ["X-Trace-Id", "42"]]
    assert run_json["options"]["auth"] == "raw" and run_json["options"]["stream"] is True
    _assert_key_not_written(out_dir)


# -- error envelopes -------------------------------------------------------------------


def _user(text: str, model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def test_sim_400_for_an_invalid_message_is_recorded_with_its_envelope(
    tmp_path: Path, fresh_sim: SimThread
) -> None:
    rows = [
        batch_line(
            "bad-role", {"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]}
        ),
        batch_line("null-role", {"model": "gpt-4o", "messages": [{"role": None, "content": "x"}]}),
        batch_line("ok", _user("fine")),
    ]
    out = run_rows(tmp_path, rows, base_url=fresh_sim.base_url)
    assert out.exit_code == EXIT_SOME_FAILED
    assert set(out.results) == {"ok"}
    expected = {
        "bad-role": ("invalid_value", "messages[0].role", "Invalid value: 'robot'."),
        "null-role": (
            "missing_required_parameter",
            "messages[0].role",
            "Missing required parameter: 'messages[0].role'.",
        ),
    }
    for cid, (code, param, message_start) in expected.items():
        err = out.errors[cid]
        envelope = err["response"]["body"]["error"]
        assert err["response"]["status_code"] == 400
        assert envelope["type"] == "invalid_request_error" and envelope["param"] == param
        assert err["error"]["code"] == code == envelope["code"]
        assert err["error"]["message"] == envelope["message"]
        assert err["error"]["message"].startswith(message_start)
        assert err["error"]["attempts"] == [
            {"status": 400, "code": code, "message": envelope["message"]}
        ]
    assert out.summary["error_codes"] == {"invalid_value": 1, "missing_required_parameter": 1}
    assert out.summary["requests"]["failed"] == 2


@pytest.mark.parametrize(
    ("status", "code"),
    [(401, "invalid_api_key"), (403, "http_403"), (404, "http_404"), (422, "http_422")],
)
def test_sim_scripted_client_errors_are_final(
    tmp_path: Path, fresh_sim: SimThread, status: int, code: str
) -> None:
    marker = f"scripted-{status}"
    fresh_sim.fail_first(marker, status)
    out = run_rows(tmp_path, [batch_line("a", _user(marker))], base_url=fresh_sim.base_url)
    err = out.errors["a"]
    assert err["response"]["status_code"] == status
    assert err["response"]["request_id"].startswith("req_sim")
    assert err["error"]["code"] == code == err["response"]["body"]["error"]["code"]
    assert err["error"]["message"] == err["response"]["body"]["error"]["message"]
    assert err["batchrun"]["attempts"] == 1
    assert fresh_sim.snapshot()["by_status"] == {str(status): 1}


def test_sim_500s_are_retried_then_recorded_from_the_envelope(
    tmp_path: Path, fresh_sim: SimThread
) -> None:
    fresh_sim.fail_first("flaky-500", 500, 503)
    fresh_sim.fail_first("down-500", 500, 500, 500)
    rows = [batch_line("flaky", _user("flaky-500")), batch_line("down", _user("down-500"))]
    out = run_rows(tmp_path, rows, base_url=fresh_sim.base_url, max_attempts=3)
    assert out.results["flaky"]["batchrun"]["statuses"] == [500, 503, 200]
    err = out.errors["down"]
    envelope = err["response"]["body"]["error"]
    assert err["response"]["status_code"] == 500
    # the envelope has code null: its type is the next best machine-readable reason
    assert envelope["code"] is None and envelope["type"] == "server_error"
    assert err["error"]["code"] == "server_error"
    assert err["error"]["message"] == envelope["message"]
    assert [a["status"] for a in err["error"]["attempts"]] == [500, 500, 500]
    assert out.summary["retries"] == 2 + 2


def test_error_object_in_a_plain_200_is_retried(tmp_path: Path, fresh_sim: SimThread) -> None:
    fresh_sim.fail_first("once-200-error", "stream_error")
    fresh_sim.fail_first("always-200-error", "stream_error", "stream_error")
    rows = [
        batch_line("once", _user("once-200-error")),
        batch_line("always", _user("always-200-error")),
    ]
    out = run_rows(tmp_path, rows, base_url=fresh_sim.base_url, max_attempts=2)
    assert out.results["once"]["batchrun"]["statuses"] == [200, 200]
    assert out.results["once"]["response"]["body"]["choices"][0]["message"]["content"]
    err = out.errors["always"]
    assert err["response"]["status_code"] == 200
    assert err["error"]["code"] == "server_error"
    assert err["error"]["message"] == err["response"]["body"]["error"]["message"]
    assert len(err["error"]["attempts"]) == 2


ENVELOPE_CASES = [
    ("seed000_response_400.json", 400, "string", "string"),
    (
        "seed003_response_400.json",
        400,
        "invalid_request_error",
        "Invalid value for 'reasoning_effort'",
    ),
    ("seed000_response_429.json", 429, "string", "string"),
    ("seed003_response_429.json", 429, "rate_limit_exceeded", "Rate limit reached"),
]


@pytest.mark.parametrize(("fixture", "status", "code", "message"), ENVELOPE_CASES)
def test_seed_error_envelopes_are_parsed(
    tmp_path: Path, fixture: str, status: int, code: str, message: str
) -> None:
    envelope = load_seed(SEED_DIR / fixture)
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(status, json=envelope, headers={"x-request-id": "req_seed"})

    rows = [batch_line("a", load_seed(SEED_DIR / "seed003_request_reasoning.json"))]
    out = run_rows(
        tmp_path, rows, transport=httpx.MockTransport(handler), fake_time=FakeTime(), max_attempts=3
    )
    err = out.errors["a"]
    assert err["response"] == {"status_code": status, "request_id": "req_seed", "body": envelope}
    assert err["error"]["code"] == code
    assert err["error"]["message"] == message
    retried = status == 429
    assert len(calls) == (3 if retried else 1)
    assert [a["status"] for a in err["error"]["attempts"]] == [status] * len(calls)
    assert out.summary["rate_limited"] == (3 if retried else 0)


@pytest.mark.parametrize(
    ("status", "code", "retried"),
    [
        (401, "invalid_api_key", False),
        (403, "unsupported_country_region_territory", False),
        (404, "model_not_found", False),
        (422, "unprocessable_entity", False),
        (500, "internal_error", True),
        (503, "overloaded", True),
    ],
)
def test_status_envelopes_code_and_message(
    tmp_path: Path, status: int, code: str, retried: bool
) -> None:
    envelope = {
        "error": {
            "message": f"the {code} message",
            "type": "some_type",
            "param": "model",
            "code": code,
        }
    }
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(status, json=envelope)

    for number, stream in enumerate((False, True)):
        calls.clear()
        out = run_rows(
            tmp_path,
            [batch_line("a", _user("x"))],
            name=f"r{number}",
            transport=httpx.MockTransport(handler),
            fake_time=FakeTime(),
            max_attempts=2,
            stream=stream,
        )
        err = out.errors["a"]
        assert err["response"]["status_code"] == status
        assert err["response"]["body"] == envelope
        assert (err["error"]["code"], err["error"]["message"]) == (code, f"the {code} message")
        assert len(calls) == (2 if retried else 1)


def test_error_record_carries_envelope_type_and_param(tmp_path: Path, fresh_sim: SimThread) -> None:
    rows = [batch_line("bad", {"model": "gpt-4o", "messages": [{"role": "robot", "content": "x"}]})]
    out = run_rows(tmp_path, rows, base_url=fresh_sim.base_url)
    error = out.errors["bad"]["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "messages[0].role"
