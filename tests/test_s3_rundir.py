"""Run directories on object storage (issue 29 part 2), against a local S3 (moto's
server on loopback, reached through ``AWS_ENDPOINT_URL`` as a user reaches MinIO):
an online run committed as segments, resumed from them alone, a crash costing at
most the rows of the uncommitted segment, a second writer refused naming the first,
and status, open, results and the HTML report reading the prefix.

The tests taking ``backend`` run on GCS (fake-gcs-server) and Azure Blob (Azurite)
too (tests/objectstores.py): a CLI run read back by status, open and results; a
killed run resumed; two processes racing for one prefix."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import batchrun
from batchrun._cli import cli
from batchrun._output.mirror import RunMirror, snapshot
from batchrun._output.runlease import RunLease
from batchrun._output.segments import CommitInterval, SegmentLog, decode_segment
from batchrun._output.store import S3Store
from batchrun.errors import LeaseHeld, SegmentTaken
from batchrun.sim import SimConfig, SimThread
from tests.objectstores import Backend, assert_no_credentials, committed_lines, s3_backend
from tests.s3server import S3

pytest_plugins = ["tests.conftest_s3", "tests.conftest_stores"]  # s3, backend

KW: dict[str, Any] = {"auth": "none", "quiet": True}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    with SimThread(SimConfig(record_bodies=20000)) as server:
        yield server


@pytest.fixture
def fresh_sim(sim: SimThread) -> SimThread:
    sim.stats.reset()
    return sim


@pytest.fixture(autouse=True)
def snapshots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "snapshots"
    monkeypatch.setenv("BATCHRUN_SNAPSHOTS", str(home))
    return home


def body(text: str) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


def write_input(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps(body(t)) + "\n" for t in texts))
    return path


def sent(sim: SimThread) -> Counter[str]:
    return Counter(b["messages"][0]["content"] for b in sim.stats.bodies)


def keys(s3: S3, bucket: str, prefix: str) -> list[str]:
    pages = s3.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))


def s3_store(s3: S3, bucket: str, prefix: str) -> S3Store:
    return S3Store(f"s3://{bucket}/{prefix.rstrip('/')}", s3.client)


def segment_lines(s3: S3, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every result line of every committed segment under ``prefix``."""
    return committed_lines(s3_store(s3, bucket, prefix))


# -- settings -----------------------------------------------------------------------------------
def test_run_directory_locations_are_checked() -> None:
    ok = batchrun.Settings.build(input="x.jsonl", out_dir="s3://bucket/runs/a/")
    assert ok.out_dir == "s3://bucket/runs/a" and ok.commit_interval == 5.0
    for other in ("gs://bucket/runs/a", "abfs://data@acct.dfs.core.windows.net/runs/a"):
        assert batchrun.Settings.build(input="x.jsonl", out_dir=other + "/").out_dir == other
    with pytest.raises(batchrun.ConfigError, match="local path, s3://bucket/prefix, gs://"):
        batchrun.Settings.build(input="x.jsonl", out_dir="ftp://bucket/runs/a")
    with pytest.raises(batchrun.ConfigError, match="carries a credential") as caught:
        batchrun.Settings.build(input="x.jsonl", out_dir="s3://AKIA:sekrit@bucket/runs/a")
    assert "sekrit" not in str(caught.value)
    batch = batchrun.Settings.build(input="x.jsonl", out_dir="s3://b/runs/a", mode="batch")
    assert any("object storage runs online" in p for p in batch.problems())
    with pytest.raises(batchrun.ConfigError, match="commit_interval"):
        batchrun.Settings.build(input="x.jsonl", commit_interval=0)


