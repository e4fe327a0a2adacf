"""Does batchrun run close to a server's quota without hitting it? (issue 3)

Starts ``batchrun sim`` with a quota in a child process, runs the real CLI
(``batchrun run``, *no* --rpm/--tpm) against it, then reads the simulator's own
record (``GET /_sim/stats``: arrival times on the quota's clock, statuses) and
the run's summary.json.

Throughput against a token bucket (capacity C = per-minute limit, refill r = C/60
per second; it starts full, so a burst of C is legal). Over the span T from the
first to the last arrival the server can admit at most ``C + r*T`` units:

* ``vs max``     = admitted / (C + r*T)            (whole run, burst included)
* ``sustained``  = (admitted - C) / (r*T)          (after the burst: the stricter one)

Units are requests for an RPM quota and the simulator's token estimate (prompt
tokens + max_tokens, summed over the requests it admitted) for a TPM quota.

    $ .venv/bin/python scripts/bench_ratelimit.py                 # all three cases
    $ .venv/bin/python scripts/bench_ratelimit.py --case rpm --requests 3000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from batchrun._pacing.tokens import completion_ceiling, prompt_tokens  # noqa: E402

BIN = os.path.join(os.path.dirname(sys.executable), "batchrun")
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima".split()


@dataclass
class Case:
    name: str
    sim_args: list[str]
    max_tokens: int
    prompt_words: int
    binding: str  # "requests", "tokens" or "" (no quota check)
    run_args: tuple[str, ...] = ()


CASES = {
    "rpm": Case("rpm", ["--rpm", "1200"], max_tokens=16, prompt_words=8, binding="requests"),
    "tpm": Case(
        "tpm",
        ["--rpm", "1200", "--tpm", "100000"],
        max_tokens=64,
        prompt_words=30,
        binding="tokens",
    ),
    "errors": Case(
        "errors",
        [
            "--rpm",
            "1200",
            "--error-rate",
            "429=0.2",
            "--error-rate",
            "503=0.1",
            "--retry-after",
            "0.2",
        ],
        max_tokens=16,
        prompt_words=8,
        binding="",
        # 30% of attempts fail: 6 attempts would leave 0.3**6 = 0.07% of rows failed
        run_args=("--max-attempts", "12"),
    ),
}


def make_rows(n: int, case: Case) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        words = [WORDS[(i * 7 + k) % len(WORDS)] for k in range(case.prompt_words)]
        rows.append(
            {
                "custom_id": f"r{i}",
                "model": "gpt-4o-mini",
                "max_tokens": case.max_tokens,
                "messages": [{"role": "user", "content": f"{i} " + " ".join(words)}],
            }
        )
    return rows


def server_estimate(row: dict[str, Any]) -> int:
    body = {k: v for k, v in row.items() if k != "custom_id"}
    return prompt_tokens(body) + completion_ceiling(body, 256)


def start_sim(args: list[str]) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "batchrun", "sim", "--port", "0", *args]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:
        proc.kill()
        raise SystemExit("simulator did not start")
    return proc, line.rsplit(" ", 1)[-1]


@dataclass
class Drive:
    """What one `batchrun run` against one simulator left: the simulator's record,
    the run's summary, how often each id landed in results.jsonl, failures, wall time."""

    stats: dict[str, Any]
    summary: dict[str, Any]
    ids: Counter[str]
    failed: int
    wall: float


