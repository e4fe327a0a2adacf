"""Broken and hostile servers, over real loopback sockets: every fault becomes a
retried or failed attempt with a clear record, memory stays bounded, nothing is lost.

Each row's message content is its key on the fault server (tests/faultserver.py),
which plays one scripted step per attempt. The runner is the real one, with the
default aiohttp transport; only its sleep is replaced so backoffs take no time.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from batchrun._engine.runner import Runner
from batchrun._engine.stops import EXIT_OK, EXIT_SOME_FAILED, RunResult
from batchrun._settings import Settings
from tests.faultserver import MB, FaultServer

pytest_plugins = ["tests.conftest_fault"]  # fault_server, shared_fault_server

MAX_ATTEMPTS = 3


async def _no_wait(seconds: float) -> None:
    await anyio.lowlevel.checkpoint()


def write_rows(path: Path, keys: list[str]) -> Path:
    with path.open("w") as f:
        for key in keys:
            row = {
                "custom_id": key,
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": key}],
            }
            f.write(json.dumps(row) + "\n")
    return path


def run_against(srv: FaultServer, tmp_path: Path, keys: list[str], **options: Any) -> RunResult:
    inp = write_rows(tmp_path / "requests.jsonl", keys)
    values: dict[str, Any] = {
        "concurrency": 4,
        "max_attempts": MAX_ATTEMPTS,
        "timeout": 5.0,
        "total_timeout": 10.0,
        "summary_interval": 60.0,
    }
    values.update(options)
    cfg = Settings(
        input=str(inp),
        out_dir=str(tmp_path / "run"),
        base_url=srv.base_url,
        auth="none",
        **values,
    )
    return anyio.run(Runner(cfg, sleep=_no_wait).run)


def outputs(tmp_path: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """(results by id, errors by id), asserting each id appears once in one file only."""
    run = tmp_path / "run"
    results = [json.loads(x) for x in (run / "results.jsonl").read_text().splitlines()]
    errors = [json.loads(x) for x in (run / "errors.jsonl").read_text().splitlines()]
    ok = {r["custom_id"]: r for r in results}
    bad = {r["custom_id"]: r for r in errors}
    assert len(ok) == len(results) and len(bad) == len(errors), "an id was written twice"
    assert not set(ok) & set(bad), "an id is in both results and errors"
    return ok, bad


def assert_nothing_lost(tmp_path: Path, keys: list[str]) -> None:
    ok, bad = outputs(tmp_path)
    assert set(ok) | set(bad) == set(keys)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["requests"]["pending"] == 0
    assert summary["requests"]["succeeded"] == len(ok)
    assert summary["requests"]["failed"] == len(bad)


# step -> (error code of that attempt, text the message must contain)
RETRIED_FAULTS: dict[str, tuple[str, str]] = {
    # nonjson200 and html200 are billed answers, retried once only: see
    # test_an_unreadable_paid_answer_is_retried_once_and_kept
    "html502": ("http_502", "502 Bad Gateway"),
    "empty200": ("invalid_json", "not JSON"),
    "list200": ("invalid_completion", "no 'choices'"),
    "error200": ("server_error", "upstream overloaded"),
    "short_body": ("connection_error", ""),
    "reset_mid_body": ("connection_error", ""),
    "close_no_answer": ("connection_error", ""),
    "bad_status": ("connection_error", ""),
    "huge_headers": ("connection_error", ""),
    "bad_gzip": ("connection_error", ""),
    "status:500": ("http_500", "scripted 500"),
    "status:503": ("http_503", "scripted 503"),
    "status:429": ("http_429", "scripted 429"),
}


@pytest.mark.parametrize(
    "step",
    [s for s in sorted(RETRIED_FAULTS)],
)
def test_retryable_fault_is_retried_and_recorded(
    fault_server: FaultServer, tmp_path: Path, step: str
) -> None:
    """One row heals on its second attempt (-> results), one never does (-> errors)."""
    code, text = RETRIED_FAULTS[step]
    fault_server.script("heals", step, "ok")
    fault_server.script("stays", *[step] * MAX_ATTEMPTS)
    keys = ["heals", "stays", "steady"]
    result = run_against(fault_server, tmp_path, keys)
    assert result.exit_code == EXIT_SOME_FAILED, result.notes
    assert_nothing_lost(tmp_path, keys)
    ok, bad = outputs(tmp_path)
    assert set(ok) == {"heals", "steady"}
    assert fault_server.attempts == {"heals": 2, "stays": MAX_ATTEMPTS, "steady": 1}

    healed = ok["heals"]
    assert healed["batchrun"]["attempts"] == 2
    assert healed["response"]["body"]["choices"][0]["message"]["content"] == "echo: heals"

    error = bad["stays"]["error"]
    assert len(error["attempts"]) == MAX_ATTEMPTS
    assert error["code"] == code
    assert text in error["message"]
    assert all(a["code"] == code for a in error["attempts"])
    assert len(error["message"]) <= 500
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["retries"] == 1 + (MAX_ATTEMPTS - 1)
    assert summary["error_codes"] == {code: 1}


@pytest.mark.parametrize(
    "step", ["ok_text_plain", "ok_no_ctype", "ok_chunked", "ok_http10", "gzip_ok"]
)
def test_odd_but_valid_answers_are_accepted(
    fault_server: FaultServer, tmp_path: Path, step: str
) -> None:
    """Decision: a valid chat.completion is accepted whatever its Content-Type says."""
    fault_server.script("odd", step)
    result = run_against(fault_server, tmp_path, ["odd"])
    assert result.exit_code == EXIT_OK, result.notes
    ok, _ = outputs(tmp_path)
    assert ok["odd"]["batchrun"]["attempts"] == 1
    assert ok["odd"]["response"]["body"]["choices"][0]["message"]["content"] == "echo: odd"


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirect_is_not_followed_and_fails_at_once(
    fault_server: FaultServer, tmp_path: Path, code: int
) -> None:
    fault_server.script("moved", f"redirect:{code}")
    result = run_against(fault_server, tmp_path, ["moved", "steady"])
    assert result.exit_code == EXIT_SOME_FAILED
    assert_nothing_lost(tmp_path, ["moved", "steady"])
    _, bad = outputs(tmp_path)
    error = bad["moved"]["error"]
    assert error["code"] == "redirect"
    assert f"HTTP {code} redirect" in error["message"]
    assert "/elsewhere/chat/completions" in error["message"]
    assert "--base-url" in error["message"]
    assert fault_server.attempts["moved"] == 1  # final: not retried
    assert bad["moved"]["response"]["status_code"] == code
    # the redirect target was never requested
    assert [k for k, _ in fault_server.played].count("moved") == 1


@pytest.mark.parametrize("step", ["hang", "hang_mid_body"])
def test_server_that_never_answers_times_out_then_retries(
    fault_server: FaultServer, tmp_path: Path, step: str
) -> None:
    fault_server.script("silent", step, "ok")
    fault_server.script("mute", step, step, step)
    started = time.monotonic()
    result = run_against(fault_server, tmp_path, ["silent", "mute", "steady"], timeout=0.3)
    elapsed = time.monotonic() - started
    assert result.exit_code == EXIT_SOME_FAILED
    assert_nothing_lost(tmp_path, ["silent", "mute", "steady"])
    ok, bad = outputs(tmp_path)
    assert ok["silent"]["batchrun"]["attempts"] == 2
    assert bad["mute"]["error"]["code"] == "timeout"
    assert "Timeout" in bad["mute"]["error"]["message"]
    assert fault_server.attempts["mute"] == MAX_ATTEMPTS
    assert elapsed < 5  # 3 timeouts of 0.3 s in a row, not the 5 s default


def test_dripping_body_is_cut_by_total_timeout(fault_server: FaultServer, tmp_path: Path) -> None:
    """A byte every 50 ms never trips the between-reads timeout; the total cap must."""
    fault_server.script("drip", "drip", "ok")
    started = time.monotonic()
    result = run_against(fault_server, tmp_path, ["drip"], timeout=1.0, total_timeout=0.5)
    assert result.exit_code == EXIT_OK, result.notes
    assert time.monotonic() - started < 5
    ok, _ = outputs(tmp_path)
    assert ok["drip"]["batchrun"]["attempts"] == 2
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["retries"] == 1


@pytest.mark.parametrize("step", ["huge:100", "huge_declared:100"])
def test_100_mb_body_is_cut_off_and_memory_stays_bounded(
    fault_server: FaultServer, tmp_path: Path, step: str
) -> None:
    fault_server.script("flood", step, "ok")
    fault_server.script("deluge", step, step, step)
    # a 200 that large was paid for: its line records the prompt's tokens, counted with
    # the tokenizer (its tables, ~85 MB, load once per process); measure the body alone
    from batchrun._pacing.tokens import prompt_tokens

    prompt_tokens({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    started = time.monotonic()
    result = run_against(fault_server, tmp_path, ["flood", "deluge"], max_response_bytes=MB)
    elapsed = time.monotonic() - started
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    assert result.exit_code == EXIT_SOME_FAILED
    assert_nothing_lost(tmp_path, ["flood", "deluge"])
    ok, bad = outputs(tmp_path)
    assert ok["flood"]["batchrun"]["attempts"] == 2
    error = bad["deluge"]["error"]
    assert error["code"] == "response_too_large"
    assert "--max-response-bytes" in error["message"]
    assert f"{MB} bytes" in error["message"]
    assert elapsed < 10
    assert rss_growth_mb < 50, f"peak RSS grew by {rss_growth_mb:.0f} MB"
    # the client hung up long before 4 x 100 MB went over the wire
    total_sent = fault_server.bytes_sent["flood"] + fault_server.bytes_sent["deluge"]
    assert total_sent < 100 * MB


def test_max_response_bytes_leaves_normal_answers_alone(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    result = run_against(fault_server, tmp_path, ["a", "b"], max_response_bytes=1024)
    assert result.exit_code == EXIT_OK, result.notes


def test_connection_refused_stops_the_run_naming_the_port(tmp_path: Path) -> None:
    """Nothing listens on the port and nothing ever answered: the run stops on its
    endpoint (not `complete` with the row failed), the row stays pending, the note
    names the port, and a refusal is not called a timeout (issue 24, item 3)."""
    with FaultServer() as srv:
        port_gone = srv.port
    inp = write_rows(tmp_path / "requests.jsonl", ["lonely"])
    cfg = Settings(
        input=str(inp),
        out_dir=str(tmp_path / "run"),
        base_url=f"http://127.0.0.1:{port_gone}/v1",
        auth="none",
        max_attempts=2,
        summary_interval=60.0,
    )
    result = anyio.run(Runner(cfg, sleep=_no_wait).run)
    assert result.status == "endpoint_down" and result.exit_code == 1
    assert result.summary["requests"]["pending"] == 1
    assert outputs(tmp_path) == ({}, {})
    (note,) = [n for n in result.notes if "refused" in n]
    assert f"connection refused by 127.0.0.1:{port_gone}" in note
    assert "Timeout" not in note


def test_final_client_errors_are_not_retried(fault_server: FaultServer, tmp_path: Path) -> None:
    for key, code in (("k400", 400), ("k401", 401), ("k404", 404), ("k422", 422)):
        fault_server.script(key, f"status:{code}")
    keys = ["k400", "k401", "k404", "k422", "fine"]
    result = run_against(fault_server, tmp_path, keys)
    assert result.exit_code == EXIT_SOME_FAILED
    assert_nothing_lost(tmp_path, keys)
    _, bad = outputs(tmp_path)
    for key in keys[:-1]:
        assert fault_server.attempts[key] == 1
        assert bad[key]["response"]["status_code"] == int(key[1:])
        assert bad[key]["error"]["message"] == f"scripted {key[1:]}"


def test_a_mixed_hostile_batch_loses_nothing_and_resumes(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    """Every kind of fault at once, some healing, some not; a rerun sends nothing again."""
    steps = [*RETRIED_FAULTS, "hang", "redirect:302", "huge:20"]
    keys = []
    for i, step in enumerate(steps):
        fault_server.script(f"heals-{i}", step, "ok")
        fault_server.script(f"stays-{i}", *[step] * MAX_ATTEMPTS)
        keys += [f"heals-{i}", f"stays-{i}"]
    keys += [f"plain-{i}" for i in range(20)]
    result = run_against(
        fault_server, tmp_path, keys, timeout=0.5, max_response_bytes=MB, concurrency=16
    )
    assert result.exit_code == EXIT_SOME_FAILED
    assert_nothing_lost(tmp_path, keys)
    ok, bad = outputs(tmp_path)
    assert {k for k in keys if k.startswith(("heals-", "plain-"))} - {
        f"heals-{steps.index('redirect:302')}"
    } <= set(ok)
    assert {k for k in keys if k.startswith("stays-")} <= set(bad)
    sent = fault_server.requests
    again = run_against(fault_server, tmp_path, keys, timeout=0.5, max_response_bytes=MB)
    assert again.exit_code == EXIT_SOME_FAILED
    assert fault_server.requests == sent  # done and failed rows are not sent again
    assert_nothing_lost(tmp_path, keys)


STREAM_FAULTS: dict[str, str] = {
    "sse_flood:100": "response_too_large",
    "sse_garbage": "bad_stream_chunk",
    "sse_torn": "stream_truncated",
    "html502": "http_502",
    "nonjson200": "stream_truncated",  # text/plain is read as a stream: no events -> torn
}


@pytest.mark.parametrize("step", sorted(STREAM_FAULTS))
def test_streamed_requests_survive_hostile_streams(
    fault_server: FaultServer, tmp_path: Path, step: str
) -> None:
    """--stream: the same guarantees when the answer is (or should be) an event stream."""
    fault_server.script("heals", step, "sse_ok")
    fault_server.script("stays", *[step] * MAX_ATTEMPTS)
    fault_server.script("steady", "sse_ok")
    keys = ["heals", "stays", "steady"]
    started = time.monotonic()
    result = run_against(fault_server, tmp_path, keys, stream=True, max_response_bytes=MB)
    assert time.monotonic() - started < 10
    assert result.exit_code == EXIT_SOME_FAILED, result.notes
    assert_nothing_lost(tmp_path, keys)
    ok, bad = outputs(tmp_path)
    assert set(ok) == {"heals", "steady"}
    assert ok["heals"]["batchrun"]["attempts"] == 2
    assert ok["heals"]["response"]["body"]["choices"][0]["message"]["content"] == "echo: heals"
    error = bad["stays"]["error"]
    # a 200 stream over --max-response-bytes was generated, so paid for: retried once
    assert len(error["attempts"]) == (2 if step.startswith("sse_flood") else MAX_ATTEMPTS)
    assert error["code"] == STREAM_FAULTS[step]
    assert error["message"]


@pytest.mark.parametrize("step", ["nonjson200", "lone_surrogate", "html200"])
def test_an_unreadable_paid_answer_is_retried_once_and_kept(
    fault_server: FaultServer, tmp_path: Path, step: str
) -> None:
    """Issue 13, item 9: a 200 we cannot read was probably billed; retrying it ten times
    pays ten times. It is retried once, then fails with the raw answer kept."""
    fault_server.script("paid", *[step] * 10)
    fault_server.script("heals", step, "ok")
    result = run_against(fault_server, tmp_path, ["paid", "heals"], max_attempts=10)
    assert result.exit_code == EXIT_SOME_FAILED
    assert fault_server.attempts == {"paid": 2, "heals": 2}
    ok, bad = outputs(tmp_path)
    assert ok["heals"]["batchrun"]["attempts"] == 2
    error = bad["paid"]["error"]
    assert error["code"] == "unreadable_answer"
    assert [a["billed"] for a in error["attempts"]] == [True, True]
    raw = bad["paid"]["response"]["body"]
    expected = {
        "nonjson200": "internal hiccup, try later",
        "html200": "<!DOCTYPE html><html><body><h1>Please log in to the Wi-Fi</h1></body></html>",
    }
    if step in expected:
        assert raw == expected[step]  # the whole answer, not a snippet
    else:
        assert raw.startswith('{"id":"chatcmpl-fault"') and "\\ud800 echo: paid" in raw


def test_an_event_stream_labelled_json_is_read_as_a_stream(
    fault_server: FaultServer, tmp_path: Path
) -> None:
    fault_server.script("sse", "json_labelled_sse")
    result = run_against(fault_server, tmp_path, ["sse"])
    assert result.exit_code == EXIT_OK
    ok, _ = outputs(tmp_path)
    assert ok["sse"]["response"]["body"]["choices"][0]["message"]["content"] == "streamed"
    assert fault_server.attempts["sse"] == 1


@pytest.mark.parametrize("choices", [[], [{}], [None]])
def test_a_200_without_a_usable_choice_is_retried_not_stored(tmp_path: Path, choices: Any) -> None:
    import httpx

    from tests.conftest import completion

    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(200, json={**completion("x"), "choices": choices})
        return httpx.Response(200, json=completion("fine"))

    inp = write_rows(tmp_path / "requests.jsonl", ["a"])
    cfg = Settings(input=str(inp), out_dir=str(tmp_path / "run"), base_url="http://t/v1")
    result = anyio.run(Runner(cfg, transport=httpx.MockTransport(handler), sleep=_no_wait).run)
    assert result.exit_code == EXIT_OK and len(calls) == 2
    ok, _ = outputs(tmp_path)
    assert ok["a"]["batchrun"]["statuses"] == [200, 200]
    assert ok["a"]["response"]["body"]["choices"][0]["message"]["content"] == "fine"