# -- online, on object storage ------------------------------------------------------------------
def test_an_online_run_commits_segments_and_reads_back(
    s3: S3, fresh_sim: SimThread, tmp_path: Path
) -> None:
    bucket = s3.bucket()
    texts = [f"t{i}" for i in range(300)]
    src = write_input(tmp_path / "in.jsonl", texts)
    location = f"s3://{bucket}/runs/a"
    run = batchrun.run(str(src), location, base_url=fresh_sim.base_url, commit_rows=100, **KW)
    assert run.status == "complete" and run.location == location
    assert run.summary["requests"]["succeeded"] == 300
    assert sent(fresh_sim) == Counter(texts)
    found = keys(s3, bucket, "runs/a/")
    segments = [k for k in found if k.startswith("runs/a/segments/")]
    assert len(segments) >= 3  # 100 rows a segment at most
    for name in ("run.json", "summary.json", "results.parquet", "lease.json"):
        assert f"runs/a/{name}" in found
    assert not [k for k in found if k.endswith(("results.jsonl", "errors.jsonl"))]
    info = json.loads(s3.client.get_object(Bucket=bucket, Key="runs/a/run.json")["Body"].read())
    assert info["options"]["out_dir"] == location  # the prefix, not the local copy
    ids = [line["custom_id"] for line in segment_lines(s3, bucket, "runs/a/")]
    assert sorted(ids) == sorted(f"row-{i}" for i in range(1, 301))  # each row once
    table = run.results()
    assert table.num_rows == 300 and len(set(table.column("custom_id").to_pylist())) == 300
    # the lease was given up: a second run takes it at once and sends nothing
    again = batchrun.run(str(src), location, base_url=fresh_sim.base_url, **KW)
    assert again.status == "complete" and fresh_sim.stats.requests == 300
    opened = batchrun.open(location)
    assert opened.status == "complete" and opened.summary["requests"]["succeeded"] == 300
    with pytest.raises(batchrun.ConfigError, match="writes into the run directory"):
        opened.import_labels(str(src))
    assert_no_credentials(s3_backend(s3), s3_store(s3, bucket, ""))


def test_a_restart_resumes_from_the_committed_segments_alone(
    s3: S3, fresh_sim: SimThread, tmp_path: Path
) -> None:
    """A pilot of 120 rows commits them; the full run on another 'node' (a new local
    directory, nothing kept) sends only the 180 others."""
    bucket = s3.bucket()
    texts = [f"r{i}" for i in range(300)]
    src = write_input(tmp_path / "in.jsonl", texts)
    location = f"s3://{bucket}/runs/b"
    first = batchrun.run(str(src), location, base_url=fresh_sim.base_url, limit=120, **KW)
    assert first.summary["requests"]["succeeded"] == 120
    assert fresh_sim.stats.requests == 120
    full = batchrun.run(str(src), location, base_url=fresh_sim.base_url, **KW)
    assert full.status == "complete" and full.summary["requests"]["succeeded"] == 300
    assert sent(fresh_sim) == Counter(texts)  # nothing sent twice
    assert len(segment_lines(s3, bucket, "runs/b/")) == 300


def test_the_cli_status_and_html_report_read_the_prefix(
    backend: Backend, fresh_sim: SimThread, tmp_path: Path
) -> None:
    src = write_input(tmp_path / "in.jsonl", [f"c{i}" for i in range(50)])
    location = backend.location("runs/c")
    store = backend.store(location)
    runner = CliRunner()
    ran = runner.invoke(
        cli,
        ["run", str(src), "-o", location, "--base-url", fresh_sim.base_url, "--auth", "none",
         "-q", "--commit-interval", "0.5"],
        catch_exceptions=False,
    )  # fmt: skip
    assert ran.exit_code == 0, ran.output
    status = runner.invoke(cli, ["status", location, "--json"], catch_exceptions=False)
    assert status.exit_code == 0, status.output
    report = json.loads(status.output)
    assert report["requests"]["succeeded"] == 50 and report["status"] == "complete"
    assert report["run_dir"] == location  # named as the prefix, not the local snapshot
    assert f"{location}/results.parquet" in [f["path"] for f in report["files"]]
    assert sorted(line["custom_id"] for line in committed_lines(store)) == sorted(
        f"row-{i}" for i in range(1, 51)
    )  # each row once, as the server holds them
    table = batchrun.open(location).results()
    assert sorted(table.column("custom_id").to_pylist()) == sorted(f"row-{i}" for i in range(1, 51))
    html = tmp_path / "report.html"
    made = runner.invoke(cli, ["report", location, f"--html={html}"])
    assert made.exit_code == 0, made.output
    assert html.stat().st_size > 1000
    beside = runner.invoke(cli, ["report", location, "--html"])
    assert beside.exit_code == 0 and beside.output.strip() == f"{location}/report.html"
    assert "report.html" in store.keys("")
    assert_no_credentials(backend, store)
    # the live page of the prefix (serve), from its snapshot
    from batchrun._report.html import serve_run_dir

    with serve_run_dir(location, poll_s=2) as url:
        base, _, token = url.partition("?")
        with urllib.request.urlopen(f"{base}data.json?{token}", timeout=10) as answer:
            assert json.loads(answer.read())["requests"]["succeeded"] == 50


