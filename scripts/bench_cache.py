"""What a response cache costs: batchrun._cache.store (SQLite, WAL) against a plain file,
SQLite variants, diskcache and LMDB.

Why: issue 17 answers repeated requests from a cache on disk shared by parallel runs.
For 100,000 realistic chat.completion bodies (1-3 KB of JSON, 16-byte keys) this
measures, each candidate in a fresh directory, in one process:

* puts per second, batched (``--batch`` per transaction) and one by one (each its own
  transaction, on the first ``--single`` entries);
* gets per second of stored keys in random order, batched (``--get-batch`` keys per
  call) and one by one; misses batched;
* the size on disk after the 100,000 puts (database plus WAL, after close).

Rates are the best of ``--repeat`` rounds, each in a fresh directory.

The baseline, measured in the same run, is the floor for any cache: bodies appended
to one file with an in-memory {key: (offset, length)} index, read back with
``os.pread``. It is not a cache (no index on disk, one writer, no crash safety).
diskcache and lmdb are skipped when not installed; to include them::

    .venv/bin/pip install diskcache lmdb
    .venv/bin/python scripts/bench_cache.py
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

import orjson  # noqa: E402

from batchrun._cache.store import ResponseCache, cache_key  # noqa: E402

URL = "https://api.openai.com/v1/chat/completions"
WORDS = (
    "the model answered with a label and a short reason because the review mentions "
    "price delivery quality support refund broken excellent terrible average would buy again"
).split()


def make_entries(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        request = orjson.dumps(
            {
                "model": "gpt-4o-mini",
                "temperature": 0,
                "messages": [
                    {
                        "role": "user",
                        "content": f"Review {i}: " + " ".join(rng.choices(WORDS, k=40)),
                    }
                ],
            }
        )
        target = rng.randint(1000, 3000)
        words: list[str] = []
        size = 0
        while size < target - 450:  # the envelope is ~450 bytes
            word = rng.choice(WORDS)
            words.append(word)
            size += len(word) + 1
        body = orjson.dumps(
            {
                "id": f"chatcmpl-{rng.getrandbits(96):024x}",
                "object": "chat.completion",
                "created": 1_760_000_000 + i,
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": " ".join(words),
                            "refusal": None,
                            "annotations": [],
                        },
                        "logprobs": None,
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": rng.randint(40, 400),
                    "completion_tokens": rng.randint(100, 600),
                    "total_tokens": 0,
                    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
                },
                "service_tier": "default",
                "system_fingerprint": "fp_0123456789",
            }
        )
        out.append((cache_key(URL, request), body))
    return out


class Store(Protocol):
    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None: ...
    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]: ...
    def get(self, key: bytes) -> bytes | None: ...
    def close(self) -> None: ...


class PlainFile:
    """The floor: one append-only file and an index in memory."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, "bodies.bin")
        self.file = open(self.path, "ab")  # noqa: SIM115
        self.fd = os.open(self.path, os.O_RDONLY)
        self.index: dict[bytes, tuple[int, int]] = {}
        self.offset = 0

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        for key, body in items:
            self.file.write(body)
            self.index[key] = (self.offset, len(body))
            self.offset += len(body)
        self.file.flush()

    def get(self, key: bytes) -> bytes | None:
        where = self.index.get(key)
        return None if where is None else os.pread(self.fd, where[1], where[0])

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        out = {}
        for key in keys:
            where = self.index.get(key)
            if where is not None:
                out[key] = os.pread(self.fd, where[1], where[0])
        return out

    def close(self) -> None:
        self.file.close()
        os.close(self.fd)


class Batchrun:
    def __init__(self, directory: str) -> None:
        self.cache = ResponseCache(os.path.join(directory, "cache.sqlite"))

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        self.cache.put_many(items)

    def get(self, key: bytes) -> bytes | None:
        return self.cache.get(key)

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        return self.cache.get_many(keys)

    def close(self) -> None:
        self.cache.close()


