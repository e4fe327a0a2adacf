"""Embeddings requests (issue 28, below the run lifecycle): request lines with url
``/v1/embeddings`` checked before sending, counted, priced, classified, sent to the
right path, answered by the simulator (online, streamed never, and in batches, with
the official ``openai`` SDK as client), and a plain request-file run end to end,
online and through the Batch API. Plus the Arrow helper for the vectors.

Unit tests use plain functions and ``httpx.MockTransport`` with an injected clock;
the simulator runs on loopback for the HTTP and SDK tests.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import openai
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchrun._api import hooks_for, make_runner
from batchrun._apis import EMBEDDINGS, RESPONSES, api_of_body, embedding_inputs
from batchrun._batch.shards import ShardPlanner
from batchrun._cache.store import api_scope, cacheable
from batchrun._cost.bill import cost_of
from batchrun._cost.prices import PriceBook
from batchrun._engine.hooks import RunHooks, RunState
from batchrun._engine.stops import EXIT_OK
from batchrun._input.select import source_for
from batchrun._input.sources import Source, request_from_row
from batchrun._models import Outcome
from batchrun._output.quality import NO_CHOICES, OK, classify
from batchrun._output.usage import usage_of
from batchrun._output.vectors import answer_vectors, decode_vector, vectors_array
from batchrun._pacing.tokens import (
    completion_ceiling,
    count_text,
    prompt_tokens,
    prompt_tokens_at_most,
)
from batchrun._settings import Settings
from batchrun._transport.client import ChatClient
from batchrun.errors import BadResponse, InputError
from batchrun.sim import SimConfig, SimThread
from batchrun.sim.embeddings import embedding_vector, embeddings_object, native_dimensions
from tests.conftest import FakeTime

MODEL = "text-embedding-3-small"
URL = "/v1/embeddings"


def line(custom_id: str, body: dict[str, Any], url: str = URL) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def embed(text: Any, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "input": text, **extra}


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def floats(value: Any) -> list[float]:
    """A vector as sent (floats, or base64 float32) as floats."""
    if isinstance(value, str):
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return list(value)


# -- the input check ------------------------------------------------------------------
def test_an_embeddings_line_is_a_request_for_the_embeddings_api() -> None:
    req = request_from_row(
        line("e1", embed(["a", "b"], dimensions=64)), 1, "line 1", default_model=None, path="f"
    )
    assert req.api == EMBEDDINGS
    assert req.body == embed(["a", "b"], dimensions=64)  # passed through unchanged
    assert request_from_row(
        line("e1", {"input": "a"}), 1, "line 1", default_model=MODEL, path="f"
    ).body == {"input": "a", "model": MODEL}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": MODEL}, "body has no 'input' (the text to embed)"),
        (embed(""), "'input' is an empty string"),
        (embed([]), "'input' is an empty list"),
        (embed(["a", ""]), "input[1] is an empty string"),
        (embed(["a", 3]), "input[1] must be a string like the others (got a number)"),
        (embed([1, -2]), "input[1]: a list of token ids holds only whole numbers"),
        (embed([[1, 2], []]), "input[1] must be a non-empty list of token ids"),
        (embed({"text": "a"}), "'input' must be a string, a list of strings or a list of token"),
        (embed(["a"] * 2049), "'input' holds 2,049 inputs; one request takes at most 2,048"),
        (embed("a", dimensions=0), "'dimensions' must be a positive integer"),
        (embed("a", dimensions="64"), "'dimensions' must be a positive integer (got a string)"),
        (embed("a", dimensions=True), "'dimensions' must be a positive integer (got a boolean)"),
        (embed("a", encoding_format="float16"), "'encoding_format' must be float or base64"),
        (embed("a", user=7), "'user' must be a string"),
        (embed("a", stream=True), "embeddings are not streamed"),
        (embed("a", dimension=64), "unknown field 'dimension' (did you mean 'dimensions'?)"),
        (
            {"model": MODEL, "messages": [{"role": "user", "content": "a"}]},
            "'messages' is not an embeddings field; an embeddings request takes 'input'",
        ),
    ],
)
def test_a_bad_embeddings_body_is_named_by_file_and_line(
    tmp_path: Path, body: dict[str, Any], message: str
) -> None:
    path = write(tmp_path / "in.jsonl", [line("ok", embed("fine")), line("bad", body)])
    with pytest.raises(InputError) as err:
        Source(str(path)).scan()
    assert str(err.value).startswith(f"{path}:line 2: ")
    assert message in str(err.value)


def test_unknown_fields_a_server_adds_pass(tmp_path: Path) -> None:
    # vLLM's own field is not one letter off a documented one: it goes as it is
    path = write(tmp_path / "in.jsonl", [line("a", embed("x", truncate_prompt_tokens=512))])
    (req,) = Source(str(path)).requests()
    assert req.body["truncate_prompt_tokens"] == 512


def test_a_bare_body_without_its_url_is_told_to_give_it(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", [embed("text")])
    with pytest.raises(InputError, match=r'"url": "/v1/embeddings"'):
        Source(str(path)).scan()


def test_an_input_over_the_models_window_is_a_bad_row_set_aside(tmp_path: Path) -> None:
    long = "word " * 9000  # about 9,000 tokens, over text-embedding-3-small's 8,192
    rows = [line("a", embed(["short", long])), line("b", embed("fine"))]
    path = write(tmp_path / "in.jsonl", rows)
    cfg = Settings(input=str(path), out_dir=str(tmp_path / "run"))
    with pytest.raises(InputError) as err:
        source_for(cfg).scan()
    tokens = count_text(long, MODEL)
    assert str(err.value) == (
        f"{path}:line 1: input[1] has {tokens:,} tokens, over {MODEL}'s limit of 8,192 "
        "tokens an input"
    )
    skipping = Settings(input=str(path), out_dir=str(tmp_path / "run"), skip_invalid=True)
    assert [r.custom_id for r in source_for(skipping).requests()] == ["b"]


# -- tokens, usage, prices, quality -----------------------------------------------------
def test_tokens_count_every_input_with_the_models_tokenizer() -> None:
    body = embed(["hello world", "a longer sentence to embed", [1, 2, 3]])
    expected = count_text("hello world", MODEL) + count_text("a longer sentence to embed", MODEL)
    assert prompt_tokens(body, api=EMBEDDINGS) == expected + 3
    assert prompt_tokens(body) == expected + 3  # read from the body's shape: a list of texts
    assert prompt_tokens(embed([5, 6, 7, 8]), api=EMBEDDINGS) == 4  # one input of token ids
    assert prompt_tokens_at_most(body, EMBEDDINGS) >= prompt_tokens(body, api=EMBEDDINGS)
    # an answer of vectors has no completion tokens, whatever the default
    assert completion_ceiling(body, default_max=256, api=EMBEDDINGS) == 0
    assert completion_ceiling(embed("x", dimensions=8), default_max=256) == 0
    # the simulator bills what batchrun estimates
    assert embeddings_object(body)["usage"]["prompt_tokens"] == prompt_tokens(body, api=EMBEDDINGS)


def test_the_shape_of_a_body_names_its_api() -> None:
    assert api_of_body(embed("x", dimensions=8)) == EMBEDDINGS
    assert api_of_body(embed("x", encoding_format="base64")) == EMBEDDINGS
    assert api_of_body({"model": "m", "input": ["x", "y"]}) == EMBEDDINGS  # texts, not items
    assert api_of_body({"model": "m", "input": [{"role": "user", "content": "x"}]}) == RESPONSES
    assert api_of_body({"model": "m", "input": "x"}) == RESPONSES  # either: the dearer one
    assert embedding_inputs(embed(["a", "b", "c"])) == 3
    assert embedding_inputs(embed([1, 2, 3])) == 1


def test_usage_and_price_of_an_embeddings_answer() -> None:
    usage = usage_of(
        {"object": "list", "data": [], "usage": {"prompt_tokens": 8, "total_tokens": 8}}
    )
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (8, 0, 8)
    price = PriceBook.load(None).price_for(MODEL)
    assert price is not None and price.input == 0.02  # genai-prices' OpenAI entry
    assert cost_of(usage, price).total == pytest.approx(8 * 0.02 / 1e6)
    assert PriceBook.load(None).price_for("text-embedding-3-large").input == 0.13  # type: ignore[union-attr]


def test_quality_of_embeddings_answers() -> None:
    good = embeddings_object(embed(["a", "b"], dimensions=4))
    assert classify(good).category == OK
    assert classify(good).finish_reason is None
    empty = {"object": "list", "data": [], "usage": {"prompt_tokens": 1}}
    assert classify(empty).category == NO_CHOICES and classify(empty).detail == "'data' is empty"
    ragged = {"object": "list", "data": [{"embedding": [1.0, 2.0]}, {"embedding": [1.0]}]}
    assert classify(ragged).detail == "data[1] has 1 dimensions, data[0] 2"
    assert classify({"object": "list", "data": [{"index": 0}]}).category == NO_CHOICES
    words = {"object": "list", "data": [{"embedding": ["a", "b"]}]}
    assert classify(words).detail == "data[0].embedding is not a list of numbers"


def test_embeddings_are_cacheable_and_keyed_apart_from_responses() -> None:
    # nothing is sampled: deterministic without temperature 0
    assert cacheable(embed("x"), api=EMBEDDINGS)
    assert not cacheable({"model": "m", "input": "x"}, api=RESPONSES)
    assert cacheable({"model": "m", "input": "x"}, api=EMBEDDINGS)
    assert api_scope("sim", EMBEDDINGS) != api_scope("sim", RESPONSES)


# -- the client ------------------------------------------------------------------------
def test_the_client_posts_to_the_embeddings_path_and_keeps_the_body() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json=embeddings_object(json.loads(request.content)))

    async def main() -> Any:
        client = ChatClient(
            base_url="http://test/v1?api-version=1", transport=httpx.MockTransport(handler)
        )
        return await client.send(embed(["a", "b"], dimensions=3), api=EMBEDDINGS)

    reply = anyio.run(main)
    assert seen == ["http://test/v1/embeddings?api-version=1"]
    assert reply.body == embeddings_object(embed(["a", "b"], dimensions=3))


@pytest.mark.parametrize(
    "answer",
    [
        {"object": "list", "data": [{"index": 0, "embedding": [0.1]}]},  # one vector for two
        {"object": "list", "data": [{"index": 0, "embedding": [0.1]}] * 2},  # index twice
        {"object": "list", "data": []},
        {"object": "list"},
    ],
)
def test_an_answer_that_cannot_be_paired_with_its_inputs_is_retryable(answer: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=answer)

    async def main() -> Any:
        client = ChatClient(base_url="http://test/v1", transport=httpx.MockTransport(handler))
        return await client.send(embed(["a", "b"]), api=EMBEDDINGS)

    with pytest.raises(BadResponse) as err:
        anyio.run(main)
    assert err.value.code == "invalid_embeddings"
    assert err.value.retryable


def test_embeddings_are_never_streamed_even_with_stream_on(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", [line("a", embed("x"))])
    cfg = Settings(input=str(path), out_dir=str(tmp_path / "run"), stream=True)
    (req,) = source_for(cfg).requests()
    assert "stream" not in req.body


# -- the Arrow helper ------------------------------------------------------------------
def test_vectors_become_one_fixed_size_float32_array() -> None:
    b64 = base64.b64encode(struct.pack("<3f", 1.0, -2.5, 0.25)).decode()
    arr = vectors_array([[1.0, -2.5, 0.25], None, b64])
    assert arr.type == pa.list_(pa.float32(), 3)
    assert arr.to_pylist() == [[1.0, -2.5, 0.25], None, [1.0, -2.5, 0.25]]
    assert arr.null_count == 1
    # the values are one contiguous float32 buffer: a (rows, dim) matrix without copying
    matrix = arr.values.to_numpy(zero_copy_only=True).reshape(-1, 3)
    assert matrix.shape == (3, 3) and matrix.dtype.name == "float32"
    assert vectors_array([], dim=8).type == pa.list_(pa.float32(), 8)


def test_vectors_of_other_sizes_or_not_vectors_are_refused() -> None:
    with pytest.raises(ValueError, match="vector 1 has 2 dimensions, not 3"):
        vectors_array([[1.0, 2.0, 3.0], [1.0, 2.0]])
    with pytest.raises(ValueError, match="not whole float32 values"):
        decode_vector(base64.b64encode(b"12345").decode())
    with pytest.raises(ValueError, match="not base64"):
        decode_vector("not base64!")
    with pytest.raises(ValueError, match="not a float32 number"):
        decode_vector([1.0, "x"])
    with pytest.raises(ValueError, match="give dim"):
        vectors_array([None])


def test_vectors_of_a_base64_answer_round_trip_through_parquet(tmp_path: Path) -> None:
    answer = embeddings_object(
        embed(["one", "two", "one"], encoding_format="base64", dimensions=16)
    )
    answer["data"].reverse()  # a server may list them in any order: the index decides
    vectors = answer_vectors(answer)
    table = pa.table({"embedding": vectors_array(vectors)})
    pq.write_table(table, tmp_path / "v.parquet")
    back = pq.read_table(tmp_path / "v.parquet").column("embedding").combine_chunks()
    assert back.type == pa.list_(pa.float32(), 16)
    rows = back.to_pylist()
    assert rows[0] == rows[2] != rows[1]  # identical texts, identical vectors
    assert rows[0] == embedding_vector("one", MODEL, 16)
    with pytest.raises(ValueError, match="index"):
        answer_vectors(
            {"data": [{"index": 1, "embedding": [1.0]}, {"index": 1, "embedding": [2.0]}]}
        )


# -- the simulator ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    with SimThread(SimConfig(require_key="sk-sim")) as server:
        yield server


def post(sim: SimThread, body: Any) -> httpx.Response:
    return httpx.post(
        f"{sim.base_url}/embeddings", json=body, headers={"Authorization": "Bearer sk-sim"}
    )


def test_sim_vectors_are_deterministic_unit_float32_and_dimensions_shorten_them(
    sim: SimThread,
) -> None:
    answer = post(sim, embed(["same text", "other", "same text"])).json()
    vectors = [d["embedding"] for d in answer["data"]]
    assert [d["index"] for d in answer["data"]] == [0, 1, 2]
    assert vectors[0] == vectors[2] != vectors[1]
    assert len(vectors[0]) == native_dimensions(MODEL) == 1536
    assert math.isclose(math.hypot(*vectors[0]), 1.0, rel_tol=1e-5)
    assert all(struct.unpack("<f", struct.pack("<f", x))[0] == x for x in vectors[0])
    tokens = 2 * count_text("same text", MODEL) + count_text("other", MODEL)
    assert answer["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert answer["model"] == MODEL and answer["object"] == "list"
    short = post(sim, embed("same text", dimensions=256)).json()["data"][0]["embedding"]
    assert len(short) == 256
    # the first 256 values of the full vector, normalised again
    norm = math.hypot(*vectors[0][:256])
    assert short == pytest.approx([x / norm for x in vectors[0][:256]], rel=1e-5)
    assert (
        len(
            post(sim, {"model": "text-embedding-3-large", "input": "x"}).json()["data"][0][
                "embedding"
            ]
        )
        == 3072
    )
    assert (
        len(post(sim, {"model": "gemma-3-270m", "input": "x"}).json()["data"][0]["embedding"])
        == 640
    )


def test_sim_vectors_are_the_same_with_numpy_or_without() -> None:
    from batchrun.sim import embeddings

    for i in range(200):
        for model, dims in ((MODEL, None), ("text-embedding-3-large", 100), ("gemma", 7)):
            draws = embeddings._draws(f"text {i}" * (i % 7), model, dims)
            assert embeddings._unit_numpy(draws).tolist() == embeddings._unit_pure(draws).tolist()


def test_sim_base64_is_the_same_float32_vector(sim: SimThread) -> None:
    plain = post(sim, embed("hello", dimensions=32)).json()["data"][0]["embedding"]
    packed = post(sim, embed("hello", dimensions=32, encoding_format="base64")).json()
    assert isinstance(packed["data"][0]["embedding"], str)
    assert floats(packed["data"][0]["embedding"]) == plain


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (
            {"model": "text-embedding-ada-002", "input": "x", "dimensions": 8},
            400,
            "does not support",
        ),
        (embed("x", dimensions=4000), 400, "Must be between 1 and 1536"),
        (embed(""), 400, "'$.input' is invalid"),
        (embed(["x"] * 2049), 400, "at most 2048"),
        (embed("word " * 9000), 400, "maximum context length is 8192"),
        (embed("x", encoding_format="int8"), 400, "'float' and 'base64'"),
        ({"input": "x"}, 400, "you must provide a model"),
    ],
)
def test_sim_refuses_what_openai_refuses(
    sim: SimThread, body: dict[str, Any], status: int, fragment: str
) -> None:
    response = post(sim, body)
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]


def test_the_official_sdk_embeds_through_the_simulator(sim: SimThread) -> None:
    client = openai.OpenAI(base_url=sim.base_url, api_key="sk-sim", max_retries=0)
    # the SDK asks for base64 by default and decodes it itself
    result = client.embeddings.create(model=MODEL, input=["alpha", "beta"], dimensions=12)
    assert [d.embedding for d in result.data] == [
        embedding_vector("alpha", MODEL, 12),
        embedding_vector("beta", MODEL, 12),
    ]
    assert result.usage.prompt_tokens == 2
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MODEL, input="")


def test_the_official_sdk_runs_an_embeddings_batch(sim: SimThread) -> None:
    client = openai.OpenAI(base_url=sim.base_url, api_key="sk-sim", max_retries=0)
    content = "".join(
        json.dumps(line(f"r{i}", embed([f"text {i}", "shared"], dimensions=4))) + "\n"
        for i in range(3)
    )
    upload = client.files.create(file=("in.jsonl", content.encode()), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    sim.advance_batches()
    done = client.batches.retrieve(batch.id)
    assert (done.status, done.endpoint, done.request_counts.completed) == (
        "completed",
        "/v1/embeddings",
        3,
    )
    out = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    by_id = {row["custom_id"]: row["response"]["body"] for row in out}
    for i in range(3):
        data = by_id[f"r{i}"]["data"]
        assert data[0]["embedding"] == embedding_vector(f"text {i}", MODEL, 4)
        assert data[1]["embedding"] == embedding_vector("shared", MODEL, 4)


def test_sim_fails_an_embeddings_batch_over_50000_inputs(sim: SimThread) -> None:
    client = openai.OpenAI(base_url=sim.base_url, api_key="sk-sim", max_retries=0)
    rows = [line(f"r{i}", embed(["a"] * 2048)) for i in range(25)]  # 51,200 inputs
    content = "".join(json.dumps(r) + "\n" for r in rows).encode()
    upload = client.files.create(file=("in.jsonl", content), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    sim.advance_batches()
    failed = client.batches.retrieve(batch.id)
    assert failed.status == "failed"
    assert failed.errors is not None
    assert "51,200 embedding inputs" in (failed.errors.data[0].message or "")


def test_shards_hold_one_endpoint_and_at_most_50000_embedding_inputs() -> None:
    planner = ShardPlanner(max_requests=50_000, max_bytes=10**9)
    placed = [planner.place(f"{MODEL}\nembeddings", 100, 2048).shard for _ in range(25)]
    assert placed == [1] * 24 + [2]  # 24 x 2,048 = 49,152; the 25th would pass 50,000
    assert planner.place("gpt-4o-mini", 100).shard == 3  # chat rows count no inputs
    assert [s.inputs for s in planner.close_all()] == [2048, 0]


# -- a request-file run, end to end -------------------------------------------------
class EmbeddingsServer:
    """An embeddings endpoint (the simulator's answers) that counts what it was sent."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.sent: list[dict[str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.paths.append(request.url.path)
        self.sent.append(body)
        return httpx.Response(200, json=embeddings_object(body))


class StopAfter(RunHooks):
    """Acts like a Ctrl-C once ``n`` lines have been written."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.written = 0

    def on_written(self, state: RunState, batch: list[Outcome]) -> str | None:
        self.written += len(batch)
        return "SIGINT" if self.written >= self.n else None


def run_online(cfg: Settings, server: Any, hooks: RunHooks | None = None) -> Any:
    """A run as the library makes it (its cost, outputs and report hooks), over a
    MockTransport and an injected clock."""
    fake = FakeTime()
    runner = make_runner(
        cfg,
        None,
        hooks=hooks_for(cfg, [hooks] if hooks is not None else []),
        transport=httpx.MockTransport(server),
        clock=fake.clock,
        sleep=fake.sleep,
    )
    return anyio.run(runner.run)


def results(run_dir: Path) -> dict[str, dict[str, Any]]:
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    return {r["custom_id"]: r for r in map(json.loads, lines)}


def test_an_embeddings_file_runs_online_end_to_end_and_resumes(tmp_path: Path) -> None:
    rows = [
        line(f"e{i}", embed([f"text {i}", f"more {i}"], dimensions=8, encoding_format="base64"))
        for i in range(12)
    ]
    path = write(tmp_path / "in.jsonl", rows)
    run_dir = tmp_path / "run"
    cfg = Settings(
        input=str(path), out_dir=str(run_dir), base_url="http://test/v1", concurrency=2, quiet=True
    )
    first = EmbeddingsServer()
    run_online(cfg, first, StopAfter(5))
    done = set(results(run_dir))
    assert 5 <= len(done) < 12
    assert set(first.paths) == {"/v1/embeddings"}

    second = EmbeddingsServer()
    assert run_online(cfg, second).exit_code == EXIT_OK
    resent = {b["input"][0] for b in second.sent}
    assert resent.isdisjoint({f"text {cid[1:]}" for cid in done})  # nothing answered again
    lines = results(run_dir)
    assert sorted(lines) == sorted(f"e{i}" for i in range(12))  # every row once
    for i in range(12):
        body = lines[f"e{i}"]["response"]["body"]
        assert body == embeddings_object(rows[i]["body"])  # the server's body, unmodified
        assert floats(body["data"][1]["embedding"]) == embedding_vector(f"more {i}", MODEL, 8)
    summary = json.loads((run_dir / "summary.json").read_text())
    tokens = sum(prompt_tokens(r["body"], api=EMBEDDINGS) for r in rows)
    assert summary["requests"]["succeeded"] == 12
    assert summary["usage"]["prompt_tokens"] == tokens
    assert summary["usage"]["completion_tokens"] == 0
    assert summary["by_model"][MODEL]["prompt_tokens"] == tokens
    assert summary["cost_usd"]["by_model"][MODEL]["total"] == pytest.approx(tokens * 0.02 / 1e6)
    assert summary["cost_usd"]["complete"] is True
    assert summary["quality"]["by_model"][MODEL] == {"ok": 12}


def test_identical_embeddings_requests_are_sent_once(tmp_path: Path) -> None:
    same = embed(["repeat me"], dimensions=4)
    rows = [line("a", same), line("b", same), line("c", embed(["other"], dimensions=4))]
    path = write(tmp_path / "in.jsonl", rows)
    cfg = Settings(
        input=str(path), out_dir=str(tmp_path / "run"), base_url="http://test/v1", quiet=True
    )
    server = EmbeddingsServer()
    assert run_online(cfg, server).exit_code == EXIT_OK
    assert len(server.sent) == 2  # in-run dedupe: an embedding is deterministic
    lines = results(tmp_path / "run")
    assert lines["a"]["response"]["body"] == lines["b"]["response"]["body"]


def test_an_embeddings_file_runs_through_the_batch_api(tmp_path: Path) -> None:
    rows = [line(f"e{i}", embed([f"t{i}"] * 2048, dimensions=1)) for i in range(26)]
    rows.append(
        {
            "custom_id": "chat",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        }
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
        stats = sim.snapshot()
        endpoints = sorted(b.endpoint for b in sim.server.batches.listed())
    assert result.exit_code == EXIT_OK, result
    # 26 x 2,048 inputs: two embeddings batches (50,000 inputs at most), one chat batch
    assert endpoints == ["/v1/chat/completions", "/v1/embeddings", "/v1/embeddings"]
    assert stats["batches_created"] == 3
    lines = results(run_dir)
    assert len(lines) == 27
    for i in range(26):
        data = lines[f"e{i}"]["response"]["body"]["data"]
        assert len(data) == 2048 and data[0]["embedding"] == embedding_vector(f"t{i}", MODEL, 1)
    summary = json.loads((run_dir / "summary.json").read_text())
    tokens = 2048 * sum(count_text(f"t{i}", MODEL) for i in range(26))
    assert summary["by_model"][MODEL]["prompt_tokens"] == tokens
