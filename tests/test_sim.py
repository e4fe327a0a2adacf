"""The simulator over real loopback HTTP: shapes, usage, faults, quotas, stats."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from batchrun._pacing import tokens
from batchrun.sim import SimConfig, SimServer, SimThread, running_sim
from batchrun.sim.content import make_reply
from batchrun.sim.schema import fake_value

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp runs on asyncio only


def ask(text: str = "hello there", model: str = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with running_sim(SimConfig()) as server:
        yield server


@pytest.fixture
async def client(sim: SimServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.base_url, timeout=10) as http:
        yield http


async def post(client: httpx.AsyncClient, body: Any, **kw: Any) -> httpx.Response:
    return await client.post("/chat/completions", json=body, **kw)


# -- a tiny JSON-schema validator (the subset the generator claims) -------------


def validate(value: Any, schema: Any, root: Any = None) -> None:
    root = schema if root is None else root
    if schema is True or schema == {}:
        return
    if "$ref" in schema:
        node = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return validate(value, node, root)
    if "const" in schema:
        assert value == schema["const"]
    if "enum" in schema:
        assert value in schema["enum"], (value, schema["enum"])
        return
    if "anyOf" in schema:
        errors = []
        for option in schema["anyOf"]:
            try:
                validate(value, option, root)
                return
            except AssertionError as exc:
                errors.append(exc)
        raise AssertionError(f"{value!r} matches no anyOf option: {errors}")
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
    }
    if kind is not None:
        assert any(checks[k](value) for k in kinds), (value, kind)
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for name in schema.get("required", []):
            assert name in value, (name, value)
        if schema.get("additionalProperties") is False:
            assert set(value) <= set(props), (value, props)
        for name, sub in props.items():
            if name in value:
                validate(value[name], sub, root)
    if isinstance(value, list):
        assert len(value) >= schema.get("minItems", 0)
        assert len(value) <= schema.get("maxItems", 10**9)
        for item in value:
            validate(item, schema.get("items", {}), root)
    if isinstance(value, int | float) and not isinstance(value, bool):
        assert value >= schema.get("minimum", -(10**18))
        assert value <= schema.get("maximum", 10**18)
    if isinstance(value, str):
        assert len(value) >= schema.get("minLength", 0)
        assert len(value) <= schema.get("maxLength", 10**9)


# -- plain completions --------------------------------------------------------------


async def test_completion_has_openai_shape_and_consistent_usage(
    client: httpx.AsyncClient,
) -> None:
    body = ask("Write one line about rivers.", metadata={"x": 1}, some_future_field=[1, 2])
    r = await post(client, body, headers={"Authorization": "Bearer whatever"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers["x-request-id"].startswith("req_")
    data = r.json()
    assert set(data) >= {"id", "object", "created", "model", "choices", "usage"}
    assert data["id"].startswith("chatcmpl-")
    assert data["object"] == "chat.completion"
    assert data["model"] == "gpt-4o-mini"
    assert data["system_fingerprint"].startswith("fp_")
    (choice,) = data["choices"]
    assert choice["index"] == 0 and choice["logprobs"] is None
    assert choice["finish_reason"] == "stop"
    message = choice["message"]
    assert message["role"] == "assistant" and message["refusal"] is None
    assert isinstance(message["content"], str) and message["content"]
    usage = data["usage"]
    assert usage["prompt_tokens"] == tokens.prompt_tokens(body)
    assert usage["completion_tokens"] == tokens.count_text(message["content"], "gpt-4o-mini")
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "audio_tokens": 0}
    assert usage["completion_tokens_details"] == {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    }


async def test_replies_are_deterministic_and_seeded(client: httpx.AsyncClient) -> None:
    body = ask("Tell me something.")
    first = (await post(client, body)).json()
    second = (await post(client, body)).json()
    assert first["id"] != second["id"]
    assert first["choices"] == second["choices"]
    assert first["choices"][0]["message"]["content"] == make_reply(body).choices[0].content
    other_seed = make_reply(body, seed=7).choices[0].content
    different = {make_reply(ask(f"Tell me {i}."), seed=7).choices[0].content for i in range(5)}
    assert len(different | {other_seed}) > 1


async def test_sentiment_prompt_gets_a_label(client: httpx.AsyncClient) -> None:
    text = "Classify the sentiment (positive or negative): this is the worst, awful product"
    data = (await post(client, ask(text))).json()
    assert data["choices"][0]["message"]["content"] == "negative"


async def test_long_prompt_gets_cached_tokens_in_128_steps(client: httpx.AsyncClient) -> None:
    seen = set()
    for i in range(8):
        body = ask(f"doc {i} " + "lorem ipsum dolor sit amet " * 400)
        usage = (await post(client, body)).json()["usage"]
        cached = usage["prompt_tokens_details"]["cached_tokens"]
        assert cached == 0 or (cached >= 1024 and cached % 128 == 0)
        assert cached <= usage["prompt_tokens"]
        seen.add(cached > 0)
    assert seen == {True, False}


async def test_max_tokens_truncates_with_length(client: httpx.AsyncClient) -> None:
    for key in ("max_tokens", "max_completion_tokens"):
        body = ask("Tell me a story.")
        body[key] = 3
        data = (await post(client, body)).json()
        choice = data["choices"][0]
        assert choice["finish_reason"] == "length"
        assert data["usage"]["completion_tokens"] <= 3
        assert tokens.count_text(choice["message"]["content"], "gpt-4o-mini") <= 3


async def test_n_gives_n_choices_and_summed_usage(client: httpx.AsyncClient) -> None:
    data = (await post(client, ask("Say something.", n=3))).json()
    assert [c["index"] for c in data["choices"]] == [0, 1, 2]
    contents = [c["message"]["content"] for c in data["choices"]]
    assert len(set(contents)) > 1
    expected = sum(tokens.count_text(c, "gpt-4o-mini") for c in contents)
    assert data["usage"]["completion_tokens"] == expected


async def test_multimodal_parts_are_accepted(client: httpx.AsyncClient) -> None:
    content = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA", "detail": "low"}},
        {"type": "image_url", "image_url": "https://example.com/cat.png"},
        {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-1"}},
        {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}},
    ]
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": content}]}
    r = await post(client, body)
    assert r.status_code == 200
    assert r.json()["usage"]["prompt_tokens"] == tokens.prompt_tokens(body)


# -- structured output, tools, reasoning ---------------------------------------------

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "label": {"type": "string", "enum": ["spam", "ham", "unsure"]},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "count": {"type": "integer", "minimum": 3, "maximum": 9},
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 4},
        "owner": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "email": {"type": ["string", "null"]}},
            "required": ["name", "email"],
            "additionalProperties": False,
        },
        "node": {"$ref": "#/$defs/node"},
    },
    "required": ["label", "score", "count", "ok", "tags", "owner", "node"],
    "additionalProperties": False,
    "$defs": {
        "node": {
            "type": "object",
            "properties": {
                "value": {"type": "integer"},
                "next": {"anyOf": [{"$ref": "#/$defs/node"}, {"type": "null"}]},
            },
            "required": ["value", "next"],
            "additionalProperties": False,
        }
    },
}


async def test_json_schema_output_validates(client: httpx.AsyncClient) -> None:
    labels = set()
    for i in range(12):
        fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}
        body = ask(f"Classify message {i}", response_format=fmt)
        data = (await post(client, body)).json()
        value = orjson.loads(data["choices"][0]["message"]["content"])
        validate(value, SCHEMA)
        labels.add(value["label"])
        assert (await post(client, body)).json()["choices"] == data["choices"]
    assert len(labels) > 1  # the enum pick follows the request


async def test_json_object_output_is_an_object(client: httpx.AsyncClient) -> None:
    body = ask("Reply in JSON", response_format={"type": "json_object"})
    data = (await post(client, body)).json()
    assert isinstance(orjson.loads(data["choices"][0]["message"]["content"]), dict)


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["c", "f"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit", "days"],
            "additionalProperties": False,
        },
    },
}
TIME_TOOL = {"type": "function", "function": {"name": "get_time", "parameters": {}}}


async def test_tools_give_tool_calls(client: httpx.AsyncClient) -> None:
    body = ask("Weather in Oslo?", tools=[WEATHER_TOOL, TIME_TOOL])
    body["tool_choice"] = {"type": "function", "function": {"name": "get_weather"}}
    data = (await post(client, body)).json()
    choice = data["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    message = choice["message"]
    assert message["content"] is None
    (call,) = message["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    arguments = orjson.loads(call["function"]["arguments"])
    validate(arguments, WEATHER_TOOL["function"]["parameters"])  # type: ignore[index]
    expected = tokens.count_text("get_weather") + tokens.count_text(call["function"]["arguments"])
    assert data["usage"]["completion_tokens"] == expected

    none = (await post(client, ask("Weather?", tools=[WEATHER_TOOL], tool_choice="none"))).json()
    assert none["choices"][0]["finish_reason"] == "stop"
    assert "tool_calls" not in none["choices"][0]["message"]


async def test_legacy_functions_give_function_call(client: httpx.AsyncClient) -> None:
    body = ask("Weather?", functions=[WEATHER_TOOL["function"]])
    choice = (await post(client, body)).json()["choices"][0]
    assert choice["finish_reason"] == "function_call"
    call = choice["message"]["function_call"]
    assert call["name"] == "get_weather"
    validate(orjson.loads(call["arguments"]), WEATHER_TOOL["function"]["parameters"])  # type: ignore[index]


@pytest.mark.parametrize("model", ["o3-mini", "deepseek-r1", "qwq-32b", "my-reasoner", "openai/o1"])
async def test_reasoning_models_report_reasoning(client: httpx.AsyncClient, model: str) -> None:
    data = (await post(client, ask("Is 17 prime?", model=model))).json()
    message = data["choices"][0]["message"]
    assert message["reasoning_content"]
    usage = data["usage"]
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning == tokens.count_text(message["reasoning_content"], model)
    assert usage["completion_tokens"] == reasoning + tokens.count_text(message["content"], model)


async def test_plain_model_has_no_reasoning(client: httpx.AsyncClient) -> None:
    data = (await post(client, ask("Is 17 prime?", model="gpt-4.1"))).json()
    assert "reasoning_content" not in data["choices"][0]["message"]


# -- schema values -------------------------------------------------------------------------

SCHEMAS: list[dict[str, Any]] = [
    SCHEMA,
    {"type": "string", "minLength": 20, "maxLength": 25},
    {"type": "string", "maxLength": 3},
    {"type": "integer", "minimum": 10, "maximum": 10},
    {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 3},
    {"type": "integer", "minimum": 1, "maximum": 50, "multipleOf": 7},
    {"type": "number", "minimum": -1.5, "maximum": -1.0},
    {"type": "array", "items": {"type": "boolean"}, "minItems": 5, "maxItems": 6},
    {"type": "array", "items": {"type": "integer"}, "maxItems": 0},
    {"enum": [1, "two", None]},
    {"const": {"fixed": True}},
    {"type": ["null", "integer"]},
    {"properties": {"a": {"items": {"type": "string"}}}, "required": ["a", "b"]},
    {"allOf": [{"properties": {"x": {"type": "integer"}}, "required": ["x"]}, {"required": ["y"]}]},
    {"type": "object", "additionalProperties": {"type": "integer"}},
    {
        "$defs": {
            "tree": {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/tree"}}},
                "required": ["kids"],
            }
        },
        "$ref": "#/$defs/tree",
    },
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_fake_values_validate(schema: dict[str, Any]) -> None:
    for seed in range(25):
        value = fake_value(schema, random.Random(seed))
        orjson.dumps(value)
        validate(value, schema)
        if "allOf" in schema:
            assert isinstance(value["x"], int) and "y" in value
        assert fake_value(schema, random.Random(seed)) == value


def test_string_formats() -> None:
    rng = random.Random(4)
    assert "@" in fake_value({"type": "string", "format": "email"}, rng)
    assert fake_value({"type": "string", "format": "date"}, rng).count("-") == 2
    assert fake_value({"type": "string", "format": "date-time"}, rng).endswith("Z")
    assert len(fake_value({"type": "string", "format": "uuid"}, rng)) == 36


# -- streaming ------------------------------------------------------------------------


def sse_events(text: str) -> list[Any]:
    events: list[Any] = []
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("data: "):
                payload = line.removeprefix("data: ")
                events.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return events


def assemble(events: list[Any]) -> dict[int, dict[str, Any]]:
    """Rebuild each choice's message the way a client must."""
    out: dict[int, dict[str, Any]] = {}
    for event in events:
        if event == "[DONE]" or "error" in event:
            continue
        for choice in event["choices"]:
            slot = out.setdefault(
                choice["index"], {"content": "", "reasoning": "", "calls": {}, "finish": None}
            )
            delta = choice["delta"]
            slot["content"] += delta.get("content") or ""
            slot["reasoning"] += delta.get("reasoning_content") or ""
            for call in delta.get("tool_calls") or []:
                entry = slot["calls"].setdefault(call["index"], {"name": "", "arguments": ""})
                entry["id"] = call.get("id", entry.get("id"))
                function = call.get("function", {})
                entry["name"] += function.get("name") or ""
                entry["arguments"] += function.get("arguments") or ""
            if choice["finish_reason"]:
                slot["finish"] = choice["finish_reason"]
    return out


