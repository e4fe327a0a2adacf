"""The simulator as a pool (issue 26, items 5 and 7).

``base_url = "sim"`` on a pool's endpoint gives it a simulator of its own, started by
`batchrun._api.endpoint` with its ``sim_rpm``/``sim_tpm``/``sim_fault``;
``batchrun sim --pool N`` serves N simulators with their own quotas. jobs/pool.toml is
the offline example (it loads, estimates, its simulators answer with their quotas,
checked over HTTP, and it runs). scripts/bench_pool.py runs each pool and its
one-endpoint baseline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from batchrun._api import endpoint
from batchrun._jobs.jobfile import load_job
from batchrun.sim.cli import sim_command

REPO = Path(__file__).resolve().parent.parent
POOL_JOB = REPO / "jobs" / "pool.toml"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def test_the_pool_example_loads_and_is_estimated_at_the_pooled_quota() -> None:
    job = load_job(POOL_JOB)
    settings = job.settings()
    assert settings.problems() == []
    pool = settings.pool()
    assert [(e.name, e.identity, e.sim_rpm) for e in pool] == [
        ("steady", "sim:steady", 600),
        ("fast", "sim:fast", 1200),
        ("flaky", "sim:flaky", 300),
    ]
    assert pool[2].sim_fault == ((503, 0.2),) and pool[1].weight == 2.0
    from batchrun._cost.estimate import estimate_settings

    report = estimate_settings(settings)
    assert report.pool is not None and report.pool.minutes == pytest.approx(300 / 2100)


def test_the_pool_example_runs_offline_over_its_three_simulators(tmp_path: Path) -> None:
    import batchrun

    run = batchrun.run_job(POOL_JOB, out_dir=str(tmp_path / "run"), limit=90, quiet=True)
    assert run.exit_code == 0, run.notes
    lines = (tmp_path / "run" / "results.jsonl").read_text().splitlines()
    answered = Counter(json.loads(line)["batchrun"]["route"][-1] for line in lines)
    assert sum(answered.values()) == 90 and set(answered) <= {"steady", "fast", "flaky"}
    rows = run.summary["endpoints"]
    assert list(rows) == ["steady", "fast", "flaky"]
    assert sum(r["answered"] for r in rows.values()) == 90


def test_each_simulated_endpoint_gets_a_simulator_with_its_own_quota_and_faults(
    tmp_path: Path,
) -> None:
    settings = load_job(POOL_JOB).settings(out_dir=str(tmp_path / "run"))
    statuses: dict[str, Counter[int]] = {}
    with endpoint(settings) as live:
        urls = {name: e.base_url for name, e in live.endpoints.items()}
        assert len(set(urls.values())) == 3
        for name, member in live.endpoints.items():
            assert member.simulated and member.base_url.startswith("http://127.0.0.1:")
            assert member.identity == f"sim:{name}"  # the loopback port is not who it is
            assert live.public_dict()["endpoints"][name]["base_url"] == "sim"
        with httpx.Client(timeout=10) as client:
            for name, url in urls.items():
                replies = [client.post(url + "/chat/completions", json=BODY) for _ in range(60)]
                statuses[name] = Counter(r.status_code for r in replies)
                limit = replies[0].headers["x-ratelimit-limit-requests"]
                assert int(limit) == settings.endpoints[name].sim_rpm
            # each keeps its files and batches apart, in the run directory, as a provider
            upload = client.post(
                urls["fast"] + "/files",
                files={"file": ("in.jsonl", b"{}\n")},
                data={"purpose": "batch"},
            )
            assert upload.status_code == 200
    assert statuses["steady"] == {200: 60} and statuses["fast"] == {200: 60}
    assert set(statuses["flaky"]) == {200, 503} and 4 <= statuses["flaky"][503] <= 24
    batch_dir = tmp_path / "run" / "batch"
    assert sorted(p.name for p in batch_dir.iterdir()) == ["sim-fast"]
    assert (batch_dir / "sim-fast" / "log.jsonl").read_text().count('"op":"upload"') == 1
    with pytest.raises(httpx.TransportError):  # and they stop with the block
        httpx.post(urls["steady"] + "/chat/completions", json=BODY, timeout=2)


@pytest.mark.slow
def test_batchrun_sim_pool_serves_n_simulators_with_their_quotas() -> None:
    command = [sys.executable, "-m", "batchrun", "sim", "--port", "0", "--pool", "3"]
    command += ["--pool-rpm", "600,1200,300", "--start-drained"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == (
            "batchrun sim: a pool of 3 simulators (600 rpm, 1200 rpm, 300 rpm)"
        )
        prefix = "batchrun sim listening on "
        urls = [proc.stdout.readline().strip().removeprefix(prefix) for _ in range(3)]
        assert len(set(urls)) == 3 and all(u.startswith("http://127.0.0.1:") for u in urls)
        for url, rpm in zip(urls, (600, 1200, 300), strict=True):
            drained = httpx.post(url + "/chat/completions", json=BODY, timeout=10)
            assert drained.status_code == 429  # --start-drained: the quota is used up
            assert drained.headers["x-ratelimit-limit-requests"] == str(rpm)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pool", "3", "--pool-rpm", "600,1200"], "--pool-rpm: 2 values for --pool 3"),
        (["--pool-rpm", "600"], "--pool-rpm and --pool-tpm need --pool N"),
        (["--pool", "2", "--pool-tpm", "a,b"], "--pool-tpm: expected whole numbers"),
    ],
)
def test_pool_options_are_checked(args: list[str], message: str) -> None:
    result = CliRunner().invoke(sim_command, ["--port", "0", *args])
    assert result.exit_code == 1 and message in result.output


@pytest.mark.slow
def test_the_pool_benchmark_runs_the_pool_and_its_one_endpoint_baseline() -> None:
    """scripts/bench_pool.py end to end on the smallest pool (a few seconds): one run
    over the pool of two, then one endpoint with their summed quota."""
    script = REPO / "scripts" / "bench_pool.py"
    done = subprocess.run(
        [sys.executable, str(script), "--sizes", "2", "--seconds", "2", "--latency-ms", "5"]
        + ["--jitter-ms", "0", "--json"],
        capture_output=True,
        text=True,
        timeout=55,
        env={**os.environ, "PYTHONSAFEPATH": "1"},
    )
    assert done.returncode == 0, done.stderr
    found = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    pooled, single = found
    assert pooled["pooled"] is True and pooled["quotas_rpm"] == [600, 1200]
    assert single["pooled"] is False and single["quotas_rpm"] == [1800]
    for result in found:
        assert result["rows"] == 60 and result["answered"] == 60
        assert result["exactly_once"] is True
        assert result["sent"] == result["answered"] + result["429"]
        assert 0 < result["throughput"] <= 1.05 and result["cpu_ms_per_request"] > 0
    assert all(n > 0 for n in pooled["by_endpoint"].values())
    assert "CPU per request, pool / one endpoint" in done.stdout
