"""The seed fixtures (tests/seeds/) are well-formed, so other tests can lean on them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrun._output.usage import usage_of
from batchrun._transport.streaming import ensure_include_usage

SEEDS = Path(__file__).parent / "seeds"
REQUESTS = sorted(SEEDS.glob("seed*_request*.json"))
RESPONSES = sorted(SEEDS.glob("seed*_response*.json"))


def _load(path: Path) -> Any:
    return orjson.loads(path.read_bytes())


def test_every_seed_doc_has_fixtures() -> None:
    for n in range(5):
        assert list(SEEDS.glob(f"seed{n:03d}_request*.json")), n
        assert list(SEEDS.glob(f"seed{n:03d}_response*.json")), n


def test_readme_lists_every_fixture() -> None:
    readme = (SEEDS / "README.md").read_text(encoding="utf-8")
    for path in REQUESTS + RESPONSES:
        assert f"| {path.name} |" in readme, path.name


def test_no_api_key_in_fixtures() -> None:
    key = re.compile(rb"sk-[A-Za-z0-9]{16,}")
    for path in SEEDS.iterdir():
        assert not key.search(path.read_bytes()), path.name


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: p.name)
def test_request_fixture_is_a_chat_request(path: Path) -> None:
    body = _load(path)
    assert isinstance(body, dict)
    assert isinstance(body["model"], str) and body["model"]
    messages = body["messages"]
    assert isinstance(messages, list) and messages
    for message in messages:
        assert message["role"] in {"system", "developer", "user", "assistant", "tool"}
    # Placeholders a real server rejects were replaced.
    assert body.get("n", 1) >= 1
    assert body.get("max_tokens", 1) > 0
    assert body.get("max_completion_tokens", 1) > 0
    response_format = body.get("response_format")
    if response_format is not None:
        assert response_format["type"] in {"text", "json_object", "json_schema"}
    for tool in body.get("tools", []):
        assert tool["type"] == "function"


@pytest.mark.parametrize("path", REQUESTS, ids=lambda p: p.name)
def test_request_fixture_survives_stream_rewrite(path: Path) -> None:
    body = _load(path)
    streamed = ensure_include_usage(body)
    assert streamed["stream"] is True
    assert {k: v for k, v in streamed.items() if k not in ("stream", "stream_options")} == {
        k: v for k, v in body.items() if k not in ("stream", "stream_options")
    }
    assert body == _load(path)


@pytest.mark.parametrize("path", RESPONSES, ids=lambda p: p.name)
def test_response_fixture_parses(path: Path) -> None:
    body = _load(path)
    assert isinstance(body, dict)
    if "error" in body:
        assert set(body) == {"error"}
        assert isinstance(body["error"]["message"], str)
        return
    assert isinstance(body["choices"], list) and body["choices"]
    assert "usage" in body
    usage = usage_of(body)
    assert usage is not None
    raw = body["usage"]
    assert usage.prompt_tokens == raw["prompt_tokens"]
    assert usage.completion_tokens == raw["completion_tokens"]
    assert usage.total_tokens == raw["total_tokens"]


def test_usage_details_fixture_reads_cached_and_reasoning() -> None:
    usage = usage_of(_load(SEEDS / "seed003_response_usage_details.json"))
    assert usage is not None
    assert (usage.cached_tokens, usage.reasoning_tokens) == (64, 60)


def test_seed_specifics_kept() -> None:
    seed004 = _load(SEEDS / "seed004_request.json")
    assert seed004["messages"][0]["content"][1]["image_url"].startswith("https://")
    assert "stream_options" not in seed004
    seed001 = _load(SEEDS / "seed001_request.json")
    for field in ("web_search_options", "prediction", "metadata", "functions", "store"):
        assert field in seed001
    seed000 = _load(SEEDS / "seed000_request.json")
    assert seed000["messages"][0]["reasoning_content"] == "string"