async def test_stream_assembles_to_the_same_content(client: httpx.AsyncClient) -> None:
    body = ask("Tell me about the sea.", n=2, stream_options={"include_usage": True})
    plain = (await post(client, body)).json()
    r = await post(client, {**body, "stream": True})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"] == plain["usage"]
    chunks = events[:-2]
    assert all(c["object"] == "chat.completion.chunk" and c["usage"] is None for c in chunks)
    assert len({c["id"] for c in events[:-1]}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    built = assemble(events)
    for choice in plain["choices"]:
        slot = built[choice["index"]]
        assert slot["content"] == choice["message"]["content"]
        assert slot["finish"] == "stop"
    content_deltas = [c for c in chunks if c["choices"][0]["delta"].get("content")]
    assert len(content_deltas) > 2  # really split into several deltas


async def test_stream_without_include_usage_has_no_usage_chunk(
    client: httpx.AsyncClient,
) -> None:
    events = sse_events((await post(client, ask("Hi.", stream=True))).text)
    assert events[-1] == "[DONE]"
    assert all("usage" not in e for e in events[:-1])


async def test_stream_reasoning_and_tool_calls(client: httpx.AsyncClient) -> None:
    body = ask("Weather?", model="o4-mini", tools=[WEATHER_TOOL])
    plain = (await post(client, body)).json()["choices"][0]["message"]
    events = sse_events((await post(client, {**body, "stream": True})).text)
    slot = assemble(events)[0]
    assert slot["reasoning"] == plain["reasoning_content"]
    assert slot["finish"] == "tool_calls"
    call = slot["calls"][0]
    assert call["id"] == plain["tool_calls"][0]["id"]
    assert call["name"] == "get_weather"
    assert call["arguments"] == plain["tool_calls"][0]["function"]["arguments"]
    argument_deltas = [
        e
        for e in events[:-1]
        if (e["choices"][0]["delta"].get("tool_calls") or [{}])[0]
        .get("function", {})
        .get("arguments")
    ]
    assert len(argument_deltas) > 1


async def test_stream_legacy_function_call_and_comments() -> None:
    async with running_sim(SimConfig(stream_comments=True)) as sim:
        async with httpx.AsyncClient(base_url=sim.base_url) as client:
            body = ask("Weather?", functions=[WEATHER_TOOL["function"]])
            plain = (await post(client, body)).json()["choices"][0]["message"]["function_call"]
            text = (await post(client, {**body, "stream": True})).text
    assert text.startswith(": keep-alive\n\n")
    events = sse_events(text)
    name = arguments = ""
    for event in events[:-1]:
        call = event["choices"][0]["delta"].get("function_call") or {}
        name += call.get("name", "")
        arguments += call.get("arguments", "")
    assert (name, arguments) == (plain["name"], plain["arguments"])
    assert events[-2]["choices"][0]["finish_reason"] == "function_call"


async def test_stream_faults_truncate_and_error_inside_200() -> None:
    config = SimConfig(fail_first={"TORN": ["truncate"], "OOPS": ["stream_error"]})
    async with running_sim(config) as sim, httpx.AsyncClient(base_url=sim.base_url) as client:
        torn = sse_events((await post(client, ask("TORN", stream=True))).text)
        assert "[DONE]" not in torn
        assert all(c["choices"][0]["finish_reason"] is None for c in torn)
        oops = sse_events((await post(client, ask("OOPS", stream=True))).text)
        assert "[DONE]" not in oops
        assert oops[-1]["error"]["type"] == "server_error"
        # the second attempt of the same body is clean
        again = sse_events((await post(client, ask("TORN", stream=True))).text)
        assert again[-1] == "[DONE]"
        assert sim.stats.faults == {"truncate": 1, "stream_error": 1}


async def test_stream_fault_rates_and_abort() -> None:
    config = SimConfig(truncate_rate=1.0, truncate_abort=True)
    async with running_sim(config) as sim, httpx.AsyncClient(base_url=sim.base_url) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await post(client, ask("Hi.", stream=True))
        assert (await post(client, ask("Hi."))).status_code == 200  # only streams are torn


async def test_stream_pacing_first_token_and_chunk_delay() -> None:
    config = SimConfig(first_token_ms=60, chunk_delay_ms=5)
    async with running_sim(config) as sim, httpx.AsyncClient(base_url=sim.base_url) as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        async with client.stream("POST", "/chat/completions", json=ask("Hi.", stream=True)) as r:
            headers_at = loop.time() - start
            await r.aread()
            total = loop.time() - start
        assert total - headers_at >= 0.05  # the first token came well after the headers
        assert total >= 0.06


# -- bad requests, auth ---------------------------------------------------------------

BAD_BODIES = [
    (b"{not json", None, "invalid_json"),
    (b"[1, 2]", None, "invalid_type"),
    (orjson.dumps({"messages": [{"role": "user", "content": "x"}]}), "model", None),
    (orjson.dumps({"model": "m"}), "messages", "missing_required_parameter"),
    (orjson.dumps({"model": "m", "messages": "hi"}), "messages", "invalid_type"),
    (orjson.dumps({"model": "m", "messages": []}), "messages", "empty_array"),
    (orjson.dumps({"model": "m", "messages": [{"content": "x"}]}), "messages[0].role", None),
    (
        orjson.dumps({"model": "m", "messages": [{"role": "user"}, {"role": "robot"}]}),
        "messages[1].role",
        "invalid_value",
    ),
]


@pytest.mark.parametrize(("raw", "param", "code"), BAD_BODIES)
async def test_bad_requests_get_400_envelope(
    client: httpx.AsyncClient, raw: bytes, param: str | None, code: str | None
) -> None:
    r = await client.post("/chat/completions", content=raw)
    assert r.status_code == 400
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["message"]
    assert error["param"] == param
    if code:
        assert error["code"] == code


async def test_large_bodies_are_read(client: httpx.AsyncClient) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 3_000_000}}
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": [image]}]}
    assert (await post(client, body)).status_code == 200
    async with running_sim(SimConfig(max_body_bytes=1000)) as small:
        r = await client.post(small.base_url + "/chat/completions", json=body)
        assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


