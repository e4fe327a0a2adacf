"""A response cache on disk: the same request, sent again, is answered from the file.

Evaluating prompt and model variants sends many requests that were sent before (a
pilot run, then the full run; a rerun after a fix elsewhere). The cache keeps each
response body under the hash of exactly what was sent and to whom: the endpoint's
identity (``"sim"`` for the simulator, whatever its port), a one-way hash of the
credential identity (`batchrun._endpoint.credential_identity`: the key, its auth
style, organisation, project and every extra header) and the request body bytes.
So a hit is the answer to a byte-identical request from the same tenant at the same
endpoint, and nothing else: one API key's answers are never served to another. The
key itself is never stored, and bodies are stored scrubbed of it
(`batchrun._redact.scrub`).

It is one SQLite file in WAL mode, safe for several processes at once (parallel runs
sharing one cache): readers never block the writer, writers wait for each other
(``busy_timeout``) in short transactions, and the file survives a ``kill -9`` of any
of them. Chosen by measurement over a plain file, diskcache and LMDB
(BENCHMARKS.md, "Response cache").

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "cache.sqlite")
    >>> key = cache_key("https://api.openai.com/v1", b'{"model":"m"}')
    >>> with ResponseCache(path) as cache:
    ...     cache.put_many([(key, b'{"model":"m","usage":{"prompt_tokens":3}}')])
    ...     cache.get(key)
    1
    b'{"model":"m","usage":{"prompt_tokens":3}}'

Whether a request may be answered from the cache at all is `cacheable`'s decision:
by default only requests whose answer should not change (temperature 0, or a seed).
What to store is the caller's: only a usable answer (a 200 that `batchrun._output.quality`
judged ``ok``), or a truncated answer would be served forever.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from hashlib import blake2b
from typing import Any, Literal, NamedTuple

import orjson

from batchrun._apis import CHAT, EMBEDDINGS, RESPONSES, batch_url
from batchrun._endpoint import TENANT_BYTES
from batchrun._redact import scrub
from batchrun.errors import ConfigError

__all__ = [
    "ANONYMOUS",
    "CACHE_POLICIES",
    "CachePolicy",
    "CacheStats",
    "Hit",
    "ResponseCache",
    "api_scope",
    "cache_key",
    "cache_scope",
    "cacheable",
    "scoped_key",
]

CachePolicy = Literal["deterministic", "all", "off"]
CACHE_POLICIES: tuple[CachePolicy, ...] = ("deterministic", "all", "off")

KEY_BYTES = 16
"""128-bit keys: two different requests share a key with probability ~n^2 / 2^129,
about 1e-25 for ten million requests (a 64-bit key would be ~3e-6: too close to a
wrong answer served as a right one)."""

SCHEMA_VERSION = 1
PAGE_SIZE = 8192
_CHUNK = 500  # keys per SELECT ... IN (...): well under SQLite's variable limit
_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key BLOB PRIMARY KEY,
    body BLOB NOT NULL,
    model TEXT,
    created INTEGER,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    stored_at REAL NOT NULL,
    latency_ms REAL
)
"""
_LATENCY_COLUMN = "ALTER TABLE responses ADD COLUMN latency_ms REAL"
"""A file made before answers kept their time gets the column (older batchrun versions
name their columns when they write, so they go on using the file; their entries'
time is unknown)."""


ANONYMOUS = bytes(TENANT_BYTES)
"""The credential identity of no credential (tests, in-run grouping)."""


def cache_key(endpoint: str, body: bytes, tenant: bytes = ANONYMOUS) -> bytes:
    """The key of one request: blake2b-128 of the endpoint's identity, a newline, the
    tenant (`batchrun._endpoint.credential_identity`, 16 bytes), the body.

    ``body`` is the exact bytes sent (the same JSON with other spacing or key order is
    another request, on purpose: the cache never guesses that two requests are alike).
    The endpoint is `batchrun._endpoint.endpoint_identity`, so the same body sent to
    OpenAI and to a local vLLM are two entries, and the simulator is one endpoint
    whatever port it listens on. An endpoint holds no newline and the tenant is of
    fixed width, so the parts cannot run into each other; an endpoint with a newline
    is refused.

    >>> cache_key("http://x/v1", b"{}").hex()
    'cc7813057447fe86a84893f2fa2efac9'
    """
    return scoped_key(cache_scope(endpoint, tenant), body)


