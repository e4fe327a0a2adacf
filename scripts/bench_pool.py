"""Does a pool of endpoints run at the sum of their quotas? (issue 26)

For 2, 4 and 8 endpoints with unequal quotas, starts ``batchrun sim --pool N
--pool-rpm ... --start-drained`` (N simulators in one child process, each with its
own port and x-ratelimit headers, every quota drained at the start, as if another
client had just used it up), runs the real CLI (``batchrun run``, no --rpm) against
them and reads each simulator's own record (``GET /_sim/stats``):

* ``throughput`` = answered / (sum of r_i * T): r_i is endpoint i's refill (its rpm /
  60 a second) and T the span from the pool's first arrival to its last; a drained
  bucket admits at most r_i * T, so 100 % is every endpoint at its quota all along
  (goal: >= 95 %);
* ``429 share`` = 429 answers / requests sent (goal: <= 1 %);
* ``CPU per request``: the batchrun process's user + system seconds over the rows
  (goal: a pool's no worse than one endpoint's);
* every row answered exactly once (results.jsonl holds each id once).

For each server count it measures the pooled run (``--endpoint eI=URL`` for every
simulator, one run over the whole pool) and the single-endpoint baseline: one
simulator whose quota is the pool's sum, so the same rows go at the same rate to
one endpoint; the CPU per request of the pool is compared with that baseline's, on
the same machine in the same invocation. ``--single`` / ``--pooled`` measure only one of the two.

    $ .venv/bin/python scripts/bench_pool.py                      # 2, 4, 8: pool + baseline
    $ .venv/bin/python scripts/bench_pool.py --sizes 2 --seconds 5 --json
    $ .venv/bin/python scripts/bench_pool.py --pooled              # the pool only
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
import urllib.request
from collections import Counter
from dataclasses import dataclass
from typing import Any

BIN = os.path.join(os.path.dirname(sys.executable), "batchrun")
QUOTA_STEPS = (1.0, 2.0, 0.5, 1.5)
"""Endpoint i's quota is the base times QUOTA_STEPS[i % 4]: unequal, as real pools are."""
MODEL = "gpt-4o-mini"


@dataclass
class Pool:
    """A child process serving N simulators, and their quotas (requests a minute)."""

    proc: subprocess.Popen[str]
    urls: list[str]
    rpm: list[int]

    def stats(self, i: int) -> dict[str, Any]:
        with urllib.request.urlopen(self.urls[i].removesuffix("/v1") + "/_sim/stats") as r:
            data: dict[str, Any] = json.loads(r.read())
            return data

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def quotas(size: int, base: int) -> list[int]:
    return [round(base * QUOTA_STEPS[i % len(QUOTA_STEPS)]) for i in range(size)]


def start_pool(rpm: list[int], latency_ms: float, jitter_ms: float) -> Pool:
    size = len(rpm)
    command = [
        *(BIN, "sim", "--port", "0", "--pool", str(size)),
        *("--pool-rpm", ",".join(map(str, rpm)), "--start-drained"),
        *("--latency-ms", str(latency_ms), "--jitter-ms", str(jitter_ms)),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    urls: list[str] = []
    prefix = "batchrun sim listening on "
    while len(urls) < size:
        line = proc.stdout.readline()
        if not line:
            proc.kill()
            raise SystemExit("the simulators did not start")
        if line.startswith(prefix):
            urls.append(line.strip().removeprefix(prefix))
    return Pool(proc, urls, rpm)


def write_rows(path: str, n: int) -> None:
    with open(path, "w") as f:
        for i in range(n):
            messages = [{"role": "user", "content": f"{i}"}]
            body = {"custom_id": f"r{i}", "model": MODEL, "max_tokens": 16, "messages": messages}
            f.write(json.dumps(body) + "\n")


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(size: int, args: argparse.Namespace) -> dict[str, Any]:
    """One server count: start the pool, run batchrun against it (``args.pooled``: the
    whole pool; else its first endpoint), read the simulators' records."""
    rpm = quotas(size, args.rpm_base)
    if not args.pooled:  # the baseline: one endpoint with the pool's summed quota
        rpm = [sum(rpm)]
    pool = start_pool(rpm, args.latency_ms, args.jitter_ms)
    try:
        used = range(len(rpm))
        quota = sum(pool.rpm[i] for i in used)
        rows = max(1, round(quota / 60 * args.seconds))
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "requests.jsonl")
            write_rows(path, rows)
            out = os.path.join(tmp, "run")
            if args.pooled:
                where = [f"--endpoint=e{i}={pool.urls[i]}" for i in used]
            else:
                where = ["--base-url", pool.urls[0]]
            command = [
                *(BIN, "run", path, "-o", out, *where, "--auth", "none", "-q"),
                *("--no-parquet", "--quality-breaker", "0", "--max-attempts", "20"),
            ]
            cpu = cpu_of_children()
            started = time.monotonic()
            done = subprocess.run(command, capture_output=True, text=True)
            wall = time.monotonic() - started
            cpu = cpu_of_children() - cpu
            if done.returncode != 0:
                print(done.stdout, done.stderr, file=sys.stderr)
                raise SystemExit(f"batchrun run exited {done.returncode}")
            with open(os.path.join(out, "results.jsonl")) as f:
                ids = Counter(json.loads(line)["custom_id"] for line in f)
        stats = [pool.stats(i) for i in used]
    finally:
        pool.stop()
    return summarize(size, pool.rpm, list(used), stats, rows, ids, wall, cpu, args.pooled)


