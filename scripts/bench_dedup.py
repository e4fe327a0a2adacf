"""Memory and time of in-run deduplication (batchrun._cache.dedup) for millions of rows.

Why: a run must find identical requests among ten million rows without holding
them; batchrun._cache.dedup promises 16 bytes a row while scanning, a short sort after,
and 32 bytes per duplicate row (nothing per unique row) while sending. This measures
it from the process's own RSS (``/proc/self/status``; the peak is reset through
``/proc/self/clear_refs`` before ``finish``), against a plain ``dict`` of every key
measured on fewer rows in the same run.

    .venv/bin/python scripts/bench_dedup.py --rows 10000000 --dup-share 0.1
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from batchrun._cache.dedup import RequestGroups  # noqa: E402


def status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def keys(rows: int, dup_share: float, seed: int):  # type: ignore[no-untyped-def]
    """Random 16-byte keys; dup_share of rows repeat one of the last 10,000 keys."""
    rng = random.Random(seed)
    recent: list[bytes] = []
    for _ in range(rows):
        if recent and rng.random() < dup_share:
            yield recent[rng.randrange(len(recent))]
            continue
        key = rng.randbytes(16)
        if len(recent) < 10_000:
            recent.append(key)
        else:
            recent[rng.randrange(10_000)] = key
        yield key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--dup-share", type=float, default=0.1)
    parser.add_argument("--dict-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    # a run has pyarrow.compute loaded and its kernels paged in already (the scan's
    # duplicate-id check sorts): warm them up so their code is not counted as data
    import pyarrow as pa
    import pyarrow.compute as pc

    warm = RequestGroups()
    warm.add_many([b"w" * 16] * 2 + [random.Random(i).randbytes(16) for i in range(1000)])
    warm.finish()
    pool = pa.default_memory_pool()
    del pc

    mib = 1 / 1024
    rows = args.rows
    gc.collect()
    base = status_kib("VmRSS")
    groups = RequestGroups()
    start = time.perf_counter()
    for key in keys(rows, args.dup_share, seed=1):
        groups.add(key)
    t_add = time.perf_counter() - start
    after_add = status_kib("VmRSS")
    gen_start = time.perf_counter()
    for _key in keys(rows, args.dup_share, seed=1):
        pass
    t_gen = time.perf_counter() - gen_start

    reset_peak()
    pool_before = pool.bytes_allocated()
    pool_peak_before = pool.max_memory()
    start = time.perf_counter()
    plan = groups.finish()
    t_finish = time.perf_counter() - start
    gc.collect()
    peak = status_kib("VmHWM")
    after_finish = status_kib("VmRSS")
    pool_peak = pool.max_memory()

    start = time.perf_counter()
    sent = sum(1 for row in range(rows) if plan.leader_of(row) is None)
    t_lookup = time.perf_counter() - start

    print(f"{rows:,} rows, {args.dup_share:.0%} repeats; Python {sys.version.split()[0]}")
    print(f"followers {plan.followers:,}, leaders {plan.leaders:,}, sent {sent:,}")
    print(
        f"scan:   add {(t_add - t_gen) / rows * 1e9:.0f} ns/row (key generation excluded); "
        f"RSS +{(after_add - base) * mib:.1f} MiB = {(after_add - base) * 1024 / rows:.1f} B/row"
    )
    print(
        f"finish: {t_finish:.2f} s; peak RSS +{(peak - base) * mib:.1f} MiB over the start "
        f"= {(peak - base) * 1024 / rows:.1f} B/row "
        f"({(peak - after_add) * 1024 / rows:+.1f} B/row over the scan's); "
        f"pyarrow's own peak {(pool_peak - pool_before) / rows:.1f} B/row"
        + (" (its peak before was higher)" if pool_peak_before >= pool_peak else "")
    )
    print(
        f"send:   leader_of {t_lookup / rows * 1e9:.0f} ns/row; plan {plan.nbytes / 2**20:.1f} MiB "
        f"= 32 B x {plan.followers:,} followers; RSS +{(after_finish - base) * mib:.1f} MiB"
    )

    del groups, plan
    gc.collect()
    base = status_kib("VmRSS")
    first: dict[bytes, int] = {}  # the first row of every key: the obvious way
    for row, key in enumerate(keys(args.dict_rows, args.dup_share, seed=2)):
        if key not in first:
            first[key] = row
    gc.collect()
    grown = status_kib("VmRSS") - base
    print(
        f"dict[bytes, int] of every key, {args.dict_rows:,} rows: RSS +{grown * mib:.1f} MiB "
        f"= {grown * 1024 / args.dict_rows:.0f} B/row"
    )


if __name__ == "__main__":
    main()
