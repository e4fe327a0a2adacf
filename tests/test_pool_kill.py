"""Exactly once across a pool, for real (issue 26, part 2, must-show 2).

* A kill -9 loop over a pooled `batchrun run` (two simulators in a process of their
  own, ``batchrun sim --pool 2``, with 10 % 503s so rows fail over between them):
  after every kill no id is on two complete lines; at the end every row is answered
  once, and summary.json (totals and ``endpoints.NAME``) equals a recount.
* A failover storm: one endpoint flapping between 200 and 503 every 1.5 s
  next to a steady one; every row answered once as the servers count it, the
  flapping one's breaker trips, and the summary equals a recount.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import batchrun
from batchrun._output.journal import read_journal
from batchrun.sim import SimConfig, SimThread
from batchrun.sim.envelope import ApiError
from batchrun.sim.http import error_response
from tests.kill_loop import kill_loop
from tests.test_kill import _read_first_line, _stop
from tests.test_resume import ids_of, recount, summary_of, write_rows

PROCESS_ONLY = ("breaker", "breaker_trips", "cost_usd")
"""What a summary's endpoint row says that no line records (this process's)."""


def endpoint_rows_recounted(run_dir: Path) -> dict[str, Any]:
    tally = read_journal(str(run_dir), from_checkpoint=False).tally
    return {name: e.to_dict() for name, e in tally.by_endpoint.items()}


def endpoint_rows_of(summary: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {k: v for k, v in row.items() if k not in PROCESS_ONLY}
        for name, row in summary["endpoints"].items()
        if row["requests"]
    }


def assert_summary_is_a_recount(run_dir: Path, rows: int) -> dict[str, Any]:
    summary = summary_of(run_dir)
    counted = recount(run_dir)
    assert summary["requests"]["succeeded"] == rows and summary["requests"]["pending"] == 0
    keys = ("prompt_tokens", "completion_tokens", "total_tokens")
    assert {k: summary["usage"][k] for k in keys} == counted["total"]
    assert summary["retries"] == counted["retries"]
    assert summary["rate_limited"] == counted["rate_limited"]
    assert endpoint_rows_of(summary) == endpoint_rows_recounted(run_dir)
    answered = sum(row["answered"] for row in summary["endpoints"].values())
    assert answered == rows
    return summary


# -- kill -9 --------------------------------------------------------------------------
ROWS = 400
KILLS = 6
SEED = 20261207


@pytest.fixture
def sim_pool() -> Iterator[list[str]]:
    """`batchrun sim --pool 2` in a process of its own; yields the two base URLs."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchrun", "sim", "--pool", "2", "--host", "127.0.0.1"]
        + ["--port", "0", "--latency-ms", "50", "--jitter-ms", "30", "--seed", "7"]
        + ["--error-rate", "503=0.1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        first = _read_first_line(proc, timeout=20)  # the pool's summary line
        assert first.startswith("batchrun sim: a pool of 2"), first
        assert proc.stdout is not None
        # (the next lines follow at once; the test's timeout bounds a stuck read)
        urls = [proc.stdout.readline().decode().strip().rsplit(" ", 1)[-1] for _ in range(2)]
        assert all(url.startswith("http://127.0.0.1:") for url in urls), urls
        yield urls
    finally:
        _stop(proc)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_kill_9_loop_over_a_pooled_run_leaves_every_row_once(
    tmp_path: Path, sim_pool: list[str]
) -> None:
    rng = random.Random(SEED)
    inp = write_rows(tmp_path / "req.jsonl", ROWS)
    out = tmp_path / "run"
    results = out / "results.jsonl"
    cmd = [sys.executable, "-m", "batchrun", "run", str(inp), "-o", str(out), "-q"]
    cmd += ["--auth", "none", "-c", "4", "--endpoint", f"a={sim_pool[0]}"]
    cmd += ["--endpoint", f"b={sim_pool[1]}"]
    progress = kill_loop(cmd, results, tmp_path / "stderr.log", kills=KILLS, rng=rng)
    assert 0 < progress[0] < progress[-1] < ROWS, progress
    ids = ids_of(results)
    assert sorted(ids) == sorted(f"id-{i}" for i in range(ROWS))
    summary = assert_summary_is_a_recount(out, ROWS)
    assert set(summary["endpoints"]) == {"a", "b"}
    # both answered, and 503s failed over between them
    assert all(row["answered"] > 0 for row in summary["endpoints"].values())
    assert any(row["failures"].get("503") for row in summary["endpoints"].values())


# -- a failover storm -------------------------------------------------------------------
STORM_ROWS = 800
FLAP_SECONDS = 1.5


class Flapping:
    """Wraps a simulator: up (200) and down (503) by turns, ``FLAP_SECONDS`` each."""

    def __init__(self, sim: SimThread) -> None:
        self.refused = 0
        self.started = time.monotonic()
        server = sim.server
        real = server._completions.answer

        async def flapping(request: Any, api: str = "chat") -> Any:
            phase = int((time.monotonic() - self.started) / FLAP_SECONDS)
            if phase % 2:
                self.refused += 1
                return error_response(ApiError(503, "flapping", code="server_error"))
            return await real(request, api)

        server._completions.answer = flapping  # type: ignore[method-assign]


def test_a_failover_storm_leaves_every_row_once_and_the_summary_a_recount(
    tmp_path: Path,
) -> None:
    slow = {"latency_ms": 40.0, "jitter_ms": 20.0}
    with (
        SimThread(SimConfig(seed=1, **slow)) as steady,
        SimThread(SimConfig(seed=2, **slow)) as flaky,
    ):
        flap = Flapping(flaky)
        inp = write_rows(tmp_path / "req.jsonl", STORM_ROWS)
        run = batchrun.run(
            str(inp),
            str(tmp_path / "run"),
            quiet=True,
            auth="none",
            endpoints={
                "steady": {"base_url": steady.base_url, "concurrency": 4},
                "flaky": {"base_url": flaky.base_url, "concurrency": 4, "weight": 4},
            },
        )
        answered = steady.stats.by_status[200] + flaky.stats.by_status[200]
    assert run.exit_code == 0, run.notes
    out = tmp_path / "run"
    ids = ids_of(out / "results.jsonl")
    assert sorted(ids) == sorted(f"id-{i}" for i in range(STORM_ROWS))
    assert not (out / "errors.jsonl").read_text()
    assert answered == STORM_ROWS  # once, as the servers count it
    summary = assert_summary_is_a_recount(out, STORM_ROWS)
    rows = summary["endpoints"]
    assert rows["flaky"]["failures"] == {"503": flap.refused}
    assert rows["flaky"]["answered"] > 0 and rows["steady"]["answered"] > 0
    assert rows["flaky"]["breaker_trips"] >= 1
    # its down phases got few requests (each trip: the 5 in a row and those in
    # flight, then one probe per cool-down), not one per row sent meanwhile
    assert flap.refused <= 0.1 * STORM_ROWS, rows["flaky"]
    assert json.loads((out / "summary.json").read_text())["status"] == "complete"
