"""Runs on a real local Ray cluster (one for the module: 2 CPUs, no dashboard), against
the simulator over loopback, with real SIGKILLs.

scripts/test installs the ``ray`` extra and sets BATCHRUN_RAY_REQUIRED=1, so in CI these
tests run or fail; elsewhere, without Ray installed, they skip.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batchrun
from batchrun._runfiles import holder
from batchrun._scale.aggregate import recount
from batchrun.errors import InputError, RunDirError
from batchrun.sim import SimConfig, SimThread

if os.environ.get("BATCHRUN_RAY_REQUIRED") == "1":
    import ray
else:
    ray = pytest.importorskip("ray")

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.slow,
    # Ray Data warns about its own settings' deprecations when its context is built
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray"),
]

KEY = "sk-canary-ray-7f3c9e1d2b4a6f8e0c1d3b5a7e9f"
"""The API key of every test here: no file of the run directory or of Ray's may hold it."""


@pytest.fixture(scope="module")
def cluster() -> Iterator[dict[str, str]]:
    import logging

    temp = tempfile.mkdtemp(prefix="br-ray-", dir="/tmp")  # short: Ray's socket paths
    # Ray puts the driver's working directory first on its workers' sys.path: started
    # from the repository, they would import ./batchrun, not the installed wheel
    here = os.getcwd()
    os.chdir(temp)
    try:
        context = ray.init(
            num_cpus=2,
            include_dashboard=False,
            _temp_dir=temp,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    finally:
        os.chdir(here)
    try:
        yield {"address": context.address_info["address"], "temp": temp}
    finally:
        ray.shutdown()
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    return KEY


def _requests(n: int) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"r{i}",
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"row {i}"}],
        }
        for i in range(n)
    ]


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _result_ids(run_dir: Path) -> list[str]:
    ids = []
    for path in sorted(run_dir.glob("shards/*/results.jsonl")):
        ids += [json.loads(line)["custom_id"] for line in path.read_text().splitlines()]
    return ids


ENDPOINT_STATE = ("breaker", "breaker_trips", "cost_usd")
"""What a pool's ``endpoints.NAME`` holds beside the figures counted from lines."""


def _assert_summary_is_a_recount(run_dir: Path) -> dict[str, Any]:
    summary = json.loads((run_dir / "summary.json").read_text())
    counted = recount(str(run_dir))
    for key, value in counted.items():
        recorded = summary[key]
        if key == "endpoints":
            recorded = {
                name: {k: v for k, v in row.items() if k not in ENDPOINT_STATE}
                for name, row in recorded.items()
            }
        assert recorded == value, key
    return summary


def _assert_no_key_anywhere(*roots: str) -> None:
    needle = KEY.encode()
    for root in roots:
        for folder, _, files in os.walk(root):
            for name in files:
                path = os.path.join(folder, name)
                try:
                    with open(path, "rb") as f:
                        data = f.read()
                except OSError:  # a socket, a file removed meanwhile
                    continue
                assert needle not in data, path


def test_the_workers_run_the_installed_package(cluster: dict[str, str]) -> None:
    """What ships is what is tested on the cluster too (tests/test_packaging.py)."""

    @ray.remote
    def where() -> str:
        import batchrun as on_worker

        return str(Path(on_worker.__file__).resolve())

    assert ray.get(where.remote()) == str(Path(batchrun.__file__).resolve())
    assert "site-packages" in Path(batchrun.__file__).parts