def drive(sim_args: list[str], rows: list[dict[str, Any]], run_args: tuple[str, ...]) -> Drive:
    """Start `batchrun sim` with ``sim_args``, run the real CLI on ``rows`` against it."""
    proc, base_url = start_sim(sim_args)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "requests.jsonl")
            with open(path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            out = os.path.join(tmp, "run")
            command = [
                BIN,
                "run",
                path,
                "-o",
                out,
                "--base-url",
                base_url,
                "--auth",
                "none",
                "-q",
                "--no-parquet",
                "--quality-breaker",
                "0",  # the simulator's free text outruns max_tokens: pacing is measured here
                *run_args,
            ]
            started = time.monotonic()
            done = subprocess.run(command, capture_output=True, text=True)
            wall = time.monotonic() - started
            if done.returncode not in (0, 4):
                print(done.stdout, done.stderr, file=sys.stderr)
                raise SystemExit(f"batchrun run exited {done.returncode}")
            with urllib.request.urlopen(base_url.removesuffix("/v1") + "/_sim/stats") as r:
                stats = json.loads(r.read())
            with open(os.path.join(out, "summary.json")) as f:
                summary = json.load(f)
            with open(os.path.join(out, "results.jsonl")) as f:
                ids = Counter(json.loads(line)["custom_id"] for line in f)
            errors_path = os.path.join(out, "errors.jsonl")
            failed = 0
            if os.path.exists(errors_path):
                with open(errors_path) as f:
                    failed = sum(1 for _ in f)
    finally:
        proc.terminate()
        proc.wait(10)
    return Drive(stats, summary, ids, failed, wall)


def run_case(case: Case, n: int, latency_ms: float, jitter_ms: float) -> dict[str, Any]:
    rows = make_rows(n, case)
    sim_args = [*case.sim_args, "--latency-ms", str(latency_ms), "--jitter-ms", str(jitter_ms)]
    result_of = drive(sim_args, rows, case.run_args)
    stats, summary, ids, failed, wall = (
        result_of.stats,
        result_of.summary,
        result_of.ids,
        result_of.failed,
        result_of.wall,
    )
    arrivals = stats["arrivals"]
    span = arrivals[-1] - arrivals[0]
    by_status = {int(k): v for k, v in stats["by_status"].items()}
    sent = stats["requests"]
    limited = by_status.get(429, 0)
    result: dict[str, Any] = {
        "case": case.name,
        "requests": n,
        "sent": sent,
        "429": limited,
        "429_share": limited / sent,
        "by_status": by_status,
        "results_once": len(ids) == n and all(c == 1 for c in ids.values()),
        "failed": failed,
        "span_s": round(span, 2),
        "wall_s": round(wall, 2),
        "summary_rate_limited": summary.get("rate_limited"),
        "summary_retries": summary.get("retries"),
        "pacing": summary.get("pacing"),
    }
    if case.binding:
        if case.binding == "requests":
            capacity = 1200.0
            admitted = float(by_status.get(200, 0))
        else:
            capacity = 100000.0
            admitted = float(sum(server_estimate(r) for r in rows))
        rate = capacity / 60.0
        result["binding"] = case.binding
        result["vs_max"] = admitted / (capacity + rate * span)
        result["sustained"] = (admitted - capacity) / (rate * span)
    return result


def show(result: dict[str, Any]) -> None:
    line = (
        f"{result['case']:>6}: {result['requests']} requests, {result['sent']} sent, "
        f"429s {result['429']} ({result['429_share']:.2%}), span {result['span_s']} s, "
        f"wall {result['wall_s']} s, results exactly once: {result['results_once']}"
    )
    if "vs_max" in result:
        line += (
            f"\n        {result['binding']}: {result['vs_max']:.1%} of max possible, "
            f"sustained {result['sustained']:.1%} of the refill rate"
        )
    line += (
        f"\n        summary: rate_limited={result['summary_rate_limited']} "
        f"retries={result['summary_retries']} pacing={result['pacing']}"
    )
    print(line, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--jitter-ms", type=float, default=100.0)
    parser.add_argument("--json", action="store_true", help="also print each result as JSON")
    args = parser.parse_args(argv)
    names = list(CASES) if args.case == "all" else [args.case]
    for name in names:
        result = run_case(CASES[name], args.requests, args.latency_ms, args.jitter_ms)
        show(result)
        if args.json:
            print(json.dumps(result))


if __name__ == "__main__":
    main()
