"""How long the validating scan takes: `Source.scan` over N rows, sending nothing.

Why: every run reads its whole input once before the first request (bad rows, duplicate
ids, rows over the model's context window); on a big input that is the wait before
anything happens. Two inputs of N rows (default 100,000, short chats of 20-70 words,
model gpt-4o-mini, max_tokens 50): a request file (bodies), and a dataset through a
template (system + "Label: {text}"). Each is scanned five times in one process (the
genai-prices table, loaded by the first, is already there for the others); the min and
median CPU seconds of the process are printed (on a shared machine wall time mostly
measures the neighbours). Each input is scanned as a resumed run does (keeping every
row's body hash, to compare with the answers held) and as a fresh run does (none: no
body is serialised when no observer wants its bytes), and the ratio is printed.

Example::

    .venv/bin/python scripts/bench_scan.py               # 100,000 rows
    .venv/bin/python scripts/bench_scan.py --rows 20000
    valgrind --tool=callgrind .venv/bin/python scripts/bench_scan.py --rows 20000 --once fresh
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from batchrun._input.select import source_for  # noqa: E402
from batchrun._settings import Settings  # noqa: E402

TEXT = "the product arrived late and the box was damaged but it works "


def write_inputs(folder: str, rows: int) -> tuple[str, str]:
    requests = os.path.join(folder, "requests.jsonl")
    dataset = os.path.join(folder, "dataset.jsonl")
    with open(requests, "w") as req, open(dataset, "w") as data:
        for i in range(rows):
            text = f"Review {i}: " + TEXT * (1 + i % 5)
            messages = [
                {"role": "system", "content": "Label it."},
                {"role": "user", "content": text},
            ]
            body = {"model": "gpt-4o-mini", "max_tokens": 50, "messages": messages}
            req.write(json.dumps({"custom_id": f"r{i}", "body": body}) + "\n")
            data.write(json.dumps({"id": f"r{i}", "text": text}) + "\n")
    return requests, dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument(
        "--once",
        choices=("resumed", "fresh", "none"),
        help="for an instruction counter (callgrind): write the request file, scan it once "
        "to warm up, then once more as a resumed or a fresh run (none: stop after the "
        "warm-up, the baseline to subtract)",
    )
    args = parser.parse_args()
    if args.once:
        with tempfile.TemporaryDirectory() as folder:
            settings = Settings(input=write_inputs(folder, args.rows)[0])
            source_for(settings).scan()
            if args.once != "none":
                source_for(settings).scan(keep_bodies=args.once == "resumed")
        return
    with tempfile.TemporaryDirectory() as folder:
        requests, dataset = write_inputs(folder, args.rows)
        cases = {
            "request file": Settings(input=requests),
            "dataset": Settings(
                input=dataset,
                model="gpt-4o-mini",
                system="Label it.",
                prompt="Label: {text}",
                id_column="id",
                request={"max_tokens": 50},
            ),
        }
        for name, settings in cases.items():
            best = {}
            for resumed in (True, False):
                times = []
                for _ in range(5):
                    source = source_for(settings)
                    start = time.process_time()
                    scan = source.scan(keep_bodies=resumed)
                    times.append(time.process_time() - start)
                best[resumed] = min(times)
                what = "resumed (body hashes)" if resumed else "fresh (none)"
                print(
                    f"{name:13s} {what:21s} {scan.total:,} rows: scan min {min(times):.3f} s, "
                    f"median {statistics.median(times):.3f} s (CPU)"
                )
            print(f"{name:13s} fresh / resumed: {best[False] / best[True]:.2f}x")


if __name__ == "__main__":
    main()