def test_a_dataset_job_runs_in_shards_and_merges(
    cluster: dict[str, str], key: str, tmp_path: Path
) -> None:
    """Parquet input in row groups, a template, a schema and an evaluation; the merged
    results.parquet is read as one table by pyarrow, pandas, polars, DuckDB and Ray
    Data; a rerun sends nothing; `batchrun status` adds the shards up."""
    path = tmp_path / "reviews.parquet"
    n = 90
    table = pa.table(
        {
            "id": [f"rev-{i}" for i in range(n)],
            "text": [f"review number {i}" for i in range(n)],
            "label": ["positive" if i % 2 else "negative" for i in range(n)],
        }
    )
    pq.write_table(table, path, row_group_size=30)
    run_dir = tmp_path / "run"
    schema = {
        "type": "object",
        "properties": {"sentiment": {"type": "string", "enum": ["positive", "negative"]}},
        "required": ["sentiment"],
        "additionalProperties": False,
    }
    with SimThread(SimConfig(require_key=KEY, latency_ms=5)) as sim:
        run = batchrun.run(
            str(path),
            run_dir,
            ray=True,
            base_url=sim.base_url,
            model="gpt-4o-mini",
            prompt="Sentiment of: {text}",
            id_column="id",
            response_format={"type": "json_schema", "schema": schema},
            eval={"reference_column": "label", "compare": "json_field", "field": "sentiment"},
            shard_rows=30,
            workers=2,
            concurrency=8,
            quiet=True,
        )
        sent = sim.stats.requests
        assert run.exit_code == 0 and run.status == "complete"
        assert sent == n
        again = batchrun.run(
            str(path),
            run_dir,
            ray=True,
            base_url=sim.base_url,
            model="gpt-4o-mini",
            prompt="Sentiment of: {text}",
            id_column="id",
            response_format={"type": "json_schema", "schema": schema},
            quiet=True,
            eval={"reference_column": "label", "compare": "json_field", "field": "sentiment"},
        )
        assert again.exit_code == 0 and sim.stats.requests == sent  # nothing sent twice

    parts = run_dir / "results.parquet"
    assert sorted(p.name for p in parts.iterdir()) == [f"part-0000{i}.parquet" for i in range(3)]
    merged = pq.read_table(parts)
    assert merged.num_rows == n and set(merged.column("id").to_pylist()) == set(
        table["id"].to_pylist()
    )
    assert set(merged.column("status").to_pylist()) == {"succeeded"}
    assert "sentiment" in merged.column_names and "text" in merged.column_names

    import duckdb
    import pandas as pd
    import polars as pl

    assert len(pd.read_parquet(parts)) == n
    assert pl.read_parquet(str(parts / "*.parquet")).height == n
    assert duckdb.sql(f"select count(*) from read_parquet('{parts}/*.parquet')").fetchall() == [
        (n,)
    ]
    assert ray.data.read_parquet(str(parts)).count() == n

    summary = _assert_summary_is_a_recount(run_dir)
    assert summary["requests"]["succeeded"] == n and summary["shards"]["total"] == 3
    assert summary["eval"]["n"] == n and summary["parquet"]["rows"] == n
    assert summary["cost_usd"]["total"] > 0
    assert run.results().num_rows == n

    from click.testing import CliRunner

    from batchrun._cli import cli

    status = CliRunner().invoke(cli, ["status", str(run_dir), "--json"], catch_exceptions=False)
    assert status.exit_code == 0
    report = json.loads(status.output)
    assert report["requests"]["succeeded"] == n and report["latency_ms"]["count"] == n
    from batchrun._report.html.data import build_page_data

    page = build_page_data(str(run_dir))  # the HTML report reads every shard's lines
    assert page["requests"]["succeeded"] == n and page["latency"]["wire"]["count"] == n
    assert page["eval"]["n"] == n
    _assert_no_key_anywhere(str(run_dir), cluster["temp"])


