"""One run lifecycle (issue 25): the same stop gives the same status and exit code
whichever lane answers the rows.

Each stop is played for real against the simulator, online and through the Batch API
(the Ray lane's budget and quality-breaker stops are played on a real cluster in
tests/test_scale_ray.py, with the same expectations, and its interrupt below):

* the quality breaker: every answer is cut off by a tiny ``max_tokens``;
* the budget: a ``--max-cost`` that a few rows exhaust;
* an interrupt: a Ctrl-C (the engine's ``interrupt``) once some rows are written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from batchrun._api import make_runner
from batchrun._engine.hooks import RunHooks, RunState
from batchrun._engine.lifecycle import Engine
from batchrun._engine.stops import (
    EXIT_BUDGET,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_SOME_FAILED,
    StopReason,
    exit_code,
    final_status,
)
from batchrun._models import Outcome
from batchrun._settings import Settings
from batchrun.sim import SimConfig, SimThread

MODES = ("online", "batch")
ROWS = 120


def write_rows(path: Path, *, max_tokens: int = 200) -> Path:
    with open(path, "w") as f:
        for i in range(ROWS):
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"question {i}"}],
                "max_tokens": max_tokens,
            }
            f.write(json.dumps({"custom_id": f"id-{i}", "body": body}) + "\n")
    return path


def settings(tmp_path: Path, base_url: str, mode: str, **kw: Any) -> Settings:
    values: dict[str, Any] = {
        "input": str(tmp_path / "in.jsonl"),
        "out_dir": str(tmp_path / f"run-{mode}"),
        "base_url": base_url,
        "mode": mode,
        "poll_interval": 0.02,
        "batch_max_requests": 10,
        "concurrency": 4,
        "quiet": True,
        "write_parquet": False,
        **kw,
    }
    return Settings(**values)


def run(engine: Engine) -> tuple[int, str, dict[str, Any]]:
    result = anyio.run(engine.run)
    summary = json.loads((Path(engine.run_dir) / "summary.json").read_text())
    assert summary["status"] == result.status  # what the file says is what was returned
    return result.exit_code, result.status, summary


@pytest.mark.parametrize("mode", MODES)
def test_the_quality_breaker_stops_every_lane_the_same_way(tmp_path: Path, mode: str) -> None:
    write_rows(tmp_path / "in.jsonl", max_tokens=3)  # every answer is cut off
    with SimThread(SimConfig()) as sim:
        code, status, summary = run(make_runner(settings(tmp_path, sim.base_url, mode), None))
    assert (code, status) == (EXIT_ERROR, "bad_answers")
    assert summary["stop_reason"] == StopReason.BAD_ANSWERS
    assert summary["requests"]["pending"] > 0


@pytest.mark.parametrize("mode", MODES)
def test_the_budget_stops_every_lane_the_same_way(tmp_path: Path, mode: str) -> None:
    write_rows(tmp_path / "in.jsonl")
    with SimThread(SimConfig()) as sim:
        cfg = settings(tmp_path, sim.base_url, mode, max_cost=0.0005, quality_breaker=0)
        code, status, summary = run(make_runner(cfg, None))
    assert (code, status) == (EXIT_BUDGET, "budget_exceeded")
    assert summary["stop_reason"] == StopReason.BUDGET
    assert 0 < summary["requests"]["succeeded"] < ROWS


class CtrlCAfter(RunHooks):
    """A Ctrl-C as soon as ``rows`` lines are written (a hook can only say so; the test
    plays the signal on the engine, as the signal watcher would)."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.engine: Engine | None = None

    def on_written(self, state: RunState, batch: list[Outcome]) -> str | None:
        if state.counts.succeeded >= self.rows and self.engine is not None:
            self.engine.interrupt()
        return None


@pytest.mark.parametrize("mode", MODES)
def test_an_interrupt_stops_every_lane_the_same_way(tmp_path: Path, mode: str) -> None:
    write_rows(tmp_path / "in.jsonl")
    hook = CtrlCAfter(10)
    with SimThread(SimConfig(latency_ms=5)) as sim:
        cfg = settings(tmp_path, sim.base_url, mode, quality_breaker=0)
        engine = make_runner(cfg, None, hooks=hook)
        hook.engine = engine
        code, status, summary = run(engine)
    assert (code, status) == (EXIT_SIGINT, "interrupted")
    assert summary["stop_reason"] == StopReason.SIGINT
    assert 10 <= summary["requests"]["succeeded"] < ROWS


@pytest.mark.parametrize(
    ("reason", "pending", "failed", "status", "code"),
    [
        (None, 0, 0, "complete", EXIT_OK),
        (None, 0, 2, "complete", EXIT_SOME_FAILED),
        (None, 5, 0, "incomplete", EXIT_ERROR),
        ("SIGINT", 5, 0, "interrupted", EXIT_SIGINT),
        ("SIGTERM", 5, 0, "interrupted", EXIT_SIGTERM),
        ("budget", 5, 0, "budget_exceeded", EXIT_BUDGET),
        ("bad_answers", 5, 0, "bad_answers", EXIT_ERROR),
        ("endpoint_down", 5, 0, "endpoint_down", EXIT_ERROR),
        ("disk_error", 5, 0, "disk_error", EXIT_ERROR),
        ("shard_failed", 5, 0, "interrupted", EXIT_ERROR),
        ("a hook's own reason", 5, 0, "interrupted", EXIT_ERROR),
    ],
)
def test_one_table_of_statuses_and_exit_codes(
    reason: str | None, pending: int, failed: int, status: str, code: int
) -> None:
    assert final_status(reason, pending=pending) == status
    assert exit_code(reason, pending=pending, failed=failed) == code


def test_a_pilot_and_a_cancel_leave_rows_pending_on_purpose() -> None:
    assert final_status(None, pending=5, pilot=True) == "partial"
    assert exit_code(None, pending=5, pilot=True) == EXIT_OK
    assert exit_code(None, pending=5, cancel_only=True) == EXIT_OK
    assert exit_code("SIGINT", pending=5, pilot=True) == EXIT_SIGINT


def test_the_engine_files_stay_small() -> None:
    """No class but the settings declaration over 350 lines or 25 methods (the
    lifecycle is one engine with lanes, not three drivers)."""
    import ast

    import batchrun

    root = Path(batchrun.__file__).parent
    too_big = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name != "Settings":
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                methods = sum(
                    isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) for n in node.body
                )
                if lines > 350 or methods > 25:
                    too_big.append(f"{path.relative_to(root)}:{node.name} {lines} lines, {methods}")
    assert not too_big, too_big
