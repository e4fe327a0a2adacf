"""A run on Ray whose input and run directory are on object storage (issue 29 part 2,
"Must show"): a real local Ray cluster, moto's S3 server on loopback reached through
``AWS_ENDPOINT_URL`` (as a user reaches MinIO), the simulator over loopback, and a
real SIGKILL of the driver. Each shard's journal lives on its worker's local disk and
is committed to the prefix as segments; a shard started again rebuilds from them.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batchrun
from batchrun._output.segments import decode_segment
from batchrun.sim import SimConfig, SimThread
from tests.s3server import ACCESS_KEY_ID, S3, SECRET_ACCESS_KEY

if os.environ.get("BATCHRUN_RAY_REQUIRED") == "1":
    import ray
else:
    ray = pytest.importorskip("ray")

pytest_plugins = ["tests.conftest_s3"]  # s3

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray"),
]

KEY = "sk-canary-s3ray-5d1e8a7c3b9f2e4d6a0c"


@pytest.fixture(scope="module")
def cluster(s3: S3) -> Iterator[dict[str, str]]:
    """A local cluster started after the S3 fixture: its workers inherit the AWS_*
    variables, as the nodes of a real cluster have their own."""
    import logging

    temp = tempfile.mkdtemp(prefix="br-s3r-", dir="/tmp")
    here = os.getcwd()
    os.chdir(temp)  # the workers must import the installed wheel, not ./batchrun
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


def parquet_bytes(texts: list[str], group_rows: int = 250) -> bytes:
    bodies = [
        json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": t}]})
        for t in texts
    ]
    out = io.BytesIO()
    pq.write_table(pa.table({"body": bodies}), out, row_group_size=group_rows)
    return out.getvalue()


def keys(s3: S3, bucket: str, prefix: str) -> list[str]:
    pages = s3.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))


def committed_ids(s3: S3, bucket: str, prefix: str) -> list[str]:
    out = []
    for key in keys(s3, bucket, prefix):
        if "/segments/" in key:
            data = s3.client.get_object(Bucket=bucket, Key=key)["Body"].read()
            results = decode_segment(data, key)[1]
            out.extend(json.loads(line)["custom_id"] for line in results.splitlines())
    return out


def s3_filesystem(s3: S3) -> Any:
    from pyarrow import fs

    return fs.S3FileSystem(endpoint_override=s3.url, scheme="http", region="us-east-1")


def test_a_killed_driver_on_s3_and_a_rerun_answer_every_row_once(
    s3: S3, cluster: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = s3.bucket()
    texts: list[str] = []
    for part in range(4):
        these = [f"p{part}-{i}" for i in range(1000)]
        s3.put(bucket, f"reviews/part-{part}.parquet", parquet_bytes(these))
        texts += these
    source, location = f"s3://{bucket}/reviews/", f"s3://{bucket}/runs/x"
    monkeypatch.setenv("BATCHRUN_SNAPSHOTS", str(tmp_path / "snapshots"))
    env = {**os.environ, "OPENAI_API_KEY": KEY, "PYTHONSAFEPATH": "1"}
    workers, concurrency, commit_rows = 2, 4, 50
    with SimThread(SimConfig(require_key=KEY, latency_ms=20, record_bodies=20000)) as sim:
        command = [sys.executable, "-m", "batchrun", "run", source, "-o", location,
                   "--ray", cluster["address"], "--base-url", sim.base_url,
                   "--shard-rows", "500", "--workers", str(workers), "-c", str(concurrency),
                   "--commit-rows", str(commit_rows), "--commit-interval", "3600",
                   "-q", "--quality-breaker", "0"]  # fmt: skip
        first = subprocess.Popen(command, env=env, cwd=tmp_path, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 120
            while len(committed_ids(s3, bucket, "runs/x/")) < 600:
                assert first.poll() is None, first.stderr.read() if first.stderr else ""
                assert time.monotonic() < deadline, "the first driver committed too little"
                time.sleep(0.1)
            first.send_signal(signal.SIGKILL)
        finally:
            first.wait(timeout=30)
            assert first.stderr is not None
            first.stderr.close()
        committed = len(committed_ids(s3, bucket, "runs/x/"))
        assert committed < 4000
        rerun = subprocess.run(
            command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240
        )
        assert rerun.returncode == 0, rerun.stderr
        sent = Counter(b["messages"][0]["content"] for b in sim.stats.bodies)
        requests = sim.stats.requests
    # every row answered, and committed exactly once
    ids = committed_ids(s3, bucket, "runs/x/")
    assert len(ids) == 4000 and len(set(ids)) == 4000
    assert set(sent) == set(texts)
    # paid twice: at most, per running shard, its uncommitted segment (fewer than
    # commit_rows lines, and the lines written since the committing thread last looked,
    # 0.2 s ago) and its requests on the wire (and answers waiting for the group commit)
    twice = requests - 4000
    assert 0 <= twice <= workers * (2 * commit_rows + 2 * concurrency)
    # results.parquet under the prefix: one table of 4,000 unique ids
    table = pq.read_table(f"{bucket}/runs/x/results.parquet", filesystem=s3_filesystem(s3))
    assert table.num_rows == 4000 and len(set(table.column("custom_id").to_pylist())) == 4000
    opened = batchrun.open(location)  # the library reads the prefix too
    assert opened.status == "complete" and opened.results().num_rows == 4000
    status = subprocess.run(
        [sys.executable, "-m", "batchrun", "status", location, "--json"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["requests"]["succeeded"] == 4000 and report["status"] == "complete"
    found = keys(s3, bucket, "runs/x/")
    assert not [k for k in found if k.endswith(("results.jsonl", "errors.jsonl"))]
    for key in found:  # neither the API key nor the store's keys in any object
        data = s3.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        for secret in (KEY, ACCESS_KEY_ID, SECRET_ACCESS_KEY):
            assert secret.encode() not in data, key
    print(f"committed before the kill {committed}, paid twice {twice}")
