"""Fixtures and helpers of the suite, which tests batchrun as installed (scripts/test
installs the wheel built from this tree; tests/test_packaging.py checks that).

The repository root goes at the END of sys.path, after site-packages: ``tests.*``
helper modules import from it, while ``batchrun`` is the installed package. Child
processes get ``PYTHONSAFEPATH=1``, so ``python -m batchrun`` or ``python -c`` started
from the repository root do not import ./batchrun either.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))
os.environ["PYTHONSAFEPATH"] = "1"


def completion(
    content: str = "ok",
    model: str = "gpt-4o-mini",
    prompt: int = 5,
    completion_tokens: int = 2,
    cached: int = 0,
    reasoning: int = 0,
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        },
    }


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[..., Path]:
    def write(rows: list[Any], name: str = "requests.jsonl") -> Path:
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return path

    return write


def body(text: str = "hi", model: str | None = "gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    b: dict[str, Any] = {"messages": [{"role": "user", "content": text}], **extra}
    if model:
        b["model"] = model
    return b


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def sim_url() -> Iterator[str]:
    from batchrun.sim import SimConfig, SimThread

    with SimThread(SimConfig()) as sim:
        yield sim.base_url


def mock_transport(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


class FakeTime:
    """Clock and sleep for the runner: sleeping advances the clock, never waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()