async def test_all_roles_accepted_and_unknown_paths_404(
    sim: SimServer, client: httpx.AsyncClient
) -> None:
    roles = ["system", "developer", "user", "assistant", "tool", "function"]
    body = {"model": "m", "messages": [{"role": role, "content": "x"} for role in roles]}
    assert (await post(client, body)).status_code == 200
    assert (await client.post("/completions", json=body)).status_code == 404
    r = await client.post(sim.url + "/chat/completions", json=body)
    assert r.status_code == 200  # the /v1-less path too


async def test_require_key() -> None:
    secret = "sk-sim-test-value"
    async with running_sim(SimConfig(require_key=secret)) as sim:
        async with httpx.AsyncClient(base_url=sim.base_url) as client:
            for headers in ({}, {"Authorization": "Bearer nope"}, {"api-key": "nope"}):
                r = await post(client, ask(), headers=headers)
                assert r.status_code == 401
                assert r.json()["error"]["code"] == "invalid_api_key"
                assert r.json()["error"]["type"] == "invalid_request_error"
                assert "nope" not in r.text
            good = (
                {"Authorization": f"Bearer {secret}"},
                {"Authorization": secret},
                {"api-key": secret},
            )
            for headers in good:
                assert (await post(client, ask(), headers=headers)).status_code == 200
            stats = (await client.get(sim.url + "/_sim/stats")).text
        assert secret not in stats and secret not in repr(sim.config)