# -- what a crash costs ---------------------------------------------------------------------------
def test_a_killed_run_loses_at_most_the_uncommitted_segment(
    backend: Backend, tmp_path: Path
) -> None:
    """The CLI is SIGKILLed mid-run (commits every 40 rows, no time bound); the rerun
    rebuilds from the segments. The rows the server answered twice are the rows not
    committed when it died: at most one segment's worth, the lines of one tick of the
    committing thread, and what was in flight (the concurrency, 4)."""
    rows = 600
    texts = [f"k{i}" for i in range(rows)]
    src = write_input(tmp_path / "in.jsonl", texts)
    location = backend.location("runs/k")
    store = backend.store(location)
    args = [sys.executable, "-m", "batchrun", "run", str(src), "-o", location,
            "--auth", "none", "-q", "-c", "4",
            "--commit-rows", "40", "--commit-interval", "3600"]  # fmt: skip
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    with SimThread(SimConfig(latency_ms=10, record_bodies=2000)) as sim:
        args += ["--base-url", sim.base_url]
        proc = subprocess.Popen(args, env=env, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and len(store.keys("segments/")) < 3:
                time.sleep(0.05)  # three segments committed (a listing, no reads)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        committed = len(committed_lines(store))
        assert 120 <= committed < rows
        answered_before = sim.stats.requests
        # the killed run's lease has not expired, but its owner is a process of this
        # machine that is gone: the rerun takes it over at once
        lease = store.get("lease.json")
        assert lease is not None
        record = json.loads(lease.data)
        assert record["owner"].split(":")[1] == str(proc.pid) and record["expires_at"] > time.time()
        # its status: stopped (it said "running" at its last commit, and its holder is gone)
        killed = batchrun.open(location)
        assert killed.status == "stopped" and killed.summary["status"] == "running"
        import tempfile

        left = [
            n
            for n in os.listdir(tempfile.gettempdir())
            if n.startswith(f"batchrun-run-{proc.pid}-")
        ]
        assert left  # the killed run's local copy, left behind
        # the rerun in this process (one interpreter start less per store)
        rerun = batchrun.run(str(src), location, base_url=sim.base_url, concurrency=4,
                             commit_rows=40, **KW)  # fmt: skip
        assert rerun.status == "complete"
        for name in left:  # removed by the next run on this machine
            assert not os.path.exists(os.path.join(tempfile.gettempdir(), name))
        assert sim.stats.requests == rows + (answered_before - committed)
        ids = [line["custom_id"] for line in committed_lines(store)]
        assert sorted(ids) == sorted(f"row-{i}" for i in range(1, rows + 1))  # once each
        twice = sum(n - 1 for n in sent(sim).values() if n > 1)
    # fewer than 40 lines waiting for their segment, the lines written since the
    # committing thread last looked (20 ms ago), and the 4 requests on the wire
    assert twice == answered_before - committed <= 2 * 40 + 4
    table = pq.read_table(snapshot(location) + "/results.parquet")
    assert table.num_rows == rows


# -- two writers ------------------------------------------------------------------------------
def test_a_second_run_on_a_held_prefix_exits_1_naming_the_holder(
    s3: S3, fresh_sim: SimThread, tmp_path: Path
) -> None:
    bucket = s3.bucket()
    src = write_input(tmp_path / "in.jsonl", ["a", "b"])
    location = f"s3://{bucket}/runs/h"
    holder = RunLease(S3Store(location), owner="node-a:4121:9f2c01ab")
    holder.acquire()
    ran = CliRunner().invoke(
        cli, ["run", str(src), "-o", location, "--base-url", fresh_sim.base_url, "--auth", "none"]
    )
    assert ran.exit_code == 1
    assert "node-a:4121:9f2c01ab" in ran.output
    assert fresh_sim.stats.requests == 0
    assert keys(s3, bucket, "runs/h/") == ["runs/h/lease.json"]
    with pytest.raises(LeaseHeld, match="node-a:4121:9f2c01ab"):
        RunMirror(location).open()
    holder.release()  # given up: the next run takes the prefix at once
    ran = CliRunner().invoke(
        cli, ["run", str(src), "-o", location, "--base-url", fresh_sim.base_url, "--auth", "none"]
    )
    assert ran.exit_code == 0 and fresh_sim.stats.requests == 2


def test_a_writer_whose_segment_is_taken_stops_naming_the_winner(s3: S3, tmp_path: Path) -> None:
    """Two mirrors of one journal (a zombie and its successor): one commits segment 0,
    the other's commit is refused, and it raises SegmentTaken naming the winner."""
    bucket = s3.bucket()
    location = f"s3://{bucket}/runs/z"
    a = RunMirror(location, lease=False, owner="node-a:1:aaaa", interval=CommitInterval(rows=1))
    b = RunMirror(location, lease=False, owner="node-b:2:bbbb", interval=CommitInterval(rows=1))
    local_a, local_b = a.open(), b.open()
    try:
        (Path(local_a) / "results.jsonl").write_text('{"custom_id": "x"}\n')
        a.commit(final=True)  # (or its thread did)
        assert a.segments == 1
        (Path(local_b) / "results.jsonl").write_text('{"custom_id": "y"}\n')
        caught: BaseException | None = None
        deadline = time.monotonic() + 10
        while caught is None:  # b's own commit, or its thread's, is refused
            try:
                b.commit(final=True)
            except SegmentTaken as exc:
                caught = exc
            caught = caught or b.failure
            assert time.monotonic() < deadline
        assert isinstance(caught, SegmentTaken) and "node-a:1:aaaa" in str(caught)
    finally:
        a.close()
        with pytest.raises(SegmentTaken, match="node-a:1:aaaa"):
            b.close()
    assert [k for k in keys(s3, bucket, "runs/z/") if "segments" in k] == [
        "runs/z/segments/00000000.jsonl"
    ]
    log = SegmentLog(S3Store(location), "")
    assert log.committer(0) == "node-a:1:aaaa"


def test_two_runs_racing_for_one_prefix_one_wins_and_the_other_names_it(
    backend: Backend, tmp_path: Path
) -> None:
    """Two `batchrun run` processes started together on one prefix: one takes the
    lease and answers every row once; the other exits 1 naming the winner (its host and
    pid), having sent nothing; every segment has one writer."""
    rows = 120
    texts = [f"w{i}" for i in range(rows)]
    src = write_input(tmp_path / "in.jsonl", texts)
    location = backend.location("runs/w")
    store = backend.store(location)
    with SimThread(SimConfig(latency_ms=5, record_bodies=2000)) as sim:
        args = [sys.executable, "-m", "batchrun", "run", str(src), "-o", location,
                "--base-url", sim.base_url, "--auth", "none", "-q", "-c", "8",
                "--commit-rows", "30"]  # fmt: skip
        env = {**os.environ, "PYTHONSAFEPATH": "1"}
        procs = [
            subprocess.Popen(args, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True)
            for _ in range(2)
        ]
        outs = [p.communicate(timeout=120)[1] for p in procs]
        codes = sorted(p.returncode for p in procs)
        assert codes == [0, 1], outs
        winner = next(p for p in procs if p.returncode == 0)
        loser_err = outs[[p.returncode for p in procs].index(1)]
        assert f":{winner.pid}:" in loser_err and "is held by" in loser_err
        assert sim.stats.requests == rows and sent(sim) == Counter(texts)
    owners = set()
    for key in store.keys("segments/"):
        stored = store.get(key)
        assert stored is not None
        owners.add(decode_segment(stored.data, key)[0].owner)
    assert len(owners) == 1 and f":{winner.pid}:" in owners.pop()
    ids = [line["custom_id"] for line in committed_lines(store)]
    assert sorted(ids) == sorted(f"row-{i}" for i in range(1, rows + 1))  # no segment twice


def test_a_run_refused_before_sending_leaves_the_prefix_as_it_was(
    s3: S3, fresh_sim: SimThread, tmp_path: Path
) -> None:
    bucket = s3.bucket()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"model": "gpt-4o-mini"}\n')  # no messages
    ran = CliRunner().invoke(
        cli,
        ["run", str(bad), "-o", f"s3://{bucket}/runs/r", "--base-url", fresh_sim.base_url,
         "--auth", "none", "-q"],
    )  # fmt: skip
    assert ran.exit_code == 1 and "messages" in ran.output
    assert keys(s3, bucket, "runs/r/") == [] and fresh_sim.stats.requests == 0


