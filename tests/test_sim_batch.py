"""The simulator's Files and Batches API: the state machine, its faults, and the SDK.

Three layers. The batch store and input validation are driven with explicit times
(no server, no sleeping). The HTTP edge runs on loopback with an injected clock
(faults, request checks, auth). The official ``openai`` SDK drives a real server
end to end: the proof that the simulator speaks OpenAI's protocol.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest

from batchrun._pacing import tokens
from batchrun.sim import BatchConfig, SimConfig, SimServer, SimStats, SimThread, running_sim
from batchrun.sim.batch_input import read_batch_input
from batchrun.sim.batches import Batch, BatchStore
from batchrun.sim.cli import batch_config
from batchrun.sim.content import make_reply
from batchrun.sim.faults import ApiFaults, FaultPlan
from batchrun.sim.files import FileStore

KEY = "sk-sim-batch-test"
T0 = 1_800_000_000.0


def ask(text: str, model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def request_line(custom_id: str, body: dict[str, Any] | None = None, **override: Any) -> bytes:
    line = {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": body if body is not None else ask(f"Tell me about {custom_id}."),
        **override,
    }
    return orjson.dumps(line) + b"\n"


def jsonl(count: int, prefix: str = "row", model: str = "gpt-4o-mini") -> bytes:
    return b"".join(
        request_line(f"{prefix}-{i}", ask(f"Tell me about {prefix} {i}.", model))
        for i in range(count)
    )


def lines_of(content: bytes) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in content.splitlines()]


class Store:
    """A batch store with its own files and stats; times are passed explicitly."""

    def __init__(self, config: SimConfig | None = None, **batch: Any) -> None:
        self.config = config or SimConfig(batch=BatchConfig(**batch))
        self.stats = SimStats()
        self.files = FileStore()
        self.store = BatchStore(self.config, self.files, self.stats, faults=FaultPlan(self.config))

    def submit(self, content: bytes, at: float = T0, **kw: Any) -> Batch:
        upload = self.files.add(content, "in.jsonl", "batch", now=at)
        return self.store.create(input_file_id=upload.id, now=at, **kw)

    def at(self, when: float) -> None:
        assert self.store.advance(when)

    def output(self, batch: Batch) -> list[dict[str, Any]]:
        return [] if batch.output_file_id is None else self._lines(batch.output_file_id)

    def errors(self, batch: Batch) -> list[dict[str, Any]]:
        return [] if batch.error_file_id is None else self._lines(batch.error_file_id)

    def _lines(self, file_id: str) -> list[dict[str, Any]]:
        stored = self.files.get(file_id)
        assert stored is not None
        return lines_of(stored.content)


# -- the state machine, with explicit times ------------------------------------------------


def test_lifecycle_follows_the_clock_and_answers_like_the_online_endpoint() -> None:
    sim = Store(rows_per_second=2, validation_delay=5, finalizing_delay=3)
    batch = sim.submit(jsonl(4), metadata={"shard": "0"})
    assert batch.to_dict()["status"] == "validating"
    sim.at(T0 + 4.9)
    assert batch.status == "validating" and batch.model is None
    sim.at(T0 + 5)
    assert batch.status == "in_progress" and batch.model == "gpt-4o-mini"
    sim.at(T0 + 6)
    assert (batch.completed, batch.total) == (2, 4)
    sim.at(T0 + 7)
    assert batch.status == "finalizing" and batch.output_file_id is None
    sim.at(T0 + 9.99)
    assert batch.status == "finalizing"
    sim.at(T0 + 10)
    shown = batch.to_dict()
    assert shown["status"] == "completed"
    assert [
        shown[k] for k in ("created_at", "in_progress_at", "finalizing_at", "completed_at")
    ] == [
        int(T0),
        int(T0) + 5,
        int(T0) + 7,
        int(T0) + 10,
    ]
    assert shown["expires_at"] == int(T0) + 86_400
    assert shown["failed_at"] is None and shown["errors"] is None
    assert shown["error_file_id"] is None
    assert shown["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
    assert shown["metadata"] == {"shard": "0"}
    output = sim.output(batch)
    assert [line["custom_id"] for line in output] == [f"row-{i}" for i in range(4)]
    bodies = [ask(f"Tell me about row {i}.") for i in range(4)]
    replies = [make_reply(body) for body in bodies]
    for line, reply in zip(output, replies, strict=True):
        assert line["id"].startswith("batch_req_") and line["error"] is None
        response = line["response"]
        assert response["status_code"] == 200 and response["request_id"].startswith("req_")
        completion = response["body"]
        assert completion["object"] == "chat.completion"
        assert completion["choices"][0]["message"]["content"] == reply.choices[0].content
        assert completion["usage"] == reply.usage
    # row i is answered at in_progress + (i + 1) / rate
    assert [line["response"]["body"]["created"] for line in output] == [
        int(T0 + 5.5),
        int(T0 + 6),
        int(T0 + 6.5),
        int(T0 + 7),
    ]
    usage = shown["usage"]
    assert usage["input_tokens"] == sum(r.usage["prompt_tokens"] for r in replies)
    assert usage["output_tokens"] == sum(r.usage["completion_tokens"] for r in replies)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert sim.stats.rows_processed == 4 and sim.stats.batches_created == 1
    stored = sim.files.get(shown["output_file_id"])
    assert stored is not None and stored.purpose == "batch_output"
    assert stored.filename == f"{batch.id}_output.jsonl"


@pytest.mark.parametrize("rate", [3_000, 30_000, 7.0, 0.3])
def test_fast_rows_at_unix_times_all_finish(rate: float) -> None:
    # at ~1.8e9 s a float is only good to ~2.4e-7 s: "all rows due" must not depend
    # on dividing elapsed time back into rows (it once lost the last row and expired)
    sim = Store(rows_per_second=rate)
    batch = sim.submit(jsonl(30), at=T0 + 0.123456)
    sim.at(T0 + 1000)
    assert batch.status == "completed" and batch.completed == 30


def test_default_speed_finishes_at_once() -> None:
    sim = Store()
    batch = sim.submit(jsonl(3))
    sim.at(T0)
    assert batch.status == "completed" and batch.completed == 3


def test_bad_bodies_are_answered_400_row_by_row() -> None:
    sim = Store()
    content = request_line("good") + request_line("no-messages", {"model": "gpt-4o-mini"})
    batch = sim.submit(content)
    sim.at(T0)
    assert batch.status == "completed"
    assert batch.to_dict()["request_counts"] == {"total": 2, "completed": 1, "failed": 1}
    (error,) = sim.errors(batch)
    assert error["custom_id"] == "no-messages" and error["error"] is None
    assert error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["code"] == "missing_required_parameter"


def test_a_row_that_breaks_the_generator_is_a_500_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import batchrun.sim.batch_rows as rows_module

    def fragile(body: dict[str, Any], *args: Any) -> Any:
        if "row 1." in body["messages"][0]["content"]:
            raise RuntimeError("boom")
        return make_reply(body, *args)

    monkeypatch.setattr(rows_module, "make_reply", fragile)
    sim = Store()
    batch = sim.submit(jsonl(3))
    sim.at(T0)
    assert batch.status == "completed" and (batch.completed, batch.failed) == (2, 1)
    (error,) = sim.errors(batch)
    assert error["custom_id"] == "row-1" and error["response"]["status_code"] == 500


# -- validation ------------------------------------------------------------------------------


def two(first: bytes, second: bytes) -> bytes:
    return first + second


@pytest.mark.parametrize(
    ("content", "code", "line", "param"),
    [
        (b"", "empty_file", None, None),
        (b"\n\n", "empty_file", None, None),
        (b"not json\n", "invalid_json_line", 1, None),
        (b"[1, 2]\n", "invalid_json_line", 1, None),
        (request_line("a") + b'{"method": "POST"}\n', "missing_required_parameter", 2, "custom_id"),
        (request_line("a", method="GET"), "invalid_value", 1, "method"),
        (request_line("a", url="/v1/embeddings"), "url_mismatch", 1, "url"),
        (request_line("a", body=["x"]), "invalid_type", 1, "body"),
        (two(request_line("a"), request_line("a")), "duplicate_custom_id", 2, "custom_id"),
        (
            two(request_line("a", ask("x", "gpt-4o")), request_line("b", ask("y", "gpt-4.1"))),
            "model_mismatch",
            2,
            "body.model",
        ),
    ],
)
def test_input_files_are_checked_like_openai(
    content: bytes, code: str, line: int | None, param: str | None
) -> None:
    (error,) = read_batch_input(content).errors
    assert (error["code"], error["line"], error["param"]) == (code, line, param)
    assert error["message"]


def test_limits_on_requests_and_size_are_configurable() -> None:
    assert read_batch_input(jsonl(3), max_requests=2).errors[0]["code"] == "too_many_tasks"
    assert read_batch_input(jsonl(2), max_requests=2).errors == []
    content = jsonl(3)
    too_big = read_batch_input(content, max_bytes=len(content) - 1).errors
    assert too_big[0]["code"] == "file_too_large"


def test_a_bad_file_fails_the_batch_with_every_reason() -> None:
    sim = Store(validation_delay=2)
    content = request_line("a") + b"oops\n" + request_line("a") + request_line("b", method="PUT")
    batch = sim.submit(content)
    sim.at(T0 + 2)
    shown = batch.to_dict()
    assert shown["status"] == "failed" and shown["failed_at"] == int(T0) + 2
    assert shown["in_progress_at"] is None
    assert shown["errors"]["object"] == "list"
    assert [(e["code"], e["line"]) for e in shown["errors"]["data"]] == [
        ("invalid_json_line", 2),
        ("duplicate_custom_id", 3),
        ("invalid_value", 4),
    ]
    assert shown["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert shown["output_file_id"] is None and shown["error_file_id"] is None
    assert sim.stats.rows_processed == 0


def test_missing_or_wrong_purpose_input_fails_validation() -> None:
    sim = Store()
    missing = sim.store.create(input_file_id="file-nope", now=T0)
    other = sim.files.add(jsonl(1), "in.jsonl", "user_data", now=T0)
    wrong = sim.store.create(input_file_id=other.id, now=T0)
    sim.at(T0)
    assert missing.status == "failed" and missing.errors is not None
    assert "file-nope" in missing.errors[0]["message"]
    assert wrong.status == "failed" and wrong.errors is not None
    assert "purpose" in wrong.errors[0]["message"]


# -- faults ----------------------------------------------------------------------------------


def test_row_errors_at_a_rate_land_in_the_error_file() -> None:
    sim = Store(row_error_rate=0.3, row_error_status=503)
    batch = sim.submit(jsonl(200))
    sim.at(T0)
    errors = sim.errors(batch)
    assert 30 <= len(errors) <= 90
    assert batch.completed + batch.failed == 200 and batch.failed == len(errors)
    assert {line["response"]["status_code"] for line in errors} == {503}
    assert errors[0]["response"]["body"]["error"]["type"] == "server_error"
    ok_ids = {line["custom_id"] for line in sim.output(batch)}
    assert ok_ids.isdisjoint(line["custom_id"] for line in errors)
    # the same seed fails the same rows; a resubmitted batch draws afresh
    again = Store(row_error_rate=0.3, row_error_status=503)
    replay = again.submit(jsonl(200))
    again.at(T0)
    assert [e["custom_id"] for e in again.errors(replay)] == [e["custom_id"] for e in errors]
    second = sim.submit(jsonl(200))
    sim.at(T0)
    assert [e["custom_id"] for e in sim.errors(second)] != [e["custom_id"] for e in errors]


def test_scripted_markers_fail_a_row_once_like_an_online_attempt() -> None:
    sim = Store(SimConfig(fail_first={"row-7": [429, 503]}))
    first = sim.submit(jsonl(10))
    sim.at(T0)
    (error,) = sim.errors(first)
    assert error["custom_id"] == "row-7" and error["response"]["status_code"] == 429
    second = sim.submit(request_line("row-7", ask("Tell me about row 7.")))
    third = sim.submit(request_line("row-7", ask("Tell me about row 7.")))
    sim.at(T0)
    assert sim.errors(second)[0]["response"]["status_code"] == 503
    assert third.completed == 1 and third.error_file_id is None


def test_expiry_keeps_the_rows_done_and_drops_the_rest() -> None:
    sim = Store(rows_per_second=1, window_seconds=10)
    batch = sim.submit(jsonl(20))
    sim.at(T0 + 9.5)
    assert batch.status == "in_progress" and batch.completed == 9
    sim.at(T0 + 10)
    shown = batch.to_dict()
    assert shown["status"] == "expired" and shown["expired_at"] == int(T0) + 10
    assert shown["request_counts"] == {"total": 20, "completed": 10, "failed": 0}
    assert [line["custom_id"] for line in sim.output(batch)] == [f"row-{i}" for i in range(10)]
    assert shown["error_file_id"] is None  # rows 10..19 are in neither file
    assert shown["completed_at"] is None and shown["finalizing_at"] is None


def test_expired_rows_can_go_to_the_error_file_as_batch_expired() -> None:
    sim = Store(rows_per_second=1, window_seconds=4, expired_rows_to_error_file=True)
    batch = sim.submit(jsonl(6))
    sim.at(T0 + 100)
    assert batch.status == "expired"
    expired = sim.errors(batch)
    assert [line["custom_id"] for line in expired] == ["row-4", "row-5"]
    assert expired[0]["response"] is None
    assert expired[0]["error"]["code"] == "batch_expired"
    assert batch.to_dict()["request_counts"] == {"total": 6, "completed": 4, "failed": 2}


def test_forced_fates_play_in_order_then_batches_are_fine() -> None:
    sim = Store(fates=("expire", "fail", "token_limit"), expire_fraction=0.25)
    expiring, failing, limited, fine = (sim.submit(jsonl(8)) for _ in range(4))
    sim.at(T0)
    assert expiring.status == "expired" and expiring.completed == 2
    assert len(sim.output(expiring)) == 2
    assert failing.status == "failed" and failing.errors is not None
    assert limited.status == "failed" and limited.errors is not None
    assert limited.errors[0]["code"] == "token_limit_exceeded"
    assert fine.status == "completed"
    sim.store.script_fates("fail")
    late = sim.submit(jsonl(1))
    sim.at(T0)
    assert late.status == "failed"
    with pytest.raises(ValueError):
        sim.store.script_fates("explode")


def test_enqueued_token_limit_fails_a_batch_until_room_is_freed() -> None:
    content = jsonl(5)
    need = sum(tokens.prompt_tokens(body) for _, body in read_batch_input(content).rows)
    sim = Store(rows_per_second=1, validation_delay=1, enqueued_token_limit=need + need // 2)
    first = sim.submit(content)  # in progress from T0+1 to T0+6
    sim.at(T0 + 2)
    assert sim.store.enqueued_tokens("gpt-4o-mini") == need
    refused = sim.submit(jsonl(5, "second"), at=T0 + 2)
    other_model = sim.submit(jsonl(5, "mini", model="gpt-4.1-mini"), at=T0 + 2)
    later = sim.submit(jsonl(5, "third"), at=T0 + 5.5)  # validates at T0+6.5
    sim.at(T0 + 100)  # one call: the first batch finishing frees room before `later` checks
    assert refused.status == "failed" and refused.to_dict()["created_at"] == int(T0) + 2
    assert refused.errors is not None
    (error,) = refused.errors
    assert error["code"] == "token_limit_exceeded"
    assert error["line"] is None and error["param"] is None
    assert error["message"].startswith("Enqueued token limit reached for gpt-4o-mini")
    assert f"Limit: {need + need // 2:,} enqueued tokens" in error["message"]
    assert other_model.status == "completed"
    assert first.status == "completed" and later.status == "completed"
    assert sim.store.enqueued_tokens("gpt-4o-mini") == 0


def test_cancel_keeps_the_rows_finished() -> None:
    sim = Store(rows_per_second=1, cancel_delay=2)
    batch = sim.submit(jsonl(10))
    sim.at(T0 + 3.5)
    assert sim.store.cancel(batch, T0 + 3.5)
    assert batch.to_dict()["status"] == "cancelling"
    assert batch.to_dict()["cancelling_at"] == int(T0 + 3.5)
    sim.at(T0 + 5)
    assert batch.status == "cancelling" and batch.completed == 3  # no more rows run
    sim.at(T0 + 5.5)
    shown = batch.to_dict()
    assert shown["status"] == "cancelled" and shown["cancelled_at"] == int(T0 + 5.5)
    assert [line["custom_id"] for line in sim.output(batch)] == ["row-0", "row-1", "row-2"]
    assert shown["request_counts"] == {"total": 10, "completed": 3, "failed": 0}
    assert sim.store.cancel(batch, T0 + 6)  # cancelling again is harmless
    validating = Store(validation_delay=5)
    early = validating.submit(jsonl(3))
    assert validating.store.cancel(early, T0 + 1)
    validating.at(T0 + 10)
    assert early.status == "cancelled" and early.output_file_id is None
    done = Store()
    finished = done.submit(jsonl(1))
    done.at(T0)
    assert not done.store.cancel(finished, T0)


def test_slicing_the_work_does_not_change_the_result() -> None:
    whole = Store(rows_per_second=10, row_error_rate=0.2)
    sliced = Store(rows_per_second=10, row_error_rate=0.2)
    batches = [whole.submit(jsonl(30)), sliced.submit(jsonl(30))]
    assert whole.store.advance(T0 + 100)
    calls = 0
    while not sliced.store.advance(T0 + 100, budget=4):
        calls += 1
    assert calls >= 7

    def strip(lines: list[dict[str, Any]]) -> list[Any]:
        return [(line["custom_id"], line["response"]["status_code"]) for line in lines]

    pairs = zip((whole, sliced), batches, strict=True)
    outputs = [(strip(s.output(b)), strip(s.errors(b))) for s, b in pairs]
    assert outputs[0] == outputs[1]
    assert batches[1].to_dict()["completed_at"] == int(T0) + 3


def test_api_faults_play_scripts_then_rates() -> None:
    faults = ApiFaults(BatchConfig(scripts={"upload": [503, "ok", "hang"]}))
    assert [faults.next_step("upload") for _ in range(4)] == [503, None, "hang", None]
    faults.reset()
    assert faults.next_step("upload") == 503
    rated = ApiFaults(BatchConfig(faults={"retrieve": {500: 0.5, "reset": 0.25}}), seed=4)
    draws = [rated.next_step("retrieve") for _ in range(400)]
    assert 150 <= draws.count(500) <= 250 and 60 <= draws.count("reset") <= 140
    with pytest.raises(ValueError):
        BatchConfig(faults={"retrieve": {"explode": 0.1}})
    with pytest.raises(ValueError):
        BatchConfig(scripts={"nowhere": [503]})
    with pytest.raises(ValueError):
        BatchConfig(faults={"upload": {503: 0.7, 500: 0.5}})
    with pytest.raises(ValueError):
        BatchConfig(rows_per_second=0)


def test_cli_builds_the_batch_config() -> None:
    options = {
        "batch_rows_per_second": 50.0,
        "batch_fates": ("ok", "expire"),
        "batch_faults": ("upload:503=0.1", "retrieve:hang=0.05"),
        "batch_scripts": ("create:lost,ok",),
    }
    config = batch_config(options)
    assert config.rows_per_second == 50 and config.fates == ("ok", "expire")
    assert dict(config.faults["upload"]) == {503: 0.1}
    assert dict(config.faults["retrieve"]) == {"hang": 0.05}
    assert config.scripts["create"] == ("lost", "ok")


# -- the HTTP edge, with an injected clock --------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.t = 5000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp runs on asyncio only


async def upload(
    client: httpx.AsyncClient, content: bytes, name: str = "in.jsonl", purpose: str = "batch"
) -> httpx.Response:
    return await client.post("/files", files={"file": (name, content)}, data={"purpose": purpose})


async def create(client: httpx.AsyncClient, file_id: str, **extra: Any) -> httpx.Response:
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        **extra,
    }
    return await client.post("/batches", json=body)


@pytest.mark.anyio
async def test_http_lifecycle_moves_with_the_injected_clock() -> None:
    clock = FakeClock()
    config = SimConfig(batch=BatchConfig(rows_per_second=2, validation_delay=1))
    async with running_sim(config, now=clock) as sim:
        async with httpx.AsyncClient(base_url=sim.base_url) as client:
            uploaded = (await upload(client, jsonl(4))).json()
            batch = (await create(client, uploaded["id"])).json()
            assert batch["status"] == "validating"
            assert batch["created_at"] == int(sim.unix_now())
            await asyncio.sleep(0.03)  # the background task finds nothing due
            r = await client.get(f"/batches/{batch['id']}")
            assert r.json()["status"] == "validating"
            clock.t += 2
            shown = (await client.get(f"/batches/{batch['id']}")).json()
            assert shown["status"] == "in_progress"
            assert shown["request_counts"] == {"total": 4, "completed": 2, "failed": 0}
            clock.t += 5
            shown = (await client.get(f"/batches/{batch['id']}")).json()
            assert shown["status"] == "completed"
            assert shown["completed_at"] - shown["created_at"] == 3
            content = await client.get(f"/files/{shown['output_file_id']}/content")
            assert content.headers["content-type"] == "application/octet-stream"
            assert len(lines_of(content.content)) == 4
            assert content.headers["x-request-id"].startswith("req_")
    assert sim.stats.downloads == {shown["output_file_id"]: 1}
    assert sim.stats.api_calls["retrieve"] == 3 and sim.stats.rows_processed == 4


@pytest.mark.anyio
async def test_http_requests_are_checked_at_once() -> None:
    async with running_sim(SimConfig()) as sim:
        async with httpx.AsyncClient(base_url=sim.base_url) as client:
            good = (await upload(client, jsonl(1))).json()["id"]
            checks = [
                (await upload(client, jsonl(1), name="in.csv"), 400, "Must be .jsonl"),
                (await upload(client, jsonl(1), purpose="nope"), 400, "'nope' is not one of"),
                (await client.post("/files", data={"purpose": "batch"}), 400, "multipart"),
                (
                    await client.post(
                        "/files", data={"purpose": "batch"}, files={"doc": ("a.jsonl", b"")}
                    ),
                    400,
                    "'file'",
                ),
                (await create(client, good, completion_window="48h"), 400, "'24h'"),
                (await create(client, good, endpoint="/v1/completions"), 400, "Supported values"),
                (await client.post("/batches", json={"endpoint": "x"}), 400, "input_file_id"),
                (await client.post("/batches", content=b"{"), 400, "JSON"),
                (await create(client, good, metadata={f"k{i}": "v" for i in range(17)}), 400, "16"),
                (await create(client, good, metadata={"k": "v" * 513}), 400, "512"),
                (await create(client, good, metadata={"k" * 65: "v"}), 400, "64"),
                (await create(client, good, metadata={"k": 1}), 400, "string"),
                (await client.get("/batches/batch_nope"), 404, "batch_nope"),
                (await client.post("/batches/batch_nope/cancel"), 404, "batch_nope"),
                (await client.get("/files/file-nope"), 404, "No such File object"),
                (await client.get("/files/file-nope/content"), 404, "file-nope"),
                (await client.delete("/files/file-nope"), 404, "file-nope"),
                (await client.get("/batches", params={"limit": 0}), 400, ">= 1"),
                (await client.get("/batches", params={"limit": 101}), 400, "<= 100"),
                (await client.get("/files", params={"order": "up"}), 400, "asc"),
                (await client.delete("/batches"), 405, "Method not allowed"),
                (await client.get("/batches/x/y/z"), 404, "Invalid URL"),
            ]
            for response, status, fragment in checks:
                assert response.status_code == status, response.text
                assert fragment in response.json()["error"]["message"], response.text
            ok = await create(client, good, metadata={f"k{i}": "v" * 512 for i in range(16)})
            assert ok.status_code == 200
            r = await client.post(sim.url + "/batches", json={})  # the /v1-less path too
            assert r.status_code == 400
    assert sim.stats.batches_created == 1


@pytest.mark.anyio
async def test_uploads_over_the_limit_get_413() -> None:
    config = SimConfig(batch=BatchConfig(max_upload_bytes=100))
    async with running_sim(config) as sim, httpx.AsyncClient(base_url=sim.base_url) as client:
        r = await upload(client, jsonl(5))
        assert r.status_code == 413 and r.json()["error"]["code"] == "file_too_large"
        assert (await upload(client, b"{}\n")).status_code == 200
    assert sim.stats.files_uploaded == 1


@pytest.mark.anyio
async def test_faults_on_upload_and_poll_scripted_and_lost_creates() -> None:
    scripts = {"upload": [503, "reset"], "retrieve": [500, "hang", 429], "create": ["lost"]}
    sim = SimServer(SimConfig(batch=BatchConfig(scripts=scripts), retry_after=2))
    await sim.start()
    try:
        async with httpx.AsyncClient(base_url=sim.base_url, timeout=5) as client:
            first = await upload(client, jsonl(2))
            assert first.status_code == 503 and first.json()["error"]["type"] == "server_error"
            with pytest.raises(httpx.TransportError):  # reset mid-request
                await upload(client, jsonl(2))
            assert sim.stats.files_uploaded == 0  # faulted uploads stored nothing
            file_id = (await upload(client, jsonl(2))).json()["id"]
            with pytest.raises(httpx.TransportError):
                await create(client, file_id)  # created, but the answer is lost
            assert sim.stats.batches_created == 1
            listed = (await client.get("/batches")).json()["data"]
            batch_id = listed[0]["id"]
            assert (await client.get(f"/batches/{batch_id}")).status_code == 500
            with pytest.raises(httpx.ReadTimeout):
                await client.get(f"/batches/{batch_id}", timeout=0.1)
            limited = await client.get(f"/batches/{batch_id}")
            assert limited.status_code == 429 and limited.headers["retry-after-ms"] == "2000"
            assert (await client.get(f"/batches/{batch_id}")).json()["status"] == "completed"
            sim.script_api("content", "hang")
            sim.reset()  # replays scripts from their first step
            assert (await upload(client, jsonl(1))).status_code == 503
    finally:
        started = time.perf_counter()
        await sim.stop()
    # a hung request is dropped at once, not held until aiohttp's 1 s shutdown timeout
    assert time.perf_counter() - started < 0.9
    assert sim.stats.api_faults == {"upload:503": 1}  # counted since the reset
    with pytest.raises(ValueError):
        sim.script_api("nowhere", 503)


@pytest.mark.anyio
async def test_fault_rates_on_poll_are_seeded() -> None:
    config = SimConfig(seed=3, batch=BatchConfig(faults={"retrieve": {503: 0.3}}))
    async with running_sim(config) as sim, httpx.AsyncClient(base_url=sim.base_url) as client:
        file_id = (await upload(client, jsonl(1))).json()["id"]
        batch_id = (await create(client, file_id)).json()["id"]
        statuses = [(await client.get(f"/batches/{batch_id}")).status_code for _ in range(60)]
    assert 8 <= statuses.count(503) <= 30 and set(statuses) == {200, 503}
    assert sim.stats.api_faults["retrieve:503"] == statuses.count(503)


@pytest.mark.anyio
async def test_files_and_batches_require_the_key() -> None:
    async with running_sim(SimConfig(require_key=KEY)) as sim:
        async with httpx.AsyncClient(base_url=sim.base_url) as client:
            for call in (
                upload(client, jsonl(1)),
                client.get("/files"),
                client.get("/files/file-x/content"),
                client.get("/batches"),
                create(client, "file-x"),
                client.post("/batches/batch_x/cancel"),
            ):
                r = await call
                assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
            authed = {"Authorization": f"Bearer {KEY}"}
            assert (await client.get("/batches", headers=authed)).status_code == 200
            stats = (await client.get(sim.url + "/_sim/stats")).text
    assert KEY not in stats and sim.stats.files_uploaded == 0


# -- the official SDK against a real server --------------------------------------------------


@pytest.fixture
def sdk_sim() -> Iterator[tuple[SimThread, openai.OpenAI]]:
    with SimThread(SimConfig(require_key=KEY)) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key=KEY, max_retries=0)
        yield sim, client
        client.close()


def wait_done(client: openai.OpenAI, batch_id: str) -> Any:
    for _ in range(500):
        batch = client.batches.retrieve(batch_id)
        if batch.status not in ("validating", "in_progress", "finalizing", "cancelling"):
            return batch
        time.sleep(0.01)
    raise AssertionError(f"batch {batch_id} still {batch.status}")


def test_sdk_uploads_runs_polls_and_downloads(sdk_sim: tuple[SimThread, openai.OpenAI]) -> None:
    sim, client = sdk_sim
    content = jsonl(6) + request_line("broken", {"model": "gpt-4o-mini", "messages": []})
    uploaded = client.files.create(file=("shard-0.jsonl", content), purpose="batch")
    assert uploaded.id.startswith("file-") and uploaded.object == "file"
    assert uploaded.bytes == len(content) and uploaded.filename == "shard-0.jsonl"
    assert uploaded.purpose == "batch" and uploaded.status == "processed"
    assert uploaded.expires_at == uploaded.created_at + 30 * 86_400
    assert client.files.retrieve(uploaded.id) == uploaded
    created = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "test", "shard": "0"},
    )
    assert created.status == "validating" and created.id.startswith("batch_")
    batch = wait_done(client, created.id)
    assert batch.status == "completed" and batch.model == "gpt-4o-mini"
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (7, 6)
    assert batch.request_counts.failed == 1
    assert batch.metadata == {"job": "test", "shard": "0"}
    assert batch.usage is not None and batch.usage.input_tokens > 0
    assert batch.output_file_id and batch.error_file_id
    output = lines_of(client.files.content(batch.output_file_id).content)
    assert [line["custom_id"] for line in output] == [f"row-{i}" for i in range(6)]
    first = output[0]["response"]["body"]
    expected = make_reply(ask("Tell me about row 0."))
    assert first["choices"][0]["message"]["content"] == expected.choices[0].content
    (error,) = lines_of(client.files.content(batch.error_file_id).content)
    assert error["custom_id"] == "broken" and error["response"]["status_code"] == 400
    outputs = client.files.list(purpose="batch_output")
    assert {f.id for f in outputs} == {batch.output_file_id, batch.error_file_id}
    assert client.files.retrieve(batch.output_file_id).purpose == "batch_output"
    deleted = client.files.delete(uploaded.id)
    assert deleted.deleted and deleted.id == uploaded.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(batch.id)
    stats = sim.snapshot()
    assert stats["files_uploaded"] == 1 and stats["batches_created"] == 1
    assert stats["batches_by_metadata"] == {"job": {"test": 1}, "shard": {"0": 1}}
    assert stats["rows_processed"] == 7
    assert stats["downloads"] == {batch.output_file_id: 1, batch.error_file_id: 1}
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=sim.base_url, api_key="sk-wrong", max_retries=0).batches.list()


def test_sdk_lists_batches_newest_first_in_pages(
    sdk_sim: tuple[SimThread, openai.OpenAI],
) -> None:
    sim, client = sdk_sim
    file_id = client.files.create(file=("in.jsonl", jsonl(1)), purpose="batch").id
    ids = [
        client.batches.create(
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"shard": str(n)},
        ).id
        for n in range(5)
    ]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    assert page.has_next_page()
    second = page.get_next_page()
    assert [b.id for b in second.data] == ids[::-1][2:4]
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]  # auto-pagination
    raw = client.batches.with_raw_response.list(limit=3, after=ids[3]).http_response.json()
    assert [b["id"] for b in raw["data"]] == ids[2::-1]
    assert (raw["first_id"], raw["last_id"], raw["has_more"]) == (ids[2], ids[0], False)
    assert sim.snapshot()["batches_by_metadata"]["shard"] == {str(n): 1 for n in range(5)}


def test_sdk_cancels_and_keeps_partial_output() -> None:
    clock = FakeClock()
    config = SimConfig(batch=BatchConfig(rows_per_second=1, cancel_delay=60))
    with SimThread(config, now=clock) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-any", max_retries=0)
        file_id = client.files.create(file=("in.jsonl", jsonl(10)), purpose="batch").id
        batch = client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        clock.t += 4.2
        assert client.batches.retrieve(batch.id).status == "in_progress"
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
        clock.t += 59
        assert client.batches.retrieve(batch.id).status == "cancelling"
        clock.t += 1
        cancelled = client.batches.retrieve(batch.id)
        assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
        assert cancelled.request_counts is not None and cancelled.request_counts.completed == 4
        assert cancelled.output_file_id is not None
        output = lines_of(client.files.content(cancelled.output_file_id).content)
        assert [line["custom_id"] for line in output] == [f"row-{i}" for i in range(4)]
        assert sim.batch(batch.id) == cancelled.model_dump(mode="json")
        client.close()


def test_sdk_reads_validation_and_token_limit_failures() -> None:
    config = SimConfig(batch=BatchConfig(enqueued_token_limit=10))
    with SimThread(config) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-any", max_retries=0)
        bad = client.files.create(file=("bad.jsonl", b"{nope\n"), purpose="batch").id
        big = client.files.create(file=("big.jsonl", jsonl(5)), purpose="batch").id
        results = []
        for file_id in (bad, big):
            created = client.batches.create(
                input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            results.append(wait_done(client, created.id))
        invalid, limited = results
        assert invalid.status == "failed" and invalid.errors is not None
        assert invalid.errors.object == "list" and invalid.errors.data is not None
        (error,) = invalid.errors.data
        assert (error.code, error.line) == ("invalid_json_line", 1)
        assert limited.status == "failed" and limited.failed_at is not None
        assert limited.errors is not None and limited.errors.data is not None
        assert limited.errors.data[0].code == "token_limit_exceeded"
        sim.script_batches("expire")
        created = client.batches.create(
            input_file_id=big, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert wait_done(client, created.id).status == "failed"  # still over the limit
        client.close()


def test_sdk_several_shards_complete_quickly() -> None:
    with SimThread(SimConfig()) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-any", max_retries=0)
        started = time.perf_counter()
        batch_ids = []
        for shard in range(3):
            content = jsonl(1500, prefix=f"s{shard}")
            file_id = client.files.create(file=(f"s{shard}.jsonl", content), purpose="batch").id
            batch_ids.append(
                client.batches.create(
                    input_file_id=file_id,
                    endpoint="/v1/chat/completions",
                    completion_window="24h",
                    metadata={"shard": str(shard)},
                ).id
            )
        lines = 0
        for batch_id in batch_ids:
            batch = wait_done(client, batch_id)
            assert batch.status == "completed" and batch.output_file_id is not None
            lines += len(client.files.content(batch.output_file_id).content.splitlines())
        elapsed = time.perf_counter() - started
        client.close()
        stats = sim.snapshot()
    assert lines == 4500 and stats["rows_processed"] == 4500
    assert stats["batches_by_metadata"]["shard"] == {"0": 1, "1": 1, "2": 1}
    assert elapsed < 5  # ~0.3 s here; generous for a loaded CI box


def test_server_stop_ends_the_background_task() -> None:
    async def run() -> SimServer:
        clock = FakeClock()
        config = SimConfig(batch=BatchConfig(rows_per_second=1))
        async with running_sim(config, now=clock) as sim:
            async with httpx.AsyncClient(base_url=sim.base_url) as client:
                file_id = (await upload(client, jsonl(3))).json()["id"]
                await create(client, file_id)
                clock.t += 1
                for _ in range(500):  # the background task answers the row now due
                    if sim.stats.rows_processed:
                        break
                    await asyncio.sleep(0.01)
                assert sim.stats.rows_processed == 1
        return sim

    sim = asyncio.run(run())
    assert sim.batch_api._pump is None
