"""Memory and speed of an embeddings dataset job, against a chat job of the same rows.

Why: an embeddings job packs rows many to a request (`batchrun._engine.packing`) and
writes a vector per row into results.parquet's ``embedding`` column in row groups;
memory must stay flat however many rows there are (issue 28: a 1M-row job's peak no
more than 1.5x a 10k-row job's), and packing should make it far faster per row than
a chat job of the same rows, which is one request per row.

Each job is a real ``batchrun run`` process (the CLI) against one ``batchrun sim``
process (no latency: the client's own cost is what is measured), both on this
machine; a job's peak memory is its process's peak RSS (``os.wait4``'s rusage),
results.parquet included (written at the end of the run). The rows are a Parquet
file of unique texts (``id``, ``text``: 8 to 24 words).

    .venv/bin/python scripts/bench_embed.py --rows 10000,1000000 --chat-rows 200000
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
    "november oscar papa quebec romeo sierra tango uniform victor whiskey xray yankee zulu "
    "review product shipping quality price support battery screen sound broken great"
).split()


def write_rows(path: str, rows: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = random.Random(rows)
    with pq.ParquetWriter(path, pa.schema([("id", pa.string()), ("text", pa.string())])) as w:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            ids = [f"r{start + i}" for i in range(n)]
            texts = [
                f"{start + i} " + " ".join(rng.choices(WORDS, k=rng.randint(8, 24)))
                for i in range(n)
            ]
            w.write_table(pa.table({"id": ids, "text": texts}))


def start_sim() -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchrun", "sim", "--port", "0", "--latency-ms", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    assert line.startswith("batchrun sim listening on "), line
    return proc, line.rsplit(" ", 1)[-1]


def run_job(args: list[str]) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one ``batchrun run`` process."""
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    env.pop("OPENAI_API_KEY", None)
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchrun", "run", *args, "-q", "--auth", "none"], env=env
    )
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"batchrun run {' '.join(args)} failed ({status})")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", default="10000,1000000", help="embedding jobs' rows")
    parser.add_argument("--chat-rows", type=int, default=200_000, help="the chat job's rows")
    parser.add_argument("--model", default="text-embedding-3-small")
    parser.add_argument("--dimensions", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    sizes = [int(x) for x in args.rows.split(",")]
    work = tempfile.mkdtemp(prefix="bench_embed_")
    sim, base_url = start_sim()
    print(f"sim at {base_url}; work in {work}")
    common = ["--base-url", base_url, "-c", str(args.concurrency), "--id-column", "id"]
    try:
        results = []
        for rows in sorted(set(sizes + [args.chat_rows])):
            data = os.path.join(work, f"rows{rows}.parquet")
            write_rows(data, rows)
            jobs = []
            if rows in sizes:
                jobs.append(("embeddings", [
                    "-m", args.model, "--api", "embeddings", "--embed-input", "{text}",
                    "--body", f"dimensions={args.dimensions}",
                ]))  # fmt: skip
            if rows == args.chat_rows:
                jobs.append(("chat", [
                    "-m", "gpt-4o-mini", "--prompt", "{text}", "--max-tokens", "16",
                    "--quality-breaker", "0",
                ]))  # fmt: skip
            for kind, extra in jobs:
                out = os.path.join(work, f"{kind}{rows}")
                seconds, peak = run_job([data, "-o", out, *common, *extra])
                size = os.path.getsize(os.path.join(out, "results.parquet")) / 2**20
                results.append((kind, rows, seconds, peak))
                print(
                    f"{kind:10} {rows:>9,} rows: {seconds:7.1f} s, {rows / seconds:9,.0f} rows/s, "
                    f"peak RSS {peak:6.0f} MiB, results.parquet {size:,.0f} MiB",
                    flush=True,
                )
                shutil.rmtree(out)
            os.remove(data)
        embed = [r for r in results if r[0] == "embeddings"]
        if len(embed) >= 2:
            small, large = embed[0], embed[-1]
            print(f"peak RSS {large[1]:,} rows / {small[1]:,} rows: {large[3] / small[3]:.2f}x")
        chat = [r for r in results if r[0] == "chat"]
        same = [r for r in embed if chat and r[1] == chat[0][1]]
        if chat and same:
            ratio = (same[0][1] / same[0][2]) / (chat[0][1] / chat[0][2])
            print(f"embeddings vs chat, {chat[0][1]:,} rows: {ratio:.1f}x the rows per second")
    finally:
        sim.kill()
        sim.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
