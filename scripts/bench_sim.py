"""How many requests per second the simulator serves (it must never be the bottleneck).

Starts ``batchrun sim`` in a child process (pinned to one CPU when possible), drives it
with a plain aiohttp client loop from this process, and reports both the wall-clock
rate and the rate per CPU-second the server actually used (read from /proc), which
stays meaningful when the client, not the server, is what saturates.

    $ .venv/bin/python scripts/bench_sim.py --seconds 5 --workers 32
    non-stream: 2963 req/s wall, server 44% of a core -> ~6700 req/s per server core
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import aiohttp
import orjson

_LAUNCH = "from batchrun.sim.cli import sim_command; sim_command()"
_BODY = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a helpful classifier."},
        {"role": "user", "content": "Sentiment of this review: it arrived on time and works."},
    ],
}


def _cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drive(url: str, seconds: float, workers: int, stream: bool) -> tuple[int, int, float]:
    body = orjson.dumps({**_BODY, "stream": stream})
    ok = failed = 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=workers)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal ok, failed
            while time.perf_counter() < deadline:
                headers = {"Content-Type": "application/json"}
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status == 200:
                        ok += 1
                    else:
                        failed += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(workers)))
        return ok, failed, time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--workers", type=int, default=32)
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin the server to")
    args = parser.parse_args(argv)
    command = [sys.executable, "-c", _LAUNCH, "--port", "0"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(proc.pid, {args.cpu})
            others = os.sched_getaffinity(0) - {args.cpu}
            if others:
                os.sched_setaffinity(0, others)
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
        url = base_url + "/chat/completions"
        for stream in (False, True):
            before = _cpu_seconds(proc.pid)
            ok, failed, elapsed = asyncio.run(_drive(url, args.seconds, args.workers, stream))
            after = _cpu_seconds(proc.pid)
            line = f"{'stream' if stream else 'non-stream'}: {ok / elapsed:.0f} req/s wall"
            if before is not None and after is not None and after > before:
                share = (after - before) / elapsed
                line += f", server {share:.0%} of a core -> ~{ok / (after - before):.0f} req/s"
                line += " per server core"
            print(line + (f" ({failed} failed)" if failed else ""), flush=True)
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    main()
