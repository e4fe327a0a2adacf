"""The Batch API protocol never pays twice (issue 23, items 6 to 9), against the simulator.

Each test makes the simulator misbehave the way providers have been seen to, and
checks what a user pays and gets: a completed batch whose ``output_file_id`` is null
on the first reads (LiteLLM #37713), a create that takes effect after its answer was
lost, output files that repeat a line with another answer, and a row larger than the
provider's queue of enqueued tokens. The simulator counts creates per shard, rows
answered and reads, so "every row answered once" is a count, not a hope.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from batchrun.sim import BatchConfig, SimConfig, SimThread, running_sim
from tests.test_batch_api import (
    assert_exactly_once,
    assert_summary_is_a_recount,
    ids,
    lines,
    run_batch,
    settings,
    write_rows,
)
from tests.test_sim_batch import T0, Store, jsonl, upload


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp runs on asyncio only


def summary_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def with_a_bad_row(path: Path, n: int) -> Path:
    """``n`` good rows and one the provider refuses (400: an unknown role), so a batch
    has an error file as well as an output file."""
    write_rows(path, n)
    bad = {"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "hi"}]}
    with open(path, "a") as f:
        f.write(json.dumps({"custom_id": f"id-{n}", "body": bad}) + "\n")
    return path


class FakeTime:
    """The driver's clock and sleep: a sleep moves the clock at once."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await anyio.lowlevel.checkpoint()


# -- item 6: a completed batch whose output file id is null on the first reads ----------------


def test_a_completed_batch_without_its_output_file_yet_is_read_again_not_resubmitted(
    tmp_path: Path,
) -> None:
    n = 40
    inp = with_a_bad_row(tmp_path / "req.jsonl", n)
    with SimThread(SimConfig(seed=2)) as sim:
        reference = run_batch(settings(inp, tmp_path / "reference", sim.base_url))
    assert reference.exit_code == 4  # the bad row
    out = tmp_path / "run"
    config = SimConfig(seed=2, batch=BatchConfig(late_output_reads=3))
    with SimThread(config) as sim:
        result = run_batch(settings(inp, out, sim.base_url))
        stats = sim.snapshot()
    assert result.exit_code == 4, result.notes
    ok, failed = assert_exactly_once(out, n + 1)
    assert len(ok) == n and failed == [f"id-{n}"]
    # read again until the file appeared: one batch, every row answered once
    assert stats["late_output_reads"] == 3
    assert stats["batches_created"] == 1 and stats["rows_processed"] == n + 1
    assert not any("never appeared" in note for note in result.notes)
    assert_summary_is_a_recount(out)
    summary, expected = summary_of(out), summary_of(tmp_path / "reference")
    assert summary["requests"]["succeeded"] == n and summary["requests"]["failed"] == 1
    assert summary["cost_usd"]["total"] > 0
    assert summary["cost_usd"] == expected["cost_usd"]
    assert summary["usage"] == expected["usage"]


def test_an_output_file_that_never_appears_is_waited_for_then_taken_as_lost(
    tmp_path: Path,
) -> None:
    from batchrun.batch.finish import FILES_WAIT_READS, FILES_WAIT_S

    n = 10
    inp = write_rows(tmp_path / "req.jsonl", n)
    out = tmp_path / "run"
    fake = FakeTime()
    config = SimConfig(batch=BatchConfig(late_output_reads=1_000_000))
    with SimThread(config) as sim:
        cfg = settings(inp, out, sim.base_url, max_attempts=2, poll_interval=30.0)
        result = run_batch(cfg, clock=fake.clock, sleep=fake.sleep)
        stats = sim.snapshot()
    # each batch was read again, with the poll's back-off, for the whole bound; then
    # its rows were resubmitted once and failed for good after the second batch
    assert stats["batches_created"] == 2
    reads = stats["late_output_reads"]
    assert 2 * FILES_WAIT_READS <= reads <= 2 * (FILES_WAIT_READS + 3), reads
    assert fake.now - 1000.0 >= 2 * FILES_WAIT_S
    lost = [note for note in result.notes if "never appeared" in note]
    assert len(lost) == 2 and "output file" in lost[0] and "10 resubmitted" in lost[0]
    assert "0 resubmitted and 10 failed for good" in lost[1]
    assert result.exit_code == 4
    _, failed = assert_exactly_once(out, n)
    assert len(failed) == n
    assert {r["error"]["code"] for r in lines(out / "errors.jsonl")} == {"batch_missing"}
    assert ids(out / "results.jsonl") == []


