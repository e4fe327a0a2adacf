"""A batch run stopped while its batches go on, then resumed another way (issue 23).

Item 5: an online rerun of a directory whose batches still run at the provider would
send their rows again (paid twice) and leave the batch spend out of every total. It
takes in the batches that ended and sends only the rest, or, while a batch still runs,
is refused naming the batches and what to do. The simulator (in-process, on loopback)
counts what is billed: rows its batches answered plus online requests; every row must
be billed exactly once across the two processes.

Item 11: ``--batch-api --base-url sim`` killed with SIGKILL after a batch was created
could not resume (the simulator in the dead process took its batches along): the
rehearsal's simulator keeps them in ``DIR/batch/sim``. The killed process kills
itself the moment its step journal holds a ``created`` line (a sitecustomize on its
path), so the crash point is exact, not a race.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

from batchrun._api import cancel_run, make_runner
from batchrun._batch.steps import read_ledger
from batchrun._batch.workdir import steps_path
from batchrun._cli import cli
from batchrun._engine.runner import Runner
from batchrun._report.text import format_status, status_report
from batchrun.errors import RunDirError
from batchrun.sim import BatchConfig, SimConfig, SimThread
from tests.test_batch_api import assert_exactly_once, lines, settings, write_rows


def interrupted_after_submitting(cfg: Any) -> Any:
    """A batch run Ctrl-C'd at its first wait: every shard is created, none polled
    (the batches go on at the provider). A pool's too: each endpoint with its key."""
    driver = make_runner(cfg, None)

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
        interrupted_after_submitting(
            # every shard at once (no opening batch for the quality breaker)
            settings(inp, out, sim.base_url, batch_max_requests=50, quality_breaker=0)
        )
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


async def _quick_sleep(seconds: float) -> None:
    await anyio.sleep(min(seconds, 0.05))


def test_online_resume_is_refused_while_batches_run(tmp_path: Path) -> None:
    n = 100
    inp = write_rows(tmp_path / "req.jsonl", n)
    out = tmp_path / "run"
    # 2 shards of 50 answered 2 rows a second: they run for the whole test. The
    # simulator's clock is pushed 10 s on once they are created, so each has answered
    # 20 rows by then whatever the machine's speed (and is still running)
    config = SimConfig(batch=BatchConfig(rows_per_second=2, cancel_delay=0.05))
    ahead = [0.0]
    with SimThread(config, now=lambda: time.monotonic() + ahead[0]) as sim:
        interrupted_after_submitting(
            # every shard at once (no opening batch for the quality breaker)
            settings(inp, out, sim.base_url, batch_max_requests=50, quality_breaker=0)
        )
        ahead[0] = 10.0
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
        # the provider-sized poll interval is not this test's subject: polls 50 ms apart
        assert cancel_run(str(out), sleep=_quick_sleep).exit_code == 0
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
    from batchrun._batch.steps import StepJournal
    from batchrun._scale.driver import RayDriver

    inp = write_rows(tmp_path / "req.jsonl", 10)
    out = tmp_path / "run"
    journal = StepJournal(steps_path(str(out)))
    journal.open(wall_time=1.0)
    journal.write({"step": "planned", "shard": 1, "model": "gpt-4o-mini", "rows": 10})
    journal.write({"step": "created", "shard": 1, "batch_id": "batch_left_open", "at": 2.0})
    journal.close()
    cfg = settings(inp, out, "http://127.0.0.1:9/v1", mode="online", ray="local")
    with pytest.raises(RunDirError, match="batch_left_open"):
        driver = RayDriver(cfg)
        driver.cluster._check_and_plan(driver)  # before Ray is even started


# -- item 11: a rehearsal's batches outlive its process -----------------------------------

DIE_AFTER_STEP = """
import json, os, signal
_fsync = os.fsync
def _fsync_then_die_after_step(fd):
    _fsync(fd)
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return
    if path.endswith(os.path.join("batch", "steps.jsonl")):
        with open(path, "rb") as f:
            last = f.read().splitlines()[-1]
        if json.loads(last).get("step") == os.environ.get("BATCHRUN_TEST_DIE_AFTER"):
            os.kill(os.getpid(), signal.SIGKILL)
os.fsync = _fsync_then_die_after_step
"""
"""Loaded by the killed process (sitecustomize): SIGKILL right after the journal's fsync
of the step named by BATCHRUN_TEST_DIE_AFTER."""


