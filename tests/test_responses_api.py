"""Responses API requests (issue 28, below the run lifecycle): request lines with url
``/v1/responses`` checked before sending, counted, priced (cached input at the cached
price, reasoning as output), classified, streamed with their own event types and
assembled (torn streams retried), answered by the simulator (online, streamed, and in
batches, with the official ``openai`` SDK as client), and a plain request-file run
end to end, online and through the Batch API.

Unit tests use plain functions and ``httpx.MockTransport`` with an injected clock;
the simulator runs on loopback for the HTTP and SDK tests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import orjson
import pytest

from batchrun._api import hooks_for, make_runner
from batchrun._apis import CHAT, EMBEDDINGS, RESPONSES, defaults_for
from batchrun._cost.bill import cost_of
from batchrun._cost.price import ModelPrice
from batchrun._cost.prices import PriceBook
from batchrun._engine.stops import EXIT_OK
from batchrun._input.select import source_for
from batchrun._input.sources import Source
from batchrun._models import Outcome, Request
from batchrun._output.parquet import result_values
from batchrun._output.quality import (
    CONTENT_FILTER,
    EMPTY,
    NO_CHOICES,
    OK,
    REFUSAL,
    SCHEMA_ERROR,
    TRUNCATED,
    classify,
)
from batchrun._output.tally import first_finish_reason
from batchrun._output.usage import Usage, usage_of
from batchrun._pacing.tokens import (
    answer_ceiling,
    completion_ceiling,
    count_text,
    prompt_tokens,
    prompt_tokens_at_most,
)
from batchrun._redact import register_secret
from batchrun._schemas import compile_schema
from batchrun._settings import Settings
from batchrun._transport.client import ChatClient
from batchrun._transport.response_stream import ResponseStreamAssembler, assemble_response
from batchrun.errors import BadResponse, InputError
from batchrun.sim import SimConfig, SimThread
from batchrun.sim.responses import response_events, response_object, response_reply
from tests.conftest import FakeTime

MODEL = "gpt-4.1-mini"
URL = "/v1/responses"
SCHEMA = {
    "type": "object",
    "properties": {"label": {"enum": ["spam", "ham"]}, "score": {"type": "integer"}},
    "required": ["label", "score"],
    "additionalProperties": False,
}
JSON_FORMAT = {
    "format": {"type": "json_schema", "name": "verdict", "schema": SCHEMA, "strict": True}
}


def line(custom_id: str, body: dict[str, Any], url: str = URL) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def ask(value: Any = "hello", **extra: Any) -> dict[str, Any]:
    """A Responses body whose ``input`` is ``value``."""
    return {"model": MODEL, "input": value, **extra}


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def answer(body: dict[str, Any], rid: str = "resp_test") -> dict[str, Any]:
    """The simulator's answer to ``body`` (deterministic but for its id)."""
    return response_object(response_reply(body), body, rid, 1)


def sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events
    )