def test_a_live_lease_of_another_host_reads_as_running(s3: S3, tmp_path: Path) -> None:
    bucket = s3.bucket()
    location = f"s3://{bucket}/runs/l"
    s3.put(bucket, "runs/l/run.json", b'{"options": {}}')
    s3.put(bucket, "runs/l/summary.json", b'{"status": "running", "requests": {}}')
    holder = RunLease(S3Store(location), owner="node-z:77:abcd0123")
    holder.acquire()
    assert batchrun.open(location).status == "running"
    holder.release()
    assert batchrun.open(location).status == "stopped"


def test_files_are_put_every_interval_even_without_a_segment(tmp_path: Path) -> None:
    """A Ray driver's copy commits no segment (its shards do): its summary.json still
    reaches the prefix every commit interval, for `batchrun status` of a live run."""
    from batchrun._output.store import LocalStore

    store = LocalStore(str(tmp_path / "bucket"))
    mirror = RunMirror("/bucket", store=store, interval=CommitInterval(rows=10, seconds=0.05))
    local = mirror.open()
    try:
        (Path(local) / "summary.json").write_text('{"status": "running"}\n')
        deadline = time.monotonic() + 10
        while store.get("summary.json") is None:
            assert time.monotonic() < deadline, "summary.json never put"
            time.sleep(0.01)
        assert mirror.segments == 0
    finally:
        mirror.close()
    assert not os.path.exists(local)  # the local copy is removed


