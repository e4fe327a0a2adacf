"""Runs through the Batch API (issue 16), end to end against the simulator on loopback.

The driver runs in-process over real HTTP to a `SimThread`; the simulator's faults
(per-row errors, expiry with partial output, a failed validation, the enqueued-token
limit, 5xx and dropped connections on upload and poll, a create whose answer is lost)
are injected, and every test checks the run directory the way a user would rely on
it: every row exactly once across results.jsonl and errors.jsonl, no shard submitted
twice (the simulator counts creates per shard tag), summary.json equal to a recount.
Sleeping is real but short (poll intervals of tens of milliseconds); nothing waits on
a wall-clock deadline except the deadline test, whose sizes leave wide margins.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

from batchrun._api import cancel_run, make_runner
from batchrun._batch.driver import BatchDriver
from batchrun._batch.steps import read_ledger
from batchrun._batch.workdir import steps_path
from batchrun._cli import cli
from batchrun._engine.hooks import RunHooks, RunState
from batchrun._models import Outcome
from batchrun._output.journal import read_journal
from batchrun._output.ledger import batch_status
from batchrun._report.text import format_status, status_report
from batchrun._runfiles import RunDirLock
from batchrun._settings import Settings
from batchrun.errors import ConfigError, InputError, RunDirError
from batchrun.sim import BatchConfig, SimConfig, SimThread


def write_rows(path: Path, n: int, models: tuple[str, ...] = ("gpt-4o-mini",)) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            body = {
                "model": models[i % len(models)],
                "messages": [{"role": "user", "content": f"question {i}"}],
                "max_tokens": 200,
            }
            f.write(json.dumps({"custom_id": f"id-{i}", "body": body}) + "\n")
    return path


def settings(inp: Path, out: Path, base_url: str, **kw: Any) -> Settings:
    values: dict[str, Any] = {
        "input": str(inp),
        "out_dir": str(out),
        "base_url": base_url,
        "mode": "batch",
        "poll_interval": 0.02,
        "timeout": 2.0,
        "quiet": True,
        "write_parquet": False,
        **kw,
    }
    return Settings(**values)


def run_batch(cfg: Settings, **injected: Any) -> Any:
    runner = make_runner(cfg, None, **injected)
    return anyio.run(runner.run)


def ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n"), f"{path.name} ends in a torn line"
    return [json.loads(line)["custom_id"] for line in data.splitlines()]


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def assert_exactly_once(out: Path, n: int) -> tuple[list[str], list[str]]:
    ok, failed = ids(out / "results.jsonl"), ids(out / "errors.jsonl")
    assert len(ok) == len(set(ok)), [i for i, c in Counter(ok).items() if c > 1][:5]
    assert len(failed) == len(set(failed))
    assert not set(ok) & set(failed)
    assert set(ok) | set(failed) == {f"id-{i}" for i in range(n)}
    return ok, failed


def assert_summary_is_a_recount(out: Path) -> None:
    summary = json.loads((out / "summary.json").read_text())
    journal = read_journal(str(out), repair=False)
    assert summary["requests"]["succeeded"] == len(journal.done)
    assert summary["requests"]["failed"] == len(journal.failed)
    assert summary["requests"]["pending"] == 0
    recount = journal.tally
    fresh = read_journal_from_scratch(out)
    assert summary["usage"]["total_tokens"] == fresh.usage.total.total_tokens
    assert recount.usage.total.total_tokens == fresh.usage.total.total_tokens


def read_journal_from_scratch(out: Path) -> Any:
    from batchrun._output.lines import decode
    from batchrun._output.tally import Tally

    tally = Tally()
    for name in ("results.jsonl", "errors.jsonl"):
        path = out / name
        for line in path.read_bytes().splitlines(keepends=True) if path.exists() else ():
            tally.count_outcome(decode(line))
    return tally


def shards_created_once(stats: dict[str, Any]) -> Counter[str]:
    per_shard = Counter(stats["batches_by_metadata"].get("batchrun_shard", {}))
    assert per_shard and max(per_shard.values()) == 1, per_shard
    return per_shard


# -- the whole path, with faults --------------------------------------------------------------


def test_every_row_once_through_expiry_row_errors_and_api_faults(tmp_path: Path) -> None:
    n = 1_500
    inp = write_rows(tmp_path / "req.jsonl", n, models=("gpt-4o-mini", "gpt-4.1-mini"))
    out = tmp_path / "run"
    batch = BatchConfig(
        rows_per_second=20_000,
        row_error_rate=0.05,
        row_error_status=503,
        fates=("ok", "expire", "fail", "token_limit"),
        expire_fraction=0.4,
        scripts={
            "upload": [503, "reset"],
            "create": ["ok", "lost", 500],
            "retrieve": [500, "hang", "reset"],
            "content": ["reset"],
        },
        hang_seconds=30,
    )
    with SimThread(SimConfig(seed=3, batch=batch)) as sim:
        cfg = settings(inp, out, sim.base_url, batch_max_requests=300, max_attempts=4)
        result = run_batch(cfg, create_grace=0.2)
        stats = sim.snapshot()
    assert result.exit_code in (0, 4), result.notes
    ok, failed = assert_exactly_once(out, n)
    assert len(ok) > n * 0.95
    per_shard = shards_created_once(stats)
    assert len(per_shard) >= 6  # 5 first shards (2 models x 300 rows), then resubmissions
    assert stats["api_faults"]["create:lost"] == 1
    assert_summary_is_a_recount(out)
    for record in lines(out / "results.jsonl"):
        meta = record["batchrun"]
        assert meta["via"] == "batch" and meta["batch_id"].startswith("batch_")
        assert meta["latency_ms"] is None
    for record in lines(out / "errors.jsonl"):
        assert record["batchrun"]["via"] == "batch"
        assert len(record["error"]["attempts"]) == 4 or record["error"]["code"] != "server_error"
    ledger = read_ledger(steps_path(str(out)))
    assert not ledger.open_shards()
    assert not [p for p in os.listdir(out / "batch") if p.endswith((".jsonl", ".idx"))][1:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["cost_usd"]["by_mode"]["batch"] > 0
    assert summary["batch"]["rows_via_batch"] == len(ok)


def test_a_failed_validation_is_reported_and_its_rows_are_not_lost(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 40)
    out = tmp_path / "run"
    with SimThread(SimConfig(batch=BatchConfig(fates=("fail",)))) as sim:
        result = run_batch(settings(inp, out, sim.base_url))
        stats = sim.snapshot()
    assert result.exit_code == 0
    assert_exactly_once(out, 40)
    assert stats["batches_created"] == 2
    assert any("failed: invalid_file: Simulated validation failure" in n for n in result.notes)


def test_rows_fail_for_good_after_max_attempts(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 30)
    out = tmp_path / "run"
    config = SimConfig(batch=BatchConfig(row_error_rate=1.0, row_error_status=500))
    with SimThread(config) as sim:
        result = run_batch(settings(inp, out, sim.base_url, max_attempts=3))
        stats = sim.snapshot()
    assert result.exit_code == 4
    _, failed = assert_exactly_once(out, 30)
    assert len(failed) == 30 and stats["batches_created"] == 3
    first = lines(out / "errors.jsonl")[0]
    assert [a["code"] for a in first["error"]["attempts"]] == [
        "batch_retry",
        "batch_retry",
        "server_error",
    ]


def test_a_4xx_row_is_final_at_once(tmp_path: Path) -> None:
    inp = tmp_path / "req.jsonl"
    rows = [
        {
            "custom_id": "id-0",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        },
        {
            "custom_id": "id-1",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "hi"}]},
        },
    ]
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "run"
    with SimThread(SimConfig()) as sim:
        result = run_batch(settings(inp, out, sim.base_url))
        stats = sim.snapshot()
    assert result.exit_code == 4 and stats["batches_created"] == 1
    assert ids(out / "errors.jsonl") == ["id-1"]
    assert lines(out / "errors.jsonl")[0]["response"]["status_code"] == 400


def test_token_limit_waits_for_running_batches(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 90)
    out = tmp_path / "run"
    # room for about one shard of 30 rows at a time
    config = SimConfig(batch=BatchConfig(rows_per_second=600, enqueued_token_limit=400))
    with SimThread(config) as sim:
        result = run_batch(settings(inp, out, sim.base_url, batch_max_requests=30))
        stats = sim.snapshot()
    assert result.exit_code == 0, result.notes
    assert_exactly_once(out, 90)
    shards_created_once(stats)
    assert stats["batches_created"] > 3  # some were refused and submitted again later


# -- interruption, resume, one writer, cancel, status ----------------------------------------


class StopAfterSubmit(RunHooks):
    """A Ctrl-C as soon as the first rows are written."""

    def on_written(self, state: RunState, batch: list[Outcome]) -> str | None:
        return "SIGINT"


def test_ctrl_c_leaves_batches_running_and_a_rerun_resumes(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 200)
    out = tmp_path / "run"
    config = SimConfig(batch=BatchConfig(rows_per_second=400))
    with SimThread(config) as sim:
        # the four batches at once (the quality breaker's opening batch would go alone)
        cfg = settings(inp, out, sim.base_url, batch_max_requests=50, quality_breaker=0)
        driver = BatchDriver(cfg, hooks=StopAfterSubmit())
        first = anyio.run(driver.run)
        assert first.exit_code == 130 and first.status == "interrupted"
        assert any("go on at the provider" in n for n in first.notes)
        status = batch_status(str(out))
        assert status is not None and status["open"]
        text = format_status(status_report(str(out)))
        assert "batches" in text and "s0000" in text
        second = run_batch(cfg)
        stats = sim.snapshot()
    assert second.exit_code == 0
    assert_exactly_once(out, 200)
    shards_created_once(stats)
    assert stats["batches_created"] == 4
    assert sum(stats["downloads"].values()) == len(stats["downloads"])  # none twice


def test_a_second_process_is_refused(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 5)
    out = tmp_path / "run"
    out.mkdir()
    with SimThread(SimConfig()) as sim, RunDirLock(str(out)):
        with pytest.raises(RunDirError, match="in use by another batchrun run"):
            run_batch(settings(inp, out, sim.base_url))
        assert sim.snapshot()["files_uploaded"] == 0


def test_bad_input_fails_before_any_upload(tmp_path: Path) -> None:
    inp = tmp_path / "req.jsonl"
    inp.write_text(json.dumps({"custom_id": "a", "body": {"model": "m"}}) + "\n")
    with SimThread(SimConfig()) as sim:
        with pytest.raises(InputError, match="line 1"):
            run_batch(settings(inp, tmp_path / "run", sim.base_url))
        assert sim.snapshot()["files_uploaded"] == 0
    assert not (tmp_path / "run").exists()


def test_settings_that_cannot_go_through_a_batch_are_refused(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 1)
    # settings built in Python: named as Python keywords (`Settings.problems`)
    with pytest.raises(ConfigError, match=r"stream=True cannot be used with mode='batch'"):
        make_runner(settings(inp, tmp_path / "r", "http://x/v1", stream=True), None)
    online = settings(inp, tmp_path / "r", "http://x/v1", mode="online", deadline=60.0)
    with pytest.raises(ConfigError, match=r"deadline= needs mode='batch'"):
        make_runner(online, None)
    with pytest.raises(ConfigError, match="a pilot"):
        make_runner(settings(inp, tmp_path / "r", "http://x/v1", limit=5), None)
    with pytest.raises(ConfigError, match="cache= works with online runs"):
        make_runner(settings(inp, tmp_path / "r", "http://x/v1", cache=str(tmp_path)), None)


def test_cancel_keeps_finished_rows_and_a_rerun_sends_the_rest(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 120)
    out = tmp_path / "run"
    # shards of 50, 50 and 20 rows: the small one ends first and its lines stop the run
    config = SimConfig(batch=BatchConfig(rows_per_second=30, cancel_delay=0.05))
    with SimThread(config) as sim:
        cfg = settings(inp, out, sim.base_url, batch_max_requests=50)
        first = anyio.run(BatchDriver(cfg, hooks=StopAfterSubmit()).run)
        assert first.exit_code == 130
        cancelled = cancel_run(str(out))
        assert cancelled.exit_code == 0
        done = len(ids(out / "results.jsonl"))
        assert 0 < done < 120
        assert batch_status(str(out))["open"] == []  # type: ignore[index]
        again = run_batch(cfg)
        stats = sim.snapshot()
    assert again.exit_code == 0
    assert_exactly_once(out, 120)
    shards_created_once(stats)


def test_status_counts_the_rows_running_batches_have_answered(tmp_path: Path) -> None:
    """Rows a running batch reports completed are not in results.jsonl until the batch
    ends: `batchrun status`, the progress lines and the report count them, not 0."""
    import io

    from batchrun._output.ledger import read_state
    from batchrun._report.html import build_page_data

    inp = write_rows(tmp_path / "req.jsonl", 120)
    out = tmp_path / "run"
    # shards of 50, 50 and 20 rows answered 30 a second: the small one ends first, and
    # its lines stop the run while the two others are part done
    config = SimConfig(batch=BatchConfig(rows_per_second=30))
    with SimThread(config) as sim:
        cfg = settings(inp, out, sim.base_url, batch_max_requests=50, quality_breaker=0)
        stream = io.StringIO()
        driver = BatchDriver(replace(cfg, quiet=False), hooks=StopAfterSubmit(), stream=stream)
        first = anyio.run(driver.run)
    assert first.exit_code == 130
    written = len(ids(out / "results.jsonl"))
    seen = [e for e in read_state(str(out))["shards"] if e["batch_id"]]  # type: ignore[index]
    inside = sum(e["completed"] for e in seen)
    assert written == 20 and 0 < inside < 100, (written, seen)
    report = status_report(str(out))
    assert report["at_provider"] == inside
    assert report["requests"]["pending"] == 100
    text = format_status(report)
    assert f"100 pending of 120 ({inside} of the pending answered inside running batches" in text
    assert f"; {inside} rows answered inside the open ones" in text
    page = build_page_data(str(out))
    assert page["at_provider"] == inside
    assert page["batches"]["open"] == 2
    assert {s["answered"] for s in page["batches"]["shards"] if s["open"]} == {
        e["completed"] for e in seen
    }
    # while it ran, its progress lines counted them too
    assert "answered inside running batches, not collected yet)" in stream.getvalue()


def test_cli_batch_api_status_and_cancel(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 25)
    out = tmp_path / "run"
    with SimThread(SimConfig()) as sim:
        result = CliRunner().invoke(
            cli,
            [
                "run",
                str(inp),
                "-o",
                str(out),
                "--base-url",
                sim.base_url,
                "--auth",
                "none",
                "--batch-api",
                "--poll-interval",
                "0.02",
                "-q",
                "--no-parquet",
            ],
            catch_exceptions=False,
        )
        assert result.exit_code == 0, result.output
        status = CliRunner().invoke(cli, ["status", str(out)], catch_exceptions=False)
        assert "batches     0 open, 1 done" in status.output
        assert "25 via the Batch API" in status.output
        cancel = CliRunner().invoke(cli, ["cancel", str(out)], catch_exceptions=False)
        assert cancel.exit_code == 0
    assert_exactly_once(out, 25)


# -- the deadline: cancel what is left, finish it online ------------------------------------


@pytest.fixture
def slow_batches() -> Iterator[SimThread]:
    # batches answer 40 rows a second: 600 rows could never finish before the deadline
    config = SimConfig(batch=BatchConfig(rows_per_second=40, cancel_delay=0.1))
    with SimThread(config) as sim:
        yield sim


def test_deadline_cancels_and_finishes_the_rest_online(
    tmp_path: Path, slow_batches: SimThread
) -> None:
    n = 600
    inp = write_rows(tmp_path / "req.jsonl", n)
    out = tmp_path / "run"
    cfg = settings(inp, out, slow_batches.base_url, deadline=4.0, batch_max_requests=200)
    result = run_batch(cfg)
    stats = slow_batches.snapshot()
    assert result.exit_code == 0, result.notes
    ok, _ = assert_exactly_once(out, n)
    via = Counter(r["batchrun"].get("via", "online") for r in lines(out / "results.jsonl"))
    assert via["batch"] > 0 and via["online"] > 0 and sum(via.values()) == n
    assert stats["requests"] == via["online"]  # online requests: only the rows left
    shards_created_once(stats)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert set(summary["cost_usd"]["by_mode"]) == {"online", "batch"}
    assert any("deadline" in n for n in result.notes)


def test_the_key_is_in_no_file_and_no_metadata(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "sk-batch-canary-0123456789abcdefghij"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    inp = write_rows(tmp_path / "req.jsonl", 20)
    out = tmp_path / "run"
    with SimThread(SimConfig(require_key=key, batch=BatchConfig(fates=("expire",)))) as sim:
        cfg = settings(inp, out, sim.base_url, keep_remote_files=True)
        result = anyio.run(make_runner(cfg, key).run)
        listed = sim.server.batches.listed()
        uploads = [f.content for f in sim.server.batches.files.listed("batch")]
    assert result.exit_code == 0
    assert_exactly_once(out, 20)
    for batch in listed:
        assert key not in json.dumps(batch.to_dict())
    assert uploads and all(key.encode() not in content for content in uploads)
    for path in out.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), path


def test_a_pilot_online_then_the_rest_through_batches(tmp_path: Path) -> None:
    inp = write_rows(tmp_path / "req.jsonl", 60)
    out = tmp_path / "run"
    with SimThread(SimConfig()) as sim:
        pilot = run_batch(settings(inp, out, sim.base_url, mode="online", limit=10))
        assert pilot.status == "partial" and sim.stats.requests == 10
        rest = run_batch(settings(inp, out, sim.base_url))
        stats = sim.snapshot()
    assert rest.exit_code == 0 and stats["rows_processed"] == 50  # only the rest
    ok, _ = assert_exactly_once(out, 60)
    vias = [x["batchrun"].get("via") for x in lines(out / "results.jsonl")]
    assert vias.count("batch") == 50 and vias.count(None) == 10


def test_max_cost_through_batches_stops_within_the_cap(tmp_path: Path) -> None:
    from batchrun._cost.budget import worst_case
    from batchrun._cost.prices import PriceBook

    n = 100
    inp = write_rows(tmp_path / "req.jsonl", n)
    out = tmp_path / "run"
    book = PriceBook.load(None)
    worst = max(
        worst_case(json.loads(line)["body"], book, via_batch=True)
        for line in inp.read_text().splitlines()
    )
    assert worst < worst_case(json.loads(inp.read_text().splitlines()[0])["body"], book)
    # room for the worst case of 8 rows; an answer costs ~1/8 of its worst case, so
    # each batch that ends frees room for the next, until the spent money leaves none
    cap = worst * 8.5
    with SimThread(SimConfig(seed=5, batch=BatchConfig(rows_per_second=20_000))) as sim:
        result = run_batch(settings(inp, out, sim.base_url, max_cost=cap))
        stats = sim.snapshot()
    assert result.exit_code == 3, result.notes
    assert any("budget cap reached" in note for note in result.notes), result.notes
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "budget_exceeded"
    assert 0 < summary["cost_usd"]["total"] <= cap
    ok = ids(out / "results.jsonl")
    assert len(ok) == len(set(ok)) and 8 < len(ok) < n
    assert summary["requests"]["pending"] == n - len(ok)
    shards_created_once(stats)
    # the first shard took the rows whose worst case fit the cap, and said so
    ledger = read_ledger(steps_path(str(out)))
    first = ledger.shards[min(ledger.shards)]
    assert first.rows == 8 and first.worst_usd is not None and first.worst_usd <= cap
    assert len(ledger.shards) > 2
    assert not ledger.open_shards()

    # a higher cap continues: only the rest is sent, every row once (a new server on
    # another port is another endpoint, so the resume takes --force)
    with SimThread(SimConfig(seed=5, batch=BatchConfig(rows_per_second=20_000))) as sim:
        result = run_batch(settings(inp, out, sim.base_url, max_cost=1.0, force=True))
        stats = sim.snapshot()
    assert result.exit_code == 0, result.notes
    assert_exactly_once(out, n)
    assert sum(shards_created_once(stats).values()) >= 1
    assert_summary_is_a_recount(out)


def test_an_open_shard_planned_without_a_cap_leaves_no_room(tmp_path: Path) -> None:
    from batchrun._batch.steps import Ledger, ShardRecord
    from batchrun._batch.submit import Submitter
    from batchrun._cost.budget import BatchBudget
    from batchrun._cost.prices import PriceBook

    ledger = Ledger(run_id="r")
    ledger.shards[1] = ShardRecord(1, rows=10, worst_usd=0.25)
    ledger.shards[2] = ShardRecord(2, rows=10, worst_usd=0.5, done=True)

    class Shards:
        def __init__(self) -> None:
            self.ledger = ledger

    submitter = Submitter.__new__(Submitter)
    submitter.budget = BatchBudget(1.0, PriceBook.load(None), spent=lambda: 0.125)
    submitter.shards = Shards()  # type: ignore[assignment]
    assert submitter._budget_room(0.125) == pytest.approx(1.0 - 0.125 - 0.25)  # done: free
    ledger.shards[3] = ShardRecord(3, rows=10)  # planned before the cap was set
    assert submitter._budget_room(0.125) == 0.0