# -- the input check ------------------------------------------------------------------
def test_a_responses_line_is_a_request_for_the_responses_api(tmp_path: Path) -> None:
    items = [
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "function_call_output", "call_id": "c1", "output": "42"},
    ]
    rows = [
        line("a", ask("hi", instructions="Be brief.", max_output_tokens=64, text=JSON_FORMAT)),
        line("b", ask(items, reasoning={"effort": "low"}, tools=[{"type": "web_search"}])),
        {
            "custom_id": "c",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
        },
    ]
    path = write(tmp_path / "in.jsonl", rows)
    requests = list(Source(str(path)).requests())
    assert [r.api for r in requests] == [RESPONSES, RESPONSES, CHAT]
    assert requests[0].body == rows[0]["body"]  # passed through unchanged


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": MODEL}, "body has no 'input'"),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
            "'messages' is a chat-completions field; the Responses API takes 'input'",
        ),
        (
            ask("x", response_format={"type": "json_object"}),
            "'response_format' is a chat-completions field; the Responses API takes 'text.format'",
        ),
        (ask("x", max_tokens=5), "takes 'max_output_tokens'"),
        (ask("x", reasoning_effort="low"), "takes 'reasoning.effort'"),
        (ask(7), "'input' must be a string or a list of input items (got a number)"),
        (ask(["hi"]), "input[0] must be an object (an input item), got a string"),
        (ask([{"role": "robot", "content": "x"}]), "input[0].role must be one of user"),
        (ask([{"role": "user", "content": 3}]), "input[0].content must be a string or a list"),
        (
            ask([{"role": "user", "content": [{"text": "x"}]}]),
            "input[0].content[0] must be an object with a 'type'",
        ),
        (ask("x", instructions=["a"]), "'instructions' must be a string"),
        (ask("x", max_output_tokens=0), "'max_output_tokens' must be a positive integer"),
        (ask("x", stream="yes"), "'stream' must be true or false"),
        (ask("x", reasoning="high"), "'reasoning' must be an object like {effort: low}"),
        (ask("x", tools=[{"name": "f"}]), "tools[0] must be an object with a 'type'"),
        (ask("x", text={"format": {"type": "xml"}}), "'text.format.type' must be one of text"),
        (
            ask("x", text={"format": {"type": "json_schema", "schema": SCHEMA}}),
            "'text.format.name' is required",
        ),
        (
            ask("x", text={"format": {"type": "json_schema", "json_schema": {"schema": SCHEMA}}}),
            "not a chat-style 'json_schema' object",
        ),
        (
            ask(
                "x",
                text={"format": {"type": "json_schema", "name": "n", "schema": {"type": "nope"}}},
            ),
            "'text.format.schema' is not a valid JSON Schema",
        ),
        (
            ask("x", max_output_token=5),
            "unknown field 'max_output_token' (did you mean 'max_output_tokens'?)",
        ),
    ],
)
def test_a_bad_responses_body_is_named_by_file_and_line(
    tmp_path: Path, body: dict[str, Any], message: str
) -> None:
    path = write(tmp_path / "in.jsonl", [line("ok", ask("fine")), line("bad", body)])
    with pytest.raises(InputError) as err:
        Source(str(path)).scan()
    assert str(err.value).startswith(f"{path}:line 2: ")
    assert message in str(err.value)


def test_request_defaults_go_where_each_api_takes_them(tmp_path: Path) -> None:
    assert defaults_for(RESPONSES, {"max_tokens": 50, "temperature": 0, "n": 2}) == {
        "temperature": 0,
        "max_output_tokens": 50,
    }
    assert defaults_for(RESPONSES, {"reasoning_effort": "low"}) == {"reasoning": {"effort": "low"}}
    assert defaults_for(EMBEDDINGS, {"max_tokens": 50, "temperature": 0}) == {}
    rows = [
        line("r", ask("x")),
        line("r2", ask("x", max_output_tokens=9)),
        line("e", {"model": "text-embedding-3-small", "input": "x"}, "/v1/embeddings"),
        {
            "custom_id": "c",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": "x"}]},
        },
    ]
    path = write(tmp_path / "in.jsonl", rows)
    cfg = Settings(
        input=str(path), out_dir=str(tmp_path / "run"), request={"max_tokens": 50, "temperature": 0}
    )
    bodies = {r.custom_id: r.body for r in source_for(cfg).requests()}
    assert bodies["r"] == {**ask("x"), "temperature": 0, "max_output_tokens": 50}
    assert bodies["r2"]["max_output_tokens"] == 9  # the line's own value wins
    assert bodies["e"] == {"model": "text-embedding-3-small", "input": "x"}  # none it cannot take
    assert bodies["c"]["max_tokens"] == 50 and bodies["c"]["temperature"] == 0


