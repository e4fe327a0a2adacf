"""Crash safety for real: SIGKILL a `batchrun run` at random moments, resume, repeat.

The simulator runs in its own process (so a kill of the runner cannot disturb it),
with latency so that every kill lands while requests are in flight and lines are
being written. After every kill the files must already be exactly-once (no id on
two complete lines); at the end results.jsonl holds one complete line per input
id, and summary.json's totals equal a recount of the file.
"""

from __future__ import annotations

import json
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchrun._cli import cli
from tests.test_resume import ids_of, recount, summary_of, write_rows

ROWS = 500
KILLS = 10
SEED = 20240611


def _read_first_line(proc: subprocess.Popen[bytes], timeout: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    try:
        if not sel.select(timeout):
            raise AssertionError("the simulator did not start in time")
        return proc.stdout.readline().decode().strip()
    finally:
        sel.close()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def _sim(latency_ms: int, jitter_ms: int) -> Iterator[str]:
    """`batchrun sim` in a subprocess; yields its base URL."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "batchrun",
            "sim",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--latency-ms",
            str(latency_ms),
            "--jitter-ms",
            str(jitter_ms),
            "--seed",
            "7",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        line = _read_first_line(proc, timeout=20)
        assert line.startswith("batchrun sim listening on http://127.0.0.1:"), line
        yield line.rsplit(" ", 1)[-1]
    finally:
        _stop(proc)


@pytest.fixture
def sim_process() -> Iterator[str]:
    yield from _sim(50, 30)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _complete_ids(path: Path) -> list[str]:
    """Ids of the complete lines (a torn last line is the resume's job)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    return [json.loads(line)["custom_id"] for line in data[:end].splitlines()]


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_is_exactly_once(
    tmp_path: Path, sim_process: str
) -> None:
    rng = random.Random(SEED)
    inp = write_rows(tmp_path / "req.jsonl", ROWS, models=("gpt-4o-mini", "gpt-4o"))
    out = tmp_path / "run"
    results = out / "results.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "batchrun",
        "run",
        str(inp),
        "-o",
        str(out),
        "--base-url",
        sim_process,
        "-c",
        "8",
        "--auth",
        "none",
        "-q",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OPENAI_API_KEY", None)
    log = open(tmp_path / "stderr.log", "wb")  # noqa: SIM115 - closed in finally
    kills = early_kills = torn_seen = 0
    progress: list[int] = []
    proc: subprocess.Popen[bytes] | None = None
    try:
        # a couple of kills at a random instant after start: may land in start-up
        # (scan, repair, run.json) as well as mid-run
        while early_kills < 2:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
            time.sleep(rng.uniform(0.15, 0.8))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            early_kills += 1

        while kills < KILLS:
            before = _size(results)
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
            # wait until this process has written something (start-up takes ~1 s),
            # then kill it after a random further delay: mid-run, requests in flight
            deadline = time.monotonic() + 20
            while _size(results) <= before and proc.poll() is None:
                assert time.monotonic() < deadline, "the run wrote nothing in 20 s"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.05, 0.5))
            assert proc.poll() is None, (
                f"the run finished before kill {kills + 1}; make the job longer"
            )
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
            kills += 1
            data = results.read_bytes()
            torn_seen += bool(data) and not data.endswith(b"\n")
            # exactly-once holds after every crash, not just at the end
            ids = _complete_ids(results)
            assert len(ids) == len(set(ids)), f"a row was written twice (after kill {kills})"
            progress.append(len(ids))

        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
        assert proc.wait(timeout=40) == 0, (tmp_path / "stderr.log").read_text()[-2000:]
    finally:
        if proc is not None:
            _stop(proc)
        log.close()

    assert kills >= KILLS
    # every kill after the first few landed mid-run: some rows done, some pending
    assert 0 < progress[0] and progress[-1] < ROWS, progress
    data = results.read_bytes()
    assert data.endswith(b"\n")
    ids = ids_of(results)  # parses every line
    assert sorted(ids) == sorted(f"id-{i}" for i in range(ROWS))
    assert _size(out / "errors.jsonl") == 0

    summary = summary_of(out)
    counted = recount(out)
    assert summary["status"] == "complete"
    assert summary["requests"] == {
        "total": ROWS,
        "succeeded": ROWS,
        "failed": 0,
        "pending": 0,
        "invalid": 0,
    }
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    assert {k: summary["usage"][k] for k in keys} == counted["total"]
    assert {m: {k: u[k] for k in keys} for m, u in summary["by_model"].items()} == counted[
        "by_model"
    ]
    assert summary["retries"] == counted["retries"]

    status = CliRunner().invoke(cli, ["status", str(out), "--json"], catch_exceptions=False)
    assert status.exit_code == 0
    report = json.loads(status.output)
    assert report["complete"] is True
    assert report["requests"]["succeeded"] == ROWS and report["requests"]["pending"] == 0
    print(
        f"kills={kills}+{early_kills} early, torn tails seen={torn_seen}, "
        f"lines after each kill={progress}"
    )