# -- error injection --------------------------------------------------------------------


async def test_scripted_sequence_per_request() -> None:
    config = SimConfig(fail_first={"row-7": [429, 503]}, retry_after=2.5)
    async with running_sim(config) as sim, httpx.AsyncClient(base_url=sim.base_url) as client:
        body = ask("classify row-7 please")
        first = await post(client, body)
        assert first.status_code == 429
        assert first.headers["Retry-After"] == "3"
        assert first.headers["retry-after-ms"] == "2500"
        assert first.json()["error"]["code"] == "rate_limit_exceeded"
        second = await post(client, body)
        assert second.status_code == 503
        assert second.json()["error"]["type"] == "server_error"
        assert (await post(client, body)).status_code == 200
        assert (await post(client, body)).status_code == 200
        # another body with the same marker plays the script from the start
        assert (await post(client, ask("row-7 second row"))).status_code == 429
        assert (await post(client, ask("unrelated"))).status_code == 200
        # scripts can be added while running, with fault names
        sim.fail_first("row-9", "reset", "garbage", "insufficient_quota", 200)
        body9 = ask("row-9")
        with pytest.raises(httpx.RemoteProtocolError):
            await post(client, body9)
        garbage = await post(client, body9)
        assert garbage.status_code == 200 and garbage.text.startswith("<html>")
        final = await post(client, body9)
        assert final.status_code == 429 and final.json()["error"]["code"] == "insufficient_quota"
        assert "Retry-After" not in final.headers
        assert (await post(client, body9)).status_code == 200
        stats = sim.stats
        assert stats.by_status[429] == 3 and stats.rate_limited == 3
        assert stats.by_status[503] == 1
        assert stats.faults["reset"] == 1 and stats.faults["garbage"] == 1


