"""A run directory has exactly one writer (issue 13, item 1).

Two `batchrun run` processes on one directory used to both send every row (paying
twice) and both write it. Now the second is refused at once, naming the first's
pid; `batchrun status` tells a live run from one that was killed. The process tests
use real subprocesses against a loopback simulator in a thread of the test.
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
from batchrun._runfiles import RunDirLock, holder, remove_stray_temp_files
from batchrun.errors import RunDirError
from batchrun.sim import SimConfig, SimThread
from tests.test_resume import Server as ScriptedServer
from tests.test_resume import ids_of, make_cfg, run, summary_of, write_rows

ROWS = 60


@pytest.fixture
def slow_sim() -> Iterator[Any]:
    with SimThread(SimConfig(latency_ms=150, seed=1)) as sim:
        yield sim
        deadline = time.monotonic() + 10
        while sim.stats.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)


def _cmd(inp: Path, out: Path, base_url: str, *extra: str) -> list[str]:
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
        "4",
        "-q",
        "--no-parquet",
        *extra,
    ]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OPENAI_API_KEY", None)
    return env


def _wait_for_lines(out: Path, proc: subprocess.Popen[bytes], n: int = 1) -> None:
    deadline = time.monotonic() + 20
    results = out / "results.jsonl"
    while not (results.exists() and results.read_bytes().count(b"\n") >= n):
        assert proc.poll() is None, "the run ended before writing anything"
        assert time.monotonic() < deadline, "the run wrote nothing in 20 s"
        time.sleep(0.02)


def test_lock_refuses_a_second_holder_and_names_the_first(tmp_path: Path) -> None:
    with RunDirLock(str(tmp_path)):
        assert holder(str(tmp_path)) == os.getpid()
        with pytest.raises(
            RunDirError, match=rf"in use by another batchrun run \(pid {os.getpid()}\)"
        ):
            RunDirLock(str(tmp_path)).acquire()
    assert holder(str(tmp_path)) is None
    with RunDirLock(str(tmp_path)):  # free again once released
        pass


def test_runner_refuses_a_locked_directory_before_sending(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 5)
    cfg = make_cfg(tmp_path, inp)
    (tmp_path / "run").mkdir()
    server = ScriptedServer()
    with RunDirLock(str(tmp_path / "run")), pytest.raises(RunDirError, match="in use"):
        run(cfg, server)
    assert server.total == 0
    assert not (tmp_path / "run" / "results.jsonl").exists()


def test_stray_temp_files_of_a_killed_run_are_removed_on_the_next_start(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 3)
    cfg = make_cfg(tmp_path, inp)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".tmp-abc123.json").write_text("{half")
    (run_dir / ".tmp-def456.parquet").write_bytes(b"PAR")
    result = run(cfg, ScriptedServer())
    assert result.exit_code == 0
    assert not [p for p in os.listdir(run_dir) if p.startswith(".tmp-")]
    assert any("temporary files" in n for n in result.notes)
    assert remove_stray_temp_files(str(run_dir)) == []


@pytest.mark.slow
def test_second_process_on_one_directory_is_refused_and_rows_land_once(
    tmp_path: Path, slow_sim: Any
) -> None:
    inp = write_rows(tmp_path / "req.jsonl", ROWS)
    out = tmp_path / "run"
    with open(tmp_path / "first.log", "wb") as log:
        first = subprocess.Popen(
            _cmd(inp, out, slow_sim.base_url), stdout=subprocess.DEVNULL, stderr=log, env=_env()
        )
    try:
        _wait_for_lines(out, first)
        started = time.monotonic()
        second = subprocess.run(
            _cmd(inp, out, slow_sim.base_url), capture_output=True, env=_env(), timeout=30
        )
        assert second.returncode == 1
        err = second.stderr.decode()
        assert f"in use by another batchrun run (pid {first.pid})" in err
        assert err.count("\n") == 1, err  # one line
        assert time.monotonic() - started < 10  # at once: no waiting for the first

        status = CliRunner().invoke(cli, ["status", str(out)], catch_exceptions=False)
        assert f"status: running, pid {first.pid}" in status.output
        status_json = json.loads(CliRunner().invoke(cli, ["status", str(out), "--json"]).output)
        assert status_json["running_pid"] == first.pid

        assert first.wait(timeout=60) == 0, (tmp_path / "first.log").read_text()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    ids = ids_of(out / "results.jsonl")
    assert sorted(ids) == sorted(f"id-{i}" for i in range(ROWS))  # each exactly once
    assert slow_sim.stats.requests == ROWS  # nothing paid twice
    assert summary_of(out)["requests"]["succeeded"] == ROWS


@pytest.mark.slow
def test_status_tells_a_killed_run_from_a_running_one(tmp_path: Path, slow_sim: Any) -> None:
    inp = write_rows(tmp_path / "req.jsonl", ROWS)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _cmd(inp, out, slow_sim.base_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(),
    )
    try:
        _wait_for_lines(out, proc)
        deadline = time.monotonic() + 10
        while summary_of(out)["status"] != "running":  # the first checkpoint is in
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert summary_of(out)["status"] == "running"  # what the killed process left
    result = CliRunner().invoke(cli, ["status", str(out), "--json"])
    report = json.loads(result.output)
    assert report["status"] == "stopped" and report["running_pid"] is None
    text = CliRunner().invoke(cli, ["status", str(out)]).output
    assert "stopped: the process ended without finishing" in text
    # and the kill left no lock behind: a rerun takes the directory at once
    rerun = subprocess.run(
        _cmd(inp, out, slow_sim.base_url), capture_output=True, env=_env(), timeout=60
    )
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert sorted(ids_of(out / "results.jsonl")) == sorted(f"id-{i}" for i in range(ROWS))


def test_a_runner_may_run_under_a_lock_its_caller_holds(tmp_path: Path) -> None:
    """The Batch API's deadline hands the rows left to an online run without letting
    go of the directory: the runner takes the caller's lock instead of its own."""
    import anyio
    import httpx

    from batchrun._engine.runner import Runner
    from tests.test_resume import FakeTime

    inp = tmp_path / "in.jsonl"
    write_rows(inp, 5)
    cfg = make_cfg(tmp_path, inp)
    out = Path(str(cfg.out_dir))
    out.mkdir()
    lock = RunDirLock(str(out))
    lock.acquire()
    try:
        server = ScriptedServer()
        fake = FakeTime()
        own = Runner(cfg, transport=httpx.MockTransport(server), clock=fake.clock, sleep=fake.sleep)
        with pytest.raises(RunDirError, match="in use"):
            anyio.run(own.run)  # another lock on the same directory: refused
        held = Runner(
            cfg,
            transport=httpx.MockTransport(server),
            clock=fake.clock,
            sleep=fake.sleep,
            held_lock=lock,
        )
        result = anyio.run(held.run)
        assert result.status == "complete" and len(ids_of(out / "results.jsonl")) == 5
        assert holder(str(out)) == os.getpid()  # still ours: the runner did not release it
    finally:
        lock.release()