def _evaluation(stderr: str) -> list[str]:
    """The evaluation a run printed: its heading and the lines up to the next message."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("batchrun: evaluation"))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if line.startswith(("batchrun:", "run ")):
            break
        block.append(line)
    return block


def test_an_embeddings_job_packs_each_shards_rows_and_merges_the_vectors(
    cluster: dict[str, str], key: str, tmp_path: Path
) -> None:
    """Each shard packs its rows (30 rows: one request), and the merged results.parquet
    (a directory) gives `Run.embeddings` the simulator's vector of every row's text."""
    from batchrun.sim.embeddings import embedding_vector

    n = 90
    path = _write_jsonl(
        tmp_path / "texts.jsonl", [{"id": f"t{i}", "text": f"text {i}"} for i in range(n)]
    )
    with SimThread(SimConfig(require_key=KEY, latency_ms=5)) as sim:
        run = batchrun.run(
            str(path), tmp_path / "run", ray=True, base_url=sim.base_url,
            model="text-embedding-3-small", api="embeddings", prompt="{text}", id_column="id",
            shard_rows=30, workers=2, quiet=True,
        )  # fmt: skip
        sent = sim.stats.requests
    assert run.exit_code == 0 and run.status == "complete"
    assert sent == 3  # a pack per shard
    matrix = run.embeddings()
    assert matrix.shape == (n, 1536)  # the size the answers have, the same in every part
    for i in (0, 44, 89):
        assert matrix[i].tolist() == embedding_vector(f"text {i}", "text-embedding-3-small")
    _assert_summary_is_a_recount(tmp_path / "run")


def test_a_ray_run_prints_the_evaluation_of_one_process_once_and_no_ray_chatter(
    tmp_path: Path,
) -> None:
    """`batchrun run --ray` from the command line, on a cluster of its own (issue 24
    item 8): the same evaluation as one process (interval, macro-F1, kappa), printed
    once, and none of Ray's start-up warnings."""
    job = Path(__file__).resolve().parent.parent / "jobs" / "sentiment.toml"
    # RAY_ADDRESS=local: a cluster of its own, whatever other cluster runs here
    env = {**os.environ, "OPENAI_API_KEY": KEY, "RAY_ADDRESS": "local"}
    command = [sys.executable, "-m", "batchrun", "run", "-j", str(job), "--base-url", "sim"]
    one = subprocess.run(
        [*command, "-o", str(tmp_path / "one")],
        env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr
    sharded = subprocess.run(
        [*command, "-o", str(tmp_path / "ray"), "--ray", "--shard-rows", "100"],
        env=env, capture_output=True, text=True, timeout=200, cwd=tmp_path,
    )  # fmt: skip
    assert sharded.returncode == 0, sharded.stderr
    said = sharded.stderr
    assert said.count("evaluation") == 1, said
    block = _evaluation(said)
    assert block == _evaluation(one.stderr)
    assert block[0] == "batchrun: evaluation (label vs sentiment):"
    assert "bootstrap interval" in block[1] and block[2].startswith("macro-F1 ")
    assert "kappa" in block[2]
    summary = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert summary["shards"]["total"] == 3
    assert summary["eval"] == json.loads((tmp_path / "one" / "summary.json").read_text())["eval"]
    # nothing of Ray's own: its log lines start with a timestamp and a level
    import re

    assert not re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s", said, re.M), said
    assert "WARNING" not in said and "Token authentication" not in said


def _wait_for(condition: Any, what: str, seconds: float = 60.0) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def _busy_shard(run_dir: Path, lines: int, most: int = 40) -> tuple[Path, int] | None:
    """A shard being run (its flock held) that has written ``lines`` to ``most`` lines
    (of its 60: well before its end, so it is still running when it is killed)."""
    for shard in sorted(run_dir.glob("shards/*")):
        pid = holder(str(shard))
        results = shard / "results.jsonl"
        if pid and pid > 0 and results.exists():
            if lines <= results.read_bytes().count(b"\n") <= most:
                return shard, pid
    return None


@pytest.mark.parametrize("pooled", [False, True], ids=["one-endpoint", "pool"])
def test_a_worker_killed_mid_shard_loses_and_repeats_nothing(
    cluster: dict[str, str], key: str, tmp_path: Path, pooled: bool
) -> None:
    """SIGKILL the process running a shard: Ray runs the task again, the kernel has
    released the shard's flock, the new attempt resumes from the journal; over a pool
    of two servers too (each worker routing over both)."""
    n = 240
    path = _write_jsonl(tmp_path / "in.jsonl", _requests(n))
    run_dir = tmp_path / "run"
    outcome: dict[str, Any] = {}
    with (
        SimThread(SimConfig(require_key=KEY, latency_ms=40)) as sim,
        SimThread(SimConfig(require_key=KEY, latency_ms=40, seed=2)) as other,
    ):
        where: dict[str, Any] = {"base_url": sim.base_url}
        if pooled:  # one request in flight at each: --concurrency 2 in all, as above
            urls = {"a": sim.base_url, "b": other.base_url}
            where = {"endpoints": {n: {"base_url": u, "concurrency": 1} for n, u in urls.items()}}

        def drive() -> None:
            outcome["run"] = batchrun.run(
                str(path),
                run_dir,
                ray=True,
                shard_rows=60,
                workers=2,
                concurrency=2,
                quiet=True,
                quality_breaker=0,
                **where,
            )

        thread = threading.Thread(target=drive)
        thread.start()
        shard, pid = _wait_for(lambda: _busy_shard(run_dir, 5), "a shard to be half done")
        os.kill(pid, signal.SIGKILL)
        thread.join(timeout=180)
        assert not thread.is_alive()
        sent = sim.stats.requests + other.stats.requests

    run = outcome["run"]
    assert run.exit_code == 0, run.notes
    ids = _result_ids(run_dir)
    assert sorted(ids) == sorted(f"r{i}" for i in range(n))  # every row, once
    assert int((shard / ".lock").read_text()) != pid  # the shard was finished by another
    # requests on the wire when the worker died were sent again, nothing else
    assert n <= sent <= n + 2
    summary = _assert_summary_is_a_recount(run_dir)
    if pooled:  # both servers answered, and the lines say which answered what (but
        # for the one request the killed worker had on the wire at each)
        for name, server in (("a", sim), ("b", other)):
            counted = summary["endpoints"][name]["requests"]
            assert 0 < counted <= server.stats.requests <= counted + 1, name
    _assert_no_key_anywhere(str(run_dir), cluster["temp"])


def test_a_killed_driver_and_a_rerun_give_every_row_once(
    cluster: dict[str, str], tmp_path: Path
) -> None:
    """The CLI, pointed at the running cluster by address, SIGKILLed mid-run; the same
    command again finishes the run. A second driver on the directory is refused."""
    n = 480
    path = _write_jsonl(tmp_path / "in.jsonl", _requests(n))
    run_dir = tmp_path / "run"
    env = {**os.environ, "OPENAI_API_KEY": KEY}
    with SimThread(SimConfig(require_key=KEY, latency_ms=40)) as sim:
        command = [
            sys.executable,
            "-m",
            "batchrun",
            "run",
            str(path),
            "-o",
            str(run_dir),
            "--ray",
            cluster["address"],
            "--base-url",
            sim.base_url,
            "--shard-rows",
            "60",
            "--workers",
            "2",
            "-c",
            "2",
            "-q",
            "--quality-breaker",
            "0",
        ]
        # not from the repository: the driver's directory goes on the workers' sys.path
        first = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, cwd=tmp_path)
        try:
            _wait_for(lambda: _busy_shard(run_dir, 5), "the first driver's shards to send")
            with pytest.raises(RunDirError, match="in use by another batchrun run"):
                batchrun.run(str(path), run_dir, ray=cluster["address"], base_url=sim.base_url,
                             shard_rows=60, quiet=True, auth="none")  # fmt: skip
            first.send_signal(signal.SIGKILL)
        finally:
            first.wait(timeout=30)
            assert first.stderr is not None
            first.stderr.close()
        rerun = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=180, cwd=tmp_path
        )
        assert rerun.returncode == 0, rerun.stderr
        sent = sim.stats.requests

    assert sorted(_result_ids(run_dir)) == sorted(f"r{i}" for i in range(n))
    # resent: what each of the 2 workers (-c 2) had not yet written when it died: up to
    # 2 requests on the wire, and up to 2 answers waiting for the group commit (a worker
    # takes its next request while the writer gathers a few loop turns of answers)
    assert n <= sent <= n + 2 * 2 * 2
    summary = _assert_summary_is_a_recount(run_dir)
    assert summary["status"] == "complete"
    _assert_no_key_anywhere(str(run_dir), cluster["temp"])