# -- the simulator's faults for these items ----------------------------------------------------


def test_sim_hides_the_output_file_id_on_the_first_reads_of_a_finished_batch() -> None:
    sim = Store(late_output_reads=2)
    batch = sim.submit(jsonl(3))
    assert sim.store.retrieved(batch)["output_file_id"] is None  # validating: no file yet
    sim.at(T0)
    assert batch.status == "completed" and batch.output_file_id
    shown = [sim.store.retrieved(batch) for _ in range(3)]
    assert [s["output_file_id"] for s in shown] == [None, None, batch.output_file_id]
    assert all(s["status"] == "completed" for s in shown)
    assert shown[0]["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert sim.stats.late_output_reads == 2


def test_sim_repeats_output_lines_with_another_answer() -> None:
    sim = Store(repeat_output_lines=2)
    batch = sim.submit(jsonl(4))
    sim.at(T0)
    out = sim.output(batch)
    assert [line["custom_id"] for line in out] == [f"row-{i}" for i in (0, 1, 2, 3, 0, 1)]
    first, again = out[0], out[4]
    assert again["id"] != first["id"]
    content = [line["response"]["body"]["choices"][0]["message"]["content"] for line in out]
    assert content[4] == "(repeated) " + content[0]
    assert batch.completed == 4 and sim.stats.repeated_output_lines == 2


@pytest.mark.anyio
async def test_sim_a_slow_create_takes_effect_after_the_client_gave_up() -> None:
    config = SimConfig(batch=BatchConfig(scripts={"create": ["slow_lost:0.3"]}))
    async with running_sim(config) as sim, httpx.AsyncClient(base_url=sim.base_url) as client:
        file_id = (await upload(client, jsonl(2))).json()["id"]
        body = {
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"batchrun_shard": "s000001"},
        }
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/batches", json=body, timeout=0.05)
        assert sim.stats.batches_created == 0  # not yet: the client gave up first
        for _ in range(250):  # made 0.3 s after the call arrived
            if sim.stats.batches_created:
                break
            await asyncio.sleep(0.02)
        listed = (await client.get("/batches")).json()["data"]
        assert [b["metadata"] for b in listed] == [{"batchrun_shard": "s000001"}]
        again = await client.post("/batches", json=body)  # the script is played: normal
        assert again.status_code == 200
    assert sim.stats.api_faults == {"create:slow_lost:0.3": 1}
    assert sim.stats.batches_by_metadata["batchrun_shard"]["s000001"] == 2


def test_sim_knobs_are_checked_and_reach_the_cli() -> None:
    from batchrun.sim.cli import batch_config
    from batchrun.sim.config import check_api_step

    assert check_api_step("slow_lost:1.5") == "slow_lost:1.5"
    for bad in ("slow_lost:", "slow_lost:-1", "slow_lost:soon", "slow"):
        with pytest.raises(ValueError, match="slow_lost:SECONDS"):
            check_api_step(bad)
    with pytest.raises(ValueError, match="late_output_reads"):
        BatchConfig(late_output_reads=-1)
    config = batch_config(
        {
            "batch_late_output_reads": 2,
            "batch_repeat_output_lines": 3,
            "batch_scripts": ("create:slow_lost:1.5,ok",),
        }
    )
    assert config.late_output_reads == 2 and config.repeat_output_lines == 3
    assert config.scripts["create"] == ("slow_lost:1.5", "ok")