def test_stream_on_streams_responses_lines_without_chat_stream_options(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", [line("r", ask("x"))])
    cfg = Settings(input=str(path), out_dir=str(tmp_path / "run"), stream=True)
    (req,) = source_for(cfg).requests()
    assert req.body == {**ask("x"), "stream": True}  # usage comes in response.completed


def test_a_prompt_over_the_context_window_is_a_bad_row(tmp_path: Path) -> None:
    rows = [line("ok", ask("hello " * 50, max_output_tokens=100))]
    rows.append(line("r", ask("hello " * 300, instructions="Be brief.", max_output_tokens=100)))
    path = write(tmp_path / "in.jsonl", rows)
    prompt = prompt_tokens(rows[1]["body"])
    with pytest.raises(InputError) as err:
        source_for(Settings.build(input=str(path), context_window={MODEL: 300})).scan()
    assert str(err.value) == (
        f"{path}:line 2: {prompt:,} prompt tokens + max_output_tokens 100 exceed "
        f"{MODEL}'s context window of 300 tokens"
    )


# -- tokens, usage, prices ------------------------------------------------------------
def test_tokens_of_a_responses_body_count_like_the_chat_messages_it_stands_for() -> None:
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "How are you today?"}]}
    assert prompt_tokens(ask("How are you today?"), api=RESPONSES) == prompt_tokens(chat)
    with_instructions = ask("How are you today?", instructions="Answer in French.")
    assert prompt_tokens(with_instructions) == prompt_tokens(
        {
            "model": MODEL,
            "messages": [{"role": "system", "content": "Answer in French."}, *chat["messages"]],
        }
    )  # the instructions are a system message
    items = ask(
        [{"role": "user", "content": [{"type": "input_text", "text": "How are you today?"}]}]
    )
    assert prompt_tokens(items) == prompt_tokens(chat)
    for body in (with_instructions, items, ask([{"type": "function_call_output", "output": "x"}])):
        assert prompt_tokens_at_most(body) >= prompt_tokens(body)
    assert completion_ceiling(ask("x", max_output_tokens=77)) == 77
    assert completion_ceiling(ask("x"), default_max=256, api=RESPONSES) == 256
    assert answer_ceiling(ask("x", max_output_tokens=77)) == ("max_output_tokens", 77)


def test_responses_usage_is_read_into_the_one_usage_type() -> None:
    body = {
        "object": "response",
        "usage": {
            "input_tokens": 1200,
            "input_tokens_details": {"cached_tokens": 1024},
            "output_tokens": 300,
            "output_tokens_details": {"reasoning_tokens": 200},
            "total_tokens": 1500,
        },
    }
    assert usage_of(body) == Usage(1200, 300, 1500, 1024, 200)
    assert usage_of({"object": "response", "usage": None}) is None  # never invented
    price = PriceBook.load(None).price_for(MODEL)
    assert price is not None and price.cached_input is not None
    cost = cost_of(Usage(1200, 300, 1500, 1024, 200), price)
    # cached input at the cached price; reasoning tokens are output tokens, paid once
    assert cost.input == pytest.approx(176 * price.input / 1e6)
    assert cost.cached_input == pytest.approx(1024 * price.cached_input / 1e6)
    assert cost.output == pytest.approx(300 * price.output / 1e6)
    flat = ModelPrice(input=1e6, output=2e6)
    assert cost_of(usage_of(body) or Usage(), flat).total == 1200 + 600


# -- answer quality -------------------------------------------------------------------
def message(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"type": "message", "role": "assistant", "content": list(parts)}


def text(value: str) -> dict[str, Any]:
    return {"type": "output_text", "text": value, "annotations": []}


@pytest.mark.parametrize(
    ("body", "category", "finish"),
    [
        ({"status": "completed", "output": [message(text("hi"))]}, OK, "completed"),
        (
            {
                "status": "incomplete",
                "incomplete_details": {"reason": "max_output_tokens"},
                "output": [message(text("cut sh"))],
            },
            TRUNCATED,
            "max_output_tokens",
        ),
        (
            {
                "status": "incomplete",
                "incomplete_details": {"reason": "content_filter"},
                "output": [],
            },
            CONTENT_FILTER,
            "content_filter",
        ),
        (
            {"status": "completed", "output": [message({"type": "refusal", "refusal": "No."})]},
            REFUSAL,
            "completed",
        ),
        ({"status": "completed", "output": []}, EMPTY, "completed"),
        ({"status": "completed", "output": [message(text("  "))]}, EMPTY, "completed"),
        (
            {
                "status": "completed",
                "output": [{"type": "function_call", "name": "f", "arguments": "{}"}],
            },
            OK,
            "completed",
        ),
        ({"object": "response", "status": "completed"}, NO_CHOICES, "completed"),
    ],
)
def test_responses_answers_get_the_chat_categories(
    body: dict[str, Any], category: str, finish: str
) -> None:
    body = {"object": "response", **body}
    verdict = classify(body)
    assert (verdict.category, verdict.finish_reason) == (category, finish)
    assert first_finish_reason(body) == finish  # what a re-read line counts


