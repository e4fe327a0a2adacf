"""Many models in one input (issue 24, item 7): one read of the input, flat open files,
and the time of one model.

The same 20,000 requests go through batchrun's runner twice in this run: spread over
``--models`` models (1,000 by default: 20 rows each, interleaved as variants of many
models are), and all for one model. Each run is a fresh subprocess under ``ulimit -n
1024`` (RLIMIT_NOFILE), pinned to CPU 0, against ``scripts/fastserver.py`` on CPU 1
(a canned answer, far cheaper than the client). It reports, per run: the passes over
the input (the Source's ``requests()`` calls: 1 is one read, whatever the models),
the most files open while lines were written (against the count before the run), the
client's CPU seconds and wall seconds; then the ratio many / one (target <= 1.5x).
Before issue 24 each model's lane read the input itself: 1,000 passes, 1,000 files
open, and ``Too many open files`` under this limit.

    .venv/bin/python scripts/bench_models.py                 # 20,000 rows, 1,000 models
    .venv/bin/python scripts/bench_models.py --models 20000  # one row per model
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
FD_LIMIT = 1024

RUN = r"""
import json, os, sys, time
import anyio
from batchrun._engine.hooks import RunHooks
from batchrun._engine.runner import Runner
from batchrun._input.sources import Source
from batchrun._settings import Settings

path, url, out = sys.argv[1], sys.argv[2], sys.argv[3]

class Counting(Source):
    passes = 0
    def requests(self):
        Counting.passes += 1
        return super().requests()

def open_files():
    return len(os.listdir("/proc/self/fd"))

class Fds(RunHooks):
    most = 0
    def on_written(self, state, batch):
        Fds.most = max(Fds.most, open_files())

import batchrun._transport.client, batchrun._pacing.tokens, httpx_aiohttp, tenacity  # untimed
cfg = Settings(input=path, out_dir=out, base_url=url, concurrency=256, auth="none",
               quiet=True, write_parquet=False)
before = open_files()
runner = Runner(cfg, source=Counting(path), hooks=Fds())
c0, w0 = time.process_time(), time.perf_counter()
result = anyio.run(runner.run)
c1, w1 = time.process_time(), time.perf_counter()
requests = result.summary["requests"]
assert requests["succeeded"] == requests["total"], requests
print(json.dumps({"cpu": c1 - c0, "wall": w1 - w0, "passes": Counting.passes,
                  "fds_before": before, "fds_most": Fds.most, "rows": requests["total"]}))
"""


def make_input(path: Path, rows: int, models: int) -> None:
    with open(path, "w") as f:
        for i in range(rows):
            body = {
                "model": f"model-{i % models:05d}",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"Review {i}: the kettle boils fast."}],
            }
            f.write(json.dumps({"custom_id": f"r{i}", "body": body}) + "\n")


def pinned(cpu: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {cpu})


def limited(fds: int) -> None:
    pinned(0)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(fds, hard), hard))


def start_server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [PY, str(ROOT / "scripts" / "fastserver.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: pinned(1),
    )
    assert proc.stdout is not None
    port = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
    return proc, f"http://127.0.0.1:{port}/v1"


def measure(data: Path, url: str, out: Path, fds: int) -> dict[str, float]:
    done = subprocess.run(
        [PY, "-c", RUN, str(data), url, str(out)],
        capture_output=True,
        text=True,
        timeout=1800,
        preexec_fn=lambda: limited(fds),
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise SystemExit(f"benchmark subprocess failed:\n{done.stderr[-3000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--models", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=2, help="best CPU of this many runs")
    parser.add_argument(
        "--fd-limit", type=int, default=FD_LIMIT, help="RLIMIT_NOFILE of the runs (ulimit -n)"
    )
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="batchrun-models-"))
    inputs = {}
    for label, models in (("many", args.models), ("one", 1)):
        inputs[label] = tmp / f"{label}.jsonl"
        make_input(inputs[label], args.rows, models)
    server, url = start_server()
    best: dict[str, dict[str, float]] = {}
    started = time.perf_counter()
    try:
        for rep in range(args.repeat):
            for label in ("many", "one"):
                got = measure(inputs[label], url, tmp / f"{label}-{rep}", args.fd_limit)
                if label not in best or got["cpu"] < best[label]["cpu"]:
                    best[label] = got
    finally:
        server.kill()
    print(
        f"{args.rows:,} rows; best CPU of {args.repeat}; ulimit -n {args.fd_limit}; "
        f"client on CPU 0, server on CPU 1; {time.perf_counter() - started:.0f} s in all"
    )
    print(f"{'':>16} | passes | open files (before -> most) | CPU s | wall s")
    for label, models in (("many", args.models), ("one", 1)):
        r = best[label]
        print(
            f"{models:>9,} models | {r['passes']:>6.0f} | {r['fds_before']:>11.0f} -> "
            f"{r['fds_most']:<13.0f} | {r['cpu']:>5.2f} | {r['wall']:>6.2f}"
        )
    ratio = best["many"]["cpu"] / best["one"]["cpu"]
    wall = best["many"]["wall"] / best["one"]["wall"]
    print(
        f"ratio {args.models:,} models / one: CPU {ratio:.2f}x, wall {wall:.2f}x (target <= 1.5x)"
    )


if __name__ == "__main__":
    main()
