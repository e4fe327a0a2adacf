"""Ctrl-C stops the caller too (issue 24, item 4).

A script that calls `batchrun.run()` and gets SIGINT mid-run drains the run (what was
sent is answered and written) and then stops with a KeyboardInterrupt (the `Run` as
``.run``): the line after the call never runs, and the script dies by SIGINT as an
interrupted Python script does. SIGTERM ends it the same way with SystemExit(143).
`arun` drains when the task awaiting it is cancelled, then lets the cancellation go on.

Real subprocesses and real signals against a loopback simulator in this process, which
counts what was sent; nothing here waits on a fixed sleep for the run itself.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import batchrun
from batchrun.errors import interrupted
from batchrun.sim import SimConfig, SimThread

ROOT = Path(__file__).resolve().parent.parent
ROWS = 2000

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import batchrun

    out_dir, base_url, marker, caught = sys.argv[1:5]
    rows = [{"id": i, "text": f"row {i}"} for i in range(ROWS)]
    try:
        run = batchrun.run(rows, out_dir, model="gpt-4o-mini", prompt="{text}",
                           id_column="id", concurrency=4, quiet=True, base_url=base_url)
    except BaseException as exc:
        # what a caller can see: the exception's type and the Run it carries
        with open(caught, "w") as f:
            json.dump({"type": type(exc).__name__, "code": getattr(exc, "code", None),
                       "status": exc.run.status,
                       "requests": exc.run.summary["requests"]}, f)
        raise
    with open(marker, "w") as f:  # the next line: it must not run after an interrupt
        f.write(run.status)
    """
).replace("ROWS", str(ROWS))


@pytest.fixture
def slow_sim() -> Iterator[SimThread]:
    with SimThread(SimConfig(latency_ms=50)) as sim:
        yield sim
        deadline = time.monotonic() + 10
        while sim.stats.in_flight and time.monotonic() < deadline:
            time.sleep(0.02)


def start_script(tmp_path: Path, base_url: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    script = tmp_path / "label.py"
    script.write_text(SCRIPT)
    marker, caught = tmp_path / "next-line-ran", tmp_path / "caught.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    env.pop("OPENAI_API_KEY", None)
    with open(tmp_path / "stderr.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(script), str(tmp_path / "run"), base_url, str(marker),
             str(caught)],
            stdout=subprocess.DEVNULL,
            stderr=log,
            env=env,
            cwd=tmp_path,
        )  # fmt: skip
    return proc, marker, caught


def signal_mid_run(proc: subprocess.Popen[bytes], sim: SimThread, sig: int) -> int:
    try:
        deadline = time.monotonic() + 60
        while sim.stats.requests < 20:
            assert proc.poll() is None, "the script ended before the signal"
            assert time.monotonic() < deadline, "the run never got going"
            time.sleep(0.01)
        proc.send_signal(sig)
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def lines(path: Path) -> int:
    data = path.read_bytes() if path.exists() else b""
    assert data == b"" or data.endswith(b"\n")
    return len(data.splitlines())


@pytest.mark.slow
def test_ctrl_c_drains_the_run_then_stops_the_script(slow_sim: SimThread, tmp_path: Path) -> None:
    proc, marker, caught = start_script(tmp_path, slow_sim.base_url)
    code = signal_mid_run(proc, slow_sim, signal.SIGINT)
    stderr = (tmp_path / "stderr.log").read_text()
    # an uncaught KeyboardInterrupt: Python ends the process by SIGINT (so a shell
    # loop running the script stops too)
    assert code == -signal.SIGINT, stderr
    assert not marker.exists(), "the line after batchrun.run() ran"
    seen = json.loads(caught.read_text())
    assert seen["type"] == "KeyboardInterrupt" and seen["status"] == "interrupted"
    assert "KeyboardInterrupt" in stderr and "resumes it" in stderr
    # drained: every request the simulator got is a written line, nothing more was sent
    sent = slow_sim.stats.requests
    assert 20 <= sent < ROWS
    assert lines(tmp_path / "run" / "results.jsonl") == sent
    assert seen["requests"]["succeeded"] == sent
    assert seen["requests"]["pending"] == ROWS - sent


@pytest.mark.slow
def test_sigterm_drains_the_run_then_ends_the_script_with_143(
    slow_sim: SimThread, tmp_path: Path
) -> None:
    proc, marker, caught = start_script(tmp_path, slow_sim.base_url)
    code = signal_mid_run(proc, slow_sim, signal.SIGTERM)
    assert code == 143, (tmp_path / "stderr.log").read_text()
    assert not marker.exists()
    seen = json.loads(caught.read_text())
    assert seen == {**seen, "type": "SystemExit", "code": 143, "status": "interrupted"}
    assert lines(tmp_path / "run" / "results.jsonl") == slow_sim.stats.requests


def labelling(sim: SimThread, rows: int, **extra: Any) -> dict[str, Any]:
    """The keywords of a small labelling run against ``sim``."""
    return {
        "input": [{"id": i, "text": f"row {i}"} for i in range(rows)],
        "model": "gpt-4o-mini",
        "prompt": "{text}",
        "id_column": "id",
        "quiet": True,
        "base_url": sim.base_url,
        **extra,
    }


def test_a_run_that_ends_by_itself_still_returns(tmp_path: Path) -> None:
    """Only a signal raises: a run stopped by a hook's own reason returns its Run."""

    class Enough(batchrun.RunHooks):
        def on_written(self, state: batchrun.RunState, batch: list[Any]) -> str | None:
            return "enough"

    with SimThread(SimConfig(latency_ms=5)) as sim:
        run = batchrun.run(
            out_dir=tmp_path / "run", hooks=Enough(), **labelling(sim, 200, concurrency=2)
        )
    assert run.status == "interrupted" and run.exit_code == 1


def test_the_exceptions_carry_the_run_and_say_how_far_it_got(tmp_path: Path) -> None:
    with SimThread(SimConfig()) as sim:
        run = batchrun.run(out_dir=tmp_path / "run", **labelling(sim, 3))
    ctrl_c = interrupted(run)
    assert type(ctrl_c) is KeyboardInterrupt  # exactly: see batchrun.errors.interrupted
    assert ctrl_c.run is run  # type: ignore[attr-defined]
    assert "3 of 3 rows answered" in str(ctrl_c) and str(tmp_path / "run") in str(ctrl_c)
    term = interrupted(run, terminated=True)
    assert type(term) is SystemExit and term.code == 143
    assert term.run is run  # type: ignore[attr-defined]
    assert "terminated (SIGTERM)" in term.__notes__[0]


def test_cancelling_arun_drains_before_the_cancellation_goes_on(tmp_path: Path) -> None:
    """Cancelled mid-run (asyncio.run's Ctrl-C does this), arun stops sending, writes
    the answers in flight (paid for: a rerun would pay again), then re-raises."""
    with SimThread(SimConfig(latency_ms=100)) as sim:

        async def main() -> None:
            task = asyncio.ensure_future(
                batchrun.arun(out_dir=tmp_path / "run", **labelling(sim, 400, concurrency=4))
            )
            # some answered, some on the wire (the simulator's own counters)
            while sim.stats.requests < 12 or not sim.stats.in_flight:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(main())
        sent = sim.stats.requests
    assert lines(tmp_path / "run" / "results.jsonl") == sent  # none dropped
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["requests"]["succeeded"] == sent < 400