def test_the_schema_its_text_format_asked_for_checks_the_output_text() -> None:
    asked = {"object": "response", "status": "completed", "text": JSON_FORMAT}
    good = {**asked, "output": [message(text('{"label": "spam", "score": 3}'))]}
    bad = {**asked, "output": [message(text('{"label": "eggs", "score": 3}'))]}
    assert classify(good).category == OK
    verdict = classify(bad)
    assert verdict.category == SCHEMA_ERROR and verdict.detail is not None
    assert verdict.detail.startswith("$.label:")
    # the run's schema, when given, is the one that counts
    other = compile_schema(
        {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    )
    assert classify(good, other).category == SCHEMA_ERROR


def answered(body: dict[str, Any]) -> Outcome:
    """``body`` as a line that answered a request (what results.parquet reads)."""
    return Outcome.success(
        Request("r", {}, row=1), status=200, request_id=None, body=body, attempts=[]
    )


def test_results_parquet_columns_of_a_responses_answer() -> None:
    body = answer(ask("Sentiment of: I love it"))
    values = result_values(answered(body))
    assert values["content"] == "positive"
    assert values["finish_reason"] == "completed"
    assert values["prompt_tokens"] == body["usage"]["input_tokens"]
    assert values["completion_tokens"] == body["usage"]["output_tokens"]
    call = answer(ask("x", tools=[{"type": "function", "name": "lookup", "parameters": {}}]))
    assert json.loads(result_values(answered(call))["tool_calls"])[0]["name"] == "lookup"


# -- the stream -----------------------------------------------------------------------
def test_a_stream_is_the_object_of_its_final_event_whatever_the_byte_boundaries() -> None:
    body = ask("tell me a story", max_output_tokens=400)
    whole = answer(body)
    raw = sse(response_events(whole, pieces=5))
    assert assemble_response([raw]) == whole
    assert assemble_response([raw[i : i + 1] for i in range(len(raw))]) == whole
    cut = answer(ask("tell me a long story", max_output_tokens=3))
    assert cut["status"] == "incomplete"  # response.incomplete is an answer too
    assert assemble_response([sse(response_events(cut))]) == cut


def test_the_first_output_delta_is_the_first_token() -> None:
    asm = ResponseStreamAssembler()
    events = response_events(answer(ask("hello")))
    flags = [asm.add(orjson.dumps(e).decode()) for e in events]
    first = next(i for i, e in enumerate(events) if e["type"] == "response.output_text.delta")
    assert flags.index(True) == first and flags.count(True) == 1


def test_a_torn_stream_is_retryable_and_keeps_what_it_had() -> None:
    events = response_events(answer(ask("tell me a story")), pieces=6)
    final = events[-1]["response"]["output"][0]["content"][0]["text"]
    cut = [e for e in events if e["type"] != "response.output_text.done"][:-4]
    with pytest.raises(BadResponse) as err:
        assemble_response([sse(cut)])
    assert err.value.code == "stream_truncated" and err.value.retryable
    partial = err.value.body["output"][0]["content"][0]["text"]
    assert partial and final.startswith(partial) and partial != final
    assert err.value.body["status"] == "incomplete" and err.value.body["usage"] is None


@pytest.mark.parametrize(
    ("event", "code"),
    [
        (
            {"type": "error", "code": "server_error", "message": "boom", "param": None},
            "server_error",
        ),
        (
            {
                "type": "response.failed",
                "response": {
                    "status": "failed",
                    "error": {"code": "rate_limit_exceeded", "message": "x"},
                },
            },
            "rate_limit_exceeded",
        ),
    ],
)
def test_errors_inside_the_stream_are_retryable(event: dict[str, Any], code: str) -> None:
    head = response_events(answer(ask("x")))[:3]
    with pytest.raises(BadResponse) as err:
        assemble_response([sse([*head, event])])
    assert err.value.code == code and err.value.retryable


def test_a_torn_event_is_a_bad_chunk() -> None:
    raw = sse(response_events(answer(ask("x"))))
    with pytest.raises(BadResponse) as err:
        assemble_response([raw[: len(raw) - 40]])  # the final event cut inside its JSON
    assert err.value.code == "bad_stream_chunk"


def test_a_final_event_without_output_gets_the_streamed_items() -> None:
    events = response_events(answer(ask("hello")))
    events[-1] = {**events[-1], "response": {**events[-1]["response"], "output": []}}
    done = assemble_response([sse(events)])
    assert (
        done["output"][0]["content"][0]["text"]
        == answer(ask("hello"))["output"][0]["content"][0]["text"]
    )


# -- the client ------------------------------------------------------------------------
def client_for(handler: Any) -> ChatClient:
    return ChatClient(
        base_url="http://test/v1",
        transport=httpx.MockTransport(handler),
        api_key="sk-secret-abc123",
    )


def test_the_client_posts_to_the_responses_path_and_assembles_a_stream() -> None:
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append((request.url.path, request.headers.get("accept")))
        whole = answer(body)
        if body.get("stream"):
            return httpx.Response(
                200,
                content=sse(response_events(whole)),
                headers={"content-type": "text/event-stream"},
            )
        return httpx.Response(200, json=whole)

    async def main() -> Any:
        client = client_for(handler)
        return (
            await client.send(ask("hello"), api=RESPONSES),
            await client.send(ask("hello", stream=True), api=RESPONSES),
        )

    plain, streamed = anyio.run(main)
    assert seen == [("/v1/responses", "application/json"), ("/v1/responses", "text/event-stream")]
    assert plain.body == answer(ask("hello"))
    assert streamed.body["output"] == plain.body["output"]
    assert streamed.body["usage"] == plain.body["usage"]  # the final event's, not made up
    assert streamed.ttft_s is not None


def test_a_streamed_key_is_scrubbed_and_a_failed_response_is_retryable() -> None:
    register_secret("sk-secret-abc123")

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if not body.get("stream"):
            failed = {
                "object": "response",
                "status": "failed",
                "output": [],
                "error": {"code": "server_error", "message": "oops"},
            }
            return httpx.Response(200, json=failed)
        whole = answer(body)
        whole["output"][0]["content"][0]["text"] = "your key is sk-secret-abc123"
        events = response_events(whole, pieces=8)
        return httpx.Response(
            200, content=sse(events), headers={"content-type": "text/event-stream"}
        )

    async def main() -> Any:
        client = client_for(handler)
        streamed = await client.send(ask("x", stream=True), api=RESPONSES)
        with pytest.raises(BadResponse) as err:
            await client.send(ask("x"), api=RESPONSES)
        return streamed, err.value

    streamed, failed = anyio.run(main)
    assert "sk-secret-abc123" not in json.dumps(streamed.body)
    assert failed.code == "server_error" and failed.retryable


# -- the simulator ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    with SimThread(SimConfig(require_key="sk-sim")) as server:
        yield server


def post(sim: SimThread, body: Any) -> httpx.Response:
    return httpx.post(
        f"{sim.base_url}/responses", json=body, headers={"Authorization": "Bearer sk-sim"}
    )


def test_sim_answers_a_responses_object(sim: SimThread) -> None:
    body = ask("Sentiment of: I love it", instructions="One word.")
    got = post(sim, body).json()
    assert got["object"] == "response" and got["status"] == "completed"
    assert got["id"].startswith("resp_") and got["instructions"] == "One word."
    assert got["output"][0]["content"][0] == {
        "type": "output_text",
        "text": "positive",
        "annotations": [],
        "logprobs": [],
    }
    assert got["usage"]["input_tokens"] == prompt_tokens(body, api=RESPONSES)
    assert got["usage"]["output_tokens"] == count_text("positive", MODEL)
    # json_schema honoured like chat's response_format
    shaped = post(sim, ask("Classify: buy now", text=JSON_FORMAT)).json()
    assert classify(shaped).category == OK
    assert set(json.loads(shaped["output"][0]["content"][0]["text"])) == {"label", "score"}
    # cut by max_output_tokens: incomplete, with the reason
    cut = post(sim, ask("tell me a long story", max_output_tokens=2)).json()
    assert (cut["status"], cut["incomplete_details"]) == (
        "incomplete",
        {"reason": "max_output_tokens"},
    )
    assert classify(cut).category == TRUNCATED
    reasoning = post(
        sim, {"model": "o4-mini", "input": "why?", "reasoning": {"effort": "low"}}
    ).json()
    assert reasoning["output"][0]["type"] == "reasoning"
    assert reasoning["usage"]["output_tokens_details"]["reasoning_tokens"] > 0
    refused = post(sim, ask("x", max_tokens=5))
    assert refused.status_code == 400 and "max_output_tokens" in refused.json()["error"]["message"]


def test_sim_streams_the_real_event_sequence(sim: SimThread) -> None:
    with httpx.stream(
        "POST",
        f"{sim.base_url}/responses",
        json=ask("hello", stream=True),
        headers={"Authorization": "Bearer sk-sim"},
    ) as response:
        raw = response.read()
    assert response.headers["content-type"].startswith("text/event-stream")
    types = [line[7:] for line in raw.decode().splitlines() if line.startswith("event: ")]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert types[-2:] == ["response.output_item.done", "response.completed"]
    assert "response.output_text.delta" in types and "[DONE]" not in raw.decode()
    done = assemble_response([raw])
    assert done["usage"]["output_tokens"] > 0 and done["status"] == "completed"


def test_the_official_sdk_talks_to_the_simulator(sim: SimThread) -> None:
    client = openai.OpenAI(base_url=sim.base_url, api_key="sk-sim", max_retries=0)
    result = client.responses.create(model=MODEL, input="Sentiment of: I love it")
    assert result.output_text == "positive"
    assert result.usage is not None and result.usage.input_tokens > 0
    events = list(client.responses.create(model=MODEL, input="Tell me something", stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == events[-1].response.output_text
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=MODEL, input="x", extra_body={"max_tokens": 5})


def test_the_official_sdk_runs_a_responses_batch(sim: SimThread) -> None:
    client = openai.OpenAI(base_url=sim.base_url, api_key="sk-sim", max_retries=0)
    rows = [line(f"r{i}", ask(f"Sentiment of: I love item {i}")) for i in range(3)]
    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    upload = client.files.create(file=("in.jsonl", content), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/responses", completion_window="24h"
    )
    sim.advance_batches()
    done = client.batches.retrieve(batch.id)
    assert (done.status, done.endpoint, done.request_counts.completed) == ("completed", URL, 3)
    out = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    assert {row["custom_id"] for row in out} == {"r0", "r1", "r2"}
    for row in out:
        body = row["response"]["body"]
        assert body["object"] == "response" and classify(body).category == OK
        assert body["output"][0]["content"][0]["text"] == "positive"


# -- a request-file run, end to end -------------------------------------------------
class ResponsesServer:
    """The simulator's Responses answers over a MockTransport; the first attempt of a
    row whose input is in ``tear`` is a stream cut before its final event."""

    def __init__(self, tear: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.tear = set(tear)
        self.sent: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert request.url.path == URL
        self.sent.append(body)
        whole = answer(body, f"resp_{len(self.sent)}")
        if not body.get("stream"):
            return httpx.Response(200, json=whole)
        events = response_events(whole)
        if body["input"] in self.tear:
            self.tear.discard(body["input"])
            events = events[: len(events) // 2]
        return httpx.Response(
            200, content=sse(events), headers={"content-type": "text/event-stream"}
        )


def run_online(cfg: Settings, server: Any) -> Any:
    fake = FakeTime()
    runner = make_runner(
        cfg,
        None,
        hooks=hooks_for(cfg),
        transport=httpx.MockTransport(server),
        clock=fake.clock,
        sleep=fake.sleep,
    )
    return anyio.run(runner.run)


def results(run_dir: Path) -> dict[str, dict[str, Any]]:
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    return {r["custom_id"]: r for r in map(json.loads, lines)}


def test_a_responses_file_runs_online_end_to_end(tmp_path: Path) -> None:
    rows = [line(f"r{i}", ask(f"question {i}", stream=i % 2 == 1)) for i in range(8)]
    rows.append(line("json", ask("Classify: buy now", text=JSON_FORMAT)))
    rows.append(line("cut", ask("tell me a long story", max_output_tokens=2)))
    path = write(tmp_path / "in.jsonl", rows)
    run_dir = tmp_path / "run"
    cfg = Settings(input=str(path), out_dir=str(run_dir), base_url="http://test/v1", quiet=True)
    server = ResponsesServer(tear={"question 3"})
    result = run_online(cfg, server)
    assert result.exit_code == EXIT_OK
    assert len(server.sent) == 11  # ten rows, and the torn stream once more
    lines = results(run_dir)
    assert sorted(lines) == sorted(r["custom_id"] for r in rows)
    assert lines["r3"]["batchrun"]["attempts"] == 2  # the torn stream, sent again
    for row in rows:
        body = lines[row["custom_id"]]["response"]["body"]
        expected = answer(row["body"], body["id"])
        assert body == expected  # the server's object, unmodified (a stream: its final event)
    assert lines["cut"]["batchrun"]["quality"] == TRUNCATED
    summary = json.loads((run_dir / "summary.json").read_text())
    usages = [lines[r["custom_id"]]["response"]["body"]["usage"] for r in rows]
    assert summary["usage"]["prompt_tokens"] == sum(u["input_tokens"] for u in usages)
    assert summary["usage"]["completion_tokens"] == sum(u["output_tokens"] for u in usages)
    assert summary["quality"]["by_model"][MODEL] == {"truncated": 1, "ok": 9}
    price = PriceBook.load(None).price_for(MODEL)
    assert price is not None
    expected_cost = sum(
        (u["input_tokens"] * price.input + u["output_tokens"] * price.output) / 1e6 for u in usages
    )
    assert summary["cost_usd"]["total"] == pytest.approx(expected_cost)

    again = ResponsesServer()
    assert run_online(cfg, again).exit_code == EXIT_OK
    assert again.sent == []  # a complete run is never sent again


def test_a_responses_file_runs_through_the_batch_api(tmp_path: Path) -> None:
    rows = [line(f"r{i}", ask(f"Sentiment of: I love item {i}")) for i in range(5)]
    rows.append(
        line("e", {"model": "text-embedding-3-small", "input": ["a", "b"]}, "/v1/embeddings")
    )
    path = write(tmp_path / "in.jsonl", rows)
    run_dir = tmp_path / "run"
    with SimThread(SimConfig()) as sim:
        cfg = Settings(
            input=str(path),
            out_dir=str(run_dir),
            base_url=sim.base_url,
            mode="batch",
            poll_interval=0.02,
            timeout=5.0,
            quiet=True,
            write_parquet=False,
            quality_breaker=0,
        )
        result = anyio.run(make_runner(cfg, None).run)
        endpoints = sorted(b.endpoint for b in sim.server.batches.listed())
    assert result.exit_code == EXIT_OK, result
    assert endpoints == ["/v1/embeddings", URL]
    lines = results(run_dir)
    assert sorted(lines) == sorted(r["custom_id"] for r in rows)
    assert all(
        lines[f"r{i}"]["response"]["body"]["output"][0]["content"][0]["text"] == "positive"
        for i in range(5)
    )
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["requests"]["succeeded"] == 6
    assert summary["by_model"][MODEL]["prompt_tokens"] == sum(
        lines[f"r{i}"]["response"]["body"]["usage"]["input_tokens"] for i in range(5)
    )
    assert summary["cost_usd"]["by_mode"]["batch"] > 0
