"""Answers from the right place, a cache per tenant (issue 23, items 1-4 and 12).

Counting servers (`tests.faultserver.FaultServer`, a real endpoint on loopback, and
the in-process simulator's own statistics) show how often each request is sent:

1. the simulator's answers never count as done for a real endpoint: Python's derived
   directory differs, one ``-o`` directory refuses the change by name, and with
   ``--force`` every row goes to the real endpoint once;
2. one response cache shared by two API keys never serves one key's answer to the other;
3. a key echoed in pieces (streamed deltas) or ``\\u``-escaped reaches no byte written,
   the cache included;
4. credentials inside ``--base-url`` are refused in one line, before anything exists;
12. ``--base-url sim`` with ``--cache``: the second run is answered from the cache.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

import batchrun
from batchrun._cli import cli
from batchrun.errors import ConfigError
from batchrun.sim import SimThread
from tests.faultserver import FaultServer

pytest_plugins = ["tests.conftest_fault"]  # fault_server, shared_fault_server

KEY_A = "sk-TENANTA-0123456789abcdef"
KEY_B = "sk-TENANTB-fedcba9876543210"
ROWS = 6


def rows(n: int = ROWS) -> list[dict[str, Any]]:
    return [{"id": f"r{i}", "text": f"review {i}"} for i in range(n)]


def write_requests(path: Path, n: int = ROWS, **extra: Any) -> Path:
    lines = [
        {
            "custom_id": f"r{i}",
            "model": "gpt-4o-mini",
            "temperature": 0,
            "messages": [{"role": "user", "content": f"row {i}"}],
            **extra,
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def invoke(args: list[str], key: str | None = None, **env: str | None) -> Result:
    environ: dict[str, str | None] = {"BATCHRUN_DEBUG": None, "OPENAI_BASE_URL": None}
    environ["OPENAI_API_KEY"] = key
    return CliRunner().invoke(cli, args, env={**environ, **env})


def final_lines(run_dir: Path) -> dict[str, dict[str, Any]]:
    """custom_id -> its last line in results.jsonl."""
    out: dict[str, dict[str, Any]] = {}
    for line in (run_dir / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        out[record["custom_id"]] = record
    return out


def content_of(record: dict[str, Any]) -> str:
    return str(record["response"]["body"]["choices"][0]["message"]["content"])


@pytest.fixture
def runs_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "runs"
    monkeypatch.setenv("BATCHRUN_RUNS", str(home))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return home


@pytest.fixture
def sims(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[SimThread]]:
    """Every simulator ``base_url="sim"`` starts in this process, to read its counts."""
    import batchrun.sim

    started: list[SimThread] = []

    class Counted(SimThread):
        def __enter__(self) -> SimThread:
            started.append(self)
            return super().__enter__()

    monkeypatch.setattr(batchrun.sim, "SimThread", Counted)
    yield started


# -- 1. the simulator's answers are not a real endpoint's ------------------------------------
def test_python_sim_then_a_real_endpoint_sends_every_row_to_the_real_one(
    runs_home: Path, fault_server: FaultServer, sims: list[SimThread]
) -> None:
    """``batchrun.run(df, base_url="sim")`` then the same call with a real base_url (no
    out_dir: the derived directory): every row is sent to the real server once and its
    answers are returned, not the simulator's."""
    settings: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "prompt": "Label: {text}",
        "id_column": "id",
        "temperature": 0,
        "quiet": True,
    }
    rehearsal = batchrun.run(rows(), base_url="sim", **settings)
    assert rehearsal.status == "complete"
    assert sum(s.stats.requests for s in sims) == ROWS
    assert fault_server.requests == 0

    real = batchrun.run(rows(), base_url=fault_server.base_url, **settings)
    assert fault_server.requests == ROWS
    assert all(fault_server.attempts[f"Label: review {i}"] == 1 for i in range(ROWS))
    assert real.run_dir != rehearsal.run_dir  # the derived directory names the endpoint
    assert real.status == "complete"
    assert real.summary["requests"]["succeeded"] == ROWS
    # the answers returned are the real server's
    labels = real.to_pandas()["content"].tolist()
    assert labels == [f"echo: Label: review {i}" for i in range(ROWS)]
    for record in final_lines(Path(real.run_dir)).values():
        assert record["batchrun"]["endpoint"] == fault_server.base_url
    for record in final_lines(Path(rehearsal.run_dir)).values():
        assert record["batchrun"]["endpoint"] == "sim"
    # and run.json names the simulator by what it is, not by its random port
    info = json.loads((Path(rehearsal.run_dir) / "run.json").read_text())
    assert info["options"]["base_url"] == "sim"
    assert info["request_options"]["base_url"] == "sim"

    again = batchrun.run(rows(), base_url=fault_server.base_url, **settings)
    assert again.run_dir == real.run_dir and fault_server.requests == ROWS  # resumed: nothing sent


