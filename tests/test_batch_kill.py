"""Crash safety of a Batch API run, for real: SIGKILL `batchrun run --batch-api` at chosen
and random moments, rerun, repeat; 120,000 rows in several shards.

The simulator runs in its own process (`batchrun sim`), with expiry (partial output),
per-row errors, 5xx on uploads and polls, a create whose answer is lost, and a pace
that keeps batches running across kills. Kills land: right after a shard's upload is
journaled and before its create (the journal is watched), right after a create was
sent, while results are being written, and at random. After every kill the files must
already be exactly-once; at the end every row is in results.jsonl or errors.jsonl
exactly once, no shard was created twice (the simulator counts creates per shard
tag), no output file was downloaded into the directory twice, and summary.json
equals a recount.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchrun._batch.steps import read_ledger
from batchrun._output.journal import read_journal
from batchrun._output.lines import decode
from batchrun._output.tally import Tally
from tests.test_kill import _read_first_line, _stop

ROWS = 120_000
STEP_PAUSE_HOOK = """
import os, time
_fsync = os.fsync
def _paused_fsync(fd):
    _fsync(fd)
    try:
        path = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return
    if path.endswith(os.path.join("batch", "steps.jsonl")):
        time.sleep(0.02)
os.fsync = _paused_fsync
"""
"""Loaded by the killed `batchrun run` (sitecustomize): 20 ms after each journal fsync."""
SEED = 20250611


def write_rows(path: Path, n: int) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            body = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"q{i}"}],
                "max_tokens": 64,
            }
            f.write(json.dumps({"custom_id": f"id-{i}", "body": body}) + "\n")
    return path


@pytest.fixture
def batch_sim() -> Iterator[str]:
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "batchrun", "sim", "--port", "0", "--seed", "5",
            "--batch-rows-per-second", "12000",
            "--batch-validation-delay", "0.2",
            "--batch-row-error-rate", "0.01", "--batch-row-error-status", "503",
            "--batch-fate", "ok", "--batch-fate", "expire", "--batch-expire-fraction", "0.6",
            "--batch-script", "create:ok,ok,lost",
            "--batch-fault", "upload:503=0.15",
            "--batch-fault", "retrieve:500=0.05",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        line = _read_first_line(proc, timeout=30)
        assert line.startswith("batchrun sim listening on http://127.0.0.1:"), line
        yield line.rsplit(" ", 1)[-1]
    finally:
        _stop(proc)


def _complete_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    return [json.loads(line)["custom_id"] for line in data[:end].splitlines()]


def _last_step(path: Path) -> str | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    end = data.rfind(b"\n")
    if end < 0:
        return None
    start = data.rfind(b"\n", 0, end) + 1
    try:
        return str(json.loads(data[start:end]).get("step"))
    except ValueError:
        return None


def _assert_once_so_far(out: Path) -> None:
    ok = _complete_ids(out / "results.jsonl")
    failed = _complete_ids(out / "errors.jsonl")
    assert len(ok) == len(set(ok)), "a row was written twice"
    assert len(failed) == len(set(failed))
    assert not set(ok) & set(failed)


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_sigkill_anywhere_then_rerun_lands_every_row_once(tmp_path: Path, batch_sim: str) -> None:
    rng = random.Random(SEED)
    inp = write_rows(tmp_path / "req.jsonl", ROWS)
    out = tmp_path / "run"
    steps = out / "batch" / "steps.jsonl"
    cmd = [
        sys.executable, "-m", "batchrun", "run", str(inp), "-o", str(out),
        "--base-url", batch_sim, "--auth", "none", "--batch-api",
        "--batch-max-requests", "25000", "--poll-interval", "0.05", "--timeout", "5",
        "--max-attempts", "4", "-q", "--no-parquet",
    ]  # fmt: skip
    # the window between two journal lines (say "uploaded" and "create") is a few
    # microseconds of Python: the killed process pauses after each journal fsync (a
    # sitecustomize on its path), so a kill aimed between two steps lands there. The
    # crash points are the product's own, only slower to pass.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(STEP_PAUSE_HOOK)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])),
    }
    env.pop("OPENAI_API_KEY", None)
    log = open(tmp_path / "stderr.log", "wb")  # noqa: SIM115 - closed in finally
    plan = ["uploaded", "create", "uploaded", "results", "random", "uploaded", "random", "random"]
    caught_between_upload_and_create = 0
    kills = 0
    started = time.monotonic()
    try:
        for target in plan:
            before = len(_complete_ids(out / "results.jsonl"))
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
            deadline = time.monotonic() + 40
            if target == "random":
                time.sleep(rng.uniform(0.5, 3.0))
            else:
                while proc.poll() is None and time.monotonic() < deadline:
                    if target == "results":
                        if len(_complete_ids(out / "results.jsonl")) > before:
                            time.sleep(rng.uniform(0.0, 0.3))
                            break
                    elif _last_step(steps) == target:
                        break
                    time.sleep(0.0005)
            if proc.poll() is not None:
                break  # it finished before the kill: nothing left to crash
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
            kills += 1
            ledger = read_ledger(str(steps))
            if any(r.phase == "uploaded" for r in ledger.open_shards()):
                caught_between_upload_and_create += 1
            _assert_once_so_far(out)
        final = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env, timeout=120)
        assert final.returncode in (0, 4), (tmp_path / "stderr.log").read_text()[-2000:]
    finally:
        log.close()
    elapsed = time.monotonic() - started
    with urllib.request.urlopen(batch_sim.removesuffix("/v1") + "/_sim/stats") as response:
        stats = json.loads(response.read())

    ok = _complete_ids(out / "results.jsonl")
    failed = _complete_ids(out / "errors.jsonl")
    assert len(ok) == len(set(ok)) and len(failed) == len(set(failed))
    assert not set(ok) & set(failed)
    assert len(ok) + len(failed) == ROWS
    per_shard = Counter(stats["batches_by_metadata"]["batchrun_shard"])
    assert max(per_shard.values()) == 1, per_shard  # no shard submitted twice
    # a kill while a file's lines are taken in makes the rerun fetch it again; its
    # lines already written are skipped (the exactly-once checks above)
    assert stats["downloads"]
    assert stats["api_faults"].get("create:lost") == 1
    assert kills >= 4 and caught_between_upload_and_create >= 1, (kills, per_shard)
    summary = json.loads((out / "summary.json").read_text())
    journal = read_journal(str(out), repair=False)
    assert summary["requests"] == {
        "total": ROWS,
        "succeeded": len(journal.done),
        "failed": len(journal.failed),
        "pending": 0,
        "invalid": 0,
    }
    recount = Tally()
    for name in ("results.jsonl", "errors.jsonl"):
        with open(out / name, "rb") as f:
            for line in f:
                recount.count_outcome(decode(line))
    assert summary["usage"]["total_tokens"] == recount.usage.total.total_tokens
    assert summary["journal"]["tally"]["by_mode"] == dict(recount.by_mode)
    print(f"kills {kills}, between upload and create {caught_between_upload_and_create}, "
          f"shards {len(per_shard)}, {elapsed:.1f} s")  # fmt: skip
