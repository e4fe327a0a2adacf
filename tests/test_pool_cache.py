"""The response cache in a pool of endpoints (issue 26): real loopback servers.

Each answer is kept under the scope of the endpoint and key that gave it; a row
looks under every endpoint of the pool serving its model (the job holds all their
keys). Counted by the servers: a rerun of the pool into a new run directory sends
nothing, every line reused and naming the endpoint whose answer it is; a job with
another key at the same URL gets no hit; a job with one of the pool's keys gets
exactly the answers given under that key.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import batchrun
from batchrun._apis import APIS
from batchrun._cache.scopes import PoolScopes
from batchrun._output.journal import read_journal
from batchrun.sim import SimConfig, SimThread
from tests.conftest import read_lines

KEY_A = "sk-pool-a-secret-7f3e"
KEY_B = "sk-pool-b-secret-91c4"
ROWS = 24


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, SimThread]]:
    fast = {"latency_ms": 5.0, "jitter_ms": 2.0}
    with SimThread(SimConfig(seed=1, **fast)) as a, SimThread(SimConfig(seed=2, **fast)) as b:
        yield {"a": a, "b": b}


def rows(path: Path, n: int = ROWS, *, copies: int = 1) -> Path:
    """``n`` rows (``id-I``), each body ``copies`` times (the copies: ``id-I-cN``)."""
    with open(path, "w") as f:
        for c in range(copies):
            for i in range(n):
                body = {
                    "model": "gpt-4o-mini",
                    "temperature": 0,
                    "messages": [{"role": "user", "content": f"q-{i}"}],
                }
                cid = f"id-{i}" if c == 0 else f"id-{i}-c{c}"
                f.write(json.dumps({"custom_id": cid, "body": body}) + "\n")
    return path


def sent(servers: dict[str, SimThread]) -> dict[str, int]:
    return {name: sim.stats.requests for name, sim in servers.items()}


def hits(result: Any) -> int:
    """Rows a run answered from the response cache (summary.json)."""
    return int(result.summary.get("reused", {}).get("cache", 0))


def test_a_pool_rerun_is_answered_from_the_cache_and_one_key_sees_only_its_answers(
    tmp_path: Path, servers: dict[str, SimThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POOL_KEY_A", KEY_A)
    monkeypatch.setenv("POOL_KEY_B", KEY_B)
    monkeypatch.setenv("OTHER_KEY", "sk-another-tenant-0000")
    inp, cache = rows(tmp_path / "req.jsonl"), tmp_path / "cache"
    pool: dict[str, dict[str, Any]] = {
        name: {
            "base_url": servers[name].base_url,
            "api_key_env": f"POOL_KEY_{name.upper()}",
            "concurrency": 4,
        }
        for name in ("a", "b")
    }
    pool["b"]["models"] = {"gpt-4o-mini": "mini-at-b"}  # b's answers: under the body b is sent
    identity = {name: servers[name].base_url.rstrip("/") for name in ("a", "b")}

    def run(out: str, **given: Any) -> Any:
        return batchrun.run(str(inp), str(tmp_path / out), quiet=True, cache=str(cache), **given)

    before = sent(servers)
    first = run("first", endpoints=pool)
    assert first.exit_code == 0, first.notes
    paid = {n: sent(servers)[n] - before[n] for n in ("a", "b")}
    assert sum(paid.values()) == ROWS and all(paid.values()), paid
    gave = {
        r["custom_id"]: r["batchrun"]["route"][-1]
        for r in read_lines(tmp_path / "first" / "results.jsonl")
    }
    assert Counter(gave.values()) == paid

    # the same pool, a new run directory: nothing sent, every row reused
    before = sent(servers)
    again = run("again", endpoints=pool)
    assert again.exit_code == 0, again.notes
    assert sent(servers) == before
    lines = read_lines(tmp_path / "again" / "results.jsonl")
    assert len(lines) == ROWS
    for line in lines:
        meta = line["batchrun"]
        name = gave[line["custom_id"]]
        assert meta["reused"] == "cache" and meta["attempts"] == 0
        assert meta["route"] == [name] and meta["endpoint"] == identity[name]
        assert meta["latency_ms"] is None and meta["original_latency_ms"] is not None
    summary = again.summary
    assert hits(again) == ROWS and summary["saved_usd"] > 0
    for name in ("a", "b"):
        row = summary["endpoints"][name]
        assert (row["requests"], row["answered"], row["reused"]) == (0, 0, paid[name])
        assert row["usage"]["total_tokens"] == 0 and row["cost_usd"] == 0
        assert first.summary["endpoints"][name]["answered"] == paid[name]
    recounted = read_journal(str(tmp_path / "again"), from_checkpoint=False).tally.by_endpoint
    assert {n: e.reused for n, e in recounted.items()} == paid  # a resume counts the same
    assert summary["cost_usd"]["total"] == 0 and first.summary["cost_usd"]["total"] > 0

    # one endpoint at a's URL with another key: no hit, every row sent
    before = sent(servers)
    other = run("other", base_url=servers["a"].base_url, api_key_env="OTHER_KEY")
    assert other.exit_code == 0 and hits(other) == 0
    assert sent(servers)["a"] - before["a"] == ROWS
    # one endpoint with a's key: exactly the rows a answered under it
    before = sent(servers)
    only_a = run("only-a", base_url=servers["a"].base_url, api_key_env="POOL_KEY_A")
    assert only_a.exit_code == 0 and hits(only_a) == paid["a"]
    assert sent(servers)["a"] - before["a"] == paid["b"]
    reused = {
        r["custom_id"]
        for r in read_lines(tmp_path / "only-a" / "results.jsonl")
        if r["batchrun"].get("reused") == "cache"
    }
    assert reused == {cid for cid, name in gave.items() if name == "a"}

    # no key anywhere: not in a scope, not in the cache file, not in a run directory
    settings = batchrun.Settings.build(endpoints=pool)
    scopes = PoolScopes(settings.pool(), {"a": KEY_A, "b": KEY_B})
    for name in ("a", "b"):
        for api in APIS:
            scope = scopes.scope(name, api)
            assert KEY_A.encode() not in scope and KEY_B.encode() not in scope
    for path in [*cache.rglob("*"), *tmp_path.glob("*/*")]:
        if path.is_file():
            data = path.read_bytes()
            assert KEY_A.encode() not in data and KEY_B.encode() not in data, path


def test_identical_rows_of_a_pooled_run_name_the_endpoint_that_answered_their_leader(
    tmp_path: Path, servers: dict[str, SimThread]
) -> None:
    inp = rows(tmp_path / "req.jsonl", 8, copies=2)
    before = sent(servers)
    result = batchrun.run(
        str(inp),
        str(tmp_path / "run"),
        quiet=True,
        auth="none",
        endpoints={n: {"base_url": servers[n].base_url, "concurrency": 2} for n in ("a", "b")},
    )
    assert result.exit_code == 0, result.notes
    assert sum(sent(servers).values()) - sum(before.values()) == 8  # each body once
    lines = {r["custom_id"]: r["batchrun"] for r in read_lines(tmp_path / "run" / "results.jsonl")}
    followers = {cid: meta for cid, meta in lines.items() if meta.get("reused") == "run"}
    assert len(followers) == 8
    for meta in followers.values():
        leader = lines[meta["same_as"]]
        assert meta["route"] == leader["route"][-1:] and meta["endpoint"] == leader["endpoint"]
    counted = Counter(meta["route"][0] for meta in followers.values())
    for name in ("a", "b"):
        row = result.summary["endpoints"][name]
        assert row["reused"] == counted[name]
        assert row["answered"] == sum(
            1 for m in lines.values() if m.get("reused") is None and m["route"][-1] == name
        )
