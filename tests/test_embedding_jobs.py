"""Dataset jobs for the embeddings and Responses APIs (issue 28, part 2).

``api = "embeddings"``: each row's text (``[prompt] input``) is embedded; rows are
packed many to a request on the wire and split back into one line per row, so resume,
dedupe and results.parquet work per row; a pack refused as a bad request is split to
find the bad row. ``api = "responses"``: system/user become instructions/input.
results.parquet's ``embedding`` column is ``fixed_size_list<float32>[dim]``, and
`Run.embeddings` reads it as one numpy matrix.

Unit tests use plain functions and ``httpx.MockTransport`` (the simulator's own answer
functions behind it) with an injected clock; the Python API test runs the simulator.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batchrun
from batchrun._engine.packing import halves, pack_requests, unpack
from batchrun._engine.stops import EXIT_OK
from batchrun._jobs.jobfile import load_job
from batchrun._models import Attempt, Outcome, Request
from batchrun._pacing.tokens import count_text
from batchrun._settings import Settings
from batchrun.errors import ConfigError
from batchrun.sim.embeddings import embedding_vector, embeddings_object
from batchrun.sim.responses import response_object, response_reply
from tests.test_embeddings_api import StopAfter, floats, results, run_online

MODEL = "text-embedding-3-small"


def rows_file(path: Path, n: int, text: Any = None) -> Path:
    text = text or (lambda i: f"body of {i}")
    path.write_text(
        "".join(
            json.dumps({"id": f"r{i}", "title": f"T{i}", "text": text(i)}) + "\n" for i in range(n)
        )
    )
    return path


def embed_settings(tmp_path: Path, n: int = 40, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "input": str(rows_file(tmp_path / "in.jsonl", n)),
        "out_dir": str(tmp_path / "run"),
        "base_url": "http://test/v1",
        "model": MODEL,
        "api": "embeddings",
        "embed_input": "{title}\n{text}",
        "id_column": "id",
        "request": {"dimensions": 8},
        "quiet": True,
        "concurrency": 4,
    }
    values.update(extra)
    return Settings.build(**values)


class Embedder:
    """An embeddings endpoint (the simulator's answers) recording each request; a text
    holding ``bad`` makes the whole request a 400, as a real server refuses it."""

    def __init__(self, status: int = 400) -> None:
        self.sent: list[dict[str, Any]] = []
        self.status = status

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.sent.append(body)
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        if any("bad" in t for t in texts):
            error = {"message": "input is bad", "type": "invalid_request_error", "code": None}
            return httpx.Response(self.status, json={"error": error})
        return httpx.Response(200, json=embeddings_object(body))

    @property
    def inputs(self) -> list[str]:
        return [
            t
            for b in self.sent
            for t in (b["input"] if isinstance(b["input"], list) else [b["input"]])
        ]


def row_vector(line: dict[str, Any]) -> list[float]:
    data = line["response"]["body"]["data"]
    assert len(data) == 1
    return floats(data[0]["embedding"])


# -- settings ------------------------------------------------------------------------


def test_api_is_one_setting_with_its_rules() -> None:
    assert Settings.build(input="x.jsonl", api="responses", prompt="{q}").api == "responses"
    with pytest.raises(ConfigError, match="must be one of chat, embeddings, responses"):
        Settings.build(input="x.jsonl", api="embedding", prompt="{q}")
    problems = Settings(input="x.jsonl", embed_input="{t}").problems()
    assert problems == ["embed_input=: the text to embed, only with api='embeddings'"]
    problems = Settings(input="x.jsonl", api="embeddings").problems()
    assert problems and "needs a prompt (embed_input= or prompt=)" in problems[0]
    problems = Settings(input="x.jsonl", api="embeddings", prompt="{t}", system="s").problems()
    assert problems == [
        "system=: an embeddings request has no messages and no answer text; "
        "not with api='embeddings'"
    ]
    problems = Settings(
        input="x.jsonl", api="embeddings", prompt="{t}", embed_batch=5000
    ).problems()
    assert problems == [
        "embed_batch=: at most 2,048 inputs go in one embeddings request (got 5,000)"
    ]
    problems = Settings(
        input="x.jsonl", api="embeddings", embed_input="{t}", prompts={"a": {"user": "{t}"}}
    ).problems()
    assert problems == [
        "embed_input= and prompts=: give the text to embed or named variants of it, not both"
    ]
    assert Settings(input="x.jsonl", prompt="{t}", embed_batch=5).problems() == [
        "embed_batch=: packs rows to embed, only with api='embeddings'"
    ]
    # a chat job's fingerprint is what it was before there were other APIs
    assert "api" not in Settings(input="x.jsonl", prompt="{t}").fingerprint()
    assert Settings(input="x.jsonl", api="embeddings", prompt="{t}").fingerprint()["api"] == (
        "embeddings"
    )


def test_a_job_file_declares_the_api_and_the_text_to_embed(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(
        '[input]\npath = "in.jsonl"\n'
        '[request]\napi = "embeddings"\nmodel = "text-embedding-3-small"\n'
        "dimensions = 256\nembed_batch = 100\n"
        '[prompt]\ninput = "{title}\\n{text}"\n'
    )
    rows_file(tmp_path / "in.jsonl", 2)
    settings = load_job(job).settings()
    assert (settings.api, settings.embed_input, settings.embed_batch) == (
        "embeddings",
        "{title}\n{text}",
        100,
    )
    assert settings.request == {"dimensions": 256}


def test_dataset_rows_become_bodies_of_their_api(tmp_path: Path) -> None:
    from batchrun._input.select import source_for

    path = rows_file(tmp_path / "in.jsonl", 1)
    cfg = Settings.build(
        input=str(path), model=MODEL, api="embeddings", embed_input="{title}\n{text}",
        request={"dimensions": 8, "temperature": 0},
    )  # fmt: skip
    (req,) = source_for(cfg).requests()
    assert req.api == "embeddings"
    assert req.body == {
        "model": MODEL, "dimensions": 8, "encoding_format": "base64", "input": "T0\nbody of 0"
    }  # fmt: skip
    schema = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    cfg = Settings.build(
        input=str(path), model="gpt-4.1-mini", api="responses", system="Be brief about {title}.",
        prompt="{text}", response_format=schema,
        request={"max_tokens": 50, "reasoning_effort": "low"},
    )  # fmt: skip
    (req,) = source_for(cfg).requests()
    assert req.api == "responses"
    assert req.body == {
        "model": "gpt-4.1-mini",
        "max_output_tokens": 50,
        "reasoning": {"effort": "low"},
        "instructions": "Be brief about T0.",
        "input": "body of 0",
        "text": {
            "format": {"type": "json_schema", "name": "response", "schema": schema, "strict": True}
        },
    }


# -- packing -------------------------------------------------------------------------


def row(i: int, text: str = "", **body: Any) -> Request:
    return Request(f"r{i}", {"model": MODEL, "input": text or f"t{i}", **body}, i, api="embeddings")


def test_rows_are_packed_up_to_the_inputs_and_tokens_of_a_request() -> None:
    packs = list(pack_requests(iter([row(i) for i in range(10)]), max_inputs=4))
    assert [len(p.members or ()) for p in packs] == [4, 4, 2]
    assert packs[0].body["input"] == ["t0", "t1", "t2", "t3"]
    assert packs[0].custom_id == "r0" and "encoding_format" not in packs[0].body  # as rows ask
    # the token cap: 3 tokens each, at most 7 a request
    packs = list(pack_requests(iter([row(i) for i in range(5)]), max_tokens=7, tokens=lambda r: 3))
    assert [len(p.members or ()) for p in packs] == [2, 2, 0]
    assert packs[-1].custom_id == "r4" and packs[-1].members is None  # one row goes alone
    # rows asking other fields are never in one pack; another API's request goes alone
    chat = Request("c", {"model": "m", "messages": []}, 9)
    mixed = [row(0), row(1, dimensions=4), row(2, dimensions=4), chat, row(3)]
    shapes = [
        p.body.get("dimensions") if p.members is None else len(p.members)
        for p in pack_requests(iter(mixed))
    ]
    assert shapes == [None, 2, None, None]
    assert [p.custom_id for p in pack_requests(iter(mixed))] == ["r0", "r1", "c", "r3"]


def test_a_packs_answer_is_one_outcome_per_row_with_its_vector_and_usage_share() -> None:
    (pack,) = pack_requests(
        iter([row(0, "a"), row(1, "a b c"), row(2, "a b c d e f g")]), max_inputs=8
    )
    body = embeddings_object(pack.body)
    body["usage"] = {"prompt_tokens": 100, "total_tokens": 100}  # not what we counted
    answer = Outcome.success(
        pack, status=200, request_id="q", body=body, attempts=[Attempt(200, "ok")]
    )
    rows = unpack(answer, pack)
    assert [r.custom_id for r in rows] == ["r0", "r1", "r2"]
    assert [floats(r.body["data"][0]["embedding"]) for r in rows] == [
        embedding_vector(t, MODEL) for t in ("a", "a b c", "a b c d e f g")
    ]
    shares = [r.body["usage"]["prompt_tokens"] for r in rows]
    assert sum(shares) == 100 and shares[0] < shares[1] < shares[2]
    from batchrun._ids import body_hash

    assert [r.body_hash for r in rows] == [
        body_hash(json.dumps(m.body, separators=(",", ":")).encode()) for m in pack.members or ()
    ]
    # a failure is every row's; an answer short of a vector pairs none
    failed = Outcome.failure(pack, code="server_error", message="x", attempts=[], status=500)
    assert [(r.custom_id, r.ok) for r in unpack(failed, pack)] == [
        ("r0", False), ("r1", False), ("r2", False)
    ]  # fmt: skip
    body["data"] = body["data"][:2]
    short = Outcome.success(pack, status=200, request_id="q", body=body, attempts=[])
    assert {r.error["code"] for r in unpack(short, pack) if r.error} == {"invalid_embeddings"}
    first, second = halves(pack)
    assert first.members is None and first.custom_id == "r0"
    assert [m.custom_id for m in second.members or ()] == ["r1", "r2"]


# -- runs ----------------------------------------------------------------------------


def test_an_embeddings_job_packs_rows_and_writes_a_vector_per_row(tmp_path: Path) -> None:
    cfg = embed_settings(tmp_path, 40, embed_batch=16)
    server = Embedder()
    assert run_online(cfg, server).exit_code == EXIT_OK
    assert [len(b["input"]) for b in server.sent] == [16, 16, 8]
    lines = results(tmp_path / "run")
    assert sorted(lines) == sorted(f"r{i}" for i in range(40))  # a line per row
    for i in range(40):
        assert row_vector(lines[f"r{i}"]) == embedding_vector(f"T{i}\nbody of {i}", MODEL, 8)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    tokens = sum(count_text(f"T{i}\nbody of {i}", MODEL) for i in range(40))
    assert summary["usage"]["prompt_tokens"] == tokens
    assert summary["requests"]["succeeded"] == 40
    assert summary["packing"] == {"requests": 3, "rows": 40, "split": 0}
    table = pq.read_table(tmp_path / "run" / "results.parquet")
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 8)
    assert table.column("custom_id").to_pylist() == [f"r{i}" for i in range(40)]
    matrix = batchrun.open(str(tmp_path / "run")).embeddings()
    assert matrix.shape == (40, 8) and matrix.dtype == np.float32
    assert matrix[7].tolist() == embedding_vector("T7\nbody of 7", MODEL, 8)


def test_the_default_pack_is_as_many_rows_as_a_request_takes(tmp_path: Path) -> None:
    cfg = embed_settings(tmp_path, 2100, concurrency=1)
    server = Embedder()
    assert run_online(cfg, server).exit_code == EXIT_OK
    assert [len(b["input"]) for b in server.sent] == [2048, 52]
    assert {b["encoding_format"] for b in server.sent} == {"base64"}
    # vectors asked as JSON floats (4x the bytes): packs of 512, to stay well within
    # --max-response-bytes
    floats = Settings.build(
        **{**_given(cfg), "out_dir": str(tmp_path / "floats"),
           "request": {"dimensions": 8, "encoding_format": "float"}}
    )  # fmt: skip
    server = Embedder()
    assert run_online(floats, server).exit_code == EXIT_OK
    assert [len(b["input"]) for b in server.sent] == [512, 512, 512, 512, 52]
    assert row_vector(results(tmp_path / "floats")["r7"]) == embedding_vector(
        "T7\nbody of 7", MODEL, 8
    )


@pytest.mark.parametrize("status", [400, 413])
def test_a_bad_row_in_a_pack_is_found_by_halving_and_the_others_get_their_vectors(
    tmp_path: Path, status: int
) -> None:
    cfg = embed_settings(tmp_path, 16, embed_batch=16, concurrency=1)
    rows_file(tmp_path / "in.jsonl", 16, text=lambda i: "bad one" if i == 11 else f"good {i}")
    server = Embedder(status)
    run_online(cfg, server)
    # depth first: 16 -> 8 ok, 8 bad -> (4 bad -> (2 ok, 2 bad -> (1 ok, 1 bad)), 4 ok)
    assert [len(b["input"]) if isinstance(b["input"], list) else 1 for b in server.sent] == [
        16, 8, 8, 4, 2, 2, 1, 1, 4
    ]  # fmt: skip
    lines = results(tmp_path / "run")
    assert len(lines) == 15 and "r11" not in lines
    errors = [json.loads(x) for x in (tmp_path / "run" / "errors.jsonl").read_text().splitlines()]
    assert [e["custom_id"] for e in errors] == ["r11"]
    assert errors[0]["error"]["attempts"][-1]["status"] == status
    assert row_vector(lines["r12"]) == embedding_vector("T12\ngood 12", MODEL, 8)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["packing"] == {"requests": 9, "rows": 16, "split": 4}


def _given(cfg: Settings) -> dict[str, Any]:
    return {
        "input": cfg.input, "out_dir": cfg.out_dir, "base_url": cfg.base_url, "model": cfg.model,
        "api": cfg.api, "embed_input": cfg.embed_input, "id_column": cfg.id_column,
        "request": dict(cfg.request), "quiet": True, "concurrency": cfg.concurrency,
        "embed_batch": cfg.embed_batch,
    }  # fmt: skip


def test_a_stopped_packed_run_resumes_row_by_row(tmp_path: Path) -> None:
    cfg = embed_settings(tmp_path, 60, embed_batch=8, concurrency=1)
    first = Embedder()
    run_online(cfg, first, StopAfter(20))
    done = set(results(tmp_path / "run"))
    assert 20 <= len(done) < 60
    second = Embedder()
    assert run_online(cfg, second).exit_code == EXIT_OK
    assert set(second.inputs).isdisjoint(f"T{c[1:]}\nbody of {c[1:]}" for c in done)
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    assert len(lines) == 60  # every row once
    for one in map(json.loads, lines):
        i = one["custom_id"][1:]
        assert row_vector(one) == embedding_vector(f"T{i}\nbody of {i}", MODEL, 8)


def test_identical_texts_are_embedded_once(tmp_path: Path) -> None:
    cfg = embed_settings(tmp_path, 30)
    cfg = Settings.build(**{**_given(cfg), "embed_input": "{text}"})
    rows_file(tmp_path / "in.jsonl", 30, text=lambda i: f"same {i % 3}")
    server = Embedder()
    assert run_online(cfg, server).exit_code == EXIT_OK
    assert sorted(server.inputs) == ["same 0", "same 1", "same 2"]
    lines = results(tmp_path / "run")
    assert len(lines) == 30
    assert (
        row_vector(lines["r4"]) == row_vector(lines["r1"]) == embedding_vector("same 1", MODEL, 8)
    )


def test_a_responses_job_runs_its_rows_through_the_responses_api(tmp_path: Path) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []

    def server(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        sent.append((request.url.path, body))
        answer = response_object(response_reply(body), body, f"resp_{len(sent)}", 0)
        return httpx.Response(200, json=answer)

    schema = {
        "type": "object",
        "properties": {"topic": {"type": "string"}, "score": {"type": "integer"}},
        "required": ["topic", "score"],
        "additionalProperties": False,
    }
    cfg = Settings.build(
        input=str(rows_file(tmp_path / "in.jsonl", 5)), out_dir=str(tmp_path / "run"),
        base_url="http://test/v1", model="gpt-4.1-mini", api="responses", system="Sum up.",
        prompt="{title}: {text}", id_column="id", quiet=True, request={"reasoning_effort": "low"},
        response_format=schema,
    )  # fmt: skip
    assert run_online(cfg, server).exit_code == EXIT_OK
    assert {path for path, _ in sent} == {"/v1/responses"}
    assert sent[0][1]["instructions"] == "Sum up." and sent[0][1]["reasoning"] == {"effort": "low"}
    assert sent[0][1]["text"]["format"]["schema"] == schema
    table = pq.read_table(tmp_path / "run" / "results.parquet")
    assert table.column("status").to_pylist() == ["succeeded"] * 5
    # the same content and typed columns as a chat job's
    assert all(
        json.loads(c).keys() == {"topic", "score"} for c in table.column("content").to_pylist()
    )
    assert table.schema.field("score").type == pa.int64()
    assert table.column("parse_error").to_pylist() == [None] * 5


def test_python_run_returns_the_table_and_the_matrix(tmp_path: Path) -> None:
    texts = [f"text {i % 5}" for i in range(25)]
    run = batchrun.run(
        [{"text": t} for t in texts], str(tmp_path / "run"), api="embeddings", model=MODEL,
        prompt="{text}", base_url="sim", quiet=True,
    )  # fmt: skip
    table = run.results()
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 1536)
    matrix = run.embeddings()
    assert matrix.shape == (25, 1536) and matrix.dtype == np.float32
    assert not matrix.flags.owndata  # a view of the column's Arrow buffer, not a copy
    assert np.array_equal(matrix[3], np.array(embedding_vector(texts[3], MODEL), np.float32))
    frame = run.to_pandas()
    assert isinstance(frame["embedding"][0], np.ndarray) and len(frame["embedding"][0]) == 1536


# -- kill -9 during a packed run -------------------------------------------------------

KILL_ROWS = 3000
KILLS = 5


@pytest.mark.slow
def test_sigkill_during_a_packed_embeddings_run_every_row_once_with_its_own_vector(
    tmp_path: Path,
) -> None:
    """SIGKILL a packed embeddings run (packs of 16, requests in flight, lines being
    written) again and again, then let it finish: every row has one line, and the
    vector on it is the one the simulator computes for that row's own text (a vector
    paired with another row would differ), in results.jsonl and results.parquet."""
    import random
    import sys

    from tests.kill_loop import kill_loop
    from tests.test_kill import _sim

    rng = random.Random(28)
    # unique texts, and some repeated ones (the in-run dedupe is on)
    texts = {
        f"r{i}": f"row {i} says {rng.random():.6f}" if i % 10 else f"repeat {i % 7}"
        for i in range(KILL_ROWS)
    }
    (tmp_path / "in.jsonl").write_text(
        "".join(json.dumps({"id": k, "text": t}) + "\n" for k, t in texts.items())
    )
    out = tmp_path / "run"
    results_path = out / "results.jsonl"
    sims = _sim(150, 50)
    base_url = next(sims)
    cmd = [
        sys.executable, "-m", "batchrun", "run", str(tmp_path / "in.jsonl"), "-o", str(out),
        "--base-url", base_url, "--auth", "none", "-q", "-c", "4", "-m", MODEL,
        "--api", "embeddings", "--embed-input", "{text}", "--embed-batch", "16",
        "--id-column", "id", "--body", "dimensions=16",
    ]  # fmt: skip
    try:
        progress = kill_loop(
            cmd,
            results_path,
            tmp_path / "stderr.log",
            kills=KILLS,
            rng=rng,
            first_line_s=30,
            finish_s=120,
        )
    finally:
        sims.close()
    assert 0 < progress[0] and progress[-1] < KILL_ROWS, progress
    lines = [json.loads(x) for x in results_path.read_text().splitlines()]
    assert sorted(x["custom_id"] for x in lines) == sorted(texts)  # every row once
    for one in lines:
        assert row_vector(one) == embedding_vector(texts[one["custom_id"]], MODEL, 16)
    table = pq.read_table(out / "results.parquet", columns=["custom_id", "embedding"])
    matrix = batchrun.open(str(out)).embeddings()
    for k, custom_id in enumerate(table.column("custom_id").to_pylist()):
        assert matrix[k].tolist() == embedding_vector(texts[custom_id], MODEL, 16)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"]["succeeded"] == KILL_ROWS
    print(f"lines after each kill: {progress}")


# -- the Batch API -----------------------------------------------------------------------


@pytest.mark.parametrize("api", ["embeddings", "responses"])
def test_a_dataset_job_of_either_api_runs_through_the_batch_api(tmp_path: Path, api: str) -> None:
    """Rows go one a line (an embeddings batch holds 50,000 inputs at most, packed or
    not: packing would save no batch), sharded by --batch-max-requests here; the
    official SDK, as a client of the same simulator, sees the batches of the API."""
    import anyio
    import openai

    from batchrun._api import make_runner
    from batchrun.sim import SimConfig, SimThread

    model = MODEL if api == "embeddings" else "gpt-4.1-mini"
    with SimThread(SimConfig(require_key="sk-sim")) as sim:
        cfg = Settings.build(
            input=str(rows_file(tmp_path / "in.jsonl", 30)), out_dir=str(tmp_path / "run"),
            base_url=sim.base_url, model=model, api=api, prompt="{title}\n{text}",
            id_column="id", mode="batch", poll_interval=0.02, batch_max_requests=10,
            keep_remote_files=True, quiet=True,
        )  # fmt: skip
        result = anyio.run(make_runner(cfg, "sk-sim").run)
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-sim", max_retries=0)
        batches = list(client.batches.list())
        first = client.files.content(batches[0].output_file_id).text.splitlines()
    assert result.exit_code == EXIT_OK, result
    assert [b.endpoint for b in batches] == [f"/v1/{api}"] * 3
    assert all(b.request_counts.completed == 10 for b in batches)
    assert len(first) == 10
    table = pq.read_table(tmp_path / "run" / "results.parquet")
    assert table.column("status").to_pylist() == ["succeeded"] * 30
    if api == "responses":
        assert all(table.column("content").to_pylist())
        return
    matrix = batchrun.open(str(tmp_path / "run")).embeddings()
    for i in range(30):
        assert matrix[i].tolist() == embedding_vector(f"T{i}\nbody of {i}", MODEL)


def test_the_shipped_embed_job_runs_against_the_simulator(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parent.parent
    job = load_job(root / "jobs" / "embed.toml")
    settings = job.settings()
    assert (settings.api, settings.embed_input) == ("embeddings", "{product}\n{text}")
    run = batchrun.run_job(job, out_dir=str(tmp_path / "run"), quiet=True)
    matrix = run.embeddings()
    assert matrix.shape == (300, 256)
    first = json.loads((root / "jobs" / "data" / "reviews.jsonl").read_text().splitlines()[0])
    expected = embedding_vector(f"{first['product']}\n{first['text']}", MODEL, 256)
    assert matrix[0].tolist() == expected


def test_the_embedding_column_reads_as_a_fixed_size_array_elsewhere(tmp_path: Path) -> None:
    """polars and Hugging Face ``datasets`` read the column as fixed-size float32
    arrays, DuckDB as float lists; the vectors are the simulator's."""
    duckdb = pytest.importorskip("duckdb")
    polars = pytest.importorskip("polars")
    datasets = pytest.importorskip("datasets")
    cfg = embed_settings(tmp_path, 12)
    assert run_online(cfg, Embedder()).exit_code == EXIT_OK
    path = str(tmp_path / "run" / "results.parquet")
    want = embedding_vector("T5\nbody of 5", MODEL, 8)
    # DuckDB reads a Parquet list as FLOAT[] (Parquet has no fixed-size list; the Arrow
    # type rides in the file's metadata, which it does not read); a cast fixes the size
    found = duckdb.sql(
        f"SELECT typeof(embedding::FLOAT[8]), embedding FROM '{path}' WHERE custom_id = 'r5'"
    ).fetchall()
    assert found[0][0] == "FLOAT[8]" and list(found[0][1]) == pytest.approx(want, rel=1e-7)
    frame = polars.read_parquet(path)
    assert frame.schema["embedding"] == polars.Array(polars.Float32, 8)
    assert frame["embedding"][5].to_list() == pytest.approx(want, rel=1e-7)
    table = datasets.Dataset.from_parquet(path, cache_dir=str(tmp_path / "hf"))
    assert table.features["embedding"].length == 8
    assert table[5]["embedding"] == pytest.approx(want, rel=1e-7)


