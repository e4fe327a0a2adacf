"""Confidence from logprobs against the answers of llama.cpp's llama-server, replayed by
a loopback fake (real sockets) that answers as the engine does.

The answers are those of llama-server (llama.cpp b1-0c1e570, as vendored by
llama-cpp-python 0.3.36) running SmolLM2-135M-Instruct Q4_1, at temperature 0, to the
request of scripts/check_llama_logprobs.py (top alternatives trimmed). The engine's ways
that matter here, read from its tools/server/server-common.cpp and seen on the wire:

* ``logprobs: true`` without ``top_logprobs`` gets 20 alternatives per token (its
  default ``n_probs``); ``top_logprobs: 0`` gets no ``logprobs`` at all;
* tokens carry ``id``, ``token``, ``bytes`` and ``logprob``; the JSON answer's tokens
  hold a Markdown fence (```json ... ```) that the message content leaves out, and the
  end-of-generation token is an empty one;
* a plain answer asked for one label may be a sentence that is none of them.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import batchrun
from batchrun._confidence import ConfidenceReader
from batchrun._engine.stops import EXIT_OK
from batchrun._values import Confidence

LABELS = ("positive", "negative", "neutral")
SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"type": "string", "enum": list(LABELS)}},
    "required": ["sentiment"],
    "additionalProperties": False,
}
Token = tuple[int, str, float, list[tuple[int, str, float]]]

JSON_CONTENT = '{\n  "sentiment": "negative"\n}'
JSON_TOKENS: list[Token] = [
    (3725, "```", -9.132436, [(1348, "This", -1.485856), (504, "The", -2.023347)]),
    (5518, "json", -4.232935, [(5367, "python", -1.036795), (198, "\n", -1.189551)]),
    (198, "\n", -0.01026, [(198, "\n", -0.01026), (83, "c", -5.658768)]),
    (107, "{", -0.038647, [(107, "{", -0.038647), (39428, '{"', -3.917816)]),
    (3805, "\n ", -0.25766, [(3805, "\n ", -0.25766), (472, "\n   ", -1.653965)]),
    (476, ' "', -0.020706, [(476, ' "', -0.020706), (21358, ' "_', -4.023403)]),
    (99, "s", -6.255508, [(2058, "type", -1.295292), (6311, "status", -2.478548)]),
    (10142, "enti", -8.926857, [(42, ":", -0.777493), (2461, "ender", -1.881203)]),
    (358, "ment", -8.332047, [(79, "_", -0.868516), (29, "-", -1.74327)]),
    (1799, '":', -1.7375, [(1799, '":', -1.7375), (42, ":", -2.170403)]),
    (476, ' "', -0.958529, [(476, ' "', -0.958529), (1662, " {", -1.236634)]),
    (17728, "negative", -2.215292, [
        (17728, "negative", -2.215292), (16185, "positive", -3.089461), (86, "f", -3.290894),
        (24550, "avoid", -3.343176), (504, "The", -3.543833), (42529, "Negative", -3.598505),
        (30627, "neutral", -4.262598),
    ]),
    (18, '"', -0.839015, [(1002, '",', -0.720771), (18, '"', -0.839015)]),
    (198, "\n", -0.022175, [(198, "\n", -0.022175), (3805, "\n ", -4.266445)]),
    (109, "}", -0.003173, [(109, "}", -0.003173), (18206, '}"', -6.979157)]),
    (198, "\n", -0.015464, [(198, "\n", -0.015464), (3725, "```", -4.485553)]),
    (3725, "```", -0.058094, [(3725, "```", -0.058094), (198, "\n", -3.497324)]),
    (2, "", -0.986571, [(198, "\n", -0.485045), (2, "", -0.986571)]),
]  # fmt: skip
LABEL_LOGPROB = -2.215292  # the token "negative"

PLAIN_CONTENT = "The battery died after two days and no one answered."
PLAIN_TOKENS: list[Token] = [
    (504, "The", -1.628633, [(504, "The", -1.628633), (1348, "This", -2.628553)]),
    (6979, " battery", -0.41811, [(6979, " battery", -0.41811), (2731, " positive", -3.98437)]),
    (4242, " died", -0.27028, [(4242, " died", -0.27028), (436, " was", -2.733788)]),
    (990, " after", -0.281634, [(990, " after", -0.281634), (827, " two", -2.993254)]),
    (827, " two", -0.107309, [(827, " two", -0.107309), (216, " ", -2.747127)]),
    (2009, " days", -0.00322, [(2009, " days", -0.00322), (3737, " weeks", -6.292108)]),
    (284, " and", -0.554923, [(284, " and", -0.554923), (30, ".", -1.578301)]),
    (787, " no", -1.179471, [(787, " no", -1.179471), (1199, " support", -2.14345)]),
    (582, " one", -1.311591, [(582, " one", -1.311591), (1199, " support", -1.425285)]),
    (11739, " answered", -1.192143, [(11739, " answered", -1.192143), (436, " was", -1.925793)]),
    (30, ".", -0.396197, [(30, ".", -0.396197), (260, " the", -2.703239)]),
    (2, "", -0.712609, [(2, "", -0.712609), (9124, " Avoid", -2.240639)]),
]  # fmt: skip


def _entry(token_id: int, text: str, logprob: float) -> dict[str, Any]:
    return {"id": token_id, "token": text, "bytes": list(text.encode()), "logprob": logprob}


def llama_answer(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """What llama-server answers a chat request: its logprobs rules, its shape."""
    if body.get("logprobs"):
        n_probs = body.get("top_logprobs", 20)
    elif body.get("top_logprobs") is not None:
        message = "top_logprobs requires logprobs to be set to true"
        return 400, {"error": {"code": 400, "message": message, "type": "invalid_request_error"}}
    else:
        n_probs = 0
    plain = "response_format" not in body
    content, tokens = (PLAIN_CONTENT, PLAIN_TOKENS) if plain else (JSON_CONTENT, JSON_TOKENS)
    choice: dict[str, Any] = {
        "finish_reason": "stop",
        "index": 0,
        "message": {"role": "assistant", "content": content},
    }
    if n_probs > 0:
        choice["logprobs"] = {
            "content": [
                {**_entry(i, t, lp), "top_logprobs": [_entry(*alt) for alt in alts[:n_probs]]}
                for i, t, lp, alts in tokens
            ]
        }
    usage = {"completion_tokens": len(tokens), "prompt_tokens": 40}
    usage["total_tokens"] = usage["completion_tokens"] + 40
    answer = {
        "choices": [choice],
        "created": 1796604938,
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "system_fingerprint": "b1-0c1e570",
        "object": "chat.completion",
        "usage": {**usage, "prompt_tokens_details": {"cached_tokens": 0}},
        "id": "chatcmpl-Mqe1ytTLQYl8HcAxsMBO9XK4qBABvbTj",
        "timings": {"cache_n": 0, "prompt_n": 40, "predicted_n": len(tokens)},
    }
    return 200, answer


def llama_response(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """What llama-server answers /v1/responses: "completed" even when it stopped at
    ``max_output_tokens``, and the limit not echoed (seen on 0c1e570)."""
    words = ["The", " cat", " sat", " on", " the", " mat", " and", " purred", ".", ""]
    used = min(int(body.get("max_output_tokens") or 10_000), len(words))
    text = "".join(words[:used])
    answer = {
        "id": "resp_llama",
        "object": "response",
        "created_at": 1796604938,
        "status": "completed",
        "model": body.get("model"),
        "output": [
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "usage": {
            "input_tokens": 38,
            "output_tokens": used,
            "total_tokens": 38 + used,
            "input_tokens_details": {"cached_tokens": 0},
        },
    }
    return 200, answer


def llama_embeddings(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """What llama-server answers /v1/embeddings: its model's size (384 for MiniLM),
    whatever ``dimensions`` asked (seen on 0c1e570)."""
    texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
    data = [
        {"object": "embedding", "index": i, "embedding": [0.01 * (i + 1)] * 384}
        for i in range(len(texts))
    ]
    usage = {"prompt_tokens": 5 * len(texts), "total_tokens": 5 * len(texts)}
    return 200, {"object": "list", "model": body.get("model"), "data": data, "usage": usage}


class _Handler(BaseHTTPRequestHandler):
    server: _LlamaServer

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.seen.append(body)
        if self.path.endswith("/responses"):
            status, answer = llama_response(body)
        elif self.path.endswith("/embeddings"):
            status, answer = llama_embeddings(body)
        else:
            status, answer = llama_answer(body)
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _LlamaServer(ThreadingHTTPServer):
    seen: list[dict[str, Any]]


@pytest.fixture
def llama() -> Iterator[_LlamaServer]:
    server = _LlamaServer(("127.0.0.1", 0), _Handler)
    server.seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def run_reviews(tmp_path: Path, server: _LlamaServer, **kw: Any) -> list[dict[str, Any]]:
    rows = [{"id": f"r{i}", "text": f"review {i}"} for i in range(4)]
    run = batchrun.run(
        rows,
        tmp_path / "run",
        model="smollm2",
        base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
        id_column="id",
        prompt="Review: {text}",
        temperature=0,
        quality_breaker=0,
        quiet=True,
        **kw,
    )
    assert run.exit_code == EXIT_OK
    return pq.read_table(tmp_path / "run" / "results.parquet").to_pylist()


def test_the_fake_answers_top_logprobs_as_llama_server_does() -> None:
    ask = {"messages": [], "logprobs": True, "response_format": {"type": "json_object"}}
    no_count = llama_answer(ask)[1]["choices"][0]["logprobs"]["content"]
    assert len(no_count[11]["top_logprobs"]) == 7  # all it holds: the engine sends 20
    assert "logprobs" not in llama_answer({**ask, "top_logprobs": 0})[1]["choices"][0]
    assert llama_answer({"messages": [], "top_logprobs": 2})[0] == 400


def test_top_logprobs_0_reads_the_raw_probability_though_the_engine_sends_20(
    tmp_path: Path, llama: _LlamaServer
) -> None:
    table = run_reviews(
        tmp_path,
        llama,
        response_format=SCHEMA,
        confidence=Confidence("logprobs", label_field="sentiment", top_logprobs=0),
    )
    # batchrun asks as OpenAI documents it (no top_logprobs), so llama-server shows
    # alternatives all the same: they must not turn the raw probability into a
    # normalised one (0.646 here, against the engine's 0.109)
    assert {(b["logprobs"], "top_logprobs" in b) for b in llama.seen} == {(True, False)}
    assert [(r["sentiment"], r["confidence"]) for r in table] == [
        ("negative", pytest.approx(math.exp(LABEL_LOGPROB), rel=1e-9))
    ] * 4


def test_top_logprobs_5_normalises_over_the_labels_the_engine_shows(
    tmp_path: Path, llama: _LlamaServer
) -> None:
    table = run_reviews(
        tmp_path,
        llama,
        response_format=SCHEMA,
        confidence=Confidence("logprobs", label_field="sentiment", top_logprobs=5),
    )
    assert {b["top_logprobs"] for b in llama.seen} == {5}
    # of the first 5 alternatives only "positive" is another label; "neutral" (7th) is
    # not shown, so it may hold up to the least shown ("The", -3.543833): counted so
    p, other = math.exp(LABEL_LOGPROB), math.exp(-3.089461)
    hidden = math.exp(-3.543833)
    assert [r["confidence"] for r in table] == [
        pytest.approx(p / (p + other + hidden), rel=1e-9)
    ] * 4


@pytest.mark.parametrize("top", [0, 5])
def test_an_answer_that_is_no_label_keeps_its_raw_probability(
    tmp_path: Path, llama: _LlamaServer, top: int
) -> None:
    table = run_reviews(
        tmp_path, llama, confidence=Confidence("logprobs", labels=LABELS, top_logprobs=top)
    )
    # a sentence where one label was asked for: no other label among the first token's
    # alternatives made it 1.0 (p / (p + 0)); it is the engine's probability instead
    raw = math.exp(sum(lp for _, _, lp, _ in PLAIN_TOKENS[:-1]))
    assert raw < 0.001
    assert [(r["content"], r["confidence"]) for r in table] == [
        (PLAIN_CONTENT, pytest.approx(raw, rel=1e-9))
    ] * 4


def test_the_reader_alone_without_the_requests_count_keeps_normalising() -> None:
    _, answer = llama_answer({"messages": [], "logprobs": True, "response_format": {}})
    p = math.exp(LABEL_LOGPROB)
    others = math.exp(-3.089461) + math.exp(-4.262598)
    reader = ConfidenceReader("logprobs", label_field="sentiment", labels=LABELS)
    assert reader.read(answer).confidence == pytest.approx(p / (p + others), rel=1e-9)
    told = ConfidenceReader("logprobs", label_field="sentiment", labels=LABELS, top_logprobs=0)
    assert told.read(answer).confidence == pytest.approx(p, rel=1e-9)


def quality_of(
    tmp_path: Path, server: _LlamaServer, lines: list[dict[str, Any]], **kw: Any
) -> dict[str, str | None]:
    """Run request ``lines`` against the fake engine: each line's quality verdict."""
    path = tmp_path / "requests.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    run = batchrun.run(
        path,
        tmp_path / "run",
        base_url=f"http://127.0.0.1:{server.server_address[1]}/v1",
        quality_breaker=0,
        quiet=True,
        **kw,
    )
    assert run.exit_code == EXIT_OK
    written = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    return {line["custom_id"]: line["batchrun"].get("quality") for line in map(json.loads, written)}


