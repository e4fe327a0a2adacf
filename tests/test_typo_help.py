"""Help for typos (issue 24, item 5): a misspelt model gets the nearest known names
before anything is sent, and a template error names the user's row and the nearest
column."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

import batchrun
from batchrun._cli import cli
from batchrun.errors import InputError
from batchrun.sim import SimConfig, SimThread


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "data.jsonl"
    path.write_text('{"id": "a", "text": "good"}\n{"id": "b", "text": "bad"}\n')
    return path


@pytest.fixture
def sim() -> Iterator[SimThread]:
    with SimThread(SimConfig()) as server:
        yield server


def label(sim: SimThread, model: str, *extra: str) -> Any:
    args = ["run", "data.jsonl", "-o", "out", "--model", model, "--prompt", "Say {text}"]
    return CliRunner().invoke(cli, [*args, "--base-url", sim.base_url, *extra])


# -- models -----------------------------------------------------------------------------------
def test_a_misspelt_model_gets_the_nearest_names_before_anything_is_sent(
    data: Path, sim: SimThread
) -> None:
    res = label(sim, "gpt-4o-mni")
    assert res.exit_code == 0, res.output
    lines = res.stderr.splitlines()
    assert lines[0] == (
        "batchrun: warning: model 'gpt-4o-mni' has no known price and the endpoint does not "
        "list it: did you mean 'gpt-4o-mini'? (its requests are sent as named; their cost "
        "shows as unknown)"
    )
    assert lines[1].startswith("batchrun: 2 requests -> out")  # said before the first send
    # under a cap the model is refused, with the same advice, and nothing is sent
    res = label(sim, "gpt-4o-mni", "-o", "capped", "--max-cost", "1")
    assert res.exit_code == 1
    assert res.stderr.strip().startswith(
        "Error: --max-cost cannot be enforced: no known price for 'gpt-4o-mni' (did you mean "
        "'gpt-4o-mini'?); add a price with --prices FILE"
    )
    assert sim.stats.requests == 2


def test_an_estimate_names_the_nearest_models_too(data: Path) -> None:
    args = ["estimate", "data.jsonl", "--model", "gpt-4o-mni", "--prompt", "Say {text}"]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "no price known for gpt-4o-mni (did you mean 'gpt-4o-mini'?)" in res.stdout
    report = json.loads(CliRunner().invoke(cli, [*args, "--json"]).stdout)
    assert report["cost_usd"]["did_you_mean"] == {"gpt-4o-mni": ["gpt-4o-mini"]}


def test_the_endpoints_own_names_come_first(data: Path) -> None:
    served = ("llama-3.1-8b-instruct", "qwen2.5-7b-instruct")
    with SimThread(SimConfig(models=served)) as sim:
        res = label(sim, "llama-3.1-8b-instuct")  # the price table would offer others
        assert "did you mean 'llama-3.1-8b-instruct'?" in res.stderr.splitlines()[0]
        # a model the endpoint serves needs no advice, priced or not
        quiet_about = label(sim, "qwen2.5-7b-instruct", "-o", "b")
        assert quiet_about.exit_code == 0 and "warning" not in quiet_about.stderr
        # nor does a name of its own, close to nothing, nor a run asked to be quiet
        assert "warning" not in label(sim, "m", "-o", "c").stderr
        assert label(sim, "gpt-4o-mni", "-o", "d", "-q").stderr == ""


def test_without_the_endpoints_list_the_price_table_answers(data: Path) -> None:
    from batchrun._cost.modelnames import ModelAdvice
    from batchrun._cost.prices import PriceBook

    advice = ModelAdvice(PriceBook.load(None), served=lambda: None)
    [warning] = advice.warnings(["gpt-4o-mni", "gpt-4o-mini", "my-own-model"])
    assert warning.startswith(
        "model 'gpt-4o-mni' has no known price and no price source knows it: "
        "did you mean 'gpt-4o-mini'?"
    )
    assert advice.described("claude-3-5-sonet") == (
        "'claude-3-5-sonet' (did you mean 'claude-3-5-sonnet'?)"
    )
    calls: list[int] = []

    def failing() -> list[str] | None:
        calls.append(1)
        raise OSError("unreachable")

    advice = ModelAdvice(PriceBook.load(None), served=failing)
    assert advice.warnings(["gpt-4o-mni"]) and advice.warnings(["gpt-4.1-mni"])
    assert calls == [1]  # asked once, and its failure is no failure of the run
    priced = ModelAdvice(PriceBook.load(None), served=failing)
    assert priced.warnings(["gpt-4o-mini"]) == [] and calls == [1]  # priced: never asked


def test_the_model_list_is_asked_like_the_requests_and_read_defensively() -> None:
    from batchrun._transport.models import served_models

    seen: list[httpx.Request] = []

    def answer(body: Any, status: int = 200) -> httpx.MockTransport:
        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            return httpx.Response(status, content=content)

        return httpx.MockTransport(handler)

    listing = {"object": "list", "data": [{"id": "a", "object": "model"}, {"id": "b"}]}
    url = "https://relay.example/v1?api-version=1"
    headers = {"Authorization": "Bearer k", "X-Title": "t"}
    assert served_models(url, headers=headers, transport=answer(listing)) == ["a", "b"]
    assert str(seen[0].url) == "https://relay.example/v1/models?api-version=1"
    assert seen[0].headers["authorization"] == "Bearer k" and seen[0].headers["x-title"] == "t"
    for body, status in ((listing, 404), (b"<html>", 200), ({"data": "x"}, 200), ([1, 2], 200)):
        assert served_models(url, headers={}, transport=answer(body, status)) is None

    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectTimeout("timed out", request=request)

    assert served_models(url, headers={}, transport=httpx.MockTransport(hang)) is None


def test_the_simulator_lists_its_models_in_openais_shape() -> None:
    with SimThread(SimConfig(models=("m1", "m2"), require_key="k")) as sim:
        key = {"Authorization": "Bearer k"}
        listing = httpx.get(f"{sim.base_url}/models", headers=key).json()
        assert listing["object"] == "list"
        assert [(m["id"], m["object"]) for m in listing["data"]] == [
            ("m1", "model"),
            ("m2", "model"),
        ]
        assert httpx.get(f"{sim.base_url}/models/m2", headers=key).json()["id"] == "m2"
        missing = httpx.get(f"{sim.base_url}/models/m3", headers=key)
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "model_not_found"
        assert httpx.get(f"{sim.base_url}/models").status_code == 401


# -- templates --------------------------------------------------------------------------------
def test_a_template_error_suggests_the_nearest_column(data: Path) -> None:
    res = CliRunner().invoke(
        cli, ["run", "data.jsonl", "-o", "out", "--prompt", "Say {txet}", "--base-url", "sim"]
    )
    assert res.exit_code == 1
    assert res.stderr.strip() == (
        "Error: data.jsonl:line 1: template placeholder {txet} has no column 'txet' "
        "(columns: id, text; did you mean 'text'?)"
    )


def test_rows_in_memory_are_named_as_the_callers_rows(tmp_path: Path) -> None:
    import pyarrow as pa

    rows = [{"text": "good"}, {"text": None}]
    with pytest.raises(InputError) as info:
        batchrun.run(rows, tmp_path / "a", model="m", prompt="Say {text}", base_url="sim")
    assert str(info.value) == (
        "row 1 of the list (0-based): template placeholder {text}: column 'text' is null"
    )
    table = pa.table({"text": ["good", "bad"]})
    with pytest.raises(InputError) as info:
        batchrun.run(table, tmp_path / "b", model="m", prompt="Say {{ txet }}", base_url="sim")
    assert str(info.value) == (
        "row 0 of the Table (0-based): template variable {{ txet }} has no column 'txet' "
        "(columns: text; did you mean 'text'?)"
    )
    with pytest.raises(InputError, match=r"^row 1 of the list \(0-based\): "):
        batchrun.estimate(rows, model="m", prompt="Say {text}")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_stream_names_the_callers_rows_too(tmp_path: Path, anyio_backend: str) -> None:
    stream = batchrun.stream(
        [{"t": "x"}, {"t": None}], tmp_path / "s", model="m", prompt="{t}", base_url="sim"
    )
    with pytest.raises(InputError, match=r"^row 1 of the list \(0-based\): "):
        async for _ in stream:
            pass