def test_four_workers_share_one_quota(cluster: dict[str, str], key: str, tmp_path: Path) -> None:
    """One simulator quota, already used up, four shards at once: the header mirror is
    the cluster's, so 429s stay rare."""
    n = 160
    path = _write_jsonl(tmp_path / "in.jsonl", _requests(n))
    with SimThread(SimConfig(require_key=KEY, rpm=1200, start_drained=True)) as sim:
        run = batchrun.run(
            str(path),
            tmp_path / "run",
            ray=True,
            base_url=sim.base_url,
            shard_rows=40,
            workers=4,
            concurrency=16,
            quiet=True,
            quality_breaker=0,
        )
        rate_limited = sim.stats.rate_limited
        sent = sim.stats.requests
    assert run.exit_code == 0
    assert rate_limited <= 0.02 * sent + 1
    assert run.summary["pacing"]["leases"] > 0


def test_ray_data_processor_maps_a_dataset(cluster: dict[str, str], key: str) -> None:
    import batchrun.ray as batchrun_ray

    items = [{"text": f"item {i}", "n": i} for i in range(40)]
    with SimThread(SimConfig(require_key=KEY)) as sim:
        processor = batchrun_ray.build_processor(
            model="gpt-4o-mini",
            prompt="Say something about {text}",
            base_url=sim.base_url,
            workers=2,
            batch_size=16,
            concurrency=4,
            quality_breaker=0,
        )
        rows = processor(ray.data.from_items(items)).take_all()
        assert sim.stats.requests == len(items)
    assert sorted(r["n"] for r in rows) == list(range(40))
    assert {r["status"] for r in rows} == {"succeeded"}
    assert all(r["content"] for r in rows)