# -- the quality breaker under kill -9 (issue 31) --------------------------------------------
BREAKER_ROWS = 2880
BLOCK = 96
BREAKER_KILLS = 20
EARLY_KILLS = 4
MORE_KILLS = 15
"""Kills after the 20 at most, until the rows left begin with a bad block (see below)."""
BREAKER_CONCURRENCY = 32


def write_half_truncated(path: Path) -> tuple[int, int]:
    """Rows whose answers are truncated in blocks: rows 0-95 answered in full, 96-191
    cut off (max_tokens 5: the simulator's answers are 8 words at least), and so on;
    every 8th row repeats the body of a row five before it (answered by reuse). Half
    of the answers are truncated, but a process that resumes inside a bad block sees
    only truncated answers first. Returns (rows truncated, rows reused)."""
    bodies: list[dict[str, object]] = []
    truncated = reused = 0
    with open(path, "w") as f:
        for i in range(BREAKER_ROWS):
            if i % 8 == 7:
                body = bodies[i - 5]
                reused += 1
            else:
                body = {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"Question {i}: what is item {i}?"}],
                    "temperature": 0,
                    "max_tokens": 5 if (i // BLOCK) % 2 else 200,
                }
            bodies.append(body)
            truncated += body["max_tokens"] == 5
            f.write(json.dumps({"custom_id": f"id-{i}", "body": body}) + "\n")
    return truncated, reused


