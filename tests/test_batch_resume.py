"""A batch run stopped while its batches go on, then resumed another way (issue 23).

Item 5: an online rerun of a directory whose batches still run at the provider would
send their rows again (paid twice) and leave the batch spend out of every total. It
takes in the batches that ended and sends only the rest, or, while a batch still runs,
is refused naming the batches and what to do. The simulator (in-process, on loopback)
counts what is billed: rows its batches answered plus online requests; every row must
be billed exactly once across the two processes.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

from batchrun._api import cancel_run, make_runner
from batchrun.batch.driver import BatchDriver
from batchrun.batch.steps import read_ledger
from batchrun.batch.workdir import steps_path
from batchrun.cli import cli
from batchrun.engine.runner import Runner
from batchrun.errors import RunDirError
from batchrun.report.text import format_status, status_report
from batchrun.sim import BatchConfig, SimConfig, SimThread
from tests.test_batch_api import assert_exactly_once, lines, settings, write_rows


def interrupted_after_submitting(cfg: Any) -> Any:
    """A batch run Ctrl-C'd at its first wait: every shard is created, none polled
    (the batches go on at the provider)."""
    driver = BatchDriver(cfg)

    async def ctrl_c(seconds: float) -> None:
        driver.interrupt()

    driver.sleep = ctrl_c
    result = anyio.run(driver.run)
    assert result.exit_code == 130, result.notes
    ledger = read_ledger(steps_path(str(cfg.out_dir)))
    assert ledger.open_shards() and all(r.batch_id for r in ledger.open_shards())
    return result


def billed(sim: SimThread) -> int:
    """Rows the provider charges for: answered by its batches, or sent online."""
    sim.advance_batches()
    stats = sim.snapshot()
    return int(stats["rows_processed"]) + int(stats["requests"])


def test_online_resume_takes_in_ended_batches_and_sends_only_the_rest(tmp_path: Path) -> None:
    n = 200
    inp = write_rows(tmp_path / "req.jsonl", n)
    out = tmp_path / "run"
    # 4 shards of 50; the second expires with half its rows answered
    config = SimConfig(batch=BatchConfig(fates=("ok", "expire"), expire_fraction=0.5))
    with SimThread(config) as sim:
        interrupted_after_submitting(settings(inp, out, sim.base_url, batch_max_requests=50))
        assert not (out / "results.jsonl").exists() or not lines(out / "results.jsonl")
        online = settings(inp, out, sim.base_url, mode="online")
        result = anyio.run(make_runner(online, None).run)
        stats = sim.snapshot()
        assert billed(sim) == n  # every row paid once, across both processes
    assert result.exit_code == 0, result.notes
    assert stats["requests"] == 25  # only the rows the expired batch never ran
    assert_exactly_once(out, n)
    via = Counter(r["batchrun"].get("via", "online") for r in lines(out / "results.jsonl"))
    assert via == {"batch": 175, "online": 25}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["cost_usd"]["by_mode"]["batch"] > 0  # the batch spend is in the total
    assert summary["cost_usd"]["by_mode"]["online"] > 0
    assert not read_ledger(steps_path(str(out))).open_shards()
    assert any("took in the batches" in note for note in result.notes), result.notes
    text = format_status(status_report(str(out)))
    assert "175 via the Batch API" in text and "batches     0 open" in text


def test_online_resume_is_refused_while_batches_run(tmp_path: Path) -> None:
    n = 100
    inp = write_rows(tmp_path / "req.jsonl", n)
    out = tmp_path / "run"
    # 2 shards of 50 answered 2 rows a second: they run for the whole test
    config = SimConfig(batch=BatchConfig(rows_per_second=2, cancel_delay=0.05))
    with SimThread(config) as sim:
        interrupted_after_submitting(settings(inp, out, sim.base_url, batch_max_requests=50))
        batch_ids = [r.batch_id for r in read_ledger(steps_path(str(out))).open_shards()]
        online = settings(inp, out, sim.base_url, mode="online")
        with pytest.raises(RunDirError, match="2 open batches") as refused:
            anyio.run(make_runner(online, None).run)
        message = str(refused.value)
        assert all(str(b) in message for b in batch_ids)
        assert "--batch-api" in message and f"batchrun cancel {out}" in message
        # the rule is the runner's own, not only the library's way in
        with pytest.raises(RunDirError, match="open batches"):
            anyio.run(Runner(online).run)
        # and the command line says it in one line, exit 1
        cli_result = CliRunner().invoke(
            cli,
            ["run", str(inp), "-o", str(out), "--base-url", sim.base_url, "--auth", "none"],
        )
        assert cli_result.exit_code == 1
        error_lines = [x for x in cli_result.output.splitlines() if x.startswith("Error:")]
        assert len(error_lines) == 1 and "open batches" in error_lines[0], cli_result.output
        assert sim.snapshot()["requests"] == 0  # nothing was sent online

        # cancelled, the batches keep what they answered and the rest goes online once
        assert cancel_run(str(out)).exit_code == 0
        result = anyio.run(make_runner(online, None).run)
        stats = sim.snapshot()
        assert billed(sim) == n
    assert result.exit_code == 0, result.notes
    assert_exactly_once(out, n)
    via = Counter(r["batchrun"].get("via", "online") for r in lines(out / "results.jsonl"))
    assert via["online"] == stats["requests"] and via["batch"] == stats["rows_processed"]
    assert via["batch"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert set(summary["cost_usd"]["by_mode"]) == {"online", "batch"}


def test_a_ray_run_is_refused_too(tmp_path: Path) -> None:
    from batchrun.batch.steps import StepJournal
    from batchrun.scale.driver import RayDriver

    inp = write_rows(tmp_path / "req.jsonl", 10)
    out = tmp_path / "run"
    journal = StepJournal(steps_path(str(out)))
    journal.open(wall_time=1.0)
    journal.write({"step": "planned", "shard": 1, "model": "gpt-4o-mini", "rows": 10})
    journal.write({"step": "created", "shard": 1, "batch_id": "batch_left_open", "at": 2.0})
    journal.close()
    cfg = settings(inp, out, "http://127.0.0.1:9/v1", mode="online", ray="local")
    with pytest.raises(RunDirError, match="batch_left_open"):
        RayDriver(cfg)._check_and_plan()  # before Ray is even started