async def test_non_stream_truncate_and_error_in_200() -> None:
    config = SimConfig(fail_first={"TORN": ["truncate"], "OOPS": ["stream_error"]})
    async with running_sim(config) as sim, httpx.AsyncClient(base_url=sim.base_url) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await post(client, ask("TORN"))
        oops = await post(client, ask("OOPS"))
        assert oops.status_code == 200 and "error" in oops.json()
        assert (await post(client, ask("TORN"))).status_code == 200


async def test_error_rates_draw_from_seeded_rng() -> None:
    config = SimConfig(error_rates={503: 0.5, 500: 0.2}, seed=3)
    async with running_sim(config) as sim, httpx.AsyncClient(base_url=sim.base_url) as client:
        statuses = [(await post(client, ask(f"q{i}"))).status_code for i in range(60)]
    counts = {s: statuses.count(s) for s in set(statuses)}
    assert set(counts) == {200, 500, 503}
    assert 15 <= counts[503] <= 45
    assert sim.stats.by_status[503] == counts[503]
    async with running_sim(config) as again, httpx.AsyncClient(base_url=again.base_url) as client:
        replay = [(await post(client, ask(f"q{i}"))).status_code for i in range(60)]
    assert replay == statuses


def test_config_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        SimConfig(error_rates={503: 0.7, 429: 0.5})
    with pytest.raises(ValueError):
        SimConfig(fail_first={"x": ["explode"]})
    with pytest.raises(ValueError):
        SimConfig(rpm=0)