def bad_rows_ahead(results: Path) -> int:
    """Rows the next process sends first that will be cut off: from the first row left
    (repeats aside: they are answered by reuse), the rows left of its block, when that
    block is a bad one. With more than ``-c`` of them, every answer of the next
    process's first write is truncated."""
    done = {int(i.rsplit("-", 1)[1]) for i in _complete_ids(results)}
    left = [i for i in range(BREAKER_ROWS) if i not in done and i % 8 != 7]
    if not left or (left[0] // BLOCK) % 2 == 0:
        return 0
    end = (left[0] // BLOCK + 1) * BLOCK
    return sum(1 for i in left if i < end)


@pytest.fixture
def slow_sim_process() -> Iterator[str]:
    yield from _sim(150, 75)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_kill_loop_over_half_truncated_answers_never_trips_the_breaker(
    tmp_path: Path, slow_sim_process: str
) -> None:
    """The issue-31 loop: kill -9 again and again, rerun, until done. The breaker judges
    the run's paid answers (half truncated), not each process's first ones (which, in
    a bad block, are all truncated): no process stops, the last one exits 0. The loop
    ends on a kill after which the rows left begin with a bad block, so the last run's
    first answers are all truncated (a rule judging each process alone stops it)."""
    rng = random.Random(SEED)
    inp = tmp_path / "req.jsonl"
    truncated, reused = write_half_truncated(inp)
    out = tmp_path / "run"
    results = out / "results.jsonl"
    cmd = [
        *(sys.executable, "-m", "batchrun", "run", str(inp), "-o", str(out)),
        *("--base-url", slow_sim_process, "-c", str(BREAKER_CONCURRENCY), "--auth", "none"),
        "-q",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OPENAI_API_KEY", None)
    log_path = tmp_path / "stderr.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed in finally
    started = time.monotonic()
    kills = 0
    progress: list[int] = []
    proc: subprocess.Popen[bytes] | None = None

    def still_running(what: str) -> None:
        assert proc is not None
        if proc.poll() is not None:
            log.flush()
            raise AssertionError(
                f"the run exited ({proc.returncode}) before {what}: " + log_path.read_text()[-600:]
            )

    try:
        for _ in range(EARLY_KILLS):  # at a random instant: start-up or the first answers
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
            time.sleep(rng.uniform(0.2, 2.0))
            still_running(f"early kill {kills + 1}")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            kills += 1
        while kills < EARLY_KILLS + BREAKER_KILLS or (
            bad_rows_ahead(results) <= BREAKER_CONCURRENCY + 8
            and kills < EARLY_KILLS + BREAKER_KILLS + MORE_KILLS
        ):
            before = _size(results)
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
            deadline = time.monotonic() + 20
            while _size(results) <= before and proc.poll() is None:
                assert time.monotonic() < deadline, "the run wrote nothing in 20 s"
                time.sleep(0.01)
            if kills < EARLY_KILLS + BREAKER_KILLS:
                time.sleep(rng.uniform(0.25, 0.6))  # answers written, more in flight
            else:
                # the last kills land where the loop wants to end: the moment the rows
                # left begin with a bad block (at random moments, a fast machine could
                # finish the job first)
                while (
                    bad_rows_ahead(results) <= BREAKER_CONCURRENCY + 8
                    and proc.poll() is None
                    and time.monotonic() < deadline
                ):
                    time.sleep(0.05)
            still_running(f"kill {kills + 1}")
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
            kills += 1
            ids = _complete_ids(results)
            assert len(ids) == len(set(ids)), f"a row was written twice (after kill {kills})"
            progress.append(len(ids))
        ahead = bad_rows_ahead(results)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
        code = proc.wait(timeout=60)
    finally:
        if proc is not None:
            _stop(proc)
        log.close()
    elapsed = time.monotonic() - started
    stderr = log_path.read_text()
    assert code == 0, stderr[-2000:]
    assert "stopping:" not in stderr
    assert kills >= EARLY_KILLS + BREAKER_KILLS
    assert ahead > BREAKER_CONCURRENCY, progress  # the last run began in a bad block
    assert progress[-1] < BREAKER_ROWS, progress  # every kill landed before the end

    ids = ids_of(results)
    assert sorted(ids) == sorted(f"id-{i}" for i in range(BREAKER_ROWS))  # every row once
    assert _size(out / "errors.jsonl") == 0
    summary = summary_of(out)
    assert summary["status"] == "complete"
    lines = [json.loads(line) for line in results.read_bytes().splitlines()]
    quality = {line["custom_id"]: line["batchrun"].get("quality", "ok") for line in lines}
    assert sum(q == "truncated" for q in quality.values()) == truncated  # ~50 %
    assert summary["quality"]["by_model"]["gpt-4o-mini"] == {
        "truncated": truncated,
        "ok": BREAKER_ROWS - truncated,
    }
    # what the breaker judged, restored through every kill: the answers paid for
    paid = Counter(
        line["batchrun"].get("quality", "ok")
        for line in lines
        if not line["batchrun"].get("reused")
    )
    assert summary["journal"]["tally"]["paid_quality"]["by_model"]["gpt-4o-mini"] == paid
    assert BREAKER_ROWS - sum(paid.values()) == reused  # the repeats were not paid for
    print(f"kills={kills}, lines after each kill={progress}, bad ahead={ahead}, {elapsed:.1f} s")