def test_a_segment_is_due_after_commit_interval_seconds(tmp_path: Path) -> None:
    """Few rows (under --commit-rows) are committed once the oldest has waited
    --commit-interval seconds: the clock is the test's, the committing thread the real
    one (it commits only when the test's clock says so)."""
    from batchrun._output.store import LocalStore

    class Clock:
        now = 100.0

        def __call__(self) -> float:
            return self.now

    clock = Clock()
    store = LocalStore(str(tmp_path / "bucket"))
    mirror = RunMirror(
        "/bucket", store=store, lease=False, interval=CommitInterval(rows=1000, seconds=5.0),
        clock=clock,
    )  # fmt: skip
    local = Path(mirror.open())
    try:
        (local / "results.jsonl").write_text('{"custom_id": "a"}\n{"custom_id": "b"}\n')
        deadline = time.monotonic() + 10
        while mirror.pending_rows < 2:  # the thread has read them
            assert time.monotonic() < deadline
            time.sleep(0.01)
        clock.now += 4.9
        assert mirror.commit(final=False) == 0 and mirror.segments == 0
        clock.now += 0.2  # the oldest has waited 5.1 s
        while mirror.segments == 0:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert mirror.pending_rows == 0
    finally:
        mirror.close()
    stored = store.get("segments/00000000.jsonl")
    assert stored is not None and decode_segment(stored.data, "s")[0].results == 2


def test_a_run_whose_lease_was_taken_over_stops_committing(s3: S3, tmp_path: Path) -> None:
    """Another owner took the lease over (this process was cut off past its expiry):
    the next heartbeat finds it, the run is told to stop, nothing more is committed,
    and closing raises LeaseLost naming the new owner."""
    from batchrun.errors import LeaseLost

    bucket = s3.bucket()
    location = f"s3://{bucket}/runs/t"
    told: list[BaseException] = []
    mirror = RunMirror(location, interval=CommitInterval(rows=1), on_failure=told.append)
    local = Path(mirror.open())
    record = json.loads(s3.client.get_object(Bucket=bucket, Key="runs/t/lease.json")["Body"].read())
    s3.client.put_object(
        Bucket=bucket,
        Key="runs/t/lease.json",
        Body=json.dumps({**record, "owner": "node-q:9:qqqq", "generation": 2}).encode(),
    )
    mirror._next_renew = 0.0  # the heartbeat is due now
    deadline = time.monotonic() + 10
    while not told:
        assert time.monotonic() < deadline, "the heartbeat never noticed"
        time.sleep(0.01)
    assert isinstance(told[0], LeaseLost) and "node-q:9:qqqq" in str(told[0])
    (local / "results.jsonl").write_text('{"custom_id": "late"}\n')
    assert mirror.commit(final=True) == 0
    with pytest.raises(LeaseLost, match="node-q:9:qqqq"):
        mirror.close()
    assert not [k for k in keys(s3, bucket, "runs/t/") if "/segments/" in k]


