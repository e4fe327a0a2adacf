"""What the response cache's lookup costs a row in a pool (issue 26).

A row is looked up under every endpoint of the pool serving its model
(`batchrun._cache.scopes.PoolScopes.lookup_keys`): one key each, in one query per
256 rows. This times the lookup of ``--rows`` rows in a cache holding them, half
answered by the first endpoint and half by the last, for a pool of 1 and of
``--endpoints`` endpoints (best of three).

    .venv/bin/python scripts/bench_pool_cache.py --rows 20000 --endpoints 4
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any

from batchrun._cache.scopes import PoolScopes
from batchrun._cache.store import ResponseCache
from batchrun._settings import Settings
from batchrun._values import Endpoint

BATCH = 256


def pool(size: int) -> tuple[Endpoint, ...]:
    declared = {f"e{i}": {"base_url": f"http://h{i}.test/v1", "auth": "none"} for i in range(size)}
    return tuple(Settings.build(endpoints=declared).pool())


def looked_up(cache: ResponseCache, scopes: PoolScopes, bodies: list[dict[str, Any]]) -> int:
    hits = 0
    for start in range(0, len(bodies), BATCH):
        keys = [scopes.lookup_keys("m", "chat", b) for b in bodies[start : start + BATCH]]
        found = cache.get_many_timed(k for ks in keys for _, k in ks)
        hits += sum(any(k in found for _, k in ks) for ks in keys)
    return hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--endpoints", type=int, default=4)
    args = parser.parse_args()
    bodies = [
        {"model": "m", "temperature": 0, "messages": [{"role": "user", "content": f"q-{i}"}]}
        for i in range(args.rows)
    ]
    last = f"e{args.endpoints - 1}"
    with ResponseCache(os.path.join(tempfile.mkdtemp(), "c.sqlite")) as cache:
        full = PoolScopes(pool(args.endpoints), {})
        cache.put_many(
            (full.store_key("e0" if i % 2 else last, "chat", b), b'{"answer":1}')
            for i, b in enumerate(bodies)
        )
        for size in (1, args.endpoints):
            scopes = PoolScopes(pool(size), {})
            best, hits = float("inf"), 0
            for _ in range(3):
                started = time.perf_counter()
                hits = looked_up(cache, scopes, bodies)
                best = min(best, time.perf_counter() - started)
            per_row = best / args.rows * 1e6
            print(f"pool of {size}: {per_row:.1f} us a row, {hits:,} of {args.rows:,} found")


if __name__ == "__main__":
    main()
