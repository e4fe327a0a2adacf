"""Ctrl-C and SIGTERM on a real `batchrun run` process, with requests in flight.

The simulator runs in a thread of the test process, so the test can see how many
requests are in flight when it sends the signal, and how many the runner sent in
all. The rerun that finishes the job goes to a second, instant simulator (the base
URL is not a request-shaping option), which also tells exactly what was resent.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from batchrun._cli import cli
from batchrun._engine.stops import EXIT_SIGINT, EXIT_SIGTERM
from batchrun.sim import SimConfig, SimThread
from tests.test_resume import ids_of, summary_of, write_rows

ROWS = 40


@pytest.fixture
def slow_sim(request: pytest.FixtureRequest) -> Iterator[Any]:
    latency_ms, jitter_ms = request.param
    with SimThread(SimConfig(latency_ms=latency_ms, jitter_ms=jitter_ms, seed=3)) as sim:
        yield sim
        # requests abandoned by a killed client still sleep out their latency in the
        # server; let them end so stopping the server does not destroy pending tasks
        deadline = time.monotonic() + 12
        while sim.stats.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)


@pytest.fixture
def fast_sim() -> Iterator[Any]:
    with SimThread(SimConfig()) as sim:
        yield sim


def _run_cmd(inp: Path, out: Path, base_url: str, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "batchrun",
        "run",
        str(inp),
        "-o",
        str(out),
        "--base-url",
        base_url,
        "--auth",
        "none",
        "-c",
        "8",
        *extra,
    ]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OPENAI_API_KEY", None)
    return env


def _start(cmd: list[str], tmp_path: Path) -> subprocess.Popen[bytes]:
    """Start the run; its stderr goes to tmp_path/stderr.log (the child holds the fd)."""
    with open(tmp_path / "stderr.log", "wb") as log:
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=_env())


def _wait_for(condition: Any, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run exited early waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _lines_written(out: Path) -> int:
    total = 0
    for name in ("results.jsonl", "errors.jsonl"):
        path = out / name
        if path.exists():
            data = path.read_bytes()
            assert data == b"" or data.endswith(b"\n"), f"{name} ends in a torn line"
            total += len(data.splitlines())
    return total


def _finish_and_check(inp: Path, out: Path, fast_sim: Any, tmp_path: Path) -> None:
    """Rerun to completion: exactly one line per id, summary complete."""
    done = set(ids_of(out / "results.jsonl"))
    rerun = subprocess.run(
        # the second server listens on another port, so it is another endpoint: --force
        _run_cmd(inp, out, fast_sim.base_url, "-q", "--force"),
        env=_env(),
        capture_output=True,
        timeout=30,
    )
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]
    assert fast_sim.stats.requests == ROWS - len(done)  # only what was missing
    assert sorted(ids_of(out / "results.jsonl")) == sorted(f"id-{i}" for i in range(ROWS))
    summary = summary_of(out)
    assert summary["status"] == "complete" and summary["requests"]["succeeded"] == ROWS


@pytest.mark.slow
@pytest.mark.parametrize(
    ("sig", "code", "name"),
    [(signal.SIGINT, EXIT_SIGINT, "SIGINT"), (signal.SIGTERM, EXIT_SIGTERM, "SIGTERM")],
)
@pytest.mark.parametrize("slow_sim", [(1500.0, 500.0)], indirect=True)
def test_signal_drains_in_flight_requests_writes_them_and_exits(
    tmp_path: Path, slow_sim: Any, fast_sim: Any, sig: int, code: int, name: str
) -> None:
    inp = write_rows(tmp_path / "req.jsonl", ROWS)
    out = tmp_path / "run"
    proc = _start(_run_cmd(inp, out, slow_sim.base_url), tmp_path)
    try:
        # requests are in flight (all eight slots) before the signal
        _wait_for(lambda: slow_sim.stats.in_flight >= 8, proc, 20, "requests in flight")
        in_flight = slow_sim.stats.in_flight
        sent_at_signal = slow_sim.stats.requests
        signalled = time.monotonic()
        proc.send_signal(sig)
        rc = proc.wait(timeout=10)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = (tmp_path / "stderr.log").read_text()
    assert rc == code, stderr
    assert took < 8.0  # the drain waited out ~2 s of latency, not the 30 s drain timeout
    assert in_flight >= 1
    assert name in stderr and "resume" in stderr
    # no new request after the signal (give or take one a worker had already begun)
    assert slow_sim.stats.requests <= sent_at_signal + 1
    # nothing lost: every request the server answered is a complete line on disk
    assert slow_sim.stats.in_flight == 0
    assert _lines_written(out) == slow_sim.stats.requests
    summary = summary_of(out)
    assert summary["status"] == "interrupted"
    assert summary["requests"]["succeeded"] == slow_sim.stats.requests
    assert summary["requests"]["pending"] == ROWS - slow_sim.stats.requests
    _finish_and_check(inp, out, fast_sim, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("slow_sim", [(5000.0, 4500.0)], indirect=True)
def test_second_sigint_during_a_long_drain_exits_at_once(
    tmp_path: Path, slow_sim: Any, fast_sim: Any
) -> None:
    inp = write_rows(tmp_path / "req.jsonl", ROWS)
    out = tmp_path / "run"
    results = out / "results.jsonl"
    proc = _start(_run_cmd(inp, out, slow_sim.base_url, "--drain-timeout", "30"), tmp_path)
    try:
        # some results written, others still in flight with seconds to go
        _wait_for(
            lambda: results.exists() and results.stat().st_size > 0, proc, 20, "the first result"
        )
        assert slow_sim.stats.in_flight >= 1
        proc.send_signal(signal.SIGINT)
        _wait_for(
            lambda: "SIGINT" in (tmp_path / "stderr.log").read_text(), proc, 5, "the drain message"
        )
        assert proc.poll() is None  # draining: the slow requests keep it waiting
        second = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=10)
        took = time.monotonic() - second
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == EXIT_SIGINT
    assert took < 1.5
    # what was written stays valid: complete lines, a readable summary.json
    assert _lines_written(out) >= 1
    for line in results.read_bytes().splitlines():
        json.loads(line)
    if (out / "summary.json").exists():  # none yet if no checkpoint was due
        json.loads((out / "summary.json").read_text())
    status = CliRunner().invoke(cli, ["status", str(out), "--json"], catch_exceptions=False)
    assert status.exit_code == 1, status.output
    report = json.loads(status.output)
    assert report["complete"] is False
    assert report["requests"]["succeeded"] == len(ids_of(results))
    _finish_and_check(inp, out, fast_sim, tmp_path)