def test_a_lost_lease_stops_the_run_sending(s3: S3, tmp_path: Path) -> None:
    """The engine is told when its lease is lost: it stops sending (well before the
    rows run out) and the run raises LeaseLost naming the new owner."""
    import threading

    from batchrun._output import mirror as mirrors
    from batchrun.errors import LeaseLost

    bucket = s3.bucket()
    location = f"s3://{bucket}/runs/s"
    src = write_input(tmp_path / "in.jsonl", [f"s{i}" for i in range(2000)])
    outcome: list[BaseException | None] = []
    with SimThread(SimConfig(latency_ms=20)) as sim:

        def go() -> None:
            try:
                batchrun.run(str(src), location, base_url=sim.base_url, concurrency=2,
                             commit_rows=20, **KW)  # fmt: skip
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=go)
        thread.start()
        deadline = time.monotonic() + 60
        while not (mirrors._ACTIVE and next(iter(mirrors._ACTIVE.values())).segments):
            assert time.monotonic() < deadline and thread.is_alive()
            time.sleep(0.01)
        mirror = next(iter(mirrors._ACTIVE.values()))
        lease = s3.client.get_object(Bucket=bucket, Key="runs/s/lease.json")["Body"].read()
        s3.client.put_object(
            Bucket=bucket,
            Key="runs/s/lease.json",
            Body=json.dumps({**json.loads(lease), "owner": "node-q:9:qqqq"}).encode(),
        )
        mirror._next_renew = 0.0
        thread.join(timeout=60)
        sent = sim.stats.requests
    assert outcome and isinstance(outcome[0], LeaseLost), outcome
    assert "node-q:9:qqqq" in str(outcome[0])
    assert sent < 2000  # it stopped sending


def test_a_snapshot_fetches_each_segment_once(tmp_path: Path) -> None:
    from batchrun._output.mirror import SegmentCache, pull
    from batchrun._output.store import LocalStore

    store = LocalStore(str(tmp_path / "bucket"))
    log = SegmentLog(store, "shards/00000", owner="w")
    log.commit(0, b'{"custom_id": "a"}\n', b"")
    log.commit(1, b'{"custom_id": "b"}\n', b"")
    store.put("summary.json", b"{}")
    cached = SegmentCache(store, str(tmp_path / "cache"))
    pull(cached, str(tmp_path / "one"))
    assert cached.fetched == 2
    log.commit(2, b'{"custom_id": "c"}\n', b"")
    pull(cached, str(tmp_path / "two"))
    assert cached.fetched == 3  # only the new one
    journal = (tmp_path / "two" / "shards" / "00000" / "results.jsonl").read_text()
    assert [json.loads(x)["custom_id"] for x in journal.splitlines()] == ["a", "b", "c"]


def test_stream_writes_to_the_prefix(s3: S3, fresh_sim: SimThread, tmp_path: Path) -> None:
    import anyio

    bucket = s3.bucket()
    location = f"s3://{bucket}/runs/st"
    src = write_input(tmp_path / "in.jsonl", [f"st{i}" for i in range(30)])

    async def collect() -> list[str]:
        stream = batchrun.stream(str(src), location, base_url=fresh_sim.base_url, **KW)
        return [outcome.custom_id async for outcome in stream]

    ids = anyio.run(collect)
    assert sorted(ids) == sorted(f"row-{i}" for i in range(1, 31))
    assert len(segment_lines(s3, bucket, "runs/st/")) == 30
