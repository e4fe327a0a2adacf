"""How long the simulator's Batch API takes to answer a large job (issue: sim-batch).

Uploads N rows as S shards through the official ``openai`` SDK, creates one batch
per shard, polls until every batch is completed and downloads the output files;
reports the wall time of each stage. The simulator runs in a background thread
(`SimThread`) at the given rows-per-second setting (default: unlimited).

    $ .venv/bin/python scripts/bench_sim_batch.py --rows 120000 --shards 3
    120000 rows in 3 shards: upload 0.4s, batches done 5.1s, download 0.3s, total 5.8s
"""

from __future__ import annotations

import argparse
import math
import time

import orjson

from batchrun.sim import BatchConfig, SimConfig, SimThread


def shard_bytes(start: int, stop: int) -> bytes:
    return b"".join(
        orjson.dumps(
            {
                "custom_id": f"row-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [
                        {"role": "system", "content": "You label reviews."},
                        {"role": "user", "content": f"Sentiment of review {i}: I love it."},
                    ],
                    "max_tokens": 20,
                },
            }
        )
        + b"\n"
        for i in range(start, stop)
    )


def main() -> None:
    import openai

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=120_000)
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--rows-per-second", type=float, default=math.inf)
    parser.add_argument("--poll", type=float, default=0.2, help="seconds between polls")
    args = parser.parse_args()
    size = math.ceil(args.rows / args.shards)
    shards = [shard_bytes(i, min(i + size, args.rows)) for i in range(0, args.rows, size)]
    config = SimConfig(batch=BatchConfig(rows_per_second=args.rows_per_second))
    with SimThread(config) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-bench", max_retries=0)
        started = time.perf_counter()
        uploads = [
            client.files.create(file=(f"shard-{n}.jsonl", data), purpose="batch")
            for n, data in enumerate(shards)
        ]
        uploaded = time.perf_counter()
        batches = [
            client.batches.create(
                input_file_id=upload.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={"shard": str(n)},
            )
            for n, upload in enumerate(uploads)
        ]
        pending = {batch.id for batch in batches}
        outputs = []
        while pending:
            for batch_id in sorted(pending):
                batch = client.batches.retrieve(batch_id)
                if batch.status == "completed":
                    pending.discard(batch_id)
                    outputs.append(batch.output_file_id)
            if pending:
                time.sleep(args.poll)
        done = time.perf_counter()
        lines = sum(client.files.content(f).text.count("\n") for f in outputs if f)
        finished = time.perf_counter()
        snap = sim.snapshot()
    assert lines == args.rows, (lines, args.rows)
    assert snap["rows_processed"] == args.rows
    print(
        f"{args.rows} rows in {len(shards)} shards: upload {uploaded - started:.1f}s, "
        f"batches done {done - uploaded:.1f}s, download {finished - done:.1f}s, "
        f"total {finished - started:.1f}s"
    )


if __name__ == "__main__":
    main()