# -- quotas over HTTP with an injected clock --------------------------------------------


async def test_rpm_quota_with_injected_clock() -> None:
    clock = FakeClock()
    async with running_sim(SimConfig(rpm=3), now=clock) as sim:
        async with httpx.AsyncClient(base_url=sim.base_url) as client:
            remaining = []
            for _ in range(3):
                r = await post(client, ask())
                assert r.status_code == 200
                assert r.headers["x-ratelimit-limit-requests"] == "3"
                remaining.append(r.headers["x-ratelimit-remaining-requests"])
            assert remaining == ["2", "1", "0"]
            assert r.headers["x-ratelimit-reset-requests"] == "1m0s"
            refused = await post(client, ask())
            assert refused.status_code == 429
            assert refused.headers["Retry-After"] == "20"
            assert refused.headers["retry-after-ms"] == "20000"
            assert refused.json()["error"]["code"] == "rate_limit_exceeded"
            assert refused.headers["x-ratelimit-remaining-requests"] == "0"
            # another key has its own bucket
            other = await post(client, ask(), headers={"Authorization": "Bearer other"})
            assert other.status_code == 200
            clock.t += 19.5
            refused = await post(client, ask())
            assert refused.headers["Retry-After"] == "1"
            assert refused.headers["retry-after-ms"] == "500"
            clock.t += 0.5
            ok = await post(client, ask())
            assert ok.status_code == 200
            assert ok.headers["x-ratelimit-reset-requests"] == "1m0s"
            assert "x-ratelimit-limit-tokens" not in ok.headers
        assert sim.stats.rate_limited == 2