@pytest.mark.parametrize("pooled", [False, True], ids=["one-endpoint", "pool"])
def test_the_budget_holds_for_the_whole_cluster(
    cluster: dict[str, str], key: str, tmp_path: Path, pooled: bool
) -> None:
    """--max-cost across two workers: never above the cap, and stopped within one
    worst-case request per worker of it; over a pool too (each answer priced at its
    endpoint's prices, each request reserved at its dearest endpoint's worst case)."""
    from batchrun._cost.budget import BudgetAdmission, CostHooks
    from batchrun._settings import Settings

    rows = [{**r, "max_tokens": 40} for r in _requests(300)]
    path = _write_jsonl(tmp_path / "in.jsonl", rows)
    cap = 0.0015
    with (
        SimThread(SimConfig(require_key=KEY, latency_ms=10)) as sim,
        SimThread(SimConfig(require_key=KEY, latency_ms=10, seed=2)) as dear,
    ):
        where: dict[str, Any] = {"base_url": sim.base_url}
        if pooled:  # b: ten times a's prices, under its own name for the model
            b = {
                "models": {"gpt-4o-mini": "mini-eu"},
                "prices": {"mini-eu": {"input": 1.5, "output": 6.0}},
            }
            where = {"endpoints": {"a": {"base_url": sim.base_url},
                                   "b": {"base_url": dear.base_url, **b}}}  # fmt: skip
        run = batchrun.run(
            str(path), tmp_path / "run", ray=True, shard_rows=75, workers=2, concurrency=4,
            max_cost=cap, quiet=True, quality_breaker=0, **where,
        )  # fmt: skip
    worst = BudgetAdmission(CostHooks(Settings(**where)), cap).worst_case(
        {k: v for k, v in rows[0].items() if k != "custom_id"}
    )
    spent = run.summary["cost_usd"]["total"]
    assert run.exit_code == 3 and run.status == "budget_exceeded"
    assert cap - 2 * worst <= spent <= cap
    assert run.summary["requests"]["pending"] > 0
    if not pooled:
        _assert_summary_is_a_recount(tmp_path / "run")
        return
    ends = run.summary["endpoints"]
    assert ends["a"]["answered"] > 0 and ends["b"]["answered"] > 0
    assert ends["a"]["cost_usd"] + ends["b"]["cost_usd"] == pytest.approx(spent, abs=2e-6)
    used = ends["b"]["usage"]
    at_b = (used["prompt_tokens"] * 1.5 + used["completion_tokens"] * 6.0) / 1e6
    assert ends["b"]["cost_usd"] == pytest.approx(at_b, abs=2e-6)