def cache_scope(endpoint: str, tenant: bytes = ANONYMOUS) -> bytes:
    """The part of `cache_key` that is the same for every request of a run (made once:
    `scoped_key` then hashes it with each body)."""
    if "\n" in endpoint:
        raise ValueError(f"an endpoint URL has no newline: {endpoint!r}")
    if len(tenant) != TENANT_BYTES:
        raise ValueError(f"a tenant is {TENANT_BYTES} bytes (credential_identity)")
    return endpoint.encode() + b"\n" + tenant


def api_scope(endpoint: str, api: str, tenant: bytes = ANONYMOUS) -> bytes:
    """The `cache_scope` of one API's requests (`batchrun._apis`): the same body sent
    to the embeddings and to the Responses endpoint (``{"model", "input"}`` can be
    either) are two requests. Chat keeps the plain endpoint's scope (the keys of
    every cache written before the other APIs existed).

    >>> api_scope("sim", "chat") == cache_scope("sim")
    True
    >>> api_scope("sim", "embeddings") == api_scope("sim", "responses")
    False
    """
    if api == CHAT:
        return cache_scope(endpoint, tenant)
    return cache_scope(f"{endpoint} {batch_url(api)}", tenant)


def scoped_key(scope: bytes, body: bytes) -> bytes:
    """`cache_key` of ``body`` in a `cache_scope` (the hot path: one hash a request)."""
    return blake2b(scope + body, digest_size=KEY_BYTES).digest()


def cacheable(
    body: Mapping[str, Any], policy: CachePolicy = "deterministic", api: str = CHAT
) -> bool:
    """May this request be answered from the cache (and its answer stored)?

    ``"off"``: never. ``"all"``: always (a sampled answer is frozen: rerunning an
    evaluation gives the same sample, which is what an offline comparison wants
    once the sample is drawn). ``"deterministic"``: only when sending it again should
    give the same answer:

    * ``temperature`` is 0, or a ``seed`` is set (OpenAI's best-effort
      reproducibility; with a seed, ``n > 1`` choices are reproducible too). Without
      either the server samples (its default temperature is 1; reasoning models take
      no temperature at all), and with ``n > 1`` at a temperature above 0 every
      choice is a different draw;
    * no ``web_search_options`` (nor, in a Responses request, a web search tool): an
      answer built from a live search goes stale whatever the temperature.

    An embeddings request is deterministic whatever it sets (there is nothing to
    sample): the same text gets the same vector.

    >>> cacheable({"model": "m", "temperature": 0})
    True
    >>> cacheable({"model": "m", "n": 3, "temperature": 0.7})
    False
    >>> cacheable({"model": "m", "n": 3, "temperature": 0.7}, "all")
    True
    """
    if policy == "off":
        return False
    if policy == "all":
        return True
    if policy != "deterministic":
        raise ValueError(f"cache policy must be one of {', '.join(CACHE_POLICIES)}, not {policy!r}")
    if api == EMBEDDINGS:
        return True
    if body.get("web_search_options") is not None:
        return False
    if api == RESPONSES and _searches(body.get("tools")):
        return False
    seed = body.get("seed")
    if isinstance(seed, int) and not isinstance(seed, bool):
        return True
    temperature = body.get("temperature")
    return (
        isinstance(temperature, int | float)
        and not isinstance(temperature, bool)
        and temperature == 0
    )


