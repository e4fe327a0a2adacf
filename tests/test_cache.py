"""batchrun._cache.store: keys, the cacheable policy, and one file shared by real processes."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import traceback
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrun._cache.store import (
    KEY_BYTES,
    CacheStats,
    ResponseCache,
    cache_key,
    cacheable,
)
from batchrun.errors import ConfigError

URL = "https://api.openai.com/v1/chat/completions"


def body_for(n: int, size: int = 1500) -> bytes:
    """A chat.completion body whose content says which entry it is (and pads it out)."""
    content = f"answer {n} " + "x" * size
    return orjson.dumps(
        {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": 1700000000 + n,
            "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 10 + n % 7, "completion_tokens": 3, "total_tokens": 0},
        }
    )


def key_for(n: int) -> bytes:
    return cache_key(URL, orjson.dumps({"model": "gpt-4o-mini", "temperature": 0, "n": n}))


# --- keys and policy


def test_key_is_the_endpoint_and_exact_bytes() -> None:
    body = b'{"model":"m","temperature":0}'
    assert len(cache_key(URL, body)) == KEY_BYTES
    assert cache_key(URL, body) == cache_key(URL, body)
    # other spacing is another request; another endpoint is another entry
    assert cache_key(URL, b'{"model": "m","temperature":0}') != cache_key(URL, body)
    assert cache_key("http://127.0.0.1:8000/v1/chat/completions", body) != cache_key(URL, body)
    # the newline separator keeps "endpoint + body" splits apart: no URL holds one
    with pytest.raises(ValueError, match="newline"):
        cache_key("a\nb", b"c")


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"temperature": 0}, True),
        ({"temperature": 0.0, "n": 4}, True),  # n copies of one greedy answer
        ({"temperature": 1, "seed": 7}, True),
        ({"temperature": 0.7, "n": 3, "seed": 7}, True),
        ({}, False),  # the server's default temperature is 1
        ({"model": "o3-mini", "reasoning_effort": "low"}, False),  # sampled, no temperature
        ({"temperature": 0.2}, False),
        ({"temperature": 0.7, "n": 3}, False),
        ({"temperature": 0, "web_search_options": {}}, False),  # live search goes stale
        ({"temperature": True}, False),
        ({"temperature": "0"}, False),
        ({"temperature": 1, "seed": None}, False),
        ({"temperature": 1, "seed": True}, False),
    ],
)
def test_deterministic_policy(body: dict[str, Any], expected: bool) -> None:
    assert cacheable(body) is expected


def test_all_and_off_policies() -> None:
    assert cacheable({"temperature": 1.0}, "all") is True
    assert cacheable({"temperature": 0}, "off") is False
    with pytest.raises(ValueError, match="deterministic, all, off"):
        cacheable({}, "sometimes")  # type: ignore[arg-type]


# --- one process


def test_put_get_round_trip_and_metadata(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with ResponseCache(path, clock=lambda: 1234.5) as cache:
        assert cache.get(key_for(1)) is None
        assert cache.put_many([(key_for(n), body_for(n)) for n in range(10)]) == 10
        assert cache.get(key_for(3)) == body_for(3)
        assert len(cache) == 10
        stats = cache.stats()
        assert isinstance(stats, CacheStats)
        # prompt tokens 10 + n % 7 for n = 0..9: 10+11+...+16 + 10+11+12 = 91 + 33
        assert (stats.entries, stats.prompt_tokens, stats.completion_tokens) == (10, 124, 30)
        assert stats.body_bytes == sum(len(body_for(n)) for n in range(10))
        assert stats.file_bytes > 0
    db = sqlite3.connect(path)
    row = db.execute(
        "SELECT model, created, prompt_tokens, stored_at FROM responses WHERE key = ?",
        (key_for(3),),
    ).fetchone()
    assert row == ("gpt-4o-mini", 1700000003, 13, 1234.5)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_get_many_returns_only_hits_across_chunks(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        cache.put_many([(key_for(n), body_for(n, 10)) for n in range(0, 1200, 2)])
        wanted = [key_for(n) for n in range(1200)] + [key_for(0)]  # 1201 keys, one repeated
        found = cache.get_many(wanted)
        assert len(found) == 600
        assert all(found[key_for(n)] == body_for(n, 10) for n in range(0, 1200, 2))
        assert cache.get_many([]) == {}


def test_put_replaces_and_stores_any_bytes(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        cache.put(key_for(1), b"old")
        cache.put(key_for(1), b"not json \xff")
        assert cache.get(key_for(1)) == b"not json \xff"
        assert len(cache) == 1
        assert cache.stats().prompt_tokens == 0
        assert cache.put_many([]) == 0
        with pytest.raises(ValueError, match="16 bytes"):
            cache.put(b"short", b"x")


def test_persists_across_opens(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    with ResponseCache(path) as cache:
        cache.put(key_for(5), body_for(5))
    with ResponseCache(path) as cache:
        assert cache.get(key_for(5)) == body_for(5)
        assert cache.integrity_check() == "ok"


def test_closed_cache_refuses(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    cache.close()
    cache.close()
    with pytest.raises(ValueError, match="closed"):
        cache.get(key_for(1))


def test_not_a_cache_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is not a database, just text " * 100)
    with pytest.raises(ConfigError, match="cannot use as a response cache"):
        ResponseCache(path)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(ConfigError, match="newer batchrun"):
        ResponseCache(path)


def test_a_failed_batch_stores_nothing(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "c.sqlite") as cache:

        def items() -> Any:
            yield key_for(1), body_for(1)
            yield key_for(2), None  # NOT NULL: the whole transaction is rolled back

        with pytest.raises(sqlite3.IntegrityError):
            cache.put_many(items())
        assert len(cache) == 0
        cache.put(key_for(3), body_for(3))  # and the connection is usable again
        assert len(cache) == 1


def test_fork_is_refused(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "c.sqlite")
    cache._pid = -1  # as if this object had been inherited by a forked child
    with pytest.raises(RuntimeError, match="fork"):
        cache.get(key_for(1))


# --- several processes at once

WRITERS = 4
READERS = 2
PER_WRITER = 400
SHARED = 50  # keys every writer stores (same body): concurrent replaces of one row


def _writer(path: str, index: int, barrier: Any, errors: Any) -> None:
    try:
        barrier.wait()
        with ResponseCache(path) as cache:  # every process creates/opens the file at once
            mine = [(index + 1) * 100_000 + i for i in range(PER_WRITER)]
            for start in range(0, PER_WRITER, 20):
                batch = mine[start : start + 20]
                batch_shared = [s for s in range(SHARED) if s % 20 == start // 20]
                cache.put_many([(key_for(n), body_for(n)) for n in batch + batch_shared])
                # each writer reads too, between its writes
                got = cache.get_many(key_for(n) for n in batch)
                if any(got.get(key_for(n)) != body_for(n) for n in batch):
                    errors.put(f"writer {index}: lost or wrong entry right after writing")
    except BaseException:
        errors.put(f"writer {index}: {traceback.format_exc()}")


def _reader(path: str, index: int, barrier: Any, done: Any, errors: Any) -> None:
    try:
        barrier.wait()
        with ResponseCache(path) as cache:
            keys = {
                key_for(n): n
                for n in [(w + 1) * 100_000 + i for w in range(WRITERS) for i in range(PER_WRITER)]
            }
            seen = 0
            while True:
                finished = done.is_set()
                found = cache.get_many(keys)
                for key, body in found.items():
                    if body != body_for(keys[key]):
                        errors.put(f"reader {index}: corrupt body for entry {keys[key]}")
                        return
                if len(found) < seen:
                    errors.put(f"reader {index}: entries disappeared ({seen} -> {len(found)})")
                    return
                seen = len(found)
                if finished:
                    break
    except BaseException:
        errors.put(f"reader {index}: {traceback.format_exc()}")


@pytest.mark.slow
def test_processes_write_and_read_one_cache_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(WRITERS + READERS)
    done = ctx.Event()
    errors = ctx.Queue()
    writers = [ctx.Process(target=_writer, args=(path, i, barrier, errors)) for i in range(WRITERS)]
    readers = [
        ctx.Process(target=_reader, args=(path, i, barrier, done, errors)) for i in range(READERS)
    ]
    for p in writers + readers:
        p.start()
    for p in writers:
        p.join(timeout=50)
    done.set()
    for p in readers:
        p.join(timeout=50)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert problems == []
    assert [p.exitcode for p in writers + readers] == [0] * (WRITERS + READERS)

    with ResponseCache(path) as cache:
        assert cache.integrity_check() == "ok"
        assert len(cache) == WRITERS * PER_WRITER + SHARED
        everything = [(w + 1) * 100_000 + i for w in range(WRITERS) for i in range(PER_WRITER)]
        everything += list(range(SHARED))
        found = cache.get_many(key_for(n) for n in everything)
        assert len(found) == len(everything)
        assert all(found[key_for(n)] == body_for(n) for n in everything)
    assert not os.path.exists(path + "-journal")


def _endless_writer(path: str, conn: Any) -> None:
    with ResponseCache(path) as cache:
        batch = 0
        while True:
            cache.put_many([(key_for(batch * 50 + i), body_for(batch * 50 + i)) for i in range(50)])
            conn.send(batch)  # committed
            batch += 1


@pytest.mark.slow
def test_kill_9_mid_write_loses_nothing_committed(tmp_path: Path) -> None:
    import signal

    path = str(tmp_path / "killed.sqlite")
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    writer = ctx.Process(target=_endless_writer, args=(path, child))
    writer.start()
    committed = -1
    while committed < 20:
        assert parent.poll(30), "the writer stopped writing"
        committed = parent.recv()
    assert writer.pid is not None
    os.kill(writer.pid, signal.SIGKILL)  # most likely inside a transaction
    writer.join(timeout=30)
    while parent.poll():
        committed = parent.recv()
    with ResponseCache(path) as cache:
        assert cache.integrity_check() == "ok"
        entries = (committed + 1) * 50
        found = cache.get_many(key_for(n) for n in range(entries))
        assert len(found) == entries
        assert all(found[key_for(n)] == body_for(n) for n in range(entries))
        assert len(cache) in (entries, entries + 50)  # a batch committed but not reported


def test_threads_share_one_cache(tmp_path: Path) -> None:
    import threading

    cache = ResponseCache(tmp_path / "c.sqlite")
    failures: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            for start in range(offset, offset + 200, 10):
                cache.put_many([(key_for(n), body_for(n, 50)) for n in range(start, start + 10)])
                got = cache.get_many(key_for(n) for n in range(start, start + 10))
                assert len(got) == 10
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(i * 1000,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    assert len(cache) == 800
    cache.close()


# --- the time an answer took (issue 23, item 21)


def test_an_answer_keeps_the_time_its_request_took(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with ResponseCache(path) as cache:
        cache.put_many([(key_for(1), body_for(1), 812.5), (key_for(2), body_for(2))])
        hits = cache.get_many_timed([key_for(1), key_for(2), key_for(3)])
        assert set(hits) == {key_for(1), key_for(2)}
        assert hits[key_for(1)] == (body_for(1), 812.5)
        assert hits[key_for(2)].latency_ms is None  # stored without it: unknown
        assert cache.get_many([key_for(1)]) == {key_for(1): body_for(1)}


def test_a_cache_made_before_answers_kept_their_time_is_read_and_written(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path, isolation_level=None)
    old.execute(
        "CREATE TABLE responses (key BLOB PRIMARY KEY, body BLOB NOT NULL, model TEXT, "
        "created INTEGER, prompt_tokens INTEGER, completion_tokens INTEGER, "
        "stored_at REAL NOT NULL)"
    )
    old.execute("PRAGMA user_version=1")
    old.execute(
        "INSERT INTO responses (key, body, stored_at) VALUES (?, ?, 1.0)", (key_for(1), b"{}")
    )
    old.close()
    with ResponseCache(path) as cache:
        assert cache.get_many_timed([key_for(1)]) == {key_for(1): (b"{}", None)}
        cache.put_many([(key_for(2), body_for(2), 40.0)])
        assert cache.get_many_timed([key_for(2)])[key_for(2)].latency_ms == 40.0
        assert cache.integrity_check() == "ok"
    # an older batchrun names its columns when it writes: the file still takes its rows
    older = sqlite3.connect(path, isolation_level=None)
    older.execute(
        "INSERT INTO responses (key, body, model, created, prompt_tokens, completion_tokens, "
        "stored_at) VALUES (?, ?, NULL, NULL, NULL, NULL, 2.0)",
        (key_for(3), b"{}"),
    )
    older.close()
    with ResponseCache(path) as cache:
        assert cache.get_many([key_for(3)]) == {key_for(3): b"{}"} and len(cache) == 3