def test_cli_one_directory_sim_then_real_is_a_named_change_and_force_sends_once(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    """One ``-o``: a changed endpoint is refused by name; with --force every row goes
    to the real server once, and the summary counts its answers only."""
    inp = write_requests(tmp_path / "requests.jsonl")
    out = tmp_path / "run"
    first = invoke(["run", str(inp), "-o", str(out), "--base-url", "sim", "-q"])
    assert first.exit_code == 0, first.output
    assert all(r["batchrun"]["endpoint"] == "sim" for r in final_lines(out).values())

    real = ["run", str(inp), "-o", str(out), "--base-url", fault_server.base_url, "-q"]
    refused = invoke(real)
    assert refused.exit_code == 1
    assert f"option base_url: 'sim' -> '{fault_server.base_url}'" in refused.stderr
    assert fault_server.requests == 0

    forced = invoke([*real, "--force"])
    assert forced.exit_code == 0, forced.output
    assert fault_server.requests == ROWS
    assert all(fault_server.attempts[f"row {i}"] == 1 for i in range(ROWS))
    answers = final_lines(out)
    assert {content_of(r) for r in answers.values()} == {f"echo: row {i}" for i in range(ROWS)}
    assert all(r["batchrun"]["endpoint"] == fault_server.base_url for r in answers.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["requests"]["succeeded"] == ROWS
    # the fault server bills 3 + 2 tokens an answer: the simulator's usage is not counted
    assert summary["usage"]["prompt_tokens"] == 3 * ROWS
    assert summary["usage"]["completion_tokens"] == 2 * ROWS
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert sorted(row["content"] for row in table) == sorted(f"echo: row {i}" for i in range(ROWS))
    info = json.loads((out / "run.json").read_text())
    assert info["request_options"]["base_url"] == fault_server.base_url

    # resumed on the real endpoint: nothing more is sent, the totals still add up
    again = invoke(real)
    assert again.exit_code == 0, again.output
    assert fault_server.requests == ROWS
    summary = json.loads((out / "summary.json").read_text())
    assert summary["usage"]["prompt_tokens"] == 3 * ROWS
    status = invoke(["status", str(out)])
    assert f"{ROWS} succeeded" in status.output


def test_forced_move_between_real_endpoints_keeps_answers(tmp_path: Path) -> None:
    """Another real endpoint serves the same model API: with --force its answers still
    count (only the simulator's never do for a real endpoint)."""
    inp = write_requests(tmp_path / "requests.jsonl")
    out = tmp_path / "run"
    with FaultServer() as first, FaultServer() as second:
        done = invoke(["run", str(inp), "-o", str(out), "--base-url", first.base_url, "-q"])
        assert done.exit_code == 0 and first.requests == ROWS
        moved = ["run", str(inp), "-o", str(out), "--base-url", second.base_url, "-q"]
        refused = invoke(moved)
        assert refused.exit_code == 1
        assert f"option base_url: '{first.base_url}' -> '{second.base_url}'" in refused.stderr
        forced = invoke([*moved, "--force"])
        assert forced.exit_code == 0, forced.output
        assert second.requests == 0


def test_endpoint_identity_ignores_spelling_and_port_of_the_simulator() -> None:
    from batchrun._endpoint import endpoint_identity
    from batchrun._settings import Settings

    assert endpoint_identity("HTTPS://API.OpenAI.com:443/v1/") == "https://api.openai.com/v1"
    assert endpoint_identity("http://127.0.0.1:80/v1?api-version=1") == "http://127.0.0.1/v1"
    live = Settings(base_url="http://127.0.0.1:41234/v1", simulated=True)
    assert live.endpoint == "sim" and live.fingerprint()["base_url"] == "sim"
    assert live.public_dict()["base_url"] == "sim"
    assert Settings(base_url="https://api.openai.com/v1/").endpoint == "https://api.openai.com/v1"


def test_simulated_lines_do_not_count_for_a_real_endpoint(tmp_path: Path) -> None:
    """The journal, for a real endpoint: the simulator's lines are neither done nor
    failed nor counted; for the simulator, every line counts."""
    from batchrun._models import Outcome, Request
    from batchrun._output.journal import read_journal
    from batchrun._output.sink import JsonlSink

    req = Request("a", 0, {"model": "m"})
    ok = Outcome.success(req, status=200, request_id=None, body={"choices": []}, attempts=[])
    with JsonlSink(str(tmp_path), "sim") as sink:
        sink.write([ok])
    other = Request("b", 1, {"model": "m"})
    answer = Outcome.success(other, status=200, request_id=None, body={"choices": []}, attempts=[])
    with JsonlSink(str(tmp_path), "https://api.openai.com/v1") as sink:
        sink.write([answer])
    real = read_journal(str(tmp_path), endpoint="https://api.openai.com/v1")
    assert len(real.done) == 1 and real.simulated == 1
    assert sum(real.tally.by_mode.values()) == 1
    sim = read_journal(str(tmp_path), endpoint="sim")
    assert len(sim.done) == 2 and sim.simulated == 0


@pytest.mark.slow
def test_the_notebook_after_an_offline_run_sends_to_the_real_endpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped notebook: one offline run (BATCHRUN_BASE_URL unset: the simulator),
    then BATCHRUN_BASE_URL set to a real endpoint: every review is sent to it."""
    from tests.test_notebook import NOTEBOOK, REVIEWS, ROOT, execute, text_of

    monkeypatch.setenv("BATCHRUN_REPO", str(ROOT))
    monkeypatch.setenv("BATCHRUN_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("BATCHRUN_BASE_URL", raising=False)
    offline = text_of(execute(NOTEBOOK, tmp_path))
    assert f"complete: {REVIEWS} succeeded" in offline
    with SimThread() as real:  # a loopback server the notebook names by its URL
        monkeypatch.setenv("BATCHRUN_BASE_URL", real.base_url)
        online = text_of(execute(NOTEBOOK, tmp_path))
        assert real.stats.requests == REVIEWS
    assert f"complete: {REVIEWS} succeeded" in online
    assert len(list((tmp_path / "runs").iterdir())) == 2


# -- 2. a cache per tenant --------------------------------------------------------------
def test_one_cache_shared_by_two_keys_never_serves_one_to_the_other(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    inp = write_requests(tmp_path / "requests.jsonl")
    cache = tmp_path / "cache"

    def run(name: str, key: str, *extra: str) -> dict[str, Any]:
        out = tmp_path / name
        args = ["run", str(inp), "-o", str(out), "--base-url", fault_server.base_url]
        result = invoke([*args, "--cache", str(cache), "-q", *extra], key=key)
        assert result.exit_code == 0, result.output
        summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
        return summary

    run("a1", KEY_A)
    assert fault_server.requests == ROWS
    b = run("b1", KEY_B)
    assert fault_server.requests == 2 * ROWS  # key B is another tenant: sent again
    assert f"Bearer {KEY_B}" in fault_server.auth_seen
    assert "reused" not in b
    a = run("a2", KEY_A)
    assert fault_server.requests == 2 * ROWS  # key A again: its own answers, from the cache
    assert a["reused"]["cache"] == ROWS
    # the same key in another project (an identity header) is another tenant too
    run("a3", KEY_A, "-H", "OpenAI-Project: proj_2")
    assert fault_server.requests == 3 * ROWS
    run("a4", KEY_A, "-H", "OpenAI-Project: proj_2")
    assert fault_server.requests == 3 * ROWS
    # the cache holds answers, never a key
    for path in cache.iterdir():
        data = path.read_bytes()
        for secret in (KEY_A, KEY_B, "TENANTA", "TENANTB"):
            assert secret.encode() not in data, (secret, path)


def test_credential_identity_is_one_way_and_covers_auth_and_headers() -> None:
    from batchrun._endpoint import credential_identity

    a = credential_identity(KEY_A)
    assert len(a) == 16 and KEY_A.encode() not in a
    assert a != credential_identity(KEY_B)
    assert a != credential_identity(KEY_A, auth="raw")
    assert a != credential_identity(KEY_A, auth_header="api-key")
    assert a != credential_identity(KEY_A, headers=[("OpenAI-Organization", "org-1")])
    org = credential_identity(KEY_A, headers=[("OpenAI-Organization", "org-1"), ("X", "y")])
    assert org == credential_identity(KEY_A, headers=[("x", "y"), ("openai-organization", "org-1")])
    # with auth none the key is not sent, so it is nobody's identity
    assert credential_identity(KEY_A, auth="none") == credential_identity(None, auth="none")


# -- 3. a key echoed in pieces or escaped ------------------------------------------------
SECRET_PARTS = (KEY_A, "TENANTA", "0123456789abcdef")


def assert_no_key(data: bytes, where: str) -> None:
    for part in SECRET_PARTS:
        assert part.encode() not in data, f"{part!r} in {where}"


def test_a_key_echoed_in_pieces_or_escaped_reaches_no_file_and_no_cache(
    tmp_path: Path, fault_server: FaultServer
) -> None:
    """Streamed 3-character deltas and \\u-escaped JSON in good (cacheable) answers: the
    key is in no byte under the run directory or the cache, sqlite files included, and
    a later run served from that cache writes none either."""
    modes = ("sse_deltas", "json_escaped")
    lines = []
    for mode in modes:
        fault_server.script(mode, f"echo:{mode}")
        lines.append(
            {
                "custom_id": mode,
                "model": "gpt-4o-mini",
                "temperature": 0,
                "stream": mode.startswith("sse_"),
                "messages": [{"role": "user", "content": mode}],
            }
        )
    inp = tmp_path / "requests.jsonl"
    inp.write_text("".join(json.dumps(line) + "\n" for line in lines))
    cache = tmp_path / "cache"

    def run(name: str) -> Path:
        out = tmp_path / name
        args = ["run", str(inp), "-o", str(out), "--base-url", fault_server.base_url]
        result = invoke([*args, "--cache", str(cache)], key=KEY_A)
        assert result.exit_code == 0, result.output
        assert_no_key(result.output.encode(), "output")
        return out

    first = run("first")
    assert fault_server.requests == len(modes)
    answers = final_lines(first)
    assert all("***" in content_of(r) for r in answers.values())  # echoed, masked
    second = run("second")
    assert fault_server.requests == len(modes)  # served from the cache
    assert all(r["batchrun"].get("reused") == "cache" for r in final_lines(second).values())
    for root in (first, second, cache):
        for path in root.rglob("*"):
            if path.is_file():
                assert_no_key(path.read_bytes(), str(path))
    for out in (first, second):
        table = pq.read_table(out / "results.parquet").to_pylist()
        assert_no_key(json.dumps(table, default=str).encode(), f"{out}/results.parquet")


def test_the_client_scrubs_the_assembled_answer() -> None:
    """The decoded answer, not only its bytes: a stream of 3-character deltas and a body
    whose key is \\u-escaped come out of the client masked."""
    import anyio
    import httpx

    from batchrun._redact import register_secret
    from batchrun._transport.client import ChatClient

    register_secret(KEY_A)
    text = f"key {KEY_A}!"
    chunks = [text[i : i + 3] for i in range(0, len(text), 3)]
    events = [
        {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
         "choices": [{"index": 0, "delta": {"content": c}, "finish_reason": None}]}
        for c in chunks
    ] + [{"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
          "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]  # fmt: skip
    stream = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    escaped = "".join(f"\\u{ord(c):04x}" for c in KEY_A)
    plain = (
        '{"id":"x","object":"chat.completion","choices":[{"index":0,"finish_reason":"stop",'
        '"message":{"role":"assistant","content":"k=' + escaped + '"}}]}'
    ).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        if b'"stream":true' in request.content:
            return httpx.Response(
                200,
                content=stream + b"data: [DONE]\n\n",
                headers={"content-type": "text/event-stream"},
            )
        return httpx.Response(200, content=plain, headers={"content-type": "application/json"})

    client = ChatClient(
        base_url="http://x/v1", api_key=KEY_A, transport=httpx.MockTransport(handler)
    )
    streamed = anyio.run(client.send, {"model": "m", "messages": [], "stream": True})
    assert streamed.body["choices"][0]["message"]["content"] == "key ***!"
    whole = anyio.run(client.send, {"model": "m", "messages": []})
    assert whole.body["choices"][0]["message"]["content"] == "k=***"


# -- 4. credentials inside --base-url ------------------------------------------------------
CREDENTIAL_URLS = (
    ("http://user:s3cretpw@127.0.0.1:9/v1", "s3cretpw", "user name or password"),
    (f"http://127.0.0.1:9/v1?key={KEY_A}", "TENANTA", "query parameter 'key'"),
    ("https://example.com/v1?api_key=plainvalue99", "plainvalue99", "query parameter 'api_key'"),
)


@pytest.mark.parametrize(("url", "secret", "named"), CREDENTIAL_URLS)
def test_credentials_in_base_url_are_refused_in_one_line_from_the_cli(
    tmp_path: Path, url: str, secret: str, named: str
) -> None:
    inp = write_requests(tmp_path / "requests.jsonl")
    out = tmp_path / "run"
    for args, env in (
        (["run", str(inp), "-o", str(out), "--base-url", url], {}),
        (["run", str(inp), "-o", str(out)], {"OPENAI_BASE_URL": url}),
    ):
        result = invoke(args, key=KEY_B, **env)
        assert result.exit_code == 1, result.output
        message = result.stderr.strip()
        assert message.count("\n") == 0, message  # one line, no traceback
        assert named in message and "--api-key-env" in message
        assert secret not in result.output and "Traceback" not in result.output
        assert not out.exists()


@pytest.mark.parametrize(("url", "secret", "named"), CREDENTIAL_URLS)
def test_credentials_in_base_url_are_refused_from_python_and_job_files(
    runs_home: Path, tmp_path: Path, url: str, secret: str, named: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        batchrun.run(rows(), model="m", prompt="{text}", base_url=url, quiet=True)
    message = str(caught.value)
    assert named in message and secret not in message and "\n" not in message
    assert not runs_home.exists()
    job = tmp_path / "job.toml"
    job.write_text(f'[endpoint]\nbase_url = "{url}"\n[request]\nmodel = "m"\n')
    with pytest.raises(ConfigError) as caught:
        batchrun.run(write_requests(tmp_path / "r.jsonl"), tmp_path / "out", job=job)
    assert named in str(caught.value) and secret not in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_an_azure_api_version_query_is_not_a_credential() -> None:
    from batchrun._settings import Settings

    url = "https://x.openai.azure.com/openai/deployments/d?api-version=2024-10-21"
    assert Settings.build(base_url=url).base_url == url


# -- 12. the simulator's answers are found in the cache ---------------------------------
def test_sim_runs_hit_the_cache(
    tmp_path: Path, sims: list[SimThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two runs with --base-url sim and one --cache: the simulator listens on another
    port each time, yet the second run is answered from the cache (0 requests)."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    inp = write_requests(tmp_path / "requests.jsonl")
    cache = tmp_path / "cache"
    for name in ("one", "two"):
        args = ["run", str(inp), "-o", str(tmp_path / name), "--base-url", "sim", "-q"]
        result = invoke([*args, "--cache", str(cache)])
        assert result.exit_code == 0, result.output
    first, second = sims
    assert first.base_url != second.base_url
    assert first.stats.requests == ROWS and second.stats.requests == 0
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["reused"]["cache"] == ROWS
    # a real endpoint never gets the simulator's cached answers
    with FaultServer() as real:
        args = ["run", str(inp), "-o", str(tmp_path / "real"), "--base-url", real.base_url]
        result = invoke([*args, "--cache", str(cache), "-q"])
        assert result.exit_code == 0, result.output
        assert real.requests == ROWS


def test_old_run_json_without_endpoint_compares_its_base_url(tmp_path: Path) -> None:
    """A run.json written before the endpoint identity was recorded: its base_url
    option stands for it, so resuming against the same URL is no change."""
    from batchrun._engine.runinfo import resume_problems
    from batchrun._settings import Settings

    path = tmp_path / "run.json"
    settings = Settings(input="x.jsonl", base_url="https://api.openai.com/v1")
    options = {k: v for k, v in settings.fingerprint().items() if k != "base_url"}
    path.write_text(
        json.dumps(
            {
                "input_fingerprint": "f",
                "request_options": options,
                "options": {"base_url": "https://api.openai.com/v1/"},
            }
        )
    )
    assert resume_problems(str(path), settings, "f")[0] == []
    elsewhere = Settings(input="x.jsonl", base_url="https://other.example/v1")
    assert resume_problems(str(path), elsewhere, "f")[0] == [
        "option base_url: 'https://api.openai.com/v1' -> 'https://other.example/v1'"
    ]
    os.remove(path)
