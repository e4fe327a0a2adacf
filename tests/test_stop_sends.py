"""After a stop, nothing more is sent (issue 13, item 4).

A stop (Ctrl-C, SIGTERM, the budget cap, the breaker) used to stop only the
workers' next pull: requests already waiting in the pacer, a 429 cooldown or a
retry back-off went out anyway, ~1 a second for the whole drain under --rpm 20.
Now only requests already on the wire finish. And a Ctrl-C while the input is
still being checked exits 130 at once, having sent nothing and left no directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from batchrun._engine.hooks import RunState
from batchrun._engine.stops import EXIT_SIGINT
from batchrun._models import Outcome
from batchrun.sim import SimConfig, SimThread
from tests.conftest import completion
from tests.test_resume import StopAfter, ids_of, make_cfg, run, write_rows


class HeaderPacedServer:
    """Says after every answer that its request bucket is empty (1 request/s refill),
    so every later send waits in batchrun's pacer."""

    def __init__(self) -> None:
        self.total = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.total += 1
        headers = {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "60s",
        }
        return httpx.Response(200, json=completion("ok"), headers=headers)


def test_requests_waiting_in_the_pacer_are_not_sent_after_a_stop(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 30)
    cfg = make_cfg(tmp_path, inp, drain_timeout=30.0)
    server = HeaderPacedServer()
    result = run(cfg, server, StopAfter(3))  # type: ignore[arg-type]
    assert result.exit_code == EXIT_SIGINT
    written = ids_of(tmp_path / "run" / "results.jsonl")
    # every request that reached the server was answered and written; none went
    # out of the pacer after the stop
    assert server.total == len(written) < 10


def test_a_retry_backing_off_is_not_sent_after_a_stop(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 8)
    cfg = replace(make_cfg(tmp_path, inp), concurrency=1)
    sent: list[str] = []
    at_stop: list[int] = []

    class StopOnFirstLine(StopAfter):
        def on_written(self, state: RunState, batch: list[Outcome]) -> str | None:
            if not at_stop:
                at_stop.append(len(sent))
            return super().on_written(state, batch)

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.content.decode())
        if len(sent) == 1:
            return httpx.Response(200, json=completion("ok"))
        return httpx.Response(503, json={"error": {"message": "busy"}})

    result = run(cfg, handler, StopOnFirstLine(1))  # type: ignore[arg-type]
    assert result.exit_code == EXIT_SIGINT
    # the row backing off from its 503s was never tried again after the stop
    assert len(sent) == at_stop[0]


@pytest.fixture
def instant_sim() -> Iterator[Any]:
    with SimThread(SimConfig()) as sim:
        yield sim


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OPENAI_API_KEY", None)
    return env


@pytest.mark.slow
def test_sigint_under_rpm_sends_nothing_more(tmp_path: Path, instant_sim: Any) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 200)
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "batchrun", "run", str(inp), "-o", str(out),
        "--base-url", instant_sim.base_url, "--auth", "none", "--rpm", "20", "-c", "8", "-q",
    ]  # fmt: skip
    with open(tmp_path / "stderr.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=_env())
    try:
        deadline = time.monotonic() + 20
        while instant_sim.stats.requests < 20:  # the limiter's first burst
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        at_signal = instant_sim.stats.requests
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=10)
        time.sleep(3.5)  # longer than one --rpm 20 interval: a leaked send would show
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == EXIT_SIGINT, (tmp_path / "stderr.log").read_text()
    assert instant_sim.stats.requests == at_signal
    assert len(ids_of(out / "results.jsonl")) == at_signal


@pytest.mark.slow
def test_sigint_while_the_input_is_checked_exits_130_at_once(
    tmp_path: Path, instant_sim: Any
) -> None:
    inp = tmp_path / "big.jsonl"
    line = (
        '{"custom_id":"id-%d","body":{"model":"gpt-4o-mini",'
        '"messages":[{"role":"user","content":"question %d"}]}}\n'
    )
    inp.write_text("".join(line % (i, i) for i in range(300_000)))  # ~1.5 s to check
    out = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "batchrun", "run", str(inp), "-o", str(out),
        "--base-url", instant_sim.base_url, "--auth", "none",
    ]  # fmt: skip
    with open(tmp_path / "stderr.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=_env())
    try:
        deadline = time.monotonic() + 20
        while not (out / ".lock").exists():  # taken just before the input is checked
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(0.1)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=10)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = (tmp_path / "stderr.log").read_text()
    assert code == EXIT_SIGINT, err
    assert "interrupted while checking the input; nothing was sent" in err
    assert "Aborted" not in err and "Traceback" not in err
    assert took < 1.0, f"exit took {took:.2f} s after SIGINT"
    assert instant_sim.stats.requests == 0
    assert not out.exists()  # created by this run, nothing in it: removed