def _searches(tools: Any) -> bool:
    """A Responses tool list with a web search (``web_search``, ``web_search_preview``)."""
    return isinstance(tools, list) and any(
        isinstance(t, dict) and str(t.get("type", "")).startswith("web_search") for t in tools
    )


@dataclass(frozen=True)
class CacheStats:
    """What a cache holds: entries, body bytes, and the tokens its answers cost
    (what answering from it saves, per hit, when the same requests come again)."""

    entries: int
    body_bytes: int
    prompt_tokens: int
    completion_tokens: int
    file_bytes: int


class Hit(NamedTuple):
    """A stored answer: its body, and how long the request that got it took on the wire
    (milliseconds; None when unknown), which is what answering from the cache stands
    in for."""

    body: bytes
    latency_ms: float | None


def _metadata(body: bytes) -> tuple[str | None, int | None, int | None, int | None]:
    """(model, created, prompt_tokens, completion_tokens) of a chat.completion body;
    None for what it lacks (the cache stores any bytes it is given)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None, None, None
    if not isinstance(data, dict):
        return None, None, None, None
    usage = data.get("usage")
    usage = usage if isinstance(usage, dict) else {}

    def integer(value: Any) -> int | None:
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    model = data.get("model")
    return (
        model if isinstance(model, str) else None,
        integer(data.get("created")),
        integer(usage.get("prompt_tokens")),
        integer(usage.get("completion_tokens")),
    )


class ResponseCache:
    """One cache file, opened by one process (open it again in each process).

    Thread-safe: one connection behind a lock, so a runner may call it from a worker
    thread. ``timeout`` is how long a write waits for another process's write
    (SQLite's ``busy_timeout``); writes are one short transaction per `put_many`.
    ``clock`` gives ``stored_at`` (injectable for tests).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = os.fspath(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._db: sqlite3.Connection | None = None
        try:
            self._db = _open(self.path, timeout)
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"{self.path}: cannot use as a response cache ({exc})") from exc

    def get(self, key: bytes) -> bytes | None:
        """The stored body for ``key``, or None."""
        with self._lock:
            row = (
                self._conn().execute("SELECT body FROM responses WHERE key = ?", (key,)).fetchone()
            )
        return None if row is None else scrub(bytes(row[0]))

    def get_many(self, keys: Iterable[bytes]) -> dict[bytes, bytes]:
        """The stored bodies of the keys that have one (missing keys are absent).

        Batched (500 keys per query): many times cheaper per key than `get` in a loop
        (BENCHMARKS.md, "Response cache"). Each query is its own read transaction, so
        a long batch never holds off a writer.
        """
        return {key: hit.body for key, hit in self.get_many_timed(keys).items()}

    def get_many_timed(self, keys: Iterable[bytes]) -> dict[bytes, Hit]:
        """`get_many`, each body with the time its request took (`Hit`)."""
        wanted = list(dict.fromkeys(keys))
        found: dict[bytes, Hit] = {}
        with self._lock:
            db = self._conn()
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                sql = _select_sql(len(chunk))
                for key, body, latency in db.execute(sql, chunk):
                    # an entry from before bodies were scrubbed never serves a key
                    found[bytes(key)] = Hit(scrub(bytes(body)), latency)
        return found

    def put(self, key: bytes, body: bytes) -> None:
        """Store one body (its own transaction: prefer `put_many` for batches)."""
        self.put_many([(key, body)])

    def put_many(
        self, items: Iterable[tuple[bytes, bytes] | tuple[bytes, bytes, float | None]]
    ) -> int:
        """Store (key, body) pairs in one transaction; returns how many. A third item,
        the milliseconds the request took on the wire, is kept with the body (a `Hit`
        says it again).

        A key stored before is replaced (the newest answer wins, so a refresh run
        with reads off and writes on renews entries). Pass the batch a writer has at
        hand (tens to hundreds): the transaction holds the file's write lock while it
        runs, and other processes' writes wait for it.
        """
        now = self._clock()
        rows = []
        for key, body, *latency in items:
            if len(key) != KEY_BYTES:
                raise ValueError(
                    f"a cache key is {KEY_BYTES} bytes (see cache_key), not {len(key)}"
                )
            if isinstance(body, bytes):  # no key reaches the file, whatever was echoed
                body = scrub(body)
            rows.append((key, body, *_metadata(body), now, latency[0] if latency else None))
        if not rows:
            return 0
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT OR REPLACE INTO responses (key, body, model, created, "
                    "prompt_tokens, completion_tokens, stored_at, latency_ms) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        return len(rows)

    def __len__(self) -> int:
        with self._lock:
            return int(self._conn().execute("SELECT count(*) FROM responses").fetchone()[0])

    def stats(self) -> CacheStats:
        """Totals over the whole file (a scan: for reports, not for the hot path)."""
        with self._lock:
            entries, body_bytes, prompt, completion = (
                self._conn()
                .execute(
                    "SELECT count(*), coalesce(sum(length(body)), 0), "
                    "coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0) "
                    "FROM responses"
                )
                .fetchone()
            )
        size = sum(os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p))
        return CacheStats(entries, body_bytes, prompt, completion, size)

    def integrity_check(self) -> str:
        """SQLite's own check of the file: ``"ok"`` when it is sound."""
        with self._lock:
            return str(self._conn().execute("PRAGMA integrity_check").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise ValueError(f"{self.path}: the response cache is closed")
        if os.getpid() != self._pid:
            # a connection inherited through fork shares file locks with its parent:
            # SQLite's documentation calls that a way to corrupt the file
            raise RuntimeError("a ResponseCache cannot cross a fork: open it in each process")
        return self._db

    def __repr__(self) -> str:
        return f"ResponseCache({self.path!r})"


_SELECT_SQL: dict[int, str] = {}


def _select_sql(count: int) -> str:
    sql = _SELECT_SQL.get(count)
    if sql is None:
        marks = ",".join("?" * count)
        sql = _SELECT_SQL[count] = (
            f"SELECT key, body, latency_ms FROM responses WHERE key IN ({marks})"
        )
    return sql


def _has_latency(db: sqlite3.Connection) -> bool:
    return any(row[1] == "latency_ms" for row in db.execute("PRAGMA table_info(responses)"))


def _open(path: str, timeout: float) -> sqlite3.Connection:
    """Connect, switch to WAL and create the table, waiting out other openers.

    ``timeout`` sets SQLite's busy handler before anything else runs. Turning a new
    file to WAL takes a lock that the busy handler does not always wait for (SQLite
    returns "database is locked" at once when two processes create the file at the
    same moment), so setup is retried until ``timeout``; after that, every statement
    waits on its own.
    """
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        db = sqlite3.connect(path, timeout=timeout, isolation_level=None, check_same_thread=False)
        try:
            version = int(db.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"{path}: made by a newer batchrun (cache schema {version}, "
                    f"this one reads {SCHEMA_VERSION})"
                )
            # 8 KiB pages hold 1-3 KB bodies with less waste than SQLite's default 4 KiB
            # (BENCHMARKS.md: 1.19x the bodies' size on disk instead of 1.46x); it only
            # takes on a new file, so it goes before anything is written
            db.execute(f"PRAGMA page_size={PAGE_SIZE}")
            if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: a commit survives a crash of the process (not of the
            # machine's power, which at worst loses the last answers: they are re-asked)
            db.execute("PRAGMA synchronous=NORMAL")
            if version < SCHEMA_VERSION:
                db.execute("BEGIN IMMEDIATE")
                db.execute(_SCHEMA)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("COMMIT")
            if not _has_latency(db):
                db.execute("BEGIN IMMEDIATE")  # another process may add it first
                if not _has_latency(db):
                    db.execute(_LATENCY_COLUMN)
                db.execute("COMMIT")
            return db
        except sqlite3.OperationalError as exc:
            db.close()
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            if time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
        except BaseException:
            db.close()
            raise