def test_the_response_cache_answers_a_second_embeddings_job_without_sending(
    tmp_path: Path,
) -> None:
    cache = str(tmp_path / "cache.sqlite")
    first = Embedder()
    cfg = embed_settings(tmp_path, 20, cache=cache)
    assert run_online(cfg, first).exit_code == EXIT_OK
    assert len(first.inputs) == 20
    again = Settings.build(**{**_given(cfg), "out_dir": str(tmp_path / "again"), "cache": cache})
    second = Embedder()
    assert run_online(again, second).exit_code == EXIT_OK
    assert second.sent == []  # every row from the cache, free
    lines = results(tmp_path / "again")
    assert row_vector(lines["r3"]) == embedding_vector("T3\nbody of 3", MODEL, 8)


def test_named_variants_embed_each_row_once_per_template(tmp_path: Path) -> None:
    cfg = embed_settings(tmp_path, 4)
    variants = Settings.build(
        **{**_given(cfg), "embed_input": None, "prompts": {"short": "{title}", "long": "{text}"}}
    )
    server = Embedder()
    assert run_online(variants, server).exit_code == EXIT_OK
    lines = results(tmp_path / "run")
    assert row_vector(lines["r2@short"]) == embedding_vector("T2", MODEL, 8)
    assert row_vector(lines["r2@long"]) == embedding_vector("body of 2", MODEL, 8)
    assert batchrun.open(str(tmp_path / "run")).embeddings().shape == (8, 8)


def test_reasoning_settings_pass_through_to_a_responses_body(tmp_path: Path) -> None:
    from batchrun._input.select import source_for

    cfg = Settings.build(
        input=str(rows_file(tmp_path / "in.jsonl", 1)), model="o4-mini", api="responses",
        prompt="{text}", request={"reasoning": {"effort": "high", "summary": "auto"}},
    )  # fmt: skip
    (req,) = source_for(cfg).requests()
    assert req.body == {
        "model": "o4-mini", "reasoning": {"effort": "high", "summary": "auto"}, "input": "body of 0"
    }  # fmt: skip