def test_a_ray_data_batch_run_again_resumes_from_its_journal(
    cluster: dict[str, str], key: str, tmp_path: Path
) -> None:
    """With run_dir, a batch Ray runs a second time (a lost worker) is the same run
    directory, named by the batch's content: nothing is sent again."""
    import batchrun.ray as batchrun_ray
    from batchrun.ray import _Batches

    batch = pa.table({"text": [f"item {i}" for i in range(12)]})
    with SimThread(SimConfig(require_key=KEY)) as sim:
        processor = batchrun_ray.build_processor(
            model="gpt-4o-mini", prompt="About {text}", base_url=sim.base_url,
            run_dir=str(tmp_path / "batches"), quality_breaker=0,
        )  # fmt: skip
        worker = _Batches(processor.settings, processor.quota(), processor.run_dir)
        first = worker(batch)
        sent = sim.stats.requests
        again = worker(batch)
        assert sim.stats.requests == sent == 12
    assert first.column("content").to_pylist() == again.column("content").to_pylist()
    assert first.column("text").to_pylist() == batch.column("text").to_pylist()
    worker.client.close()


def test_bad_input_is_its_own_error_and_sends_nothing(
    cluster: dict[str, str], key: str, tmp_path: Path
) -> None:
    # found by the shards' checks, inside the driver's task group: it must reach the
    # caller as the InputError itself (the command line's one-line error), not wrapped
    # in an ExceptionGroup
    rows = _requests(30)
    rows[20]["custom_id"] = "r3"
    path = _write_jsonl(tmp_path / "dup.jsonl", rows)
    with SimThread(SimConfig(seed=2)) as sim:
        with pytest.raises(InputError, match="duplicate custom_id"):
            batchrun.run(str(path), str(tmp_path / "run"), ray=cluster["address"],
                         base_url=sim.base_url, shard_rows=10, quiet=True)  # fmt: skip
        assert sim.stats.requests == 0


def test_a_sharded_run_of_truncated_answers_stops_on_the_quality_breaker(
    cluster: dict[str, str], key: str, tmp_path: Path
) -> None:
    """Each shard is an online run on its own directory and judges its own answers,
    earlier attempts' included, with the one rule (issue 31); a shard that trips stops
    the run: bad_answers, exit 1, as without --ray. On a rerun, a shard whose history
    trips it stops at once."""
    rows = [
        {
            "custom_id": f"r{i}",
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": f"row {i}"}],
            "max_tokens": 200 if i % 20 == 19 else 5,  # the simulator answers 8+ words
        }
        for i in range(800)
    ]
    path = _write_jsonl(tmp_path / "in.jsonl", rows)
    run_dir = tmp_path / "run"
    options: dict[str, Any] = {"ray": True, "shard_rows": 200, "workers": 2, "quiet": True}
    with SimThread(SimConfig(require_key=KEY, latency_ms=20)) as sim:
        run = batchrun.run(str(path), run_dir, base_url=sim.base_url, concurrency=2, **options)
        sent = sim.stats.requests
        again = batchrun.run(str(path), run_dir, base_url=sim.base_url, concurrency=2, **options)
        sent_again = sim.stats.requests - sent
    assert (run.exit_code, run.status) == (1, "bad_answers"), run.notes
    assert any("stopping:" in n and "are truncated" in n for n in run.notes), run.notes
    # two shards at a time, each stopped within its first 50 answers (and -c 2 in flight)
    assert len(_result_ids(run_dir)) == sent <= 2 * (50 + 2)
    assert (again.exit_code, again.status) == (1, "bad_answers")
    # a shard whose own answers trip it sends nothing (here both, usually); one stopped
    # by the other before it was judged goes on until it trips in turn
    assert sent_again <= 50 + 2