def test_a_responses_answer_cut_at_max_output_tokens_is_truncated_though_completed(
    tmp_path: Path, llama: _LlamaServer
) -> None:
    """llama-server says "completed" at the limit and echoes no limit: an answer that
    used every token its request allowed counts as truncated, one that stopped short
    as ok (OpenAI would have said "incomplete")."""
    lines = [
        {"custom_id": "cut", "method": "POST", "url": "/v1/responses",
         "body": {"model": "smollm2", "input": "A story", "max_output_tokens": 4}},
        {"custom_id": "whole", "method": "POST", "url": "/v1/responses",
         "body": {"model": "smollm2", "input": "A story", "max_output_tokens": 64}},
    ]  # fmt: skip
    assert quality_of(tmp_path, llama, lines) == {"cut": "truncated", "whole": None}


def test_vectors_of_another_size_than_dimensions_asked_are_a_schema_error(
    tmp_path: Path, llama: _LlamaServer
) -> None:
    """llama-server ignores ``dimensions``: 384 floats where 128 were asked is not a
    good answer (it would land in the user's index at the wrong size)."""
    lines = [
        {"custom_id": "asked", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "minilm", "input": "The battery was great.", "dimensions": 128}},
        {"custom_id": "plain", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "minilm", "input": "The battery was great."}},
    ]  # fmt: skip
    quality = quality_of(tmp_path, llama, lines, dedupe=False)
    assert quality == {"asked": "schema_error", "plain": None}
