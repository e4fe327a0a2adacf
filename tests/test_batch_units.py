"""The Batch API's pure parts, as functions: the planner, the wire format, the step
journal's replay, the reconcile decisions, and the client's retry rules over
``httpx.MockTransport`` (sleeps injected: nothing waits)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from batchrun._batch.client import BatchClient, CreateUnknown
from batchrun._batch.outcomes import missing_reason, success
from batchrun._batch.protocol import (
    BatchView,
    input_line,
    is_shard_of,
    metadata_for,
    parse_batch,
    parse_result_line,
    refused_for_token_limit,
)
from batchrun._batch.reconcile import creating_decision, find_batches, match_shards
from batchrun._batch.shards import RowTooLarge, ShardPlanner, shrink
from batchrun._batch.steps import StepJournal, replay_lines
from batchrun._checks import Invalid, Where, duration, run_mode
from batchrun._cost.bill import CostTotals
from batchrun._cost.price import ModelPrice
from batchrun._cost.prices import PriceBook
from batchrun._output.lines import decode, encode
from batchrun._output.tally import Tally
from batchrun._output.usage import Usage
from batchrun._settings import Settings
from batchrun.errors import BatchApiError

# -- settings -----------------------------------------------------------------------------


def test_durations_and_modes() -> None:
    where = Where("--deadline")
    assert [duration(v, where) for v in ("6h", "90m", "3600s", "1h30m", "45", 2.5)] == [
        21600.0,
        5400.0,
        3600.0,
        5400.0,
        45.0,
        2.5,
    ]
    for bad in ("soon", "6x", "-1h", 0, "h"):
        with pytest.raises(Invalid, match="duration like 6h"):
            duration(bad, where)
    assert run_mode(True, where) == "batch" and run_mode("online", where) == "online"
    with pytest.raises(Invalid):
        run_mode("fast", where)


def test_mode_is_not_part_of_the_fingerprint() -> None:
    online = Settings.build(input="x.jsonl", model="m")
    batch = Settings.build(input="x.jsonl", model="m", mode="batch", deadline="6h")
    assert online.fingerprint() == batch.fingerprint()
    assert batch.deadline == 21600.0 and batch.public_dict()["mode"] == "batch"


# -- the planner --------------------------------------------------------------------------


def test_planner_keeps_models_apart_and_every_shard_within_limits() -> None:
    planner = ShardPlanner(max_requests=3, max_bytes=250, first=10)
    placed = [(model, planner.place(model, size)) for model, size in [
        ("a", 100), ("b", 10), ("a", 100), ("a", 100), ("a", 10), ("b", 10), ("a", 10),
    ]]  # fmt: skip
    shards = [(model, p.shard) for model, p in placed]
    assert shards == [("a", 10), ("b", 11), ("a", 10), ("a", 12), ("a", 12), ("b", 11), ("a", 12)]
    closed = [p.closed.shard for _, p in placed if p.closed is not None]
    assert closed == [10]  # 100 + 100 + 100 > 250 bytes
    rest = planner.close_all()
    assert [(s.shard, s.requests, s.bytes) for s in rest] == [(11, 2, 20), (12, 3, 120)]
    assert planner.next_shard == 13
    with pytest.raises(RowTooLarge, match="--batch-max-bytes"):
        planner.place("a", 251)
    assert shrink(3) == 1 and shrink(1) == 1


# -- the wire format ----------------------------------------------------------------------


def test_input_lines_and_metadata_never_hold_a_secret() -> None:
    line = json.loads(input_line("r-1", {"model": "m", "messages": []}))
    assert line == {
        "custom_id": "r-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": []},
    }
    meta = metadata_for("abc123", 7, 2)
    assert meta == {"batchrun_run": "abc123", "batchrun_shard": "s000007", "batchrun_attempt": "2"}
    assert is_shard_of(meta, "abc123", 7) and not is_shard_of(meta, "abc123", 8)
    assert not is_shard_of(meta, "other", 7) and not is_shard_of(None, "abc123", 7)


def test_batch_objects_are_read_field_by_field() -> None:
    failed = parse_batch(
        {
            "id": "batch_1",
            "status": "failed",
            "created_at": 100,
            "failed_at": 130,
            "errors": {
                "object": "list",
                "data": [
                    {"code": "token_limit_exceeded", "message": "Enqueued token limit reached"},
                    {"code": "invalid_json_line", "message": "bad", "line": 3},
                ],
            },
        }
    )
    assert failed.final and not failed.live and failed.token_limited
    assert failed.ended_at == 130 and failed.created_at == 100
    assert failed.reasons().endswith("invalid_json_line: bad (line 3)")
    running = parse_batch(
        {"id": "b", "status": "in_progress", "request_counts": {"total": 9, "completed": 4}}
    )
    assert running.live and (running.total, running.completed, running.failed) == (9, 4, 0)
    assert parse_batch({}).status == "unknown"
    assert refused_for_token_limit(400, {"error": {"code": "token_limit_exceeded"}})
    assert refused_for_token_limit(429, {"error": {"message": "Enqueued token limit reached"}})
    assert not refused_for_token_limit(400, {"error": {"code": "invalid_value"}})


def test_output_and_error_lines() -> None:
    ok = parse_result_line(
        b'{"id":"x","custom_id":"a","response":{"status_code":200,"request_id":"r",'
        b'"body":{"choices":[]}},"error":null}'
    )
    assert ok is not None and ok.ok and ok.request_id == "r"
    server = parse_result_line(
        b'{"custom_id":"b","response":{"status_code":503,"body":{"error":'
        b'{"message":"busy","type":"server_error","code":null}}},"error":null}'
    )
    assert server is not None and not server.ok and server.code == "server_error"
    assert server.retryable
    bad = parse_result_line(
        b'{"custom_id":"c","response":{"status_code":400,"body":{"error":'
        b'{"message":"no","code":"invalid_value"}}},"error":null}'
    )
    assert bad is not None and bad.code == "invalid_value" and not bad.retryable
    expired = parse_result_line(
        b'{"custom_id":"d","response":null,"error":{"code":"batch_expired","message":"late"}}'
    )
    assert expired is not None and expired.retryable and expired.status is None
    quota = parse_result_line(
        b'{"custom_id":"e","response":{"status_code":429,"body":{"error":'
        b'{"code":"insufficient_quota","message":"pay"}}},"error":null}'
    )
    assert quota is not None and not quota.retryable
    assert parse_result_line(b"not json") is None and parse_result_line(b"{}") is None


def test_a_batch_row_becomes_a_line_like_an_online_one() -> None:
    row = parse_result_line(
        b'{"custom_id":"a","response":{"status_code":200,"request_id":"r","body":'
        b'{"model":"m","choices":[{"message":{"content":"x"}}],"usage":{"prompt_tokens":3,'
        b'"completion_tokens":1}}},"error":null}'
    )
    assert row is not None
    out = success(
        row, row=4, body_hash="00000000000000ab", batch_id="batch_9", attempts_before=2, at=1.0
    )
    line = encode(out)
    assert line.endswith(b'"body_hash":"00000000000000ab"}}\n')  # the journal reads it there
    record = json.loads(line)
    meta = record["batchrun"]
    assert meta["via"] == "batch" and meta["batch_id"] == "batch_9" and meta["attempts"] == 3
    assert meta["latency_ms"] is None and meta["statuses"] == [None, None, 200]
    tally = Tally()
    tally.count_outcome(decode(line))
    assert tally.by_mode == {"batch": 1} and tally.batch_usage.total.prompt_tokens == 3
    assert tally.retries == 2
    code, message = missing_reason(BatchView("b", "expired"))
    assert code == "batch_expired" and "expired" in message


def test_batch_rows_are_priced_at_batch_prices() -> None:
    price = ModelPrice(input=2.0, output=8.0, batch=ModelPrice(input=1.0, output=4.0))
    totals = CostTotals(PriceBook({"m": price}, use_genai_prices=False))
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=0, total_tokens=1_000_000)
    assert totals.add("m", usage).total == 2.0  # type: ignore[union-attr]
    assert totals.add("m", usage, via_batch=True).total == 1.0  # type: ignore[union-attr]
    report = totals.report()
    assert report["cost_usd"]["total"] == 3.0
    assert report["cost_usd"]["by_mode"] == {"online": 2.0, "batch": 1.0}
    assert report["batch_api_cost_usd"]["total"] == 2.0


# -- the step journal -----------------------------------------------------------------------


def test_replay_follows_each_shard_through_its_steps() -> None:
    steps = [
        {"step": "run", "run_id": "r1", "at": 10.0},
        {"step": "planned", "shard": 1, "model": "m", "rows": 5, "attempt": 1},
        {"step": "planned", "shard": 2, "model": "m", "rows": 5, "attempt": 1},
        {"step": "planned", "shard": 3, "model": "m", "rows": 2, "attempt": 2},
        {"step": "upload", "shard": 1},
        {"step": "uploaded", "shard": 1, "file_id": "file-1"},
        {"step": "create", "shard": 1, "file_id": "file-1", "at": 11.0},
        {"step": "created", "shard": 1, "batch_id": "batch_1", "at": 11.5},
        {"step": "upload", "shard": 2},
        {"step": "uploaded", "shard": 2, "file_id": "file-2"},
        {"step": "create", "shard": 2, "file_id": "file-2", "at": 12.0},
        {"step": "downloaded", "shard": 1, "file_id": "file-out"},
        {"step": "done", "shard": 1, "status": "expired", "retry": ["a", "b"]},
        {"step": "abandoned", "shard": 3},
        {"step": "run", "run_id": "ignored"},
    ]
    raw = [json.dumps(s).encode() for s in steps] + [b'{"step": "cre']  # a torn last line
    ledger = replay_lines(raw)
    assert ledger.run_id == "r1" and ledger.started_at == 10.0
    assert [ledger.shards[n].phase for n in (1, 2, 3)] == ["done", "creating", "abandoned"]
    assert ledger.shards[1].downloaded == {"file-out"} and ledger.shards[1].status == "expired"
    assert ledger.shards[2].create_started_at == 12.0
    assert dict(ledger.attempts) == {"a": 1, "b": 1}
    assert [r.shard for r in ledger.open_shards()] == [2] and ledger.next_shard == 4
    uploaded = replay_lines(
        [b'{"step":"planned","shard":4}', b'{"step":"uploaded","shard":4,"file_id":"f"}']
    )
    assert uploaded.shards[4].phase == "uploaded"
    refused = replay_lines(
        [b'{"step":"create","shard":5,"file_id":"f","at":1}', b'{"step":"not_created","shard":5}']
    )
    assert refused.shards[5].phase == "uploaded"


def test_journal_survives_a_torn_line_and_holds_no_key(tmp_path: Path) -> None:
    from batchrun._redact import register_secret

    key = "sk-journal-canary-0123456789abcdef"
    register_secret(key)
    path = tmp_path / "batch" / "steps.jsonl"
    journal = StepJournal(str(path))
    ledger = journal.open(wall_time=1.0)
    run_id = ledger.run_id
    journal.write({"step": "planned", "shard": 1, "model": "m", "rows": 1})
    journal.write({"step": "uploaded", "shard": 1, "file_id": f"file-{key}"})
    journal.close()
    with open(path, "ab") as f:
        f.write(b'{"step":"created","shard":1,"batch')  # killed mid-write
    again = StepJournal(str(path))
    ledger = again.open(wall_time=2.0)
    assert ledger.run_id == run_id and ledger.shards[1].phase == "uploaded"
    again.write({"step": "create", "shard": 1, "file_id": "f", "at": 3.0})
    again.close()
    text = path.read_text()
    assert key not in text and all(json.loads(line) for line in text.splitlines())


# -- reconcile ------------------------------------------------------------------------------


def test_a_lost_create_is_adopted_waited_for_or_created_again() -> None:
    assert creating_decision(found=True, lost_at=None, listed_at=100.5) == "adopt"
    assert creating_decision(found=False, lost_at=None, listed_at=1e9) == "wait"
    assert creating_decision(found=False, lost_at=100, listed_at=109.9) == "wait"
    assert creating_decision(found=False, lost_at=100, listed_at=110.0) == "create_again"
    listed = [
        {"id": "b3", "metadata": metadata_for("run-b", 2, 1)},
        {"id": "b2", "metadata": metadata_for("run-a", 2, 1)},
        {"id": "b1", "metadata": None},
    ]
    assert {s: b["id"] for s, b in match_shards(listed, "run-a", [1, 2]).items()} == {2: "b2"}


class Api:
    """A scripted Files/Batches endpoint: each path gets the next scripted answer."""

    def __init__(self, script: dict[str, list[Any]]) -> None:
        self.script = script
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        key = f"{request.method} {request.url.path}"
        self.calls.append(key)
        step = self.script[key].pop(0)
        if isinstance(step, Exception):
            raise step
        status, body = step
        return httpx.Response(status, json=body, headers={"retry-after-ms": "5"})


def client_for(api: Api, slept: list[float]) -> BatchClient:
    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    return BatchClient(
        base_url="http://api.test/v1",
        api_key="sk-client-canary-0123456789abcdef",
        transport=httpx.MockTransport(api),
        sleep=sleep,
        max_attempts=4,
    )


def test_reads_are_retried_but_a_create_never_is() -> None:
    api = Api(
        {
            "GET /v1/batches/b1": [
                (503, {"error": {"message": "busy"}}),
                httpx.ConnectError("refused"),
                (200, {"id": "b1", "status": "completed"}),
            ],
            "POST /v1/batches": [(500, {"error": {"message": "oops"}}), httpx.ReadTimeout("slow")],
        }
    )
    slept: list[float] = []

    async def main() -> None:
        client = client_for(api, slept)
        assert (await client.retrieve("b1"))["status"] == "completed"
        for _ in range(2):
            with pytest.raises(CreateUnknown):
                await client.create("file-1", metadata_for("r", 1, 1))
        await client.aclose()

    anyio.run(main)
    assert api.calls.count("POST /v1/batches") == 2  # each create sent once
    # Retry-After obeyed (plus the shared policy's jitter, which only adds), then a backoff
    assert 0.005 <= slept[0] <= 0.005 * 1.1 and len(slept) == 2


def test_a_refusal_is_final_and_its_message_is_scrubbed() -> None:
    key = "sk-client-canary-0123456789abcdef"
    api = Api({"GET /v1/batches/b2": [(401, {"error": {"message": f"bad key {key}"}})]})
    slept: list[float] = []

    async def main() -> BatchApiError:
        client = client_for(api, slept)
        try:
            await client.retrieve("b2")
        except BatchApiError as exc:
            return exc
        finally:
            await client.aclose()
        raise AssertionError("no error")

    exc = anyio.run(main)
    assert exc.status == 401 and not exc.retryable and key not in str(exc) and not slept


def test_find_batches_pages_through_the_list() -> None:
    page1 = {
        "data": [{"id": "b9", "metadata": {}, "created_at": 1000}],
        "has_more": True,
        "last_id": "b9",
    }
    page2 = {"data": [{"id": "b8", "metadata": metadata_for("r", 4, 1), "created_at": 999}]}
    api = Api({"GET /v1/batches": [(200, page1), (200, {**page2, "has_more": False})]})

    async def main() -> dict[int, Any]:
        client = client_for(api, [])
        try:
            return dict(await find_batches(client, "r", {4: 999.5}))
        finally:
            await client.aclose()

    assert anyio.run(main)[4]["id"] == "b8"


def test_the_estimate_shows_both_modes(tmp_path: Path) -> None:
    from batchrun._cost.estimate import estimate_settings, format_estimate

    inp = tmp_path / "req.jsonl"
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 10,
    }
    inp.write_text(json.dumps(body) + "\n")
    report = estimate_settings(Settings(input=str(inp)))
    data = report.to_dict()
    online, batch = data["cost_usd"], data["batch_api_cost_usd"]
    assert batch["low"] == pytest.approx(online["low"] / 2) and batch["complete"]
    assert batch["high"] == pytest.approx(online["high"] / 2)
    assert "through the Batch API (--batch-api)" in format_estimate(report)