def summarize(
    size: int,
    rpm: list[int],
    used: list[int],
    stats: list[dict[str, Any]],
    rows: int,
    ids: Counter[str],
    wall: float,
    cpu: float,
    pooled: bool,
) -> dict[str, Any]:
    """The figures of one measurement (see the module docstring)."""
    arrivals = [a for s in stats for a in s["arrivals"]]
    span = max(arrivals) - min(arrivals) if len(arrivals) > 1 else 0.0
    status = Counter[int]()
    for s in stats:
        status.update({int(k): v for k, v in s["by_status"].items()})
    sent = sum(status.values())
    capacity = sum(rpm[i] for i in used) / 60 * span
    return {
        "endpoints": size,
        "pooled": pooled,
        "quotas_rpm": [rpm[i] for i in used],
        "rows": rows,
        "sent": sent,
        "answered": status.get(200, 0),
        "429": status.get(429, 0),
        "429_share": status.get(429, 0) / sent if sent else 0.0,
        "throughput": status.get(200, 0) / capacity if capacity else None,
        "by_endpoint": {f"e{i}": s["requests"] for i, s in zip(used, stats, strict=True)},
        "exactly_once": len(ids) == rows and all(n == 1 for n in ids.values()),
        "span_s": round(span, 2),
        "wall_s": round(wall, 2),
        "cpu_ms_per_request": round(cpu / rows * 1000, 3),
    }


def show(result: dict[str, Any]) -> None:
    what = "the pool" if result["pooled"] else "one endpoint, the summed quota"
    throughput = result["throughput"]
    shown = "-" if throughput is None else f"{throughput:.1%}"
    print(
        f"{result['endpoints']} endpoints, {what} ({'+'.join(map(str, result['quotas_rpm']))} "
        f"rpm): {result['rows']} rows, {result['sent']} sent, throughput {shown} of the "
        f"quota, 429s {result['429']} ({result['429_share']:.2%}), span {result['span_s']} s, "
        f"CPU {result['cpu_ms_per_request']} ms a request, exactly once: "
        f"{result['exactly_once']}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default="2,4,8", help="server counts, comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="rows for this long at quota")
    parser.add_argument("--rpm-base", type=int, default=600)
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--jitter-ms", type=float, default=50.0)
    parser.add_argument("--pooled", action="store_true", help="only the run over the pool")
    parser.add_argument("--single", action="store_true", help="only the one-endpoint baseline")
    parser.add_argument("--json", action="store_true", help="also print each result as JSON")
    args = parser.parse_args(argv)
    modes = [True] if args.pooled else [False] if args.single else [True, False]
    for size in (int(s) for s in args.sizes.split(",")):
        cpu: dict[bool, float] = {}
        for pooled in modes:
            result = measure(size, argparse.Namespace(**{**vars(args), "pooled": pooled}))
            cpu[pooled] = result["cpu_ms_per_request"]
            show(result)
            if args.json:
                print(json.dumps(result), flush=True)
        if len(cpu) == 2:
            print(f"  CPU per request, pool / one endpoint: {cpu[True] / cpu[False]:.2f}x")


if __name__ == "__main__":
    main()