def batchrun_cli(tmp_path: Path, *args: str, die_after: str | None = None) -> Any:
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(DIE_AFTER_STEP)
    path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    env.pop("OPENAI_API_KEY", None)
    env.pop("BATCHRUN_TEST_DIE_AFTER", None)
    if die_after is not None:
        env["BATCHRUN_TEST_DIE_AFTER"] = die_after
    return subprocess.run(
        [sys.executable, "-m", "batchrun", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )


def sim_log(out: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in (out / "batch" / "sim" / "log.jsonl").read_text().splitlines()]


def killed_after_a_create(tmp_path: Path, n: int) -> tuple[Path, list[str]]:
    inp = write_rows(tmp_path / "req.jsonl", n)
    out = tmp_path / "run"
    command = [
        "run", str(inp), "-o", str(out), "--base-url", "sim", "--batch-api",
        "--batch-max-requests", "50", "--poll-interval", "0.05", "-q", "--no-parquet",
    ]  # fmt: skip
    killed = batchrun_cli(tmp_path, *command, die_after="created")
    assert killed.returncode == -9, killed.stderr
    ledger = read_ledger(steps_path(str(out)))
    assert [r.phase for r in ledger.open_shards()][0] == "submitted"
    assert not lines(out / "results.jsonl")
    return out, command


def test_a_sim_rehearsal_killed_after_a_create_resumes(tmp_path: Path) -> None:
    n = 120
    out, command = killed_after_a_create(tmp_path, n)
    rerun = batchrun_cli(tmp_path, *command)
    assert rerun.returncode == 0, rerun.stderr
    assert_exactly_once(out, n)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["batch"]["rows_via_batch"] == n
    log = sim_log(out)
    creates = Counter(op["metadata"]["batchrun_shard"] for op in log if op["op"] == "create")
    assert creates and max(creates.values()) == 1, creates  # no shard submitted twice
    # every batch ended and was cleaned up; together they answered each row once
    ended = [op["batch"] for op in log if op["op"] == "ended"]
    assert len(ended) == len(creates)
    assert sum(b["request_counts"]["completed"] for b in ended) == n
    assert not os.listdir(out / "batch" / "sim" / "files")  # no upload kept once done


def test_cancel_works_on_a_killed_sim_rehearsal(tmp_path: Path) -> None:
    n = 120
    out, command = killed_after_a_create(tmp_path, n)
    cancelled = batchrun_cli(tmp_path, "cancel", str(out))
    assert cancelled.returncode == 0, cancelled.stderr
    assert "Traceback" not in cancelled.stderr
    assert not read_ledger(steps_path(str(out))).open_shards()
    rerun = batchrun_cli(tmp_path, *command)
    assert rerun.returncode == 0, rerun.stderr
    assert_exactly_once(out, n)


def test_a_simulator_restarted_on_its_folder_has_the_same_batches(tmp_path: Path) -> None:
    import httpx

    folder = str(tmp_path / "sim")
    config = SimConfig(batch=BatchConfig(rows_per_second=200))
    lines_in = "".join(
        json.dumps(
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{i}"}]},
            }
        )
        + "\n"
        for i in range(40)
    ).encode()

    def create(client: httpx.Client) -> str:
        up = client.post(
            "/files", files={"file": ("in.jsonl", lines_in)}, data={"purpose": "batch"}
        )
        made = client.post(
            "/batches",
            json={
                "input_file_id": up.json()["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": {"batchrun_shard": "s1"},
            },
        )
        return str(made.json()["id"])

    with SimThread(config, state_dir=folder) as first, httpx.Client(base_url=first.base_url) as c:
        running, cancelled = create(c), create(c)
        assert c.post(f"/batches/{cancelled}/cancel").json()["status"] == "cancelling"
        assert c.get(f"/batches/{running}").json()["status"] in ("validating", "in_progress")
    with open(os.path.join(folder, "log.jsonl"), "ab") as log:
        log.write(b'{"op": "create", "id": "batch_torn')  # a call killed mid-write

    with SimThread(config, state_dir=folder) as second, httpx.Client(base_url=second.base_url) as c:
        second.advance_batches()
        listed = [b["id"] for b in c.get("/batches").json()["data"]]
        assert listed == [cancelled, running]  # newest first, the torn call never made
        for _ in range(200):
            done = c.get(f"/batches/{running}").json()
            if done["status"] == "completed":
                break
            anyio.run(anyio.sleep, 0.02)
        assert done["status"] == "completed" and done["request_counts"]["completed"] == 40
        output = c.get(f"/files/{done['output_file_id']}/content").content.splitlines()
        assert sorted(json.loads(x)["custom_id"] for x in output) == sorted(
            f"r{i}" for i in range(40)
        )
        assert c.get(f"/batches/{cancelled}").json()["status"] == "cancelled"
        for file_id in (done["input_file_id"], done["output_file_id"]):
            assert c.delete(f"/files/{file_id}").status_code == 200
        new = create(c)  # a third simulator must know this one too

    with SimThread(config, state_dir=folder) as third, httpx.Client(base_url=third.base_url) as c:
        again = c.get(f"/batches/{running}").json()  # restored as last shown, files gone
        assert (again["status"], again["request_counts"]) == ("completed", done["request_counts"])
        assert c.get(f"/files/{done['output_file_id']}").status_code == 404
        assert [b["id"] for b in c.get("/batches").json()["data"]] == [new, cancelled, running]
        kept = {c.get(f"/batches/{b}").json()["input_file_id"] for b in (new, cancelled)}
    # the ended batch's upload is gone; those of batches that may still be replayed stay
    assert set(os.listdir(os.path.join(folder, "files"))) == kept