async def test_tpm_quota_counts_prompt_and_max_tokens() -> None:
    clock = FakeClock()
    async with running_sim(SimConfig(tpm=1000), now=clock) as sim:
        async with httpx.AsyncClient(base_url=sim.base_url) as client:
            body = ask("hi", max_tokens=300, n=2)
            cost = tokens.prompt_tokens(body) + 600
            r = await post(client, body)
            assert r.status_code == 200
            assert r.headers["x-ratelimit-remaining-tokens"] == str(1000 - cost)
            refused = await post(client, body)
            assert refused.status_code == 429
            assert refused.json()["error"]["type"] == "tokens"
            wait = (2 * cost - 1000) * 60 / 1000
            assert int(refused.headers["retry-after-ms"]) == pytest.approx(wait * 1000, abs=1)
            clock.t += wait
            assert (await post(client, body)).status_code == 200
            too_big = await post(client, ask("hi", max_tokens=5000))
            assert too_big.status_code == 429
            assert "too large" in too_big.json()["error"]["message"]


# -- stats, concurrency, thread runner ---------------------------------------------------


async def test_stats_count_concurrency_and_bodies() -> None:
    clock = FakeClock()
    async with running_sim(SimConfig(latency_ms=80, record_bodies=3), now=clock) as sim:
        async with httpx.AsyncClient(base_url=sim.base_url) as client:
            results = await asyncio.gather(*(post(client, ask(f"c{i}")) for i in range(6)))
            assert all(r.status_code == 200 for r in results)
            await client.post("/chat/completions", content=b"nope")
            stats = (await client.get(sim.url + "/_sim/stats")).json()
    assert stats["requests"] == 7
    assert stats["by_status"] == {"200": 6, "400": 1}
    assert stats["max_in_flight"] == 6 and stats["in_flight"] == 0
    assert stats["arrivals"] == [1000.0] * 7
    assert len(stats["bodies"]) == 3
    assert stats["bodies"][-1]["model"] == "gpt-4o-mini"


def test_sim_thread_serves_sync_clients() -> None:
    with SimThread(SimConfig(fail_first={"x1": [500]})) as sim:
        assert sim.base_url.startswith("http://127.0.0.1:")
        with httpx.Client(base_url=sim.base_url) as client:
            assert client.post("/chat/completions", json=ask("x1")).status_code == 500
            assert client.post("/chat/completions", json=ask("x1")).status_code == 200
            sim.fail_first("x2", 502)
            assert client.post("/chat/completions", json=ask("x2")).status_code == 502
        snap = sim.snapshot()
        assert snap["requests"] == 3 and snap["by_status"] == {"200": 1, "500": 1, "502": 1}
        sim.reset()
        assert sim.stats.requests == 0
    with pytest.raises(httpx.ConnectError):
        httpx.post(sim.base_url + "/chat/completions", json=ask())


def test_sim_thread_reports_bind_failure() -> None:
    with SimThread() as first:
        with pytest.raises(OSError):
            SimThread(port=first.port).start()