class SqliteVariant:
    """Bare sqlite3 (no metadata columns): WITHOUT ROWID, or zlib-compressed bodies."""

    def __init__(
        self,
        directory: str,
        *,
        page_size: int = 4096,
        without_rowid: bool = False,
        level: int = 0,
    ) -> None:
        self.db = sqlite3.connect(os.path.join(directory, "v.sqlite"), isolation_level=None)
        self.db.execute(f"PRAGMA page_size={page_size}")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        tail = " WITHOUT ROWID" if without_rowid else ""
        self.db.execute(f"CREATE TABLE t (key BLOB PRIMARY KEY, body BLOB NOT NULL){tail}")
        self.level = level

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        if self.level:
            items = [(k, zlib.compress(b, self.level)) for k, b in items]
        self.db.execute("BEGIN IMMEDIATE")
        self.db.executemany("INSERT OR REPLACE INTO t VALUES (?, ?)", items)
        self.db.execute("COMMIT")

    def get(self, key: bytes) -> bytes | None:
        row = self.db.execute("SELECT body FROM t WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return zlib.decompress(row[0]) if self.level else row[0]

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        out = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            sql = f"SELECT key, body FROM t WHERE key IN ({','.join('?' * len(chunk))})"
            for key, body in self.db.execute(sql, chunk):
                out[key] = zlib.decompress(body) if self.level else body
        return out

    def close(self) -> None:
        self.db.close()


class DiskCache:
    def __init__(self, directory: str) -> None:
        import diskcache

        self.cache = diskcache.Cache(directory, size_limit=2**40, eviction_policy="none")

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        with self.cache.transact():
            for key, body in items:
                self.cache.set(key, body)

    def get(self, key: bytes) -> bytes | None:
        value = self.cache.get(key)
        return value if isinstance(value, bytes) else None

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        out = {}
        get = self.cache.get
        for key in keys:
            value = get(key)
            if value is not None:
                out[key] = value
        return out

    def close(self) -> None:
        self.cache.close()


class Lmdb:
    sync = False

    def __init__(self, directory: str) -> None:
        import lmdb

        # sync off: durable across a crash of the process, not of the machine, which is
        # what SQLite's WAL with synchronous=NORMAL gives (LMDB's default fsyncs per commit)
        self.env = lmdb.open(
            directory, map_size=8 * 2**30, max_readers=64, sync=self.sync, metasync=self.sync
        )

    def put_many(self, items: Sequence[tuple[bytes, bytes]]) -> None:
        with self.env.begin(write=True) as txn:
            for key, body in items:
                txn.put(key, body)

    def get(self, key: bytes) -> bytes | None:
        with self.env.begin(buffers=False) as txn:
            return txn.get(key)  # type: ignore[no-any-return]

    def get_many(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        out = {}
        with self.env.begin() as txn:
            for key in keys:
                value = txn.get(key)
                if value is not None:
                    out[key] = value
        return out

    def close(self) -> None:
        self.env.close()


def dir_bytes(directory: str) -> int:
    total = 0
    for base, _dirs, files in os.walk(directory):
        for name in files:
            total += os.path.getsize(os.path.join(base, name))
    return total


def run_one(
    name: str,
    factory: Callable[[str], Any],
    entries: list[tuple[bytes, bytes]],
    args: argparse.Namespace,
) -> dict[str, float]:
    """Best of ``--repeat`` rounds, each in a fresh directory (interference only adds time)."""
    rng = random.Random(5)
    order = [key for key, _body in entries]
    rng.shuffle(order)
    lookups = order[: args.gets]
    misses = [rng.randbytes(16) for _ in range(args.single)]
    batch, gb = args.batch, args.get_batch
    best: dict[str, float] = {}

    def keep(metric: str, count: int, seconds: float) -> None:
        best[metric] = max(best.get(metric, 0.0), count / seconds)

    for _round in range(args.repeat):
        directory = tempfile.mkdtemp(prefix="bench-cache-", dir=args.dir)
        try:
            store = factory(directory)
            start = time.perf_counter()
            for first in range(0, len(entries), batch):
                store.put_many(entries[first : first + batch])
            keep("put_batched", len(entries), time.perf_counter() - start)

            start = time.perf_counter()
            found = 0
            for first in range(0, len(lookups), gb):
                found += len(store.get_many(lookups[first : first + gb]))
            keep("get_batched", len(lookups), time.perf_counter() - start)
            assert found == len(lookups), (name, found)

            start = time.perf_counter()
            for key in lookups[: args.single]:
                assert store.get(key) is not None
            keep("get_single", args.single, time.perf_counter() - start)

            start = time.perf_counter()
            for first in range(0, len(misses), gb):
                assert not store.get_many(misses[first : first + gb])
            keep("miss_batched", len(misses), time.perf_counter() - start)
            store.close()
            best["mib"] = dir_bytes(directory) / 2**20

            # one transaction per put, in a fresh store
            shutil.rmtree(directory)
            os.makedirs(directory)
            store = factory(directory)
            start = time.perf_counter()
            for item in entries[: args.single]:
                store.put_many([item])
            keep("put_single", args.single, time.perf_counter() - start)
            store.close()
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=100, help="puts per transaction")
    parser.add_argument("--get-batch", type=int, default=500, help="keys per get_many")
    parser.add_argument("--gets", type=int, default=50_000, help="keys looked up")
    parser.add_argument("--single", type=int, default=5_000, help="one-by-one puts and gets")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default=None, help="where the files go (default: $TMPDIR)")
    parser.add_argument("--only", nargs="*", help="candidates to run (default: all)")
    args = parser.parse_args()

    entries = make_entries(args.entries, seed=1)
    sizes = [len(b) for _k, b in entries]
    print(
        f"{len(entries):,} entries, bodies {min(sizes)}-{max(sizes)} bytes "
        f"(mean {sum(sizes) / len(sizes):.0f}, total {sum(sizes) / 2**20:.1f} MiB); "
        f"puts in batches of {args.batch}, gets in batches of {args.get_batch}; "
        f"Python {sys.version.split()[0]}, SQLite {sqlite3.sqlite_version}"
    )
    candidates: list[tuple[str, Callable[[str], Any]]] = [
        ("plain file (baseline)", PlainFile),
        ("batchrun._cache.store (SQLite WAL)", Batchrun),
        ("sqlite3 key+body, 4 KiB pages", SqliteVariant),
        ("sqlite3 key+body, 8 KiB pages", lambda d: SqliteVariant(d, page_size=8192)),
        ("sqlite3 key+body, 16 KiB pages", lambda d: SqliteVariant(d, page_size=16384)),
        ("sqlite3, WITHOUT ROWID", lambda d: SqliteVariant(d, without_rowid=True)),
        ("sqlite3 8 KiB, zlib level 1", lambda d: SqliteVariant(d, page_size=8192, level=1)),
    ]
    try:
        import diskcache  # noqa: F401

        candidates.append(("diskcache", DiskCache))
    except ImportError:
        print("diskcache: not installed")
    try:
        import lmdb  # noqa: F401

        candidates.append(("lmdb", Lmdb))
        candidates.append(("lmdb, fsync per commit", type("LmdbSync", (Lmdb,), {"sync": True})))
    except ImportError:
        print("lmdb: not installed")
    if args.only:
        candidates = [c for c in candidates if any(o in c[0] for o in args.only)]

    results = {}
    for name, factory in candidates:
        results[name] = run_one(name, factory, entries, args)
    base = results.get("plain file (baseline)")
    header = (
        f"{'':32} {'put/s batch':>14} {'put/s 1-by-1':>14} {'get/s batch':>14} "
        f"{'get/s 1-by-1':>14} {'miss/s batch':>14} {'MiB':>8}"
    )
    print(header)
    for name, r in results.items():
        cells = []
        for metric in ("put_batched", "put_single", "get_batched", "get_single", "miss_batched"):
            ratio = f" ({r[metric] / base[metric]:.2f})" if base else ""
            cells.append(f"{r[metric]:>8,.0f}{ratio:>7}")
        print(f"{name:32} " + " ".join(f"{c:>14}" for c in cells) + f" {r['mib']:>8.1f}")
    if base:
        print("(ratios: against the plain file, measured in the same run)")


if __name__ == "__main__":
    main()