def test_a_pool_runs_on_the_cluster_each_row_once_over_its_endpoints(
    cluster: dict[str, str], key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers route over two loopback servers, each with its own key and quota
    (``a``: 6,000 RPM already used up; ``b``: 3,000 RPM, then 503 for good after 12
    answers): every row answered once over the pool (as the servers count), each line
    names its endpoint, summary.json's ``endpoints`` is a recount of the lines, the
    dead server gets few requests, and ``a``'s headers, read by both workers, pace
    one shared account (429s stay rare). A rerun sends nothing; one with b's model
    under another name is refused."""
    from tests.test_pool_run import DiesAfter

    monkeypatch.setenv("POOL_B_KEY", KEY + "-b")
    n = 160
    path = _write_jsonl(tmp_path / "in.jsonl", _requests(n))
    fast = {"latency_ms": 20.0, "jitter_ms": 10.0}
    with (
        SimThread(SimConfig(seed=1, require_key=KEY, rpm=6_000, start_drained=True, **fast)) as a,
        SimThread(SimConfig(seed=2, require_key=KEY + "-b", rpm=3_000, **fast)) as b,
    ):
        dies = DiesAfter(b, 12)
        pool = {
            "a": {"base_url": a.base_url, "concurrency": 8},
            "b": {"base_url": b.base_url, "concurrency": 4, "api_key_env": "POOL_B_KEY"},
        }
        common = {"ray": True, "endpoints": pool, "quality_breaker": 0, "quiet": True}
        run = batchrun.run(
            str(path), tmp_path / "run", shard_rows=80, workers=2, **common
        )  # fmt: skip
        paced = run.summary["pacing"]["by_endpoint"]  # (the rerun writes summary.json)
        answered = {"a": a.stats.by_status[200], "b": b.stats.by_status[200]}
        sent = a.stats.requests + b.stats.requests
        again = batchrun.run(str(path), tmp_path / "run", **common)
        assert a.stats.requests + b.stats.requests == sent  # the rerun sent nothing
        # the fingerprint covers the pool's shape: b's answers under another name refused
        renamed = {**pool, "b": {**pool["b"], "models": {"gpt-4o-mini": "mini-eu"}}}
        with pytest.raises(RunDirError, match=r"endpoints\.b"):
            batchrun.run(str(path), tmp_path / "run", **{**common, "endpoints": renamed})
        assert a.stats.requests + b.stats.requests == sent
        rate_limited, a_requests = a.stats.rate_limited, a.stats.requests
    assert run.exit_code == 0, run.notes
    assert again.exit_code == 0, again.notes
    run_dir = tmp_path / "run"
    written = [
        json.loads(line)
        for shard in sorted(run_dir.glob("shards/*/results.jsonl"))
        for line in shard.read_text().splitlines()
    ]
    ids = [r["custom_id"] for r in written]
    assert len(ids) == len(set(ids)) == n
    assert not any(p.read_text() for p in run_dir.glob("shards/*/errors.jsonl"))
    # exactly once as the servers count it, each line naming the server that answered
    assert answered["b"] == 12 and sum(answered.values()) == n, answered
    by_line = Counter(r["batchrun"]["route"][-1] for r in written)
    assert dict(by_line) == answered
    identity = {"a": a.base_url.rstrip("/"), "b": b.base_url.rstrip("/")}
    assert all(r["batchrun"]["endpoint"] == identity[r["batchrun"]["route"][-1]] for r in written)
    # the dead one: what was in flight when it died, then each shard's breaker (its
    # own: 5 in a row) and a probe or two, per shard
    print(f"answered {answered}, b refused {dies.refused}, a: {rate_limited} 429s of {a_requests}")
    assert dies.refused <= 2 * (4 + 5 + 3), dies.refused
    # both workers read a's headers into its one account: 429s stay rare
    assert rate_limited <= 0.02 * a_requests + 2, (rate_limited, a_requests)
    summary = _assert_summary_is_a_recount(run_dir)  # endpoints.NAME too
    rows = summary["endpoints"]
    assert list(rows) == ["a", "b"]
    assert rows["b"]["answered"] == 12 and rows["b"]["failures"] == {"503": dies.refused}
    assert rows["a"]["requests"] == a_requests and rows["b"]["breaker_trips"] >= 1
    assert paced["a"]["server_rpm"] == 6_000 and paced["b"]["server_rpm"] == 3_000  # headers
    assert sum(summary["cost_usd"]["by_endpoint"].values()) == pytest.approx(
        summary["cost_usd"]["total"], abs=1e-6
    )
    from batchrun._report.text import format_status, status_report

    table = format_status(status_report(run_dir)).split("\nendpoints\n", 1)[1].splitlines()
    shown = [line.split()[:3] for line in table[1:3]]
    assert shown == [["a", str(a_requests), "148"], ["b", str(12 + dies.refused), "12"]]
    _assert_no_key_anywhere(str(tmp_path), cluster["temp"])
